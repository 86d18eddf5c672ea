"""Calibrating noise to a privacy budget: the smallest noise that a budget allows.

Every noise calibration in the course asks the same question: the privacy cost of a mechanism
falls as its noise scale ``x`` grows (more noise, less privacy spent), so what is the *smallest*
``x`` whose cost fits the budget? :func:`smallest_sufficient` answers it once, by bisection, for

* the analytic Gaussian mechanism (:func:`course_lib.dp.mechanisms.gaussian_sigma_analytic`:
  cost δ(σ), Balle & Wang 2018),
* DP-SGD's noise multiplier for a target ε
  (:func:`course_lib.dp.accounting.noise_multiplier_for_epsilon`: cost ε(σ), RDP accountant),
* the noise of DP synthetic data's marginals (:func:`course_lib.dp.synthetic.sigma_for_budget`).

The answer is always on the *safe* side: the returned ``x`` meets the budget, and a smaller one
(by the stated tolerance) would not — bisection keeps ``cost(high) ≤ budget < cost(low)`` and
returns ``high``. This is what Opacus' ``get_noise_multiplier`` does too (doubling, then
bisection; it stops on an ε tolerance instead).
"""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["smallest_sufficient"]


def smallest_sufficient(
    cost: Callable[[float], float],
    budget: float,
    *,
    start: float = 1.0,
    rel_tol: float = 1e-3,
    cost_rel_tol: float | None = None,
    lowest: float = 0.0,
    highest: float = 1e6,
    what: str = "σ",
    setting: str = "",
    low_stays_at_start: bool = False,
) -> float:
    """The smallest ``x`` in ``[lowest, highest]`` with ``cost(x) ≤ budget``, for a ``cost`` that
    does not increase in ``x`` (more noise never spends more).

    Brackets from ``start`` (clamped into the range; doubling up while the budget is exceeded,
    halving down while it is met), then bisects until the bracket is narrower than ``rel_tol · x``
    or, when ``cost_rel_tol`` is given, as soon as ``cost(x) ≥ budget · (1 − cost_rel_tol)`` (the
    budget is spent to that tolerance). Returns the upper end, which meets the budget; if
    ``lowest > 0`` already meets it, ``lowest`` is returned (it spends *less*, never more).

    ``ValueError`` — raised before the first evaluation for bad settings (a budget that is NaN,
    infinite or negative; ``start`` not positive; a tolerance outside (0, 1); not
    ``0 ≤ lowest < highest``), and during the search, naming ``what`` is searched and the
    ``setting`` (e.g. ``" for 100 steps at q = 0.1"``), when ``cost`` returns NaN, when even
    ``highest`` spends more than the budget, or when ``lowest = 0`` and every ``x`` down to
    ``start · 2⁻²⁰⁰`` meets it (nothing to calibrate: the answer would be no noise at all).

    ``low_stays_at_start``: while doubling, keep the bracket's lower end at ``start`` instead of
    moving it up to the last doubled value. Either bracket gives a σ within ``rel_tol``; the
    analytic Gaussian keeps its original bracket so that its σ, and every seeded draw made with
    it (lesson 06), repeats bit for bit.
    """
    if not (math.isfinite(budget) and budget >= 0):
        raise ValueError(f"the budget must be a finite number ≥ 0, got {budget}")
    if not (start > 0 and math.isfinite(start)):
        raise ValueError(f"start must be a positive finite number, got {start}")
    if not 0 < rel_tol < 1 or (cost_rel_tol is not None and not 0 < cost_rel_tol < 1):
        raise ValueError(f"tolerances must lie in (0, 1), got {rel_tol} and {cost_rel_tol}")
    if not (0 <= lowest < highest and math.isfinite(highest)):
        raise ValueError(f"need 0 ≤ lowest < highest < ∞, got {lowest} and {highest}")

    def meets(x: float) -> bool:
        spent = cost(x)
        if math.isnan(spent):
            raise ValueError(f"the privacy cost at {what} = {x:g} is NaN{setting}")
        return spent <= budget

    low = high = min(max(start, lowest), highest)
    while not meets(high):  # afterwards: cost(high) ≤ budget
        if high >= highest:
            raise ValueError(
                f"the budget {budget:g} is out of reach{setting} "
                f"({what} = {highest:g} still spends more)"
            )
        low, high = (low if low_stays_at_start else high), min(2.0 * high, highest)
    for _ in range(200):  # afterwards: cost(low) > budget
        if not meets(low):
            break
        if low <= lowest:
            return lowest
        high, low = low, max(low / 2.0, lowest)
    else:
        raise ValueError(
            f"every {what} down to {low:g} meets the budget {budget:g}{setting}: "
            "nothing to calibrate"
        )
    while high - low > rel_tol * high:
        if cost_rel_tol is not None and cost(high) >= budget * (1.0 - cost_rel_tol):
            break
        middle = 0.5 * (low + high)
        if meets(middle):
            high = middle
        else:
            low = middle
    return high
