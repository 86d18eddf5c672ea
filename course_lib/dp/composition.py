"""Composition: what several private answers cost together, and a budget that enforces it.

Every answer released about a database spends some privacy. The classic theorems say how the costs
add up (Dwork & Roth 2014, Chapter 3):

- **sequential composition**: mechanisms run on the *same* people cost the *sum* of their ε and δ;
- **parallel composition**: mechanisms run on *disjoint* groups of people cost the *largest* ε
  and δ, since each person is in only one group;
- **advanced composition** (Dwork, Rothblum & Vadhan 2010): ``k`` runs of an (ε, δ) mechanism are
  also ``(ε·√(2k·ln(1/δ')) + k·ε·(e^ε - 1), k·δ + δ')``-DP for any δ' > 0 — growing like √k
  rather than k, which wins once k is large.

A :class:`PrivacyBudget` keeps a ledger of what was spent and refuses (with
:class:`BudgetExceededError`) any spend that would go over. Tighter accounting for DP-SGD (Rényi DP)
lives in :mod:`course_lib.dp.accounting`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from course_lib.validation import check_delta, check_epsilon, check_positive_int

__all__ = [
    "BudgetExceededError",
    "PrivacyBudget",
    "LedgerEntry",
    "sequential_composition",
    "parallel_composition",
    "advanced_composition",
]


def _validate_delta_or_zero(delta: float) -> float:
    """Pure ε-DP mechanisms have δ = 0; otherwise δ must be a probability below 1."""
    return check_delta(delta, allow_zero=True)


def _epsilons_and_deltas(
    epsilons: Sequence[float], deltas: Sequence[float] | None
) -> tuple[list[float], list[float]]:
    epsilons = [check_epsilon(e) for e in epsilons]
    if not epsilons:
        raise ValueError("composition needs at least one mechanism's epsilon")
    if deltas is None:
        return epsilons, [0.0] * len(epsilons)
    deltas = [_validate_delta_or_zero(d) for d in deltas]
    if len(deltas) != len(epsilons):
        raise ValueError(
            f"give one delta per epsilon: got {len(epsilons)} epsilons and {len(deltas)} deltas"
        )
    return epsilons, deltas


def sequential_composition(
    epsilons: Sequence[float], deltas: Sequence[float] | None = None
) -> tuple[float, float]:
    """Total (ε, δ) of mechanisms that all look at the same people: the sums."""
    epsilons, deltas = _epsilons_and_deltas(epsilons, deltas)
    return math.fsum(epsilons), math.fsum(deltas)


def parallel_composition(
    epsilons: Sequence[float], deltas: Sequence[float] | None = None
) -> tuple[float, float]:
    """Total (ε, δ) of mechanisms on *disjoint* parts of the data: the maxima."""
    epsilons, deltas = _epsilons_and_deltas(epsilons, deltas)
    return max(epsilons), max(deltas)


def advanced_composition(
    epsilon: float, delta: float, k: int, delta_prime: float
) -> tuple[float, float]:
    """(ε, δ) of ``k`` runs of an (``epsilon``, ``delta``)-DP mechanism, by advanced composition.

    ``ε_total = ε·√(2k·ln(1/δ')) + k·ε·(e^ε - 1)`` and ``δ_total = k·δ + δ'``. It is a bound, not
    always better than the sequential ``k·ε``: compare both and use the smaller.
    """
    epsilon = check_epsilon(epsilon)
    delta = _validate_delta_or_zero(delta)
    delta_prime = check_delta(delta_prime)
    k = check_positive_int(k, "k (the number of mechanisms)")
    total_epsilon = epsilon * math.sqrt(
        2 * k * math.log(1 / delta_prime)
    ) + k * epsilon * math.expm1(epsilon)
    total_delta = k * delta + delta_prime
    if total_delta >= 1:
        raise ValueError(
            f"k·delta + delta_prime = {total_delta:.3g} is not below 1: the guarantee is vacuous"
        )
    return total_epsilon, total_delta


class BudgetExceededError(ValueError):
    """A spend would take a :class:`PrivacyBudget` past its limit; nothing was spent."""


@dataclass(frozen=True)
class LedgerEntry:
    """One line of a budget's ledger."""

    label: str
    epsilon: float
    delta: float


class PrivacyBudget:
    """A total (ε, δ) that can be spent, under sequential composition, until it runs out.

    >>> budget = PrivacyBudget(epsilon=1.0)
    >>> budget.spend(0.4, label="mean age")
    >>> budget.remaining_epsilon
    0.6

    A spend that would exceed the budget raises :class:`BudgetExceededError` and is *not* recorded,
    so a refused query costs nothing. Sums use :func:`math.fsum`, and a relative slack of 1e-12
    absorbs float rounding (ten spends of 0.1 fit in a budget of 1.0).
    """

    _SLACK = 1e-12

    def __init__(self, epsilon: float, delta: float = 0.0) -> None:
        self.epsilon = check_epsilon(epsilon)
        self.delta = _validate_delta_or_zero(delta)
        self._ledger: list[LedgerEntry] = []

    @property
    def ledger(self) -> tuple[LedgerEntry, ...]:
        """Every accepted spend, in order."""
        return tuple(self._ledger)

    @property
    def spent_epsilon(self) -> float:
        return math.fsum(entry.epsilon for entry in self._ledger)

    @property
    def spent_delta(self) -> float:
        return math.fsum(entry.delta for entry in self._ledger)

    @property
    def remaining_epsilon(self) -> float:
        return max(self.epsilon - self.spent_epsilon, 0.0)

    @property
    def remaining_delta(self) -> float:
        return max(self.delta - self.spent_delta, 0.0)

    def can_spend(self, epsilon: float, delta: float = 0.0) -> bool:
        """Whether :meth:`spend` would accept this cost (validating it the same way)."""
        epsilon = check_epsilon(epsilon)
        delta = _validate_delta_or_zero(delta)
        new_epsilon = math.fsum([*(e.epsilon for e in self._ledger), epsilon])
        new_delta = math.fsum([*(e.delta for e in self._ledger), delta])
        return new_epsilon <= self.epsilon * (1 + self._SLACK) and new_delta <= self.delta * (
            1 + self._SLACK
        )

    def spend(self, epsilon: float, delta: float = 0.0, *, label: str = "") -> None:
        """Record a mechanism's cost, or raise :class:`BudgetExceededError` if it does not fit."""
        if not self.can_spend(epsilon, delta):
            raise BudgetExceededError(
                f"refused {label or 'this query'}: it costs ε={epsilon:g}, δ={delta:g} but only "
                f"ε={self.remaining_epsilon:g}, δ={self.remaining_delta:g} of the budget "
                f"(ε={self.epsilon:g}, δ={self.delta:g}) is left. Once spent, privacy cannot be "
                "bought back: ask fewer or cheaper questions."
            )
        label = label or f"query {len(self._ledger) + 1}"
        self._ledger.append(LedgerEntry(label, float(epsilon), float(delta)))

    def __str__(self) -> str:
        width = max([len("budget"), *(len(entry.label) for entry in self._ledger)])
        lines = [f"{'':<{width}}  {'epsilon':>10}  {'delta':>10}"]
        for entry in self._ledger:
            lines.append(f"{entry.label:<{width}}  {entry.epsilon:>10.4g}  {entry.delta:>10.3g}")
        lines.append(f"{'spent':<{width}}  {self.spent_epsilon:>10.4g}  {self.spent_delta:>10.3g}")
        lines.append(f"{'budget':<{width}}  {self.epsilon:>10.4g}  {self.delta:>10.3g}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"PrivacyBudget(epsilon={self.epsilon:g}, delta={self.delta:g}, "
            f"spent_epsilon={self.spent_epsilon:g}, entries={len(self._ledger)})"
        )
