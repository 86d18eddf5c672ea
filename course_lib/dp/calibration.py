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
    highest: float = math.inf,
    what: str = "σ",
    setting: str = "",
) -> float:
    """The smallest ``x > 0`` with ``cost(x) ≤ budget``, for a ``cost`` non-increasing in ``x``.

    Brackets from ``start`` (doubling up while the budget is exceeded, halving down while it is
    met), then bisects until the bracket is narrower than ``rel_tol · x`` or, when
    ``cost_rel_tol`` is given, as soon as ``cost(x) ≥ budget · (1 − cost_rel_tol)`` (the budget is
    spent to that tolerance). Returns the upper end: it meets the budget.

    ``lowest`` bounds the search from below: if ``cost(lowest) ≤ budget`` already, ``lowest`` is
    returned (it spends *less* than the budget, never more). ``ValueError`` if even ``highest``
    exceeds the budget (the message names ``what`` is searched and the ``setting``, e.g.
    ``" for 100 steps at q = 0.1"``), or for a non-positive ``start`` or tolerance.
    """
    if not (start > 0 and math.isfinite(start)):
        raise ValueError(f"start must be a positive finite number, got {start}")
    if not 0 < rel_tol < 1 or (cost_rel_tol is not None and not 0 < cost_rel_tol < 1):
        raise ValueError(f"tolerances must lie in (0, 1), got {rel_tol} and {cost_rel_tol}")
    low, high = start, start
    while cost(high) > budget:  # invariant afterwards: cost(high) ≤ budget
        low, high = high, 2.0 * high
        if high > highest:
            raise ValueError(
                f"the budget {budget:g} is out of reach{setting} "
                f"({what} = {highest:g} still spends more)"
            )
    while cost(low) <= budget:  # invariant afterwards: cost(low) > budget
        if low <= lowest:
            return lowest
        high, low = low, max(low / 2.0, lowest)
    while high - low > rel_tol * high:
        if cost_rel_tol is not None and cost(high) >= budget * (1.0 - cost_rel_tol):
            break
        middle = 0.5 * (low + high)
        if cost(middle) > budget:
            low = middle
        else:
            high = middle
    return high
