"""Issue 23 §3b: the domain of every DP release is public — its support never depends on the data.

For each release of :mod:`course_lib.dp.mechanisms` (and PATE's noisy arg-max) the test draws
outputs on a database and asks an exact oracle whether each could also have come from a
neighbouring database (one person removed). An output possible on one side only is an infinite
privacy-loss ratio: ε = ∞. The finder is shown to work on two known-broken releases — the
textbook floating-point Laplace (Mironov 2012) and the exponential mechanism with candidates read
off the data (what lesson 06 used to do) — and every release the course uses must pass it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from course_lib.dp import mechanisms, pate
from course_lib.dp.databases import DIAGNOSES, make_population
from course_lib.randomness import InsecureSeededRandom

Database = list[dict]


@dataclass(frozen=True)
class Release:
    """``run(database, rng)`` draws one output; ``possible(output, database)`` is the exact
    support oracle: could the mechanism output exactly this on that database?"""

    run: Callable[[Database, InsecureSeededRandom], object]
    possible: Callable[[object, Database], bool]


def _hiv_count(db: Database) -> float:
    return float(sum(p["diagnosis"] == "HIV" for p in db))


def _diagnosis_counts(db: Database) -> torch.Tensor:
    return mechanisms.count_by_category([p["diagnosis"] for p in db], DIAGNOSES)


def _on_grid(output: torch.Tensor | float, grid: float, shape: tuple[int, ...]) -> bool:
    values = torch.as_tensor(output, dtype=torch.float64)
    steps = values / grid
    return tuple(values.shape) == shape and bool(torch.all(steps == torch.round(steps)))


def _exponential_possible(candidates, scores) -> Callable[[object], bool]:
    probabilities = mechanisms.exponential_mechanism_probabilities(scores, 1.0, 1.0)
    return lambda output: output in candidates and probabilities[candidates.index(output)] > 0


RELEASES = {
    "randomized_response": Release(
        # local DP: one person's own answer (the last person's "do you have HIV?"; the
        # neighbouring database has a different last person, whose answer is no)
        run=lambda db, rng: mechanisms.randomized_response(
            torch.tensor([db[-1]["diagnosis"] == "HIV"]), p_truth=0.5, rng=rng
        ),
        possible=lambda out, db: out.dtype == torch.bool and out.shape == (1,),
    ),
    "laplace_mechanism": Release(
        run=lambda db, rng: mechanisms.laplace_mechanism(_hiv_count(db), 1.0, 1.0, rng=rng),
        possible=lambda out, db: _on_grid(out, mechanisms.grid_spacing(1.0), ()),
    ),
    "gaussian_mechanism": Release(
        run=lambda db, rng: mechanisms.gaussian_mechanism(
            _diagnosis_counts(db), math.sqrt(2), 1.0, 1e-5, rng=rng
        ),
        possible=lambda out, db: _on_grid(
            out, mechanisms.grid_spacing(math.sqrt(2), len(DIAGNOSES), norm="l2"), (6,)
        ),
    ),
    "laplace_histogram": Release(
        run=lambda db, rng: mechanisms.laplace_histogram(
            [p["diagnosis"] for p in db], DIAGNOSES, 1.0, rng=rng
        ),
        possible=lambda out, db: _on_grid(out, mechanisms.grid_spacing(1.0, 6), (6,)),
    ),
    "exponential_mechanism": Release(
        run=lambda db, rng: mechanisms.exponential_mechanism(
            _diagnosis_counts(db), 1.0, 1.0, candidates=DIAGNOSES, rng=rng
        ),
        possible=lambda out, db: _exponential_possible(DIAGNOSES, _diagnosis_counts(db))(out),
    ),
    "naive_laplace": Release(  # the broken textbook sampler, kept for lesson 06's attack
        run=lambda db, rng: mechanisms.naive_laplace(_hiv_count(db), 1.0, 1.0, rng=rng),
        possible=lambda out, db: bool(
            mechanisms.naive_laplace_could_output(out, _hiv_count(db), 1.0, 1.0)
        ),
    ),
}
#: Known broken: the finder must flag these (it is shown to work on them).
BROKEN = {"naive_laplace"}
#: Public names of mechanisms.py that release nothing about a database (calculators, samplers of
#: pure noise, the attacker's oracle, exact counts that a release then noises).
NOT_RELEASES = {
    "randomized_response_epsilon",
    "truth_probability_for_epsilon",
    "debiased_estimate",
    "randomized_response_std",
    "sample_discrete_laplace",
    "sample_discrete_gaussian",
    "discrete_laplace_pmf",
    "discrete_gaussian_pmf",
    "gaussian_sigma_classic",
    "gaussian_sigma_analytic",
    "gaussian_delta",
    "grid_spacing",
    "exponential_mechanism_probabilities",
    "count_by_category",
    "naive_laplace_could_output",
}


def _neighbours() -> tuple[Database, Database]:
    """A population in which exactly one person has HIV, and the same without that person: the
    diagnoses that *occur* differ between the two."""
    population = make_population(60, rng=InsecureSeededRandom(6))
    others = [p for p in population if p["diagnosis"] != "HIV"]
    with_hiv = [*others, {**population[0], "diagnosis": "HIV"}]
    return with_hiv, others


def support_differs(release: Release, draws: int = 200) -> bool:
    """Whether some output drawn on one neighbour is impossible on the other (either way)."""
    d, d_prime = _neighbours()
    rng = InsecureSeededRandom(23)
    for here, there in ((d, d_prime), (d_prime, d)):
        for _ in range(draws):
            if not release.possible(release.run(here, rng), there):
                return True
    return False


def test_every_public_name_of_mechanisms_is_classified() -> None:
    """A new mechanism must be added to RELEASES (and so be checked) or declared not a release."""
    assert set(mechanisms.__all__) == set(RELEASES) | NOT_RELEASES
    assert not set(RELEASES) & NOT_RELEASES


@pytest.mark.parametrize("name", sorted(RELEASES))
def test_no_release_has_a_support_that_depends_on_the_data(name: str) -> None:
    assert support_differs(RELEASES[name]) == (name in BROKEN)


def _data_derived_exponential() -> Release:
    """Lesson 06 before issue 23: candidates = the diagnoses that occur in the data."""

    def candidates(db: Database) -> list[str]:
        return sorted({p["diagnosis"] for p in db})

    def run(db: Database, rng: InsecureSeededRandom) -> object:
        scores = mechanisms.count_by_category([p["diagnosis"] for p in db], candidates(db))
        return mechanisms.exponential_mechanism(
            scores, 1.0, 1.0, candidates=candidates(db), rng=rng
        )

    def possible(output: object, db: Database) -> bool:
        scores = mechanisms.count_by_category([p["diagnosis"] for p in db], candidates(db))
        return _exponential_possible(candidates(db), scores)(output)

    return Release(run, possible)


def test_the_finder_catches_candidates_read_off_the_data() -> None:
    """The attacker's case from issue 23: on the population with one HIV patient the data-derived
    list can output HIV; without that patient it cannot — ε = ∞. With the public list both can
    (lesson 06 prints the two probabilities for a small clinic)."""
    assert support_differs(_data_derived_exponential(), draws=2_000)
    d, d_prime = _neighbours()
    public = _diagnosis_counts(d), _diagnosis_counts(d_prime)
    for counts in public:
        p_hiv = mechanisms.exponential_mechanism_probabilities(counts, 1.0, 1.0)[-1]
        assert p_hiv > 0  # HIV stays a candidate with or without an HIV patient


@pytest.mark.parametrize(
    "bad",
    [None, 6, np.int64(6), set(DIAGNOSES), frozenset(DIAGNOSES), "HIV", (), ("HIV", "HIV")],
)
def test_domains_that_are_not_public_lists_are_refused(bad) -> None:
    with pytest.raises((TypeError, ValueError)):
        mechanisms.exponential_mechanism([1.0] * 6, 1.0, 1.0, candidates=bad)
    with pytest.raises((TypeError, ValueError)):
        mechanisms.laplace_histogram(["HIV"], bad, 1.0)


def test_values_outside_the_domain_are_not_counted_and_never_raise() -> None:
    """An error on an unexpected value would itself tell whether such a person exists."""
    counts = mechanisms.count_by_category(["HIV", "flu", "HIV", "asthma"], DIAGNOSES)
    assert counts.tolist() == [0.0, 1.0, 0.0, 0.0, 0.0, 2.0]
    released = mechanisms.laplace_histogram(["flu"], DIAGNOSES, 1.0, rng=InsecureSeededRandom(0))
    assert released.shape == (6,)


def test_exponential_mechanism_returns_a_candidate_and_needs_one_score_each() -> None:
    picked = mechanisms.exponential_mechanism(
        [0.0, 100.0], 1.0, 1.0, candidates=("a", "b"), rng=InsecureSeededRandom(0)
    )
    assert picked == "b"
    with pytest.raises(ValueError, match="one score per candidate"):
        mechanisms.exponential_mechanism([0.0, 1.0, 2.0], 1.0, 1.0, candidates=("a", "b"))


@pytest.mark.parametrize(
    ("noisy_max", "noise"), [(pate.laplace_noisy_max, 0.5), (pate.gaussian_noisy_max, 4.0)]
)
def test_pate_noisy_max_can_output_every_class_on_both_neighbours(noisy_max, noise) -> None:
    """PATE's labels range over the public classes (the vote matrix's columns), whatever the
    votes: a class with no vote on one side is still chosen sometimes."""
    votes = torch.tensor([[3, 0, 0]])
    neighbour = torch.tensor([[2, 0, 0]])  # one teacher (trained on one partition) removed
    rng = InsecureSeededRandom(7)
    for v in (votes, neighbour):
        labels = {int(noisy_max(v, noise, rng)[0]) for _ in range(400)}
        assert labels == {0, 1, 2}
