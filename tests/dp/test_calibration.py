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


@pytest.mark.parametrize("budget", [math.nan, math.inf, -1.0])
def test_a_bad_budget_is_refused_before_any_evaluation(budget: float) -> None:
    calls: list[float] = []
    with pytest.raises(ValueError, match="budget must be a finite number"):
        smallest_sufficient(lambda x: calls.append(x) or 1 / x, budget)
    assert calls == []


def test_a_nan_cost_is_never_read_as_met() -> None:
    with pytest.raises(ValueError, match="cost at σ = 1 is NaN"):
        smallest_sufficient(lambda x: math.nan, 0.5)


def test_a_cost_that_never_falls_below_the_budget_ends_with_an_error() -> None:
    with pytest.raises(ValueError, match="out of reach"):
        smallest_sufficient(lambda x: 0.5 + 1 / x, 0.25)  # the default highest bounds the search


def test_highest_itself_is_tried() -> None:
    # 9,000 meets the budget: a search doubling 8,192 → 16,384 must not skip the range's end
    assert smallest_sufficient(lambda x: 1 / x, 1 / 9000, highest=9000.0) == pytest.approx(
        9000, rel=1e-3
    )


def test_no_noise_is_never_the_answer() -> None:
    with pytest.raises(ValueError, match="nothing to calibrate"):
        smallest_sufficient(lambda x: 0.0, 1.0)


@pytest.mark.parametrize(("start", "lowest", "highest"), [(1.0, 10.0, 100.0), (8.0, 0.0, 5.0)])
def test_the_answer_stays_in_the_range(start: float, lowest: float, highest: float) -> None:
    answer = smallest_sufficient(lambda x: 1 / x, 0.25, start=start, lowest=lowest, highest=highest)
    assert lowest <= answer <= highest


def test_the_callers_turn_an_unreachable_budget_into_a_value_error() -> None:
    from course_lib.dp.mechanisms import gaussian_delta, gaussian_sigma_analytic
    from course_lib.dp.synthetic import sigma_for_budget

    with pytest.raises(ValueError, match="out of reach for 36 marginals"):
        sigma_for_budget(0.05, 1e-5, 36)  # the accountant cannot go below ε ≈ 0.103 at δ = 1e-5
    sigma = gaussian_sigma_analytic(1.0, 800.0, 1e-5)  # e^ε overflows a float: log space
    assert gaussian_delta(sigma, 1.0, 800.0) <= 1e-5
