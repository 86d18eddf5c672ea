"""course_lib.dp.calibration: the smallest noise that a budget allows, always on the safe side."""

import math

import pytest

from course_lib.dp.calibration import smallest_sufficient


def test_finds_the_threshold_of_a_step_function_from_above() -> None:
    # cost 1 below x = 3.7 and 0 from there on: the answer meets the budget and lies within 1e-9
    answer = smallest_sufficient(lambda x: 0.0 if x >= 3.7 else 1.0, 0.5, rel_tol=1e-9)
    assert 3.7 <= answer <= 3.7 * (1 + 1e-9)


@pytest.mark.parametrize("start", [1e-3, 1.0, 1e3])
def test_brackets_from_either_side(start: float) -> None:
    # cost 1/x: the smallest x with 1/x ≤ 0.25 is 4, whichever side the search starts on
    answer = smallest_sufficient(lambda x: 1 / x, 0.25, start=start, rel_tol=1e-6)
    assert 1 / answer <= 0.25
    assert answer == pytest.approx(4.0, rel=1e-6)


def test_a_cost_tolerance_stops_early_but_stays_within_the_budget() -> None:
    answer = smallest_sufficient(lambda x: 1 / x, 0.25, rel_tol=1e-12, cost_rel_tol=0.01)
    assert 0.25 * 0.99 <= 1 / answer <= 0.25


def test_lowest_is_returned_when_it_already_meets_the_budget() -> None:
    assert smallest_sufficient(lambda x: 0.0, 1.0, lowest=0.05) == 0.05


def test_an_unreachable_budget_is_refused() -> None:
    with pytest.raises(ValueError, match=r"out of reach for a test \(σ = 100 still spends more\)"):
        smallest_sufficient(lambda x: 1.0, 0.5, highest=100.0, setting=" for a test")


@pytest.mark.parametrize(
    "kwargs", [{"start": 0.0}, {"start": math.nan}, {"rel_tol": 0.0}, {"cost_rel_tol": 1.0}]
)
def test_bad_search_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        smallest_sufficient(lambda x: 1 / x, 0.25, **kwargs)  # type: ignore[arg-type]
