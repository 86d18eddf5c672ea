"""Privacy accounting for DP-SGD: Rényi DP of the Poisson-subsampled Gaussian mechanism.

One DP-SGD step samples each training example independently with probability ``q`` (Poisson
sampling), sums the clipped per-example gradients (L2 sensitivity ``C``) and adds Gaussian noise of
standard deviation ``σ·C``. The *noise multiplier* ``σ`` and the *sample rate* ``q`` are all the
accountant needs.

Rényi differential privacy (RDP) of order ``α`` composes by simple addition, so ``T`` steps cost
``T · RDP(α)``. Mironov, Talwar & Zhang (2019, "Rényi Differential Privacy of the Sampled Gaussian
Mechanism") give ``RDP(α) = log(A_α) / (α - 1)``, with ``A_α`` a finite binomial sum for integer
``α`` and a convergent series for fractional ``α``. At the end, RDP is converted to an
(ε, δ) guarantee with the bound of Balle et al. (2020, Theorem 21), minimised over a grid of orders.

This is the computation Opacus' ``RDPAccountant`` performs (same orders, same conversion), written
out so the formulas can be read; the tests check both agree to 1e-6.

Also re-exported here: the classic composition theorems and the privacy budget of
:mod:`course_lib.dp.composition`, so ``course_lib.dp.accounting`` is the one place for "how much
privacy have I spent?".
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy import special

from course_lib.dp.calibration import smallest_sufficient
from course_lib.validation import (
    check_delta,
    check_epsilon,
    check_noise_multiplier,
    check_nonnegative_int,
    check_positive,
    check_positive_int,
    check_sample_rate,
)

#: The orders α Opacus' RDPAccountant searches by default: 1.1, 1.2, ..., 10.9, 12, 13, ..., 63.
DEFAULT_ORDERS: tuple[float, ...] = tuple(
    [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
)


#: What the functions below accept for a vector of orders or of RDP values: a plain sequence of
#: numbers or a 1-D array (what :func:`subsampled_gaussian_rdp` and ``RDPAccountant`` return).
FloatVector = Sequence[float] | npt.NDArray[np.floating]


# -- input validation (the shared rules of course_lib.validation) ---------------------------------


def _check_orders(orders: FloatVector) -> npt.NDArray[np.float64]:
    checked = np.atleast_1d(np.asarray(orders, dtype=np.float64))
    if checked.size == 0 or not np.all(np.isfinite(checked)) or np.any(checked <= 1):
        raise ValueError("RDP orders must be finite numbers greater than 1")
    return checked


# -- log-space arithmetic --------------------------------------------------------------------------


def _log_add(log_x: float, log_y: float) -> float:
    """log(x + y) from log(x) and log(y), without leaving log space."""
    low, high = min(log_x, log_y), max(log_x, log_y)
    if low == -math.inf:
        return high
    return high + math.log1p(math.exp(low - high))


def _log_sub(log_x: float, log_y: float) -> float:
    """log(x - y) for x ≥ y."""
    if log_y == -math.inf:
        return log_x
    if log_x <= log_y:
        return -math.inf
    try:
        return log_y + math.log(math.expm1(log_x - log_y))
    except OverflowError:  # x ≫ y: subtracting y changes nothing representable
        return log_x


def _log_erfc(x: float) -> float:
    """log(erfc(x)), accurate for large x (erfc itself underflows)."""
    return math.log(2.0) + float(special.log_ndtr(-x * math.sqrt(2.0)))


# -- RDP of the sampled Gaussian mechanism ---------------------------------------------------------


def _log_a_integer(q: float, sigma: float, alpha: int) -> float:
    """log A_α for integer α: a binomial expansion over how many of α draws include the example.

    A_α = Σ_{i=0..α} C(α, i) q^i (1-q)^(α-i) exp((i² - i) / (2σ²)).
    """
    log_a = -math.inf
    for i in range(alpha + 1):
        log_binom = math.lgamma(alpha + 1) - math.lgamma(i + 1) - math.lgamma(alpha - i + 1)
        term = log_binom + i * math.log(q) + (alpha - i) * math.log1p(-q)
        log_a = _log_add(log_a, term + (i * i - i) / (2 * sigma**2))
    return log_a


def _log_a_fractional(q: float, sigma: float, alpha: float) -> float:
    """log A_α for fractional α: the series of Mironov et al. (2019, Section 3.3).

    The generalised binomial coefficients C(α, i) change sign once i > α, so the two partial sums
    are accumulated with signs; the series is cut when its terms drop below e^-30.
    """
    log_a0, log_a1 = -math.inf, -math.inf
    z0 = sigma**2 * math.log(1 / q - 1) + 0.5
    i = 0
    while True:
        coef = float(special.binom(alpha, i))
        log_coef = math.log(abs(coef))
        j = alpha - i
        log_t0 = log_coef + i * math.log(q) + j * math.log1p(-q)
        log_t1 = log_coef + j * math.log(q) + i * math.log1p(-q)
        log_e0 = math.log(0.5) + _log_erfc((i - z0) / (math.sqrt(2) * sigma))
        log_e1 = math.log(0.5) + _log_erfc((z0 - j) / (math.sqrt(2) * sigma))
        log_s0 = log_t0 + (i * i - i) / (2 * sigma**2) + log_e0
        log_s1 = log_t1 + (j * j - j) / (2 * sigma**2) + log_e1
        if coef > 0:
            log_a0, log_a1 = _log_add(log_a0, log_s0), _log_add(log_a1, log_s1)
        else:
            log_a0, log_a1 = _log_sub(log_a0, log_s0), _log_sub(log_a1, log_s1)
        i += 1
        if max(log_s0, log_s1) < -30:
            return _log_add(log_a0, log_a1)


@functools.cache  # pure in (q, σ, α); every DP-SGD run and shadow model asks for the same orders
def _rdp_one_step(q: float, sigma: float, alpha: float) -> float:
    """RDP of order α of one step of the sampled Gaussian mechanism."""
    if q == 1.0:  # no subsampling: the plain Gaussian mechanism
        return alpha / (2 * sigma**2)
    log_a = (
        _log_a_integer(q, sigma, int(alpha))
        if float(alpha).is_integer()
        else _log_a_fractional(q, sigma, alpha)
    )
    # A_α ≥ 1 (it is E[(p/p')^α] over a pair of distributions), so RDP ≥ 0; when σ is huge or q
    # tiny, A_α is 1 + (something below double precision) and rounding can land a hair under 1.
    return max(log_a, 0.0) / (alpha - 1)


def subsampled_gaussian_rdp(
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    orders: FloatVector = DEFAULT_ORDERS,
) -> npt.NDArray[np.float64]:
    """RDP of ``steps`` Poisson-subsampled Gaussian steps at each order in ``orders``."""
    sigma = check_noise_multiplier(noise_multiplier)
    q = check_sample_rate(sample_rate)
    steps = check_nonnegative_int(steps, "steps")
    alphas = _check_orders(orders)
    return steps * np.array([_rdp_one_step(q, sigma, float(a)) for a in alphas], dtype=np.float64)


def rdp_to_epsilon(
    rdp: FloatVector, delta: float, orders: FloatVector = DEFAULT_ORDERS
) -> tuple[float, float]:
    """Convert RDP values (one per order) to (ε, best order) at the given δ.

    Uses Balle et al. (2020, Thm 21), as Opacus does:
    ε = RDP(α) + log((α-1)/α) - (log δ + log α) / (α - 1), minimised over α.
    For a large δ that expression can drop below 0; every (ε', δ)-DP mechanism with ε' < 0 is
    also (0, δ)-DP, so the result is floored at ε = 0 (a negative ε means nothing).
    """
    delta = check_delta(delta)
    alphas = _check_orders(orders)
    rdps = np.atleast_1d(np.asarray(rdp, dtype=np.float64))
    if rdps.shape != alphas.shape:
        raise ValueError(f"got {rdps.size} RDP values for {alphas.size} orders")
    if np.any(rdps < 0) or np.any(np.isnan(rdps)):
        raise ValueError("RDP values must be non-negative numbers")
    eps = rdps + np.log((alphas - 1) / alphas) - (np.log(delta) + np.log(alphas)) / (alphas - 1)
    best = int(np.argmin(eps))
    return max(float(eps[best]), 0.0), float(alphas[best])


def rdp_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """ε spent by ``steps`` DP-SGD steps with Poisson sample rate ``sample_rate`` and noise ``σ``.

    >>> round(rdp_epsilon(noise_multiplier=1.1, sample_rate=1 / 16, steps=80, delta=1e-5), 2)
    3.77
    """
    rdp = subsampled_gaussian_rdp(noise_multiplier, sample_rate, steps)
    return rdp_to_epsilon(rdp, delta)[0]


def noise_multiplier_for_epsilon(
    epsilon: float,
    *,
    sample_rate: float,
    steps: int,
    delta: float,
    tolerance: float = 1e-3,
) -> float:
    """The smallest noise multiplier σ for which ``steps`` Poisson-sampled DP-SGD steps at
    ``sample_rate`` spend at most ``epsilon`` at ``delta`` (by :func:`rdp_epsilon`).

    ε decreases as σ grows, so :func:`course_lib.dp.calibration.smallest_sufficient` bisects on σ
    (as Opacus' ``get_noise_multiplier`` does). The returned σ spends an ε in
    ``[epsilon·(1 − tolerance), epsilon]`` — except for a target so loose that the smallest σ
    considered (0.05) already spends less: then that σ is returned, and it spends less than
    ``epsilon`` (never more). ``ValueError`` for ε ≤ 0, NaN or ∞, a bad δ, q or step count, or a
    target that σ ≤ 10⁴ cannot reach.

    >>> sigma = noise_multiplier_for_epsilon(3.0, sample_rate=0.1, steps=100, delta=1e-5)
    >>> round(sigma, 2), rdp_epsilon(sigma, 0.1, 100, 1e-5) <= 3.0
    (1.8, True)
    """
    epsilon = check_epsilon(epsilon)
    if not math.isfinite(epsilon):
        raise ValueError(f"epsilon must be finite, got {epsilon}")
    sample_rate = check_sample_rate(sample_rate)
    steps = check_positive_int(steps, "steps")
    delta = check_delta(delta)
    tolerance = check_positive(tolerance, "tolerance")
    if tolerance >= 1:
        raise ValueError(f"tolerance is relative and must be < 1, got {tolerance}")
    return smallest_sufficient(
        lambda sigma: rdp_epsilon(sigma, sample_rate, steps, delta),
        epsilon,
        rel_tol=1e-12,
        cost_rel_tol=tolerance,
        lowest=0.05,
        highest=1e4,
        setting=f" for {steps} steps at q = {sample_rate}, δ = {delta}",
    )


class RDPAccountant:
    """Tracks DP-SGD steps (possibly with changing σ or q) and reports ε at any time.

    >>> accountant = RDPAccountant()
    >>> for _ in range(80):
    ...     accountant.step(noise_multiplier=1.1, sample_rate=1 / 16)
    >>> round(accountant.get_epsilon(delta=1e-5), 2)
    3.77
    """

    def __init__(self, orders: FloatVector = DEFAULT_ORDERS) -> None:
        self.orders = _check_orders(orders)
        #: (noise multiplier, sample rate, number of steps), consecutive equal settings merged
        self.history: list[tuple[float, float, int]] = []
        # one step's RDP per (σ, q): T steps cost T times as much, so ε is cheap to update
        self._one_step: dict[tuple[float, float], npt.NDArray[np.float64]] = {}

    def step(self, *, noise_multiplier: float, sample_rate: float, steps: int = 1) -> None:
        """Record ``steps`` more steps with this noise multiplier and sample rate."""
        sigma = check_noise_multiplier(noise_multiplier)
        q = check_sample_rate(sample_rate)
        steps = check_nonnegative_int(steps, "steps")
        if self.history and self.history[-1][:2] == (sigma, q):
            self.history[-1] = (sigma, q, self.history[-1][2] + steps)
        else:
            self.history.append((sigma, q, steps))

    @property
    def steps(self) -> int:
        """Total number of steps recorded."""
        return sum(n for _, _, n in self.history)

    def get_rdp(self) -> npt.NDArray[np.float64]:
        """Total RDP at every order (RDP composes by addition)."""
        total = np.zeros_like(self.orders)
        for sigma, q, n in self.history:
            if (sigma, q) not in self._one_step:
                self._one_step[sigma, q] = subsampled_gaussian_rdp(sigma, q, 1, self.orders)
            total += n * self._one_step[sigma, q]
        return total

    def get_privacy_spent(self, *, delta: float) -> tuple[float, float]:
        """(ε, best order α) spent so far."""
        if not self.history:
            check_delta(delta)
            return 0.0, float("nan")
        return rdp_to_epsilon(self.get_rdp(), delta, self.orders)

    def get_epsilon(self, delta: float) -> float:
        """ε spent so far at this δ."""
        return self.get_privacy_spent(delta=delta)[0]

    def __len__(self) -> int:
        return self.steps

    def __repr__(self) -> str:
        return f"RDPAccountant({self.steps} steps)"


# -- the classic composition theorems and the budget tracker, re-exported --------------------------

from course_lib.dp.composition import (  # noqa: E402  (kept at the end: they are a separate lesson)
    BudgetExceededError,
    LedgerEntry,
    PrivacyBudget,
    advanced_composition,
    parallel_composition,
    sequential_composition,
)

__all__ = [
    "DEFAULT_ORDERS",
    "RDPAccountant",
    "noise_multiplier_for_epsilon",
    "rdp_epsilon",
    "rdp_to_epsilon",
    "subsampled_gaussian_rdp",
    "BudgetExceededError",
    "LedgerEntry",
    "PrivacyBudget",
    "advanced_composition",
    "parallel_composition",
    "sequential_composition",
]
