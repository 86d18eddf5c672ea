"""Composition theorems against hand-computed values, and a budget that refuses to overspend."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from course_lib.dp.composition import (
    BudgetExceededError,
    PrivacyBudget,
    advanced_composition,
    parallel_composition,
    sequential_composition,
)


def test_sequential_composition_adds():
    assert sequential_composition([0.1, 0.2, 0.3]) == pytest.approx((0.6, 0.0))
    assert sequential_composition([0.5, 0.5], [1e-6, 2e-6]) == pytest.approx((1.0, 3e-6))


def test_parallel_composition_takes_the_maximum():
    assert parallel_composition([0.1, 0.7, 0.3]) == (0.7, 0.0)
    assert parallel_composition([1.0, 0.5], [1e-6, 1e-5]) == (1.0, 1e-5)


def test_advanced_composition_by_hand():
    # k = 100 runs of ε = 0.1, δ = 0, with δ' = 1e-5:
    #   0.1·√(200·ln 1e5) + 100·0.1·(e^0.1 - 1) = 0.1·47.9852... + 10·0.1051709... = 5.850229...
    epsilon, delta = advanced_composition(0.1, 0.0, 100, 1e-5)
    assert epsilon == pytest.approx(4.798521 + 1.051709, abs=1e-5)
    assert delta == pytest.approx(1e-5)
    assert epsilon < sequential_composition([0.1] * 100)[0]  # 5.85 < 10: √k beats k here


def test_advanced_composition_adds_the_deltas():
    epsilon, delta = advanced_composition(0.5, 1e-6, 10, 1e-5)
    assert delta == pytest.approx(10 * 1e-6 + 1e-5)
    assert epsilon == pytest.approx(
        0.5 * math.sqrt(20 * math.log(1e5)) + 10 * 0.5 * math.expm1(0.5)
    )


def test_advanced_composition_can_lose_to_sequential_for_few_runs():
    assert advanced_composition(1.0, 0.0, 2, 1e-5)[0] > 2.0


@settings(deadline=None, max_examples=100)
@given(st.lists(st.floats(1e-3, 10), min_size=1, max_size=20))
def test_parallel_never_costs_more_than_sequential(epsilons):
    assert parallel_composition(epsilons)[0] <= sequential_composition(epsilons)[0]


def test_budget_spends_and_keeps_a_ledger():
    budget = PrivacyBudget(epsilon=1.0, delta=1e-5)
    budget.spend(0.25, label="mean age")
    budget.spend(0.5, 1e-6, label="histogram")
    assert budget.spent_epsilon == pytest.approx(0.75)
    assert budget.remaining_epsilon == pytest.approx(0.25)
    assert budget.remaining_delta == pytest.approx(9e-6)
    assert [entry.label for entry in budget.ledger] == ["mean age", "histogram"]
    table = str(budget)
    assert "mean age" in table and "histogram" in table and "budget" in table


def test_budget_refuses_to_overspend_and_records_nothing():
    budget = PrivacyBudget(epsilon=1.0)
    budget.spend(0.9)
    with pytest.raises(BudgetExceededError, match="refused"):
        budget.spend(0.2, label="one too many")
    assert len(budget.ledger) == 1 and budget.spent_epsilon == pytest.approx(0.9)
    budget.spend(0.1)  # the exact remainder still fits
    assert not budget.can_spend(1e-9)


def test_budget_refuses_delta_beyond_its_limit():
    budget = PrivacyBudget(epsilon=10.0)  # pure ε-DP budget: no δ at all
    with pytest.raises(BudgetExceededError):
        budget.spend(0.1, 1e-6)


def test_ten_spends_of_a_tenth_fit_exactly():
    budget = PrivacyBudget(epsilon=1.0)
    for _ in range(10):
        budget.spend(0.1)
    with pytest.raises(BudgetExceededError):
        budget.spend(0.01)


def test_budget_exceeded_is_a_value_error():
    assert issubclass(BudgetExceededError, ValueError)


@pytest.mark.parametrize("bad", [0.0, -0.5, math.nan, math.inf])
def test_bad_epsilon_is_refused(bad):
    with pytest.raises(ValueError, match="epsilon"):
        PrivacyBudget(bad)
    with pytest.raises(ValueError, match="epsilon"):
        PrivacyBudget(1.0).spend(bad)
    with pytest.raises(ValueError, match="epsilon"):
        sequential_composition([0.1, bad])
    with pytest.raises(ValueError, match="epsilon"):
        advanced_composition(bad, 0.0, 10, 1e-5)


@pytest.mark.parametrize("bad", [1.0, 2.0, -1e-6, math.nan])
def test_bad_delta_is_refused(bad):
    with pytest.raises(ValueError, match="delta"):
        PrivacyBudget(1.0, bad)
    with pytest.raises(ValueError, match="delta"):
        advanced_composition(0.1, 0.0, 10, bad)
    with pytest.raises(ValueError, match="delta"):
        parallel_composition([0.1], [bad])


def test_other_bad_inputs():
    with pytest.raises(ValueError, match="one delta per epsilon"):
        sequential_composition([0.1, 0.2], [1e-5])
    with pytest.raises(ValueError, match="at least one"):
        sequential_composition([])
    with pytest.raises(ValueError, match="positive integer"):
        advanced_composition(0.1, 0.0, 0, 1e-5)
    with pytest.raises(ValueError, match="vacuous"):
        advanced_composition(0.1, 0.1, 10, 1e-5)


@pytest.mark.parametrize("delta", [np.float32(1e-5), torch.tensor(1e-5), np.float64(0.0)])
def test_numpy_and_tensor_scalars_are_accepted(delta):
    budget = PrivacyBudget(np.float32(1.0), delta=np.float64(1e-3))
    budget.spend(torch.tensor(0.25), delta)
    assert budget.spent_epsilon == pytest.approx(0.25)
    assert advanced_composition(np.float64(0.1), delta, np.int64(10), np.float32(1e-5))[0] > 0
