"""course_lib.dp.accounting agrees with Opacus' RDPAccountant and rejects bad input."""

import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant as OpacusRDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from course_lib.dp.accounting import (
    DEFAULT_ORDERS,
    RDPAccountant,
    noise_multiplier_for_epsilon,
    rdp_epsilon,
    rdp_to_epsilon,
    subsampled_gaussian_rdp,
)

GRID = list(
    itertools.product(
        [0.5, 0.8, 1.1, 2.0, 4.0],  # noise multiplier σ
        [0.001, 1 / 64, 1 / 16, 0.2, 1.0],  # sample rate q
        [1, 100, 3000],  # steps
        [1e-5, 1e-3],  # δ
    )
)


def opacus_epsilon(sigma: float, q: float, steps: int, delta: float) -> float:
    accountant = OpacusRDPAccountant()
    accountant.history = [(sigma, q, steps)]
    with warnings.catch_warnings():  # Opacus warns when the best order is at the grid's edge
        warnings.simplefilter("ignore")
        return accountant.get_epsilon(delta=delta)


@pytest.mark.parametrize(("sigma", "q", "steps", "delta"), GRID)
def test_rdp_epsilon_matches_opacus(sigma, q, steps, delta):
    ours = rdp_epsilon(sigma, q, steps, delta)
    assert ours == pytest.approx(opacus_epsilon(sigma, q, steps, delta), rel=1e-6)


def test_known_value_from_the_baselines():
    # σ = 1.1, q = 1/16, 80 steps (5 epochs of 4,000 examples in batches of 250 on average)
    assert rdp_epsilon(1.1, 1 / 16, 80, 1e-5) == pytest.approx(3.77, abs=0.01)


def test_accountant_accumulates_like_opacus():
    ours, theirs = RDPAccountant(), OpacusRDPAccountant()
    for sigma, q, n in [(1.0, 0.01, 30), (2.0, 0.05, 20), (1.0, 0.01, 10)]:
        for _ in range(n):
            ours.step(noise_multiplier=sigma, sample_rate=q)
            theirs.step(noise_multiplier=sigma, sample_rate=q)
    assert ours.steps == len(ours) == 60
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = theirs.get_epsilon(delta=1e-5)
    assert ours.get_epsilon(1e-5) == pytest.approx(expected, rel=1e-6)


def test_epsilon_grows_with_steps_and_shrinks_with_noise():
    assert rdp_epsilon(1.0, 0.01, 100, 1e-5) < rdp_epsilon(1.0, 0.01, 200, 1e-5)
    assert rdp_epsilon(2.0, 0.01, 100, 1e-5) < rdp_epsilon(1.0, 0.01, 100, 1e-5)
    assert RDPAccountant().get_epsilon(1e-5) == 0.0


def test_no_subsampling_is_the_gaussian_mechanism():
    # q = 1: RDP(α) = α / (2σ²) exactly
    sigma = 3.0
    rdp = subsampled_gaussian_rdp(sigma, 1.0, 1)
    np.testing.assert_allclose(rdp, np.array(DEFAULT_ORDERS) / (2 * sigma**2))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"noise_multiplier": 0.0},
        {"noise_multiplier": -1.0},
        {"noise_multiplier": float("nan")},
        {"sample_rate": 0.0},
        {"sample_rate": 1.5},
        {"steps": -1},
        {"delta": 0.0},
        {"delta": 1.0},
        {"delta": float("nan")},
    ],
)
def test_bad_input_raises_value_error(kwargs):
    args = {"noise_multiplier": 1.0, "sample_rate": 0.01, "steps": 10, "delta": 1e-5} | kwargs
    with pytest.raises(ValueError):
        rdp_epsilon(**args)


def test_rdp_to_epsilon_checks_lengths():
    with pytest.raises(ValueError, match="orders"):
        rdp_to_epsilon([0.1, 0.2], 1e-5, orders=[2.0, 3.0, 4.0])


def test_non_integer_steps_are_a_type_error():
    with pytest.raises(TypeError, match="steps"):
        rdp_epsilon(1.0, 0.01, 2.5, 1e-5)


@pytest.mark.parametrize("delta", [0.2, 0.5, 0.9, 0.999])
def test_epsilon_is_never_negative_for_a_large_delta(delta):
    # Balle et al.'s conversion drops below 0 for large δ (Opacus returns e.g. -0.68 at δ = 0.5);
    # (ε < 0, δ)-DP implies (0, δ)-DP, so 0 is the sound floor.
    assert rdp_epsilon(1.0, 0.01, 100, delta) == max(opacus_epsilon(1.0, 0.01, 100, delta), 0.0)
    assert RDPAccountant().get_epsilon(delta) == 0.0


@pytest.mark.parametrize(
    ("sigma", "q", "steps"),
    [(1e6, 0.01, 100), (1e3, 0.5, 10), (1.0, 1e-14, 100), (1.0, 1e-15, 100), (50.0, 1e-10, 1000)],
)
def test_valid_extremes_are_not_refused_by_rounding(sigma, q, steps):
    # huge σ or tiny q: the RDP is 0 up to rounding, and ε is the conversion's own floor term
    ours = rdp_epsilon(sigma, q, steps, 1e-5)
    assert ours == pytest.approx(opacus_epsilon(sigma, q, steps, 1e-5), rel=1e-9)
    assert np.all(subsampled_gaussian_rdp(sigma, q, steps) >= 0)


@pytest.mark.parametrize(
    "scalars",
    [
        (np.float32(1.1), np.float64(1 / 16), np.int64(80), np.float32(1e-5)),
        (torch.tensor(1.1, dtype=torch.float64), torch.tensor(1 / 16), 80, torch.tensor(1e-5)),
    ],
)
def test_numpy_and_tensor_scalars_are_numbers(scalars):
    assert rdp_epsilon(*scalars) == pytest.approx(rdp_epsilon(1.1, 1 / 16, 80, 1e-5), rel=1e-6)
    accountant = RDPAccountant()
    accountant.step(noise_multiplier=scalars[0], sample_rate=scalars[1], steps=scalars[2])
    assert accountant.get_epsilon(scalars[3]) == pytest.approx(3.77, abs=0.01)


@pytest.mark.parametrize(
    ("epsilon", "q", "steps"), [(8.0, 0.05, 100), (1.0, 0.01, 500), (3.0, 0.1, 20)]
)
def test_sigma_solves_to_the_target_epsilon(epsilon: float, q: float, steps: int) -> None:
    sigma = noise_multiplier_for_epsilon(epsilon, sample_rate=q, steps=steps, delta=1e-5)
    spent = rdp_epsilon(sigma, q, steps, 1e-5)
    assert epsilon * (1 - 1e-3) <= spent <= epsilon
    assert rdp_epsilon(sigma * 0.99, q, steps, 1e-5) > spent  # the smallest σ, not any σ


@pytest.mark.parametrize("epsilon", [0.0, -1.0, math.nan, math.inf])
def test_a_bad_epsilon_is_refused(epsilon: float) -> None:
    with pytest.raises(ValueError):
        noise_multiplier_for_epsilon(epsilon, sample_rate=0.1, steps=10, delta=1e-5)


@pytest.mark.parametrize(("epsilon", "q", "steps"), [(8.0, 0.05, 100), (3.0, 0.1, 400)])
def test_sigma_agrees_with_opacus_get_noise_multiplier(
    epsilon: float, q: float, steps: int
) -> None:
    # Opacus solves the same equation with its RDP accountant (ε tolerance 0.01 by default)
    theirs = get_noise_multiplier(
        target_epsilon=epsilon, target_delta=1e-5, sample_rate=q, steps=steps, accountant="rdp"
    )
    ours = noise_multiplier_for_epsilon(epsilon, sample_rate=q, steps=steps, delta=1e-5)
    assert ours == pytest.approx(theirs, rel=0.01)


def test_a_loose_target_returns_the_smallest_sigma_considered() -> None:
    sigma = noise_multiplier_for_epsilon(1e6, sample_rate=0.01, steps=1, delta=1e-5)
    assert sigma == 0.05 and rdp_epsilon(sigma, 0.01, 1, 1e-5) <= 1e6


def test_an_unreachable_target_is_named() -> None:
    with pytest.raises(ValueError, match="out of reach for 10000 steps at q = 1.0"):
        noise_multiplier_for_epsilon(1e-4, sample_rate=1.0, steps=10_000, delta=1e-5)
