"""Differential-privacy mechanisms: randomized response, Laplace, Gaussian, exponential.

A *mechanism* answers a question about a database with just enough randomness that the answer
hardly depends on any one person. How much randomness is set by two numbers:

- the **sensitivity** Δ of the question: how far one person can move the exact answer;
- the **privacy budget** ε (and, for the Gaussian, a failure probability δ).

Where the noise comes from matters as much as how much there is:

- It comes from :mod:`course_lib.randomness`: cryptographically secure by default, or
  ``rng=InsecureSeededRandom(seed)`` (labelled insecure) to make a lesson reproducible.
- The textbook Laplace sampler, ``value + b·sign(u)·log(1 - 2|u|)`` in floating point, is
  **broken**: the set of floating-point numbers it can output depends on ``value``, so a single
  output can reveal the exact answer (Mironov 2012, "On significance of the least significant bits
  for differential privacy"). It is kept here as :func:`naive_laplace`, together with the attack
  (:func:`naive_laplace_could_output`), for the lesson that demonstrates it.
- The mechanisms used by default are immune: they round the exact answer to a fine grid of
  multiples of a power of two, add *integer* noise drawn exactly — discrete Laplace or discrete
  Gaussian, sampled with integer arithmetic from random bits as in Canonne, Kamath & Steinke
  (2020, "The Discrete Gaussian for Differential Privacy") — and scale back. Every output is a
  grid point, whichever database produced it, so the low bits carry no information.

**The domain of every release is public.** What a mechanism *can* output — the grid of a Laplace
or Gaussian answer, the bins of a histogram, the candidates of the exponential mechanism — must be
fixed before anyone looks at the data and be the same for every database. If it is read off the
data (the diagnoses that occur, the range ``min``–``max`` of the values, ``np.histogram``'s
automatic bins), a neighbouring database can make an output possible on one side and impossible on
the other — an infinite privacy-loss ratio, ε = ∞, whatever noise is added. So
:func:`exponential_mechanism` takes its ``candidates`` and :func:`laplace_histogram` its
``domain`` explicitly; both refuse what is recognisably not a public list (``None``, an ``int``
bin count, an unordered ``set``, duplicates) and the result's support never depends on the data:
values outside the domain are simply not counted (an error would itself reveal that such a value
exists). The tests check every release of this module on neighbouring databases for the same
support.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from fractions import Fraction

import numpy as np
import torch

from course_lib.dp.calibration import smallest_sufficient
from course_lib.randomness import RandomSource, resolve_random_source
from course_lib.validation import (
    as_number,
    check_delta,
    check_epsilon,
    check_nonnegative_int,
    check_positive,
    check_positive_int,
    check_sensitivity,
)

__all__ = [
    "randomized_response",
    "randomized_response_epsilon",
    "truth_probability_for_epsilon",
    "debiased_estimate",
    "randomized_response_std",
    "sample_discrete_laplace",
    "sample_discrete_gaussian",
    "discrete_laplace_pmf",
    "discrete_gaussian_pmf",
    "laplace_mechanism",
    "gaussian_mechanism",
    "gaussian_sigma_classic",
    "gaussian_sigma_analytic",
    "gaussian_delta",
    "grid_spacing",
    "exponential_mechanism",
    "exponential_mechanism_probabilities",
    "count_by_category",
    "laplace_histogram",
    "naive_laplace",
    "naive_laplace_could_output",
]

Number = int | float
Values = Number | Sequence[Number] | np.ndarray | torch.Tensor

# -- input conversion (the checks live in course_lib.validation) ----------------------------------


def _as_float_tensor(value: Values, name: str = "value") -> torch.Tensor:
    """``value`` (numbers, NumPy integers included) as float64; ``TypeError`` for booleans and
    non-numbers (the rule of :mod:`course_lib.validation`), ``ValueError`` for NaN and ±∞."""
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool or value.dtype.is_complex:
            raise TypeError(f"{name} must hold numbers, got a {value.dtype} tensor")
        tensor = value.detach().to(torch.float64)
    else:  # via NumPy so that Python floats keep double precision
        array = np.asarray(value)
        if array.dtype.kind not in "iuf":
            raise TypeError(f"{name} must hold numbers (not booleans), got {array.dtype} values")
        tensor = torch.from_numpy(np.array(array, dtype=np.float64))
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} contains NaN or infinity; a mechanism needs finite answers")
    return tensor


def _like_input(result: torch.Tensor, value: Values) -> float | torch.Tensor:
    """Return a Python float for a scalar input, a float64 tensor otherwise (on the input's device:
    the exact noise itself is drawn on the CPU, from integer arithmetic)."""
    if isinstance(value, int | float | np.integer | np.floating):
        return float(result)
    if isinstance(value, torch.Tensor):
        return result.to(value.device)
    return result


# -- randomized response (local DP) ----------------------------------------------------------------


def truth_probability_for_epsilon(epsilon: float) -> float:
    """The probability of answering truthfully that makes randomized response exactly ε-DP.

    With probability ``p`` answer truthfully, otherwise answer a fair coin. Then
    ``P[yes | yes] = p + (1 - p)/2`` and ``P[yes | no] = (1 - p)/2``; their ratio is ``e^ε`` when
    ``p = (e^ε - 1) / (e^ε + 1)``, which is ``tanh(ε/2)``.
    """
    return math.tanh(check_epsilon(epsilon) / 2.0)


def _validate_truth_probability(p_truth: float) -> float:
    p_truth = as_number(p_truth, "p_truth")
    if not 0.0 < p_truth < 1.0:
        raise ValueError(
            f"p_truth is the probability of answering truthfully and must lie strictly between "
            f"0 and 1 (1 would give no privacy, 0 no information), got {p_truth}"
        )
    return p_truth


def randomized_response_epsilon(p_truth: float = 0.5) -> float:
    """The ε of randomized response that tells the truth with probability ``p_truth``.

    The classic two-coin protocol (``p_truth = 1/2``: heads → truth, tails → a second coin) has
    ``P[yes | yes] = 3/4`` and ``P[yes | no] = 1/4``, so ``ε = ln 3``.
    """
    p_truth = _validate_truth_probability(p_truth)
    return math.log((1.0 + p_truth) / (1.0 - p_truth))


def randomized_response(
    answers: Values, *, p_truth: float = 0.5, rng: RandomSource | None = None
) -> torch.Tensor:
    """Each person privatises their own yes/no answer (local differential privacy).

    With probability ``p_truth`` the true answer is reported; otherwise a fair coin is. The result
    is a boolean tensor shaped like ``answers`` (which must hold only 0/1 or True/False).
    """
    p_truth = _validate_truth_probability(p_truth)
    rng = resolve_random_source(rng)
    truth = torch.as_tensor(answers)
    if truth.dtype != torch.bool:
        if not torch.isin(
            truth, torch.tensor([0, 1], dtype=truth.dtype, device=truth.device)
        ).all():
            raise ValueError("randomized response needs yes/no answers: only 0/1 or True/False")
        truth = truth.to(torch.bool)
    # the coins come from the (CPU) random source and follow the answers to their device
    tell_truth = rng.bernoulli(p_truth, truth.shape).to(truth.device)
    coin = rng.bernoulli(0.5, truth.shape).to(truth.device)
    return torch.where(tell_truth, truth, coin)


def debiased_estimate(noisy_answers: Values, p_truth: float = 0.5) -> float:
    """Unbiased estimate of the true fraction of "yes" from randomized-response answers.

    ``E[observed] = p·π + (1 - p)/2``, so ``π̂ = (observed - (1 - p)/2) / p``. It can fall outside
    [0, 1] for small samples; that is the price of unbiasedness, not a bug.
    """
    p_truth = _validate_truth_probability(p_truth)
    noisy = torch.as_tensor(noisy_answers).to(torch.float64)
    if noisy.numel() == 0:
        raise ValueError("debiased_estimate needs at least one answer")
    observed = noisy.mean().item()
    return (observed - (1.0 - p_truth) / 2.0) / p_truth


def randomized_response_std(n: int, p_truth: float = 0.5) -> float:
    """Standard deviation of :func:`debiased_estimate` over ``n`` people: the cost of the noise.

    A "yes" person answers yes with probability ``a = (1 + p)/2``, a "no" person with
    ``b = (1 - p)/2``; both answers have variance ``a(1 - a) = b(1 - b) = (1 - p²)/4``. Dividing the
    mean of ``n`` answers by ``p`` gives variance ``(1 - p²) / (4 n p²)``, whatever the true
    fraction: it shrinks like ``1/√n`` and blows up as ``p`` (hence ε) goes to 0.
    """
    p_truth = _validate_truth_probability(p_truth)
    n = check_positive_int(n, "n, the number of people,")
    return math.sqrt((1.0 - p_truth**2) / (4.0 * n)) / p_truth


# -- exact discrete samplers (Canonne, Kamath & Steinke 2020) --------------------------------------


class _RandomBits:
    """Exact uniform integers from a :class:`RandomSource`, buffered so that drawing is cheap.

    **Timing side channel.** The samplers below are rejection and counting loops: how many random
    bits (and how much time) a draw uses grows with ``|output|`` (the geometric part counts up to
    it) and varies with the rejections. Someone who can time a release therefore learns something
    about the noise — hence about the true answer — that ε does not account for. ``bits_used``
    exposes the count so the tests can show it. Constant-time exact sampling (e.g. fixed-length
    table lookups, Micciancio & Walter 2017) is not implemented here; release results in a way
    that does not reveal how long they took (e.g. in batches, at fixed times).
    """

    _CHUNK_BYTES = 256

    def __init__(self, rng: RandomSource) -> None:
        self._rng = rng
        self._pool = 0
        self._bits = 0
        self.bits_used = 0

    def getrandbits(self, k: int) -> int:
        self.bits_used += k
        while self._bits < k:
            fresh = int.from_bytes(self._rng.bytes(self._CHUNK_BYTES), "little")
            self._pool |= fresh << self._bits
            self._bits += 8 * self._CHUNK_BYTES
        value = self._pool & ((1 << k) - 1)
        self._pool >>= k
        self._bits -= k
        return value

    def randbelow(self, n: int) -> int:
        """Uniform in ``[0, n)`` by rejection (no modulo bias)."""
        k = n.bit_length()
        while True:
            value = self.getrandbits(k)
            if value < n:
                return value

    def bernoulli(self, numerator: int, denominator: int) -> bool:
        """True with probability exactly ``numerator / denominator``."""
        return self.randbelow(denominator) < numerator

    def bernoulli_exp(self, numerator: int, denominator: int) -> bool:
        """True with probability exactly ``exp(-numerator / denominator)`` (CKS Algorithm 1)."""
        while numerator > denominator:  # exp(-γ) = exp(-1)^⌊γ⌋ · exp(-(γ - ⌊γ⌋))
            if not self._bernoulli_exp_at_most_one(1, 1):
                return False
            numerator -= denominator
        return self._bernoulli_exp_at_most_one(numerator, denominator)

    def _bernoulli_exp_at_most_one(self, numerator: int, denominator: int) -> bool:
        # For γ in [0, 1]: count K until Bernoulli(γ/K) fails; P[K odd] = exp(-γ).
        k = 1
        while self.bernoulli(numerator, denominator * k):
            k += 1
        return k % 2 == 1

    def discrete_laplace(self, scale: Fraction) -> int:
        """One draw with P[x] ∝ exp(-|x| / scale), scale = t/s (CKS Algorithm 2)."""
        t, s = scale.numerator, scale.denominator
        while True:
            u = self.randbelow(t)
            if not self.bernoulli_exp(u, t):
                continue
            v = 0
            while self.bernoulli_exp(1, 1):
                v += 1
            y = (u + t * v) // s  # geometric with success probability 1 - exp(-s/t)
            negative = self.getrandbits(1) == 1
            if negative and y == 0:
                continue  # otherwise 0 would be counted twice
            return -y if negative else y

    def discrete_gaussian(self, sigma_squared: Fraction) -> int:
        """One draw with P[x] ∝ exp(-x² / (2σ²)) (CKS Algorithm 3: rejection from Laplace)."""
        t = math.isqrt(sigma_squared.numerator * sigma_squared.denominator)
        t = t // sigma_squared.denominator + 1  # ⌊σ⌋ + 1
        while True:
            y = self.discrete_laplace(Fraction(t))
            gamma = (abs(y) - sigma_squared / t) ** 2 / (2 * sigma_squared)
            if self.bernoulli_exp(gamma.numerator, gamma.denominator):
                return y


def _positive_fraction(value: Number | Fraction, name: str) -> Fraction:
    # A float converts exactly: every finite float is a fraction with a power-of-two denominator.
    fraction = value if isinstance(value, Fraction) else Fraction(as_number(value, name))
    if fraction <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return fraction


def _size_to_count(size: int | Sequence[int]) -> tuple[tuple[int, ...], int]:
    """``size`` (an integer or a shape of integers, NumPy ones too) as a shape and its count."""
    if isinstance(size, Sequence | torch.Size):
        shape = tuple(check_nonnegative_int(d, "each dimension of size") for d in size)
    else:
        shape = (check_nonnegative_int(size, "size"),)
    return shape, math.prod(shape)


def sample_discrete_laplace(
    scale: Number | Fraction, size: int | Sequence[int] = (), *, rng: RandomSource | None = None
) -> torch.Tensor:
    """Integers with ``P[x] ∝ exp(-|x| / scale)``, drawn exactly from random bits.

    ``scale`` may be a ``Fraction``; a float is used at its exact binary value. No floating point
    touches the sampling, so the output distribution is exactly the discrete Laplace.
    """
    exact_scale = _positive_fraction(scale, "scale")
    shape, count = _size_to_count(size)
    bits = _RandomBits(resolve_random_source(rng))
    draws = [bits.discrete_laplace(exact_scale) for _ in range(count)]
    # CPU by design: exact integer sampling; .to(device) them like any other tensor
    return torch.tensor(draws, dtype=torch.int64).reshape(shape)


def sample_discrete_gaussian(
    sigma: Number | Fraction, size: int | Sequence[int] = (), *, rng: RandomSource | None = None
) -> torch.Tensor:
    """Integers with ``P[x] ∝ exp(-x² / (2σ²))``, drawn exactly from random bits."""
    exact_sigma = _positive_fraction(sigma, "sigma")
    shape, count = _size_to_count(size)
    bits = _RandomBits(resolve_random_source(rng))
    draws = [bits.discrete_gaussian(exact_sigma**2) for _ in range(count)]
    # CPU by design: exact integer sampling; .to(device) them like any other tensor
    return torch.tensor(draws, dtype=torch.int64).reshape(shape)


def discrete_laplace_pmf(x: Values, scale: float) -> np.ndarray:
    """``P[X = x]`` for the discrete Laplace: ``tanh(1/(2·scale)) · exp(-|x| / scale)``."""
    scale = check_positive(scale, "scale")
    x = np.asarray(x, dtype=np.float64)
    return np.tanh(0.5 / scale) * np.exp(-np.abs(x) / scale)


def discrete_gaussian_pmf(x: Values, sigma: float) -> np.ndarray:
    """``P[X = x]`` for the discrete Gaussian (normalising constant summed numerically)."""
    sigma = check_positive(sigma, "sigma")
    reach = int(math.ceil(40 * sigma)) + 1  # mass beyond 40σ is below 1e-300
    support = np.arange(-reach, reach + 1, dtype=np.float64)
    normaliser = np.exp(-(support**2) / (2 * sigma**2)).sum()
    x = np.asarray(x, dtype=np.float64)
    return np.exp(-(x**2) / (2 * sigma**2)) / normaliser


# -- Laplace and Gaussian mechanisms on a fine grid ------------------------------------------------

#: Grid points per unit of sensitivity (a power of two): rounding costs at most 1/1024 extra noise.
GRID_BITS = 10


def grid_spacing(sensitivity: float, dimension: int = 1, *, norm: str = "l1") -> float:
    """The power of two the default mechanisms round answers to.

    Rounding each of ``dimension`` coordinates can move neighbouring answers apart by up to one
    grid step per coordinate (L1) or ``√dimension`` steps (L2). Choosing the step at most
    ``sensitivity / (2^GRID_BITS · that)`` keeps the extra noise below 1/1024 of the total.
    """
    sensitivity = check_sensitivity(sensitivity)
    dimension = check_positive_int(dimension, "dimension")
    if norm not in ("l1", "l2"):
        raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")
    spread = dimension if norm == "l1" else math.sqrt(dimension)
    return 2.0 ** math.floor(math.log2(sensitivity / (2**GRID_BITS * spread)))


def _to_grid(values: torch.Tensor, grid: float) -> list[int]:
    """Round ``values`` to integer multiples of ``grid`` (exact: grid is a power of two)."""
    steps = torch.round(values / grid)
    if steps.numel() and steps.abs().max().item() >= 2.0**52:
        raise ValueError(
            "the answer is too large for the privacy grid (more than 2^52 grid steps); rescale "
            "the query (e.g. count in thousands) so that its sensitivity is not tiny next to it"
        )
    return [int(s) for s in steps.flatten().tolist()]


def _from_grid(steps: list[int], grid: float, shape: torch.Size) -> torch.Tensor:
    # device: exact CPU arithmetic; _like_input moves the result to the input's device
    return (torch.tensor(steps, dtype=torch.float64) * grid).reshape(shape)


def laplace_mechanism(
    value: Values, sensitivity: float, epsilon: float, *, rng: RandomSource | None = None
) -> float | torch.Tensor:
    """ε-DP answer: ``value`` plus Laplace noise of scale ``sensitivity / epsilon``.

    ``sensitivity`` is the L1 sensitivity (for a vector answer, the largest total change one person
    can make across all coordinates). The answer is rounded to a fine power-of-two grid and exact
    discrete Laplace noise is added in grid units, so the output is always a grid point and leaks
    nothing through its low bits (see :func:`naive_laplace` for the broken textbook version).
    """
    sensitivity = check_sensitivity(sensitivity)
    epsilon = check_epsilon(epsilon)
    values = _as_float_tensor(value)
    dimension = max(values.numel(), 1)
    grid = grid_spacing(sensitivity, dimension, norm="l1")
    # In grid units, rounded neighbouring answers differ by at most Δ/grid + 1 step per coordinate.
    grid_sensitivity = math.floor(sensitivity / grid) + dimension
    scale = Fraction(grid_sensitivity) / Fraction(epsilon)
    bits = _RandomBits(resolve_random_source(rng))
    steps = [s + bits.discrete_laplace(scale) for s in _to_grid(values, grid)]
    return _like_input(_from_grid(steps, grid, values.shape), value)


def gaussian_sigma_classic(sensitivity: float, epsilon: float, delta: float) -> float:
    """The textbook σ = Δ·√(2 ln(1.25/δ)) / ε (Dwork & Roth 2014, Theorem A.1).

    The proof only covers ε < 1, so larger ε is refused; the analytic calibration
    (:func:`gaussian_sigma_analytic`) works for every ε and always needs less noise.
    """
    sensitivity = check_sensitivity(sensitivity)
    epsilon = check_epsilon(epsilon)
    delta = check_delta(delta)
    if epsilon >= 1.0:
        raise ValueError(
            f"the classic Gaussian formula is only proven for epsilon < 1 (got {epsilon}); "
            "use gaussian_sigma_analytic, which is valid for every epsilon"
        )
    return sensitivity * math.sqrt(2.0 * math.log(1.25 / delta)) / epsilon


def _normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def gaussian_delta(sigma: float, sensitivity: float, epsilon: float) -> float:
    """The exact δ at which Gaussian noise of std ``sigma`` is (ε, δ)-DP.

    Balle & Wang (2018, Theorem 8): ``δ = Φ(Δ/2σ - εσ/Δ) - e^ε Φ(-Δ/2σ - εσ/Δ)``.
    """
    sigma = check_positive(sigma, "sigma")
    sensitivity = check_sensitivity(sensitivity)
    epsilon = check_epsilon(epsilon)
    a, b = sensitivity / (2 * sigma), epsilon * sigma / sensitivity
    tail = _normal_cdf(-a - b)  # e^ε · tail in log space: e^ε alone overflows for ε > 709
    return max(_normal_cdf(a - b) - (math.exp(epsilon + math.log(tail)) if tail > 0 else 0.0), 0.0)


def gaussian_sigma_analytic(sensitivity: float, epsilon: float, delta: float) -> float:
    """The smallest σ for which Gaussian noise is (ε, δ)-DP (the analytic Gaussian mechanism).

    Balle & Wang (2018) show the exact condition is ``gaussian_delta(σ) ≤ δ``; ``gaussian_delta``
    decreases in σ, so bisection (:func:`course_lib.dp.calibration.smallest_sufficient`) finds the
    smallest such σ, to a relative 1e-12 and rounded *up*, so it is safe.
    """
    sensitivity = check_sensitivity(sensitivity)
    epsilon = check_epsilon(epsilon)
    delta = check_delta(delta)
    return smallest_sufficient(
        lambda sigma: gaussian_delta(sigma, sensitivity, epsilon),
        delta,
        start=sensitivity,
        rel_tol=1e-12,
        highest=sensitivity * 1e15,  # σ/Δ depends on ε and δ only; 1e15 is far past any real ε
        setting=f" at ε = {epsilon}, δ = {delta}",
        low_stays_at_start=True,
    )


def gaussian_mechanism(
    value: Values,
    sensitivity: float,
    epsilon: float,
    delta: float,
    *,
    analytic: bool = True,
    rng: RandomSource | None = None,
) -> float | torch.Tensor:
    """(ε, δ)-DP answer: ``value`` plus Gaussian noise calibrated to the L2 ``sensitivity``.

    σ comes from :func:`gaussian_sigma_analytic` (default) or :func:`gaussian_sigma_classic`
    (``analytic=False``, ε < 1 only). As for Laplace, the answer is rounded to a fine power-of-two
    grid and exact discrete Gaussian noise is added in grid units; σ is calibrated for the
    sensitivity *after* rounding (Δ/grid + √d steps). With σ thousands of grid steps wide the
    discrete Gaussian's privacy curve equals the continuous one to far below double precision
    (Canonne, Kamath & Steinke 2020, Section 2).
    """
    sensitivity = check_sensitivity(sensitivity)
    epsilon = check_epsilon(epsilon)
    delta = check_delta(delta)
    values = _as_float_tensor(value)
    dimension = max(values.numel(), 1)
    grid = grid_spacing(sensitivity, dimension, norm="l2")
    grid_sensitivity = sensitivity / grid + math.sqrt(dimension)
    calibrate = gaussian_sigma_analytic if analytic else gaussian_sigma_classic
    sigma = Fraction(calibrate(grid_sensitivity, epsilon, delta))
    bits = _RandomBits(resolve_random_source(rng))
    steps = [s + bits.discrete_gaussian(sigma**2) for s in _to_grid(values, grid)]
    return _like_input(_from_grid(steps, grid, values.shape), value)


# -- exponential mechanism -------------------------------------------------------------------------


def exponential_mechanism_probabilities(
    scores: Values, sensitivity: float, epsilon: float
) -> torch.Tensor:
    """``P[choose r] ∝ exp(ε · score(r) / (2Δ))`` for each candidate ``r``.

    ``sensitivity`` Δ is how far one person can move any candidate's score.
    """
    sensitivity = check_sensitivity(sensitivity)
    epsilon = check_epsilon(epsilon)
    scores = _as_float_tensor(scores, "scores").flatten()
    if scores.numel() == 0:
        raise ValueError("the exponential mechanism needs at least one candidate")
    return torch.softmax(epsilon * scores / (2.0 * sensitivity), dim=0)


def _public_domain(domain: object, name: str) -> list[Hashable]:
    """``domain`` as a list, if it is recognisably a public, ordered list of distinct values.

    Refused: ``None``, an ``int`` (a bin *count*, whose range would come from the data, as in
    ``np.histogram``), a ``set``/``frozenset``/dict view or generator (no fixed order — and the
    usual way to let the data pick its own domain: ``{p["diagnosis"] for p in patients}``), a
    string, an empty domain and duplicates. A 1-D NumPy array or tensor counts as a list.
    """
    if isinstance(domain, np.ndarray | torch.Tensor):
        if domain.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {tuple(domain.shape)}")
        domain = domain.tolist()
    if domain is None or isinstance(domain, int | np.integer):
        raise TypeError(
            f"{name} must be a list of every possible value, fixed before looking at the data "
            f"(got {domain!r}): a count of bins, or no domain, lets the data choose the range — "
            "then a neighbouring database changes which outputs are possible, and ε = ∞"
        )
    if isinstance(domain, str | bytes) or not isinstance(domain, Sequence):
        raise TypeError(
            f"{name} must be an ordered list or tuple of the possible values, written down "
            f"before looking at the data, got {type(domain).__name__} (a set has no fixed "
            "order, and a set built from the records is the data choosing its own domain)"
        )
    values = list(domain)
    if not values:
        raise ValueError(f"{name} must not be empty")
    try:
        distinct = len(set(values)) == len(values)
    except TypeError:
        raise TypeError(f"the values of {name} must be hashable (numbers, strings …)") from None
    if not distinct:
        raise ValueError(f"{name} lists a value more than once: {values}")
    return values


def count_by_category(
    values: Sequence[Hashable] | np.ndarray | torch.Tensor, domain
) -> torch.Tensor:
    """Exact counts of each value of the public ``domain`` in ``values``: float64, shape
    ``(len(domain),)``, in the domain's order. Values outside the domain are not counted.

    ``domain`` is checked as for :func:`laplace_histogram`. This is not a release (no noise):
    use it for the scores of :func:`exponential_mechanism` or pass it to a mechanism.
    """
    categories = _public_domain(domain, "domain")
    if isinstance(values, np.ndarray | torch.Tensor):
        values = values.tolist()
    position = {category: i for i, category in enumerate(categories)}
    counts = [0] * len(categories)
    for value in values:
        index = position.get(value)
        if index is not None:
            counts[index] += 1
    # CPU by design: counted in Python over a public domain; .to(device) them like any tensor
    return torch.tensor(counts, dtype=torch.float64)


def laplace_histogram(
    values: Sequence[Hashable] | np.ndarray | torch.Tensor,
    domain: Sequence[Hashable],
    epsilon: float,
    *,
    rng: RandomSource | None = None,
) -> torch.Tensor:
    """ε-DP counts of each value of the public ``domain``: float64, shape ``(len(domain),)``.

    Each person adds 1 to one bin (adding or removing a person changes the L1 norm of the counts
    by 1), so :func:`laplace_mechanism` with sensitivity 1 is ε-DP for the whole histogram —
    parallel composition (Dwork & Roth 2014, §3.3). ``domain`` is the list of every possible value,
    fixed before looking at the data; ``None``, a bin count, a ``set`` and duplicates are refused
    (see the module docstring). Values outside the domain are not counted: the output always has
    one noisy count per domain value, whatever the data.
    """
    epsilon = check_epsilon(epsilon)
    noisy = laplace_mechanism(count_by_category(values, domain), 1.0, epsilon, rng=rng)
    assert isinstance(noisy, torch.Tensor)  # a tensor of counts in, a tensor out
    return noisy


def exponential_mechanism(
    scores: Values,
    sensitivity: float,
    epsilon: float,
    *,
    candidates: Sequence[Hashable],
    rng: RandomSource | None = None,
) -> Hashable:
    """Pick one of the public ``candidates``, favouring high scores, with ε-DP — up to floating
    point. ``scores[i]`` is the utility of ``candidates[i]``; the chosen candidate is returned.

    ``candidates`` is required and must be fixed before looking at the data (the diagnoses a
    registry *can* record, not those that occur in it): a candidate list read off the data makes
    an answer possible on one database and impossible on its neighbour, ε = ∞. ``None``, a
    ``set`` and duplicates are refused, and ``len(candidates)`` must equal ``len(scores)``.

    The output is one of finitely many candidates, so there are no low bits to attack; the
    probabilities are computed in float64 and the draw uses a 53-bit uniform from ``rng``.

    **Not exactly ε-DP.** Rounding the probabilities to float64 and drawing with a 53-bit uniform
    realises each candidate's probability as a multiple of 2⁻⁵³: a candidate whose exact
    probability is ~10⁻¹⁶ can get realised probability 0 on one database and 2⁻⁵² on its
    neighbour, an infinite ratio (the tests construct such a pair). The implementation is therefore
    (ε, δ)-DP with δ of order 2⁻⁵² per call, not pure ε-DP. An exact version samples with integer
    arithmetic, e.g. base-2 exponential mechanism (Ilvento 2020, "Implementing the Exponential
    Mechanism with Base-2 Differential Privacy").
    """
    options = _public_domain(candidates, "candidates")
    probabilities = exponential_mechanism_probabilities(scores, sensitivity, epsilon)
    if probabilities.numel() != len(options):
        raise ValueError(
            f"give one score per candidate: {len(options)} candidates, {probabilities.numel()} "
            "scores"
        )
    u = resolve_random_source(rng).uniform(1).item()
    cumulative = torch.cumsum(probabilities, dim=0)
    # the first index whose cumulative probability exceeds u: candidate i owns [c_{i-1}, c_i)
    point = torch.tensor([u], dtype=torch.float64, device=cumulative.device)
    index = int(torch.searchsorted(cumulative, point, right=True).item())
    return options[min(index, probabilities.numel() - 1)]


# -- the broken textbook sampler and Mironov's attack on it ----------------------------------------


def naive_laplace(
    value: float,
    sensitivity: float,
    epsilon: float,
    size: int | Sequence[int] = (),
    *,
    rng: RandomSource | None = None,
) -> float | np.ndarray:
    """**Insecure, for the attack lesson only**: textbook inverse-CDF Laplace in floating point.

    ``value - b·sign(u - ½)·log(1 - 2|u - ½|)`` with ``u`` uniform on the 53-bit grid in [0, 1).
    Mathematically this is Laplace(b); in floating point the set of reachable outputs depends on
    ``value``, which :func:`naive_laplace_could_output` exploits. Use :func:`laplace_mechanism`.
    """
    sensitivity = check_sensitivity(sensitivity)
    epsilon = check_epsilon(epsilon)
    value = as_number(value, "value")
    shape, _ = _size_to_count(size)
    scale = sensitivity / epsilon
    u = resolve_random_source(rng).uniform(shape).numpy()
    noise = -scale * np.sign(u - 0.5) * np.log(1.0 - 2.0 * np.abs(u - 0.5))
    outputs = value + noise
    return float(outputs) if shape == () else outputs


def naive_laplace_could_output(
    outputs: float | np.ndarray, value: float, sensitivity: float, epsilon: float
) -> np.ndarray:
    """Mironov's test: could :func:`naive_laplace` centred on ``value`` have produced ``outputs``?

    Every noise value the sampler can produce is ``±b·(-log(k / 2^52))`` for an integer ``k``. For
    each output, guess ``k`` by inverting the formula, then try the neighbouring integers and
    recompute the sampler's exact floating-point operations. If no ``k`` reproduces the output bit
    for bit, it cannot have come from ``value`` — the attacker knows the true answer is different.

    How many neighbours to try: subtracting ``value`` loses up to one ulp of the output, i.e.
    ``ulp / s`` steps of ``k``, where ``s = b·2^-52 / m`` (``m = k·2^-52``) is the gap between
    consecutive noise values there. When that exceeds :data:`_DENSE_STEPS`, consecutive noise
    values are much closer together than the output's own ulp, so *every* float in that range is
    reachable and the answer is True without a search (this is the regime ``|value| ≫ b``, where
    the old exhaustive window of ``2|value|/b`` steps would run for ever).
    """
    sensitivity = check_sensitivity(sensitivity)
    epsilon = check_epsilon(epsilon)
    value = as_number(value, "value")
    scale = sensitivity / epsilon
    outputs = np.asarray(outputs, dtype=np.float64)
    noise = outputs - value
    sign = np.sign(noise)
    m = np.exp(-np.abs(noise) / scale)
    guess = np.round(m * 2.0**52)
    # steps of k per ulp of the output (+1 for the ulp lost in `noise`, +3 for exp/log rounding)
    steps_per_ulp = 2.0 * np.spacing(np.abs(outputs)) * 2.0**52 * m / scale
    reachable = np.abs(noise) <= scale * 52 * math.log(2) * (1 + 1e-12)  # k ≥ 1: the finite noise
    dense = reachable & (steps_per_ulp > _DENSE_STEPS)
    window = int(np.ceil(np.max(steps_per_ulp, where=~dense, initial=0.0))) + 3
    found = dense.copy()
    with np.errstate(divide="ignore"):  # k = 0 (log 0) is a legitimate, if unlikely, draw
        for shift in range(-window, window + 1):
            k = np.clip(guess + shift, 0.0, 2.0**52)
            candidate = value + (-scale * sign * np.log(k * 2.0**-52))
            found |= candidate == outputs
    return found


#: Above this many candidate ``k`` per ulp of the output, every nearby output is reachable.
_DENSE_STEPS = 64
