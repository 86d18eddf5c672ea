"""DP synthetic data from noisy 2-way marginals and a Chow–Liu tree (lesson 23).

**Method** (the "select–measure–generate" recipe of MST, McKenna, Miklau & Sheldon 2021, made
simpler): for a table of ``d`` discrete columns,

1. **measure** every 2-way marginal (the contingency table of each pair of columns) with exact
   discrete Gaussian noise (:func:`noisy_pair_marginals`). One person is one row, so each marginal
   changes by 1 in one cell (L2 sensitivity 1) and ``m = d(d−1)/2`` of them compose to
   ``ρ = m / (2σ²)``-zCDP — the Rényi curve of ``m`` Gaussian releases, which the course's
   accountant (:mod:`course_lib.dp.accounting`, sample rate 1) turns into (ε, δ)
   (:func:`sigma_for_budget`);
2. **post-process** (free): make the noisy tables consistent — non-negative, one total, and the
   same 1-way marginal of a column in every table it appears in (:func:`consistent_marginals`);
3. **select** a tree over the columns from the noisy tables: the maximum spanning tree of their
   mutual information (Chow & Liu 1968) — post-processing too, so no budget is spent on it;
4. **generate** records by sampling the root's 1-way marginal, then each child given its parent
   (:func:`sample_tree`).

Everything after step 1 reads only noisy tables, so the synthetic records are as private as the
measurements: (ε, δ)-DP for each row of the private table, whatever is done with them.

Sampling the synthetic records is post-processing and needs no secret randomness; it is seeded
from the :class:`~course_lib.randomness.RandomSource` like the rest (secure by default).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from course_lib.dp.accounting import rdp_to_epsilon, subsampled_gaussian_rdp
from course_lib.dp.calibration import smallest_sufficient
from course_lib.dp.mechanisms import sample_discrete_gaussian
from course_lib.randomness import RandomSource, resolve_random_source
from course_lib.validation import check_delta, check_epsilon, check_positive, check_positive_int

__all__ = [
    "Pair",
    "SyntheticRelease",
    "discretise",
    "check_table",
    "pair_marginal",
    "noisy_pair_marginals",
    "gaussian_epsilon_for",
    "sigma_for_budget",
    "consistent_marginals",
    "mutual_information",
    "chow_liu_tree",
    "sample_tree",
    "synthesize",
    "total_variation",
    "marginal_errors",
    "distance_to_closest_record",
]

Pair = tuple[int, int]
IntTable = npt.NDArray[np.int64]
Tables = dict[Pair, npt.NDArray[np.float64]]


@dataclass(frozen=True)
class SyntheticRelease:
    """What :func:`synthesize` publishes, with the privacy it cost."""

    records: IntTable  #: the synthetic table, shape (n_samples, d)
    tree: list[Pair]  #: the Chow–Liu tree's (parent, child) edges, root first
    sigma: float  #: the discrete Gaussian noise's standard deviation per marginal cell
    epsilon: float  #: the (ε, δ) guarantee for one row of the private table
    delta: float
    marginals: int  #: how many 2-way marginals were measured


# -- the table ---------------------------------------------------------------------------------


def discretise(values: npt.ArrayLike, edges: Sequence[Sequence[float]]) -> IntTable:
    """Bin each column of ``values`` (shape (n, d)) at its public ``edges`` (inner bin edges).

    Column j gets ``len(edges[j]) + 1`` levels; values below the first edge fall in level 0,
    values at or above the last in the top level. The edges must be fixed before looking at the
    data (quantiles of the private table would leak it).
    """
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"values must be a table of shape (n, d), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("values contain NaN or infinity")
    if len(edges) != array.shape[1]:
        raise ValueError(f"give one list of edges per column: {len(edges)} for {array.shape[1]}")
    columns = []
    for j, column_edges in enumerate(edges):
        e = np.asarray(column_edges, dtype=np.float64)
        if e.ndim != 1 or e.size == 0 or np.any(np.diff(e) <= 0) or not np.all(np.isfinite(e)):
            raise ValueError(f"the edges of column {j} must be a strictly increasing list")
        columns.append(np.searchsorted(e, array[:, j], side="right"))
    return np.stack(columns, axis=1).astype(np.int64)


def check_table(table: npt.ArrayLike, sizes: Sequence[int]) -> IntTable:
    """``table`` as an (n, d) integer array whose column j takes values in ``0 … sizes[j] − 1``."""
    array = np.asarray(table)
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"a table has shape (n ≥ 1, d), got shape {array.shape}")
    if array.dtype.kind not in "iu":
        raise TypeError(f"a discrete table holds integers, got {array.dtype}")
    sizes = [check_positive_int(s, "each column's number of levels") for s in sizes]
    if len(sizes) != array.shape[1]:
        raise ValueError(f"{len(sizes)} column sizes for a table of {array.shape[1]} columns")
    if array.shape[1] < 2:
        raise ValueError("a table needs at least 2 columns to have 2-way marginals")
    for j, size in enumerate(sizes):
        if array[:, j].min() < 0 or array[:, j].max() >= size:
            raise ValueError(f"column {j} has values outside 0 … {size - 1}")
    return array.astype(np.int64)


def pair_marginal(table: IntTable, sizes: Sequence[int], pair: Pair) -> npt.NDArray[np.float64]:
    """Exact counts of the pair of columns ``pair``: shape (sizes[i], sizes[j])."""
    i, j = pair
    counts = np.zeros((sizes[i], sizes[j]), dtype=np.float64)
    np.add.at(counts, (table[:, i], table[:, j]), 1.0)
    return counts


# -- step 1: measure -----------------------------------------------------------------------------


def gaussian_epsilon_for(sigma: float, marginals: int, delta: float) -> float:
    """ε at ``delta`` of ``marginals`` Gaussian releases of L2 sensitivity 1 and noise σ, by the
    course's Rényi accountant (sample rate 1: no subsampling)."""
    sigma = check_positive(sigma, "sigma")
    marginals = check_positive_int(marginals, "marginals")
    delta = check_delta(delta)
    return rdp_to_epsilon(subsampled_gaussian_rdp(sigma, 1.0, marginals), delta)[0]


def sigma_for_budget(epsilon: float, delta: float, marginals: int) -> float:
    """The smallest σ (to 0.1 %, rounded up) whose ``marginals`` releases cost at most (ε, δ) in
    total (bisection: :func:`course_lib.dp.calibration.smallest_sufficient`)."""
    epsilon = check_epsilon(epsilon)
    delta = check_delta(delta)
    marginals = check_positive_int(marginals, "marginals")
    return smallest_sufficient(
        lambda sigma: gaussian_epsilon_for(sigma, marginals, delta),
        epsilon,
        highest=1e4,
        setting=f" for {marginals} marginals at δ = {delta}",
    )


def noisy_pair_marginals(
    table: IntTable,
    sizes: Sequence[int],
    sigma: float,
    *,
    pairs: Sequence[Pair] | None = None,
    rng: RandomSource | None = None,
) -> Tables:
    """Every 2-way marginal (or those of ``pairs``) plus exact discrete Gaussian noise of std σ
    in each cell (Canonne, Kamath & Steinke 2020): ``len(pairs)`` releases of L2 sensitivity 1."""
    table = check_table(table, sizes)
    sigma = check_positive(sigma, "sigma")
    d = table.shape[1]
    chosen = list(itertools.combinations(range(d), 2)) if pairs is None else list(pairs)
    for i, j in chosen:
        if not 0 <= i < j < d:
            raise ValueError(f"a pair is two column indices i < j below {d}, got {(i, j)}")
    rng = resolve_random_source(rng)
    noisy: Tables = {}
    for pair in chosen:
        exact = pair_marginal(table, sizes, pair)
        noise = sample_discrete_gaussian(sigma, exact.shape, rng=rng).numpy()
        noisy[pair] = exact + noise
    return noisy


# -- step 2: consistency -------------------------------------------------------------------------


def consistent_marginals(tables: Tables, sizes: Sequence[int], rounds: int = 50) -> Tables:
    """Post-process noisy 2-way tables into probability tables that agree with each other.

    1. every column's 1-way marginal is estimated as the average, over the tables it appears in,
       of their marginalisation (averaging m noisy estimates divides the noise variance by m);
       negative entries are clipped and the result normalised;
    2. each table is clipped at 0 and rescaled, rows then columns, to match both 1-way estimates
       (``rounds`` of iterative proportional fitting).
    """
    rounds = check_positive_int(rounds, "rounds")
    d = len(sizes)
    totals: list[npt.NDArray[np.float64]] = [np.zeros(s) for s in sizes]
    seen = [0] * d
    for (i, j), counts in tables.items():
        total = max(float(counts.sum()), 1.0)
        totals[i] = totals[i] + counts.sum(axis=1) / total
        totals[j] = totals[j] + counts.sum(axis=0) / total
        seen[i] += 1
        seen[j] += 1
    one_way = []
    for k in range(d):
        p = np.clip(totals[k] / max(seen[k], 1), 1e-9, None)
        one_way.append(p / p.sum())
    result: Tables = {}
    for (i, j), counts in tables.items():
        p = np.clip(counts, 0.0, None) + 1e-9
        p = p / p.sum()
        for _ in range(rounds):
            p = p * (one_way[i] / p.sum(axis=1))[:, None]
            p = p * (one_way[j] / p.sum(axis=0))[None, :]
        result[(i, j)] = p / p.sum()
    return result


# -- step 3: the tree ----------------------------------------------------------------------------


def mutual_information(joint: npt.NDArray[np.float64]) -> float:
    """I(X; Y) in nats of a 2-D probability table."""
    p = np.asarray(joint, dtype=np.float64)
    if p.ndim != 2 or np.any(p < 0) or not math.isclose(float(p.sum()), 1.0, rel_tol=1e-6):
        raise ValueError("mutual_information needs a 2-D table of probabilities summing to 1")
    outer = p.sum(axis=1, keepdims=True) * p.sum(axis=0, keepdims=True)
    mask = p > 0
    return float(np.sum(p[mask] * np.log(p[mask] / outer[mask])))


def chow_liu_tree(probabilities: Tables, d: int, root: int = 0) -> list[Pair]:
    """The maximum-mutual-information spanning tree (Prim's algorithm), as (parent, child) edges
    in the order a sampler visits them, starting at ``root``."""
    d = check_positive_int(d, "d")
    weight = {pair: mutual_information(p) for pair, p in probabilities.items()}
    in_tree, edges = {root}, []
    while len(in_tree) < d:
        best: tuple[float, Pair] | None = None
        for (i, j), w in weight.items():
            if (i in in_tree) != (j in in_tree):
                edge = (i, j) if i in in_tree else (j, i)
                if best is None or w > best[0]:
                    best = (w, edge)
        if best is None:
            raise ValueError("the measured pairs do not connect every column")
        edges.append(best[1])
        in_tree.add(best[1][1])
    return edges


# -- step 4: generate ----------------------------------------------------------------------------


def _numpy_generator(rng: RandomSource) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(rng.bytes(16), "little"))


def sample_tree(
    probabilities: Tables,
    tree: Sequence[Pair],
    n_samples: int,
    *,
    rng: RandomSource | None = None,
) -> IntTable:
    """``n_samples`` records from the tree model: the root from its 1-way marginal, then every
    child from P(child | parent) of the edge's 2-way table."""
    n_samples = check_positive_int(n_samples, "n_samples")
    if not tree:
        raise ValueError("the tree needs at least one edge")
    generator = _numpy_generator(resolve_random_source(rng))

    def joint(parent: int, child: int) -> npt.NDArray[np.float64]:
        if (parent, child) in probabilities:
            return probabilities[(parent, child)]
        return probabilities[(child, parent)].T

    root = tree[0][0]
    d = len(tree) + 1
    records = np.zeros((n_samples, d), dtype=np.int64)
    root_p = joint(root, tree[0][1]).sum(axis=1)
    records[:, root] = generator.choice(root_p.size, size=n_samples, p=root_p / root_p.sum())
    for parent, child in tree:
        table = joint(parent, child)
        conditional = table / table.sum(axis=1, keepdims=True)
        cumulative = np.cumsum(conditional, axis=1)
        u = generator.random(n_samples)[:, None]
        rows = cumulative[records[:, parent]]
        records[:, child] = np.minimum((u >= rows).sum(axis=1), table.shape[1] - 1)
    return records


def synthesize(
    table: IntTable,
    sizes: Sequence[int],
    epsilon: float,
    delta: float,
    n_samples: int | None = None,
    *,
    rng: RandomSource | None = None,
) -> SyntheticRelease:
    """(ε, δ)-DP synthetic records (one row = one person): all 2-way marginals with σ from
    :func:`sigma_for_budget`, consistency, Chow–Liu tree, sampling. ``n_samples`` defaults to the
    table's size (itself a count that is not protected: pass a public or noisy number instead
    when the size is secret)."""
    epsilon = check_epsilon(epsilon)
    delta = check_delta(delta)
    table = check_table(table, sizes)
    n_samples = table.shape[0] if n_samples is None else check_positive_int(n_samples, "n_samples")
    rng = resolve_random_source(rng)
    d = table.shape[1]
    marginals = d * (d - 1) // 2
    sigma = sigma_for_budget(epsilon, delta, marginals)
    noisy = noisy_pair_marginals(table, sizes, sigma, rng=rng)
    probabilities = consistent_marginals(noisy, sizes)
    tree = chow_liu_tree(probabilities, d)
    records = sample_tree(probabilities, tree, n_samples, rng=rng)
    spent = gaussian_epsilon_for(sigma, marginals, delta)
    return SyntheticRelease(records, tree, sigma, spent, delta, marginals)


# -- judging it ----------------------------------------------------------------------------------


def total_variation(p: npt.ArrayLike, q: npt.ArrayLike) -> float:
    """Total-variation distance ½·Σ|p − q| between two tables of counts, each normalised first."""
    a = np.asarray(p, dtype=np.float64)
    b = np.asarray(q, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"tables of different shapes: {a.shape} and {b.shape}")
    if np.any(a < 0) or np.any(b < 0) or a.sum() <= 0 or b.sum() <= 0:
        raise ValueError("total_variation needs non-negative tables with a positive total")
    return 0.5 * float(np.abs(a / a.sum() - b / b.sum()).sum())


def marginal_errors(real: IntTable, synthetic: IntTable, sizes: Sequence[int]) -> dict[Pair, float]:
    """Total-variation distance between the real and synthetic 2-way marginal of every pair."""
    real = check_table(real, sizes)
    synthetic = check_table(synthetic, sizes)
    return {
        pair: total_variation(
            pair_marginal(real, sizes, pair), pair_marginal(synthetic, sizes, pair)
        )
        for pair in itertools.combinations(range(real.shape[1]), 2)
    }


def distance_to_closest_record(candidates: IntTable, release: IntTable) -> npt.NDArray[np.int64]:
    """For each candidate record, the Hamming distance to the nearest released record.

    A membership-inference score (negate it: closer = "member"): a release that copies its
    training records puts every member at distance 0.
    """
    a = np.asarray(candidates)
    b = np.asarray(release)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or b.shape[0] == 0:
        raise ValueError(f"need two tables with the same columns, got {a.shape} and {b.shape}")
    best = np.full(a.shape[0], a.shape[1], dtype=np.int64)
    for start in range(0, b.shape[0], 512):
        block = b[start : start + 512]
        distances = (a[:, None, :] != block[None, :, :]).sum(axis=2)
        best = np.minimum(best, distances.min(axis=1))
    return best
