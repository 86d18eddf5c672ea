"""Counting what secure computation costs on the network.

Local operations (adding shares, multiplying by a public constant) are free. Everything else needs
the parties to *open* a masked value: each party sends its share to every other party, all at the
same time. One such exchange is one **round** (a network round trip — latency); every opened element
costs ``n·(n−1)`` messages of one 64-bit word, i.e. ``8·n·(n−1)`` **bytes** (bandwidth). We count
every opened element as a full 64-bit word, also single bits (no bit packing), to keep the formulas
simple. The dealer's messages (triples and masks sent before the computation) are counted separately
as *offline* bytes.

Inputs and outputs cost messages too. Sharing an input: its owner sends one share to every party
(``n`` words per element from an outside owner, ``n − 1`` when the owner is a party itself), one
round. Revealing an output to **one** receiver: the parties send it their shares (``n − 1`` words
per element to a party, ``n`` to an outside receiver such as a patient), one round — instead of
the ``n·(n−1)`` of opening it to everyone. Every reveal is also listed in
:attr:`CommunicationLog.outputs` (who learned how many values), so a lesson can print *who saw
what*.

:class:`CommunicationLog` charges each exchange to the outermost operation running at the time
(``"mul"``, ``"relu"``, ...), so a lesson can print a cost table per operation.

**What was opened, and by whom.** Besides the costs the log keeps a transcript an auditor (an
exercise checker) can read: :attr:`CommunicationLog.openings` lists every opening — operation,
sharing (additive or XOR) and the shape of each opened value; :attr:`CommunicationLog.inputs`
every value shared into the computation; :attr:`CommunicationLog.outputs` every reveal; and
:attr:`CommunicationLog.share_reads` counts how often code outside the protocol library (a lesson,
a learner's function) read the stacked shares of *all* parties at once — which in a real
deployment nobody holds, so a secure function must never do it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field

__all__ = ["Cost", "CommunicationLog", "Input", "Opening", "Output", "WORD_BYTES"]

#: Bytes per ring element on the wire.
WORD_BYTES = 8


@dataclass
class Cost:
    """Rounds and bytes of online communication, plus bytes the dealer sent beforehand."""

    rounds: int = 0
    bytes: int = 0
    offline_bytes: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            self.rounds + other.rounds,
            self.bytes + other.bytes,
            self.offline_bytes + other.offline_bytes,
        )

    def __sub__(self, other: Cost) -> Cost:
        return Cost(
            self.rounds - other.rounds,
            self.bytes - other.bytes,
            self.offline_bytes - other.offline_bytes,
        )


@dataclass(frozen=True)
class Output:
    """One revealed result: during ``operation``, ``receiver`` learned ``elements`` values."""

    operation: str
    receiver: str
    elements: int


@dataclass(frozen=True)
class Opening:
    """One round of opening: during ``operation``, values of ``shapes`` became known to every
    party (``sharing`` is ``"additive"`` or ``"xor"``); ``elements`` words each."""

    operation: str
    sharing: str
    shapes: tuple[tuple[int, ...], ...]

    @property
    def elements(self) -> int:
        return sum(math.prod(shape) for shape in self.shapes)


@dataclass(frozen=True)
class Input:
    """One value shared into the computation: during ``operation``, ``sender`` sent ``elements``
    values' shares to the parties."""

    operation: str
    sender: str
    elements: int


class _Operation:
    """``with log.operation(name):`` — pushes ``name`` on the log's stack for the block (a plain
    class: it runs for every multiplication, and a generator-based context manager costs more)."""

    __slots__ = ("_name", "_stack")

    def __init__(self, stack: list[str], name: str) -> None:
        self._stack, self._name = stack, name

    def __enter__(self) -> None:
        self._stack.append(self._name)

    def __exit__(self, *exc_info: object) -> None:
        self._stack.pop()


@dataclass
class CommunicationLog:
    """Running totals of rounds and bytes, overall and per operation."""

    n_parties: int
    total: Cost = field(default_factory=Cost)
    by_operation: dict[str, Cost] = field(default_factory=dict)
    outputs: list[Output] = field(default_factory=list)
    openings: list[Opening] = field(default_factory=list)
    inputs: list[Input] = field(default_factory=list)
    share_reads: int = 0
    _stack: list[str] = field(default_factory=list, repr=False)

    def _charge(self, cost: Cost) -> None:
        name = self._stack[0] if self._stack else "other"
        self.total = self.total + cost
        self.by_operation[name] = self.by_operation.get(name, Cost()) + cost

    def _operation(self) -> str:
        return self._stack[0] if self._stack else "other"

    def record_open(
        self,
        elements: int,
        shapes: tuple[tuple[int, ...], ...] | None = None,
        sharing: str = "additive",
    ) -> None:
        """One round in which every party sends ``elements`` words to every other party.

        With ``shapes`` (the shape of each opened value) the opening is also listed in
        :attr:`openings`."""
        n = self.n_parties
        self.record_messages(elements, n * (n - 1))
        if shapes is not None:
            self.openings.append(Opening(self._operation(), sharing, shapes))

    def record_input(self, sender: str, elements: int) -> None:
        """Note that ``sender`` shared ``elements`` values into the computation (see
        :attr:`inputs`)."""
        self.inputs.append(Input(self._operation(), sender, elements))

    def record_share_read(self) -> None:
        """Count one read of all parties' stacked shares by code outside the protocol library."""
        self.share_reads += 1

    @property
    def opened_elements(self) -> int:
        """Words opened to every party so far, summed over :attr:`openings`."""
        return sum(opening.elements for opening in self.openings)

    def record_messages(self, elements: int, messages: int) -> None:
        """One round of ``messages`` messages of ``elements`` words each (inputs, outputs)."""
        self._charge(Cost(rounds=1, bytes=WORD_BYTES * messages * elements))

    def record_output(self, receiver: str, elements: int) -> None:
        """Note that ``receiver`` learned ``elements`` plaintext values (see :attr:`outputs`)."""
        self.outputs.append(Output(self._operation(), receiver, elements))

    def record_dealer(self, elements: int) -> None:
        """The dealer sent each party one share of ``elements`` words (offline)."""
        self._charge(Cost(offline_bytes=WORD_BYTES * self.n_parties * elements))

    def operation(self, name: str) -> AbstractContextManager[None]:
        """Charge the communication in this block to ``name`` (unless an outer op is running)."""
        return _Operation(self._stack, name)

    @contextmanager
    def measure(self) -> Iterator[Cost]:
        """``with log.measure() as cost: ...`` — afterwards ``cost`` holds what the block used."""
        before = self.total
        cost = Cost()
        try:
            yield cost
        finally:
            spent = self.total - before
            cost.rounds, cost.bytes, cost.offline_bytes = (
                spent.rounds,
                spent.bytes,
                spent.offline_bytes,
            )

    def reset(self) -> None:
        """Forget everything counted so far."""
        self.total = Cost()
        self.by_operation = {}
        self.outputs = []
        self.openings = []
        self.inputs = []
        self.share_reads = 0

    def table(self) -> str:
        """A plain-text table: operation, rounds, online bytes, offline (dealer) bytes."""
        lines = [f"{'operation':<14}{'rounds':>8}{'online bytes':>16}{'dealer bytes':>16}"]
        for name, c in list(self.by_operation.items()) + [("total", self.total)]:
            lines.append(f"{name:<14}{c.rounds:>8}{c.bytes:>16,}{c.offline_bytes:>16,}")
        return "\n".join(lines)
