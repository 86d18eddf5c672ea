"""DP analytics on a table: user-level contribution bounding, GROUP BY with partition selection,
means as noisy sum ÷ noisy count, and a DP quantile (lesson 23).

**Threat model.** A *trusted curator* holds the raw table and publishes only the outputs of these
functions (central DP). The protected unit is a **user**: the guarantee holds between any two
tables that differ in *all* rows of one user (add/remove a user). A user with many rows would
otherwise move every answer many times over, so the functions that take the table
(:func:`dp_count_by`, :func:`dp_group_mean`) first **bound contributions**: each user keeps at
most ``max_rows`` rows, chosen uniformly at random (:func:`bound_contributions`) — after that,
adding or removing a user changes at most ``max_rows`` rows, and every sensitivity below is stated
in those rows. :func:`dp_quantile` takes bare values, so it cannot bound anything: pass it values
already bounded to ``max_rows`` per user, and that ``max_rows``.

**Unknown keys.** A GROUP BY over a column such as a clinic's name has no public list of keys: a
walk-in clinic only one patient visited is itself a fact about that patient. Releasing the keys
that occur is ε = ∞ (the key's presence reveals the user). **Partition selection** releases a key
only if its noisy count reaches a threshold τ (Korolova et al. 2009; Wilson et al. 2020,
"Differentially Private SQL with Bounded User Contribution"): a key held by one user only is
released with probability at most δ, and that δ fixes τ (:func:`partition_threshold`).

Counts are integers, so the noise is the exact **discrete Laplace** of
:func:`course_lib.dp.mechanisms.sample_discrete_laplace` (no floating-point attack), the noise
OpenDP's ``make_laplace_threshold`` adds too. The same analysis as OpenDP's, by hand: the
``opendp_*`` functions run the library's measurements on the same bounded table so the two can be
checked against each other (OpenDP is imported only when they are called).

Randomness: secure by default (:mod:`course_lib.randomness`); pass
``rng=InsecureSeededRandom(seed)`` for reproducible teaching. OpenDP draws from its own secure
generator and cannot be seeded.
"""

from __future__ import annotations

import math
import numbers
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from course_lib.dp.mechanisms import (
    exponential_mechanism,
    laplace_mechanism,
    sample_discrete_laplace,
)
from course_lib.randomness import RandomSource, resolve_random_source
from course_lib.validation import (
    as_number,
    check_delta,
    check_epsilon,
    check_nonnegative_int,
    check_positive,
    check_positive_int,
)

__all__ = [
    "CLINICS",
    "Visit",
    "GroupMean",
    "make_visit_log",
    "rows_per_user",
    "bound_contributions",
    "threshold_delta",
    "partition_threshold",
    "dp_count_by",
    "dp_group_mean",
    "quantile_scores",
    "dp_quantile",
    "opendp_count_by",
    "opendp_quantile",
]

#: The clinics every patient may visit (public: the hospital's directory). Walk-in clinics are not
#: on it: their names appear only in the data — the unknown keys of partition selection.
CLINICS = (
    "general practice",
    "cardiology",
    "orthopaedics",
    "dermatology",
    "paediatrics",
    "oncology",
    "psychiatry",
    "radiology",
)
_CLINIC_WEIGHTS = (0.30, 0.16, 0.13, 0.11, 0.10, 0.08, 0.07, 0.05)  # a user's usual clinic
_TYPICAL_MINUTES = (12.0, 35.0, 25.0, 15.0, 20.0, 50.0, 45.0, 30.0)


@dataclass(frozen=True)
class Visit:
    """One row of the visit log: who came, to which clinic, for how many minutes."""

    user: int
    clinic: str
    minutes: float


@dataclass(frozen=True)
class GroupMean:
    """One released group of :func:`dp_group_mean`: noisy count, noisy sum and their ratio."""

    count: int
    total: float
    mean: float


# -- the data --------------------------------------------------------------------------------------


def _normal(rng: RandomSource) -> float:
    u1, u2 = rng.uniform(2).tolist()
    return math.sqrt(-2.0 * math.log(1.0 - u1)) * math.cos(2.0 * math.pi * u2)


def _weighted(rng: RandomSource, weights: Sequence[float]) -> int:
    u = float(rng.uniform(1).item())
    cumulative = 0.0
    for index, weight in enumerate(weights):
        cumulative += weight
        if u < cumulative:
            return index
    return len(weights) - 1


def make_visit_log(
    n_users: int = 1000,
    *,
    walk_in_users: int = 20,
    max_visits: int = 40,
    rng: RandomSource | None = None,
) -> list[Visit]:
    """Lesson 04's visit log grown into a table: one row per visit, ``(user, clinic, minutes)``.

    Each of ``n_users`` users (ids ``0 … n_users − 1``) makes 1 + Geometric visits (mean ≈ 2.5,
    heavy tail capped at ``max_visits``: a few users are frequent visitors), mostly to their usual
    clinic; minutes are log-normal around the clinic's typical length. ``walk_in_users`` users
    also visit a walk-in clinic whose name (``"walk-in #…"``) no one else's rows contain: keys that
    exist only in the data and single out their visitor.
    """
    n_users = check_positive_int(n_users, "n_users")
    walk_in_users = check_nonnegative_int(walk_in_users, "walk_in_users")
    max_visits = check_positive_int(max_visits, "max_visits")
    if walk_in_users > n_users:
        raise ValueError(f"walk_in_users ({walk_in_users}) cannot exceed n_users ({n_users})")
    rng = resolve_random_source(rng)
    visits: list[Visit] = []
    for user in range(n_users):
        u = float(rng.uniform(1).item())
        count = min(1 + int(math.log(1.0 - u) / math.log(0.6)), max_visits)
        usual = _weighted(rng, _CLINIC_WEIGHTS)
        for _ in range(count):
            clinic = usual if rng.uniform(1).item() < 0.7 else _weighted(rng, _CLINIC_WEIGHTS)
            minutes = _TYPICAL_MINUTES[clinic] * math.exp(0.4 * _normal(rng))
            visits.append(Visit(user, CLINICS[clinic], round(minutes, 1)))
    walkers = list(range(n_users))
    for i in range(walk_in_users):  # partial Fisher–Yates: distinct users
        j = i + rng.randbelow(n_users - i)
        walkers[i], walkers[j] = walkers[j], walkers[i]
        visits.append(Visit(walkers[i], f"walk-in #{100_000 + rng.randbelow(900_000)}", 20.0))
    return visits


def _check_visits(visits: object) -> list[Visit]:
    if not isinstance(visits, Sequence) or isinstance(visits, str | bytes):
        raise TypeError(f"visits must be a list of Visit rows, got {type(visits).__name__}")
    rows = list(visits)
    for row in rows:
        if not isinstance(row, Visit):
            raise TypeError(f"visits must hold Visit rows, got a {type(row).__name__}")
        if not math.isfinite(row.minutes):
            raise ValueError(f"a visit's minutes must be finite, got {row.minutes}")
        # A user id must name one user unambiguously: NaN equals nothing (not even itself), and
        # 7, 7.0, True and "7" would be one person counted as several — each given its own
        # max_rows — so ids are integers (bool excluded; NumPy integers equal Python ones).
        if isinstance(row.user, bool | np.bool_) or not isinstance(row.user, numbers.Integral):
            raise TypeError(
                f"a visit's user id must be an integer (one id per user), got {row.user!r} of type "
                f"{type(row.user).__name__}"
            )
    return rows


def rows_per_user(visits: Sequence[Visit]) -> Counter[int]:
    """How many rows each user has (user id → number of visits)."""
    return Counter(row.user for row in _check_visits(visits))


# -- contribution bounding -------------------------------------------------------------------------


def bound_contributions(
    visits: Sequence[Visit], max_rows: int, *, rng: RandomSource | None = None
) -> list[Visit]:
    """Keep at most ``max_rows`` rows of every user, a uniformly random subset (rows stay in their
    original order). After this, adding or removing one user changes at most ``max_rows`` rows.

    The subset must be random (not "the first k"), and chosen without looking at other users: the
    choice for one user then does not depend on anyone else's data.
    """
    rows = _check_visits(visits)
    max_rows = check_positive_int(max_rows, "max_rows")
    rng = resolve_random_source(rng)
    positions: dict[int, list[int]] = defaultdict(list)
    for position, row in enumerate(rows):
        positions[row.user].append(position)
    keep: list[int] = []
    for user_rows in positions.values():
        if len(user_rows) <= max_rows:
            keep.extend(user_rows)
            continue
        chosen = list(user_rows)
        for i in range(max_rows):  # partial Fisher–Yates with unbiased draws
            j = i + rng.randbelow(len(chosen) - i)
            chosen[i], chosen[j] = chosen[j], chosen[i]
        keep.extend(chosen[:max_rows])
    return [rows[p] for p in sorted(keep)]


# -- partition selection ---------------------------------------------------------------------------


def _exact_scale(max_rows: int, epsilon: float) -> Fraction:
    return Fraction(max_rows) / Fraction(epsilon)


def threshold_delta(scale: float | Fraction, threshold: int, max_rows: int) -> float:
    """δ of releasing keys whose count + discrete Laplace(``scale``) noise is ≥ ``threshold``.

    One user (≤ ``max_rows`` rows) can hold up to ``max_rows`` keys nobody else has, each with a
    count of at most ``max_rows``. Each such key is released with probability at most
    ``P[max_rows + Z ≥ threshold]``, and the union bound over the keys gives
    ``δ = max_rows · exp(−(threshold − max_rows)/scale) / (1 + exp(−1/scale))`` — the tail of the
    discrete Laplace ``P[Z ≥ m] = e^{−m/s} / (1 + e^{−1/s})`` for an integer ``m ≥ 1``.
    """
    scale_value = check_positive(float(scale), "scale")
    max_rows = check_positive_int(max_rows, "max_rows")
    threshold = check_positive_int(threshold, "threshold")
    if threshold <= max_rows:
        return 1.0  # one user alone reaches the threshold: no protection for their keys
    tail = math.exp(-(threshold - max_rows) / scale_value) / (1.0 + math.exp(-1.0 / scale_value))
    return min(1.0, max_rows * tail)


def partition_threshold(epsilon: float, delta: float, max_rows: int) -> tuple[Fraction, int]:
    """The noise scale and the smallest integer threshold τ for (ε, δ)-DP partition selection.

    Scale ``max_rows / ε`` (a user changes the counts by at most ``max_rows`` in L1), and τ is the
    smallest integer with :func:`threshold_delta` ≤ δ: roughly ``k + (k/ε)·ln(k / (2δ))``.
    """
    epsilon = check_epsilon(epsilon)
    delta = check_delta(delta)
    max_rows = check_positive_int(max_rows, "max_rows")
    scale = _exact_scale(max_rows, epsilon)
    s = float(scale)
    # solve k·e^{−(τ−k)/s} / (1 + e^{−1/s}) ≤ δ for τ, then step to the exact integer
    guess = max_rows + s * math.log(max_rows / (delta * (1.0 + math.exp(-1.0 / s))))
    threshold = max(max_rows + 1, math.ceil(guess) - 1)
    while threshold_delta(scale, threshold, max_rows) > delta:
        threshold += 1
    return scale, threshold


def dp_count_by(
    visits: Sequence[Visit],
    epsilon: float,
    delta: float,
    max_rows: int,
    *,
    rng: RandomSource | None = None,
) -> dict[str, int]:
    """(ε, δ)-DP ``SELECT clinic, COUNT(*) GROUP BY clinic`` at user level, keys unknown.

    Bounds each user to ``max_rows`` rows, adds discrete Laplace noise of scale ``max_rows/ε`` to
    the count of every key that occurs, and releases the keys whose noisy count is at least the
    threshold of :func:`partition_threshold` (with their noisy counts). A key held by one user
    is released with probability ≤ δ.
    """
    epsilon = check_epsilon(epsilon)
    delta = check_delta(delta)
    max_rows = check_positive_int(max_rows, "max_rows")
    rows = _check_visits(visits)
    rng = resolve_random_source(rng)
    scale, threshold = partition_threshold(epsilon, delta, max_rows)
    counts = Counter(row.clinic for row in bound_contributions(rows, max_rows, rng=rng))
    keys = sorted(counts)
    noise = sample_discrete_laplace(scale, len(keys), rng=rng).tolist()
    noisy = {key: counts[key] + z for key, z in zip(keys, noise, strict=True)}
    return {key: value for key, value in noisy.items() if value >= threshold}


def dp_group_mean(
    visits: Sequence[Visit],
    epsilon_count: float,
    epsilon_sum: float,
    delta: float,
    max_rows: int,
    *,
    lower: float,
    upper: float,
    rng: RandomSource | None = None,
) -> dict[str, GroupMean]:
    """(ε_count + ε_sum, δ)-DP mean minutes per clinic: a noisy sum divided by a noisy count.

    1. :func:`dp_count_by` with ``epsilon_count``: the released keys and their noisy counts.
    2. For those keys, the sum of minutes clamped to the public range [``lower``, ``upper``] and
       centred on its midpoint m, with Laplace noise for L1 sensitivity ``max_rows·(upper−lower)/2``
       and ``epsilon_sum`` (:func:`~course_lib.dp.mechanisms.laplace_mechanism`).
    3. mean = m + noisy centred sum / noisy count (post-processing: no extra cost), kept inside
       [lower, upper].

    The denominator is the *noisy* count, never the true n: the exact n of a group is itself a
    count with sensitivity ``max_rows`` and would be released without noise.
    """
    epsilon_count = check_epsilon(epsilon_count, "epsilon_count")
    epsilon_sum = check_epsilon(epsilon_sum, "epsilon_sum")
    delta = check_delta(delta)
    max_rows = check_positive_int(max_rows, "max_rows")
    lower, upper = as_number(lower, "lower"), as_number(upper, "upper")
    if not lower < upper:
        raise ValueError(f"need lower < upper for the clamping range, got [{lower}, {upper}]")
    rows = _check_visits(visits)
    rng = resolve_random_source(rng)
    bounded = bound_contributions(rows, max_rows, rng=rng)
    # count on the bounded table (bounding twice would pick another subset: do it once here)
    scale, threshold = partition_threshold(epsilon_count, delta, max_rows)
    counts = Counter(row.clinic for row in bounded)
    keys = sorted(counts)
    noise = sample_discrete_laplace(scale, len(keys), rng=rng).tolist()
    released = [
        (key, counts[key] + z) for key, z in zip(keys, noise, strict=True)
        if counts[key] + z >= threshold
    ]  # fmt: skip
    if not released:
        return {}
    middle = (lower + upper) / 2.0
    sums: defaultdict[str, float] = defaultdict(float)
    for row in bounded:
        sums[row.clinic] += min(max(row.minutes, lower), upper) - middle
    centred = np.array([sums[key] for key, _ in released], dtype=np.float64)
    sensitivity = max_rows * (upper - lower) / 2.0
    noisy_sums = np.asarray(laplace_mechanism(centred, sensitivity, epsilon_sum, rng=rng))
    result = {}
    for (key, count), noisy_sum in zip(released, noisy_sums.tolist(), strict=True):
        mean = middle + noisy_sum / max(count, 1)
        total = noisy_sum + middle * count
        result[key] = GroupMean(int(count), float(total), float(min(max(mean, lower), upper)))
    return result


# -- quantiles -------------------------------------------------------------------------------------


def _check_alpha(alpha: float) -> float:
    alpha = as_number(alpha, "alpha")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha is the quantile's level, in [0, 1]; got {alpha}")
    return alpha


def _check_values(values: object) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel() if not isinstance(values, str) else None
    if array is None:
        raise TypeError("values must be numbers")
    if not np.all(np.isfinite(array)):
        raise ValueError("values contain NaN or infinity")
    return array


def _check_candidates(candidates: object) -> np.ndarray:
    if candidates is None or isinstance(candidates, str | bytes | set | frozenset):
        raise TypeError(
            "candidates must be an ordered list of public values, fixed before looking at the data"
        )
    array = _check_values(candidates)
    if array.size == 0:
        raise ValueError("candidates must not be empty")
    if np.any(np.diff(array) <= 0):
        raise ValueError("candidates must be strictly increasing")
    return array


def quantile_scores(
    values: Sequence[float] | np.ndarray, candidates: Any, alpha: float
) -> np.ndarray:
    """Utility of each candidate as the ``alpha``-quantile: ``−|(1−α)·#below − α·#above|``.

    ``#below`` counts values strictly below the candidate, ``#above`` strictly above (Smith 2011;
    OpenDP's ``make_quantile_score_candidates`` up to sign and a scale factor). The true quantile
    scores 0 (the best); adding or removing one value moves every score by at most max(α, 1−α).
    """
    data = _check_values(values)
    grid = _check_candidates(candidates)
    alpha = _check_alpha(alpha)
    sorted_data = np.sort(data)
    below = np.searchsorted(sorted_data, grid, side="left")
    above = data.size - np.searchsorted(sorted_data, grid, side="right")
    return -np.abs((1.0 - alpha) * below - alpha * above)


def dp_quantile(
    values: Sequence[float] | np.ndarray,
    alpha: float,
    epsilon: float,
    *,
    candidates: Any,
    max_rows: int = 1,
    rng: RandomSource | None = None,
) -> float:
    """An ε-DP ``alpha``-quantile: the exponential mechanism over public ``candidates``.

    Scores are :func:`quantile_scores`; a user with ≤ ``max_rows`` values moves each score by at
    most ``max_rows·max(α, 1−α)``, the sensitivity used. Bound the rows first
    (:func:`bound_contributions`); ``candidates`` is a public, increasing grid (the answer can only
    be one of them, so its spacing is a floor on the error).
    """
    epsilon = check_epsilon(epsilon)
    max_rows = check_positive_int(max_rows, "max_rows")
    alpha = _check_alpha(alpha)
    grid = _check_candidates(candidates)
    scores = quantile_scores(values, grid, alpha)
    sensitivity = max_rows * max(alpha, 1.0 - alpha)
    chosen = exponential_mechanism(
        scores, sensitivity, epsilon, candidates=grid.tolist(), rng=resolve_random_source(rng)
    )
    assert isinstance(chosen, float)
    return chosen


# -- the same with OpenDP --------------------------------------------------------------------------


def _opendp() -> Any:
    try:
        import opendp.prelude as dp
    except ImportError as error:  # pragma: no cover - the [dp] extra installs it
        raise ImportError("OpenDP is needed here: pip install 'private-ai[dp]'") from error
    dp.enable_features("contrib")
    return dp


def opendp_count_by(
    bounded: Sequence[Visit], scale: float | Fraction, threshold: int, max_rows: int
) -> tuple[dict[str, int], tuple[float, float]]:
    """OpenDP's ``count_by >> laplace_threshold`` on an already bounded table.

    Returns the released noisy counts and OpenDP's own (ε, δ) for a user with ``max_rows`` rows
    (symmetric distance ``max_rows``), from the measurement's privacy map.
    """
    rows = _check_visits(bounded)
    max_rows = check_positive_int(max_rows, "max_rows")
    scale_value = check_positive(float(scale), "scale")
    threshold = check_positive_int(threshold, "threshold")
    worst = max(rows_per_user(rows).values(), default=0)
    if worst > max_rows:
        raise ValueError(f"a user has {worst} rows > max_rows = {max_rows}: bound them first")
    dp = _opendp()
    space = dp.vector_domain(dp.atom_domain(T=str)), dp.symmetric_distance()
    measurement = (
        space
        >> dp.t.then_count_by()
        >> dp.m.then_laplace_threshold(scale=scale_value, threshold=threshold)
    )
    released = measurement([row.clinic for row in rows])
    epsilon, delta = measurement.map(max_rows)
    return {str(k): int(v) for k, v in released.items()}, (float(epsilon), float(delta))


def opendp_quantile(
    values: Sequence[float] | np.ndarray,
    alpha: float,
    epsilon: float,
    *,
    candidates: Any,
    max_rows: int = 1,
    selection: str = "exponential",
) -> tuple[float, float]:
    """OpenDP's ``make_private_quantile`` at the same ε as :func:`dp_quantile`.

    ``selection="exponential"`` asks for Gumbel noisy-max (zCDP output measure), which *is* the
    exponential mechanism — the same output distribution as :func:`dp_quantile`; its ρ = ε²/8
    is returned as ε by the conversion ε = √(8ρ). ``"permute_and_flip"`` is OpenDP's pure-DP
    default (exponential noise; McKenna & Sheldon 2020), never less accurate at equal ε.
    Returns (the released candidate, ε from OpenDP's privacy map at ``max_rows``).
    """
    epsilon = check_epsilon(epsilon)
    alpha = _check_alpha(alpha)
    max_rows = check_positive_int(max_rows, "max_rows")
    grid = _check_candidates(candidates)
    data = _check_values(values)
    if selection not in ("exponential", "permute_and_flip"):
        raise ValueError(
            f"selection must be 'exponential' or 'permute_and_flip', got {selection!r}"
        )
    dp = _opendp()
    space = dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.symmetric_distance()
    # both selections are ε-DP with noise scale 2Δ/ε, Δ = max_rows·max(α, 1−α) (unscaled scores)
    scale = 2.0 * max_rows * max(alpha, 1.0 - alpha) / epsilon
    if selection == "exponential":
        measure = dp.zero_concentrated_divergence()
    else:
        measure = dp.max_divergence()
    measurement = dp.m.make_private_quantile(
        *space, measure, candidates=grid.tolist(), alpha=alpha, scale=scale
    )
    spent = float(measurement.map(max_rows))
    if selection == "exponential":
        spent = math.sqrt(8.0 * spent)  # the exponential mechanism is ε²/8-zCDP (Cesar & Rogers)
    return float(measurement(data.tolist())), spent
