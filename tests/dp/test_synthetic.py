"""course_lib.dp.synthetic: noisy 2-way marginals, their accounting, consistency, the Chow–Liu tree,
sampling, and the privacy of the release (an auditor's distinguishing attack and a membership
attack compared with a release that copies its records)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from course_lib.dp.accounting import rdp_epsilon
from course_lib.dp.attacks import evaluate_attack
from course_lib.dp.auditing import audit_scores
from course_lib.dp.synthetic import (
    chow_liu_tree,
    consistent_marginals,
    discretise,
    distance_to_closest_record,
    gaussian_epsilon_for,
    marginal_errors,
    mutual_information,
    noisy_pair_marginals,
    pair_marginal,
    sample_tree,
    sigma_for_budget,
    synthesize,
    total_variation,
)
from course_lib.randomness import InsecureSeededRandom

SIZES = [3, 3, 2, 4]


def _chain(n: int, seed: int = 0) -> np.ndarray:
    """Columns 0 → 1 → 2 strongly dependent, column 3 independent noise."""
    g = np.random.default_rng(seed)
    a = g.integers(0, 3, n)
    b = np.where(g.random(n) < 0.85, a, g.integers(0, 3, n))
    c = np.where(g.random(n) < 0.9, (b > 0).astype(int), g.integers(0, 2, n))
    d = g.integers(0, 4, n)
    return np.column_stack([a, b, c, d]).astype(np.int64)


def test_discretise_uses_the_public_edges() -> None:
    values = np.array([[0.0, 5.0], [1.0, 10.0], [2.5, 99.0]])
    binned = discretise(values, [[1.0, 2.0], [10.0]])
    assert binned.tolist() == [[0, 0], [1, 1], [2, 1]]
    with pytest.raises(ValueError, match="increasing"):
        discretise(values, [[2.0, 1.0], [10.0]])
    with pytest.raises(ValueError, match="one list of edges per column"):
        discretise(values, [[1.0]])
    with pytest.raises(ValueError, match="NaN"):
        discretise([[math.nan, 1.0]], [[1.0], [1.0]])


def test_accounting_is_the_courses_rdp_accountant() -> None:
    # m Gaussian releases of sensitivity 1 = m full-batch DP-SGD steps with noise multiplier σ
    assert gaussian_epsilon_for(5.0, 36, 1e-5) == pytest.approx(rdp_epsilon(5.0, 1.0, 36, 1e-5))
    sigma = sigma_for_budget(2.0, 1e-5, 36)
    assert gaussian_epsilon_for(sigma, 36, 1e-5) <= 2.0
    assert gaussian_epsilon_for(sigma * 0.99, 36, 1e-5) > 2.0  # the smallest such σ, to 1 %
    # and no worse than the textbook zCDP conversion ε = ρ + 2√(ρ ln 1/δ), ρ = m / (2σ²)
    rho = 36 / (2 * sigma**2)
    assert gaussian_epsilon_for(sigma, 36, 1e-5) <= rho + 2 * math.sqrt(rho * math.log(1e5))


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_bad_budgets_are_refused_before_any_noise(bad: float) -> None:
    class Exploding(InsecureSeededRandom):
        def bytes(self, n: int) -> bytes:
            raise AssertionError("randomness drawn before the input was checked")

    table = _chain(50)
    with pytest.raises(ValueError):
        synthesize(table, SIZES, bad, 1e-5, rng=Exploding(0))
    with pytest.raises(ValueError):
        synthesize(table, SIZES, 1.0, bad if bad != 0.0 else 1.0, rng=Exploding(0))
    with pytest.raises(ValueError):
        noisy_pair_marginals(table, SIZES, bad, rng=Exploding(0))


def test_mismatched_or_out_of_range_tables_are_refused() -> None:
    table = _chain(50)
    with pytest.raises(ValueError, match="column sizes"):
        synthesize(table, SIZES[:3], 1.0, 1e-5)
    with pytest.raises(ValueError, match="outside"):
        synthesize(table, [2, 3, 2, 4], 1.0, 1e-5)
    with pytest.raises(TypeError, match="integers"):
        synthesize(table.astype(float), SIZES, 1.0, 1e-5)
    with pytest.raises(ValueError, match="pair"):
        noisy_pair_marginals(table, SIZES, 1.0, pairs=[(2, 1)])


def test_marginal_noise_has_the_promised_spread() -> None:
    table = _chain(200)
    noisy = noisy_pair_marginals(table, SIZES, 4.0, rng=InsecureSeededRandom(0))
    assert set(noisy) == set(itertools.combinations(range(4), 2))
    residuals = np.concatenate([(noisy[p] - pair_marginal(table, SIZES, p)).ravel() for p in noisy])
    many = [residuals]
    for seed in range(1, 40):
        again = noisy_pair_marginals(table, SIZES, 4.0, rng=InsecureSeededRandom(seed))
        many.append(
            np.concatenate([(again[p] - pair_marginal(table, SIZES, p)).ravel() for p in again])
        )
    noise = np.concatenate(many)
    assert np.all(noise == np.round(noise))  # integer noise: exact discrete Gaussian
    assert abs(noise.mean()) < 4 * 4.0 / math.sqrt(noise.size)
    assert noise.std() == pytest.approx(4.0, rel=0.05)


def test_consistency_gives_agreeing_probability_tables() -> None:
    table = _chain(300)
    noisy = noisy_pair_marginals(table, SIZES, 3.0, rng=InsecureSeededRandom(1))
    tables = consistent_marginals(noisy, SIZES)
    for p in tables.values():
        assert np.all(p >= 0) and p.sum() == pytest.approx(1.0)
    for column in range(4):
        ones = [
            (tables[pair].sum(axis=1) if pair[0] == column else tables[pair].sum(axis=0))
            for pair in tables
            if column in pair
        ]
        for other in ones[1:]:
            np.testing.assert_allclose(other, ones[0], atol=1e-3)


def test_chow_liu_finds_the_chain_from_exact_marginals() -> None:
    table = _chain(5000)
    exact = {
        p: pair_marginal(table, SIZES, p) / len(table) for p in itertools.combinations(range(4), 2)
    }
    edges = {frozenset(e) for e in chow_liu_tree(exact, 4)}
    assert frozenset((0, 1)) in edges and frozenset((1, 2)) in edges
    assert mutual_information(exact[(0, 1)]) > 10 * mutual_information(exact[(0, 3)])


def test_sampling_the_tree_reproduces_its_marginals() -> None:
    table = _chain(5000)
    exact = {
        p: pair_marginal(table, SIZES, p) / len(table) for p in itertools.combinations(range(4), 2)
    }
    tree = chow_liu_tree(exact, 4)
    records = sample_tree(exact, tree, 20_000, rng=InsecureSeededRandom(2))
    errors = marginal_errors(table, records, SIZES)
    for parent, child in tree:  # the tree's own edges are reproduced
        assert errors[tuple(sorted((parent, child)))] < 0.03


def test_more_budget_means_better_marginals() -> None:
    table = _chain(1000)

    def mean_tv(epsilon: float) -> float:
        runs = [
            np.mean(list(marginal_errors(table, synthesize(
                table, SIZES, epsilon, 1e-5, rng=InsecureSeededRandom(s)).records, SIZES
            ).values()))
            for s in range(5)
        ]  # fmt: skip
        return float(np.mean(runs))

    assert mean_tv(20.0) < 0.6 * mean_tv(0.3)


def test_release_reports_its_budget_and_is_reproducible_only_when_seeded() -> None:
    table = _chain(300)
    a = synthesize(table, SIZES, 1.0, 1e-5, rng=InsecureSeededRandom(3))
    b = synthesize(table, SIZES, 1.0, 1e-5, rng=InsecureSeededRandom(3))
    assert np.array_equal(a.records, b.records)
    assert a.marginals == 6 and 0.99 < a.epsilon <= 1.0 and a.delta == 1e-5
    assert a.records.shape == table.shape
    fresh = [synthesize(table, SIZES, 1.0, 1e-5).records for _ in range(2)]
    assert not np.array_equal(fresh[0], fresh[1])


def test_total_variation_by_hand() -> None:
    assert total_variation([10, 0], [5, 5]) == pytest.approx(0.5)
    assert total_variation([[1, 1], [1, 1]], [[2, 2], [2, 2]]) == 0.0
    with pytest.raises(ValueError, match="shapes"):
        total_variation([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="non-negative"):
        total_variation([1, -1], [1, 1])


def test_an_auditor_cannot_beat_the_claimed_epsilon_on_one_marginal() -> None:
    # Attacker: D and D′ = D + one record with a combination nobody else has; read the count of
    # its cell in the released (0, 1) marginal and say "in" when it is ≥ threshold. The measured
    # lower bound on ε (Clopper–Pearson, 95 %) must not exceed the accountant's ε for one release.
    table = _chain(100)
    canary = np.array([[2, 0, 1, 3]])
    sigma = 1.0
    claimed = gaussian_epsilon_for(sigma, 1, 1e-5)

    def cell(data: np.ndarray, seed: int) -> float:
        noisy = noisy_pair_marginals(
            data, SIZES, sigma, pairs=[(0, 1)], rng=InsecureSeededRandom(seed)
        )
        return float(noisy[(0, 1)][2, 0])

    with_canary = np.vstack([table, canary])
    base = pair_marginal(table, SIZES, (0, 1))[2, 0]
    ins = [cell(with_canary, s) for s in range(1500)]
    outs = [cell(table, 10_000 + s) for s in range(1500)]
    audit = audit_scores(ins, outs, base + 2.0, delta=1e-5)
    assert audit.epsilon_lower <= claimed
    assert audit.epsilon_lower > 0.3  # the attack is real: it does detect the canary often
    # a broken release that forgets the noise is caught at once
    broken = audit_scores([base + 1.0] * 3000, [base] * 3000, base + 1.0, delta=1e-5)
    assert broken.epsilon_lower > claimed


def test_membership_attack_loses_its_edge_on_the_dp_release() -> None:
    g = np.random.default_rng(4)
    sizes = [6] * 6
    population = g.integers(0, 6, (700, 6)).astype(np.int64)
    members, others = population[:400], population[400:]
    candidates = np.vstack([members, others])
    is_member = np.r_[np.ones(400, bool), np.zeros(300, bool)]
    copied = evaluate_attack(-distance_to_closest_record(candidates, members), is_member)
    release = synthesize(members, sizes, 1.0, 1e-5, rng=InsecureSeededRandom(5)).records
    dp = evaluate_attack(-distance_to_closest_record(candidates, release), is_member)
    assert copied.auc > 0.95
    # ε = 1 still allows some advantage (TPR ≤ e·FPR + δ), but the copy's near-certain
    # identification is gone: the AUC falls to near a coin flip
    assert dp.auc < 0.6 and dp.auc_ci[1] < copied.auc_ci[0] - 0.3


def test_distance_to_closest_record() -> None:
    release = np.array([[0, 0, 0], [1, 1, 1]])
    assert distance_to_closest_record(
        np.array([[0, 0, 1], [1, 1, 1], [2, 2, 2]]), release
    ).tolist() == [1, 0, 3]
    with pytest.raises(ValueError, match="same columns"):
        distance_to_closest_record(np.zeros((2, 2), int), release)
