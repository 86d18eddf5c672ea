"""The audit behind every secure exercise of lessons 16–17: *nothing revealed* means nothing.

A function that must compute on secret shares may open exactly what its protocol opens — the
masked values of the Beaver products and comparisons it runs — and nothing else. The checker reads
the session's log (:class:`course_lib.smpc.communication.CommunicationLog`) after the learner's
call and refuses, with the reason:

- a read of all parties' shares at once (``x.shares``, e.g. to add them up: ``log.share_reads``);
- a reveal (``x.reveal()``: ``log.outputs``);
- a value shared into the computation (``session.share``: ``log.inputs``) — how an opened secret
  would be re-shared;
- an opening outside the library's protocol operations (``session.open`` called directly);
- more (or fewer) opened values than the protocol's own: the total number of opened elements must
  equal that of the reference protocol run on the same shapes (batching two comparisons into one
  round, or ``x.T @ y`` for ``(y.T @ x).T``, opens the same number).
"""

from __future__ import annotations

from collections.abc import Callable

from course_lib.exercises._registry import expect
from course_lib.smpc import Session, SharedTensor

__all__ = [
    "expect_nothing_but_openings",
    "expect_only_protocol_openings",
    "expect_opened_count",
    "opened_so_far",
    "protocol_opened_elements",
]


def protocol_opened_elements(
    session: Session, protocol: Callable[..., object], *args: SharedTensor
) -> int:
    """How many elements ``protocol(*args)`` (the reference solution, on ``session``) opens."""
    before = len(session.log.openings)
    protocol(*args)
    return sum(opening.elements for opening in session.log.openings[before:])


def _transcript(session: Session) -> str:
    openings = session.log.openings
    if not openings:
        return "nothing was opened"
    by_operation: dict[str, int] = {}
    for opening in openings:
        by_operation[opening.operation] = by_operation.get(opening.operation, 0) + opening.elements
    return "opened: " + ", ".join(f"{n} in {op!r}" for op, n in by_operation.items())


def opened_so_far(session: Session) -> tuple[int, str]:
    """The number of elements opened since the log's last reset, and where (for the message);
    take it before the checker's own reveals add to the log."""
    return session.log.opened_elements, _transcript(session)


def expect_nothing_but_openings(session: Session, on: str) -> None:
    """Fail unless the log since its last reset holds no share read, no reveal, no input and no
    opening outside the library's protocol operations."""
    log = session.log
    expect(
        log.share_reads == 0,
        f"your function read the parties' shares directly (.shares) {log.share_reads} time(s): "
        "together they are the secret, which no party may hold — compute with the SharedTensor "
        f"operators (+, -, *, @, <, .ltz(), .sum()) only; {on}",
    )
    expect(
        not log.outputs,
        f"your function revealed {sum(o.elements for o in log.outputs)} value(s) "
        f"({', '.join(sorted({o.receiver for o in log.outputs}))}): nothing may be revealed "
        f"inside it, not even to re-share it; {on}",
    )
    expect(
        not log.inputs,
        f"your function shared {sum(i.elements for i in log.inputs)} new value(s) into the "
        "computation (session.share): the result must come from computing on the shares you "
        f"were given, not from re-sharing a value someone learned; {on}",
    )
    outside = sum(o.elements for o in log.openings if o.operation == "other")
    expect(
        outside == 0,
        f"your function opened {outside} value(s) outside the protocol's operations "
        f"(session.open): every opened value must be a masked one inside a product or a "
        f"comparison; {on}",
    )


def expect_opened_count(opened: tuple[int, str], protocol_elements: int, on: str) -> None:
    """Fail unless exactly ``protocol_elements`` values were opened (``opened`` from
    :func:`opened_so_far`)."""
    count, transcript = opened
    expect(
        count == protocol_elements,
        f"the protocol opens exactly {protocol_elements} masked values here, your function "
        f"{count} ({transcript}): use exactly the products and comparisons the task names; {on}",
    )


def expect_only_protocol_openings(session: Session, protocol_elements: int, on: str) -> None:
    """Fail (with the reason) unless the log since its last reset holds only the protocol's own
    openings: no share reads, reveals or inputs, and exactly ``protocol_elements`` opened."""
    expect_nothing_but_openings(session, on)
    expect_opened_count(opened_so_far(session), protocol_elements, on)
