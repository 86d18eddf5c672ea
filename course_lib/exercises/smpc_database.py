"""Checkers for lesson 16's encrypted database lookup: equality from comparisons, and the one-hot
selection that turns equality bits into the looked-up value (:mod:`course_lib.smpc.database`).

Each checker builds its own seeded sessions (2 and 3 parties) and names the inputs in every ✗
message. Both insist that the answer is computed on shares: the session's log must show the
protocol's own openings and nothing else — no reveal, no read of the parties' shares, no re-shared
value (:mod:`course_lib.exercises._smpc_audit`) — or the answer is refused even when its numbers
are right.
"""

from __future__ import annotations

import torch

from course_lib.exercises._registry import (
    exercise,
    expect,
    expect_callable,
    expect_equal,
    expect_not_none,
)
from course_lib.exercises._smpc_audit import expect_only_protocol_openings, protocol_opened_elements
from course_lib.randomness import InsecureSeededRandom
from course_lib.smpc import Session, SharedTensor


def _shared_result(result: object, what: str) -> SharedTensor:
    expect_not_none(result, what)
    expect(
        isinstance(result, SharedTensor),
        f"{what} should be a SharedTensor (computed on shares, never revealed), got "
        f"{type(result).__name__}",
    )
    return result  # type: ignore[return-value]


@exercise(
    "16.secure_equal",
    task="write secure_equal(x, y): shared 0/1 bits, 1 where the SharedTensors x and y are equal, "
    "using only the comparison < (not ==) and arithmetic on shares",
    nudge="two numbers are equal exactly when neither is smaller than the other; x < y and y < x "
    "give shared 0/1 bits, and at most one of them is 1",
    hint="1 - (x < y) - (y < x): the two bits are never both 1, so this is 1 only on a tie",
)
def _(secure_equal) -> None:
    expect_callable(secure_equal, "secure_equal", "16.secure_equal")
    a = torch.tensor([3, 7, -2, 0, 2**31, 5, -(2**31)], dtype=torch.int64)
    b = torch.tensor([3, 8, -2, 1, 2**31, -5, 2**31], dtype=torch.int64)
    for n in (2, 3):
        reference = Session(n, rng=InsecureSeededRandom(n))
        rx, ry = reference.share_integers(a), reference.share_integers(b)
        protocol = protocol_opened_elements(reference, lambda u, v: 1 - (u < v) - (v < u), rx, ry)
        session = Session(n, rng=InsecureSeededRandom(n))
        x, y = session.share_integers(a), session.share_integers(b)
        session.log.reset()
        on = f"secure_equal(x, y) for {n} parties' shares of x = {a.tolist()} and y = {b.tolist()}"
        out = _shared_result(secure_equal(x, y), on)
        expect_only_protocol_openings(session, protocol, on)
        expect(
            "eq" not in session.log.by_operation,
            f"build the equality from <, without the library's == ({on} used ==)",
        )
        expect(
            tuple(out.shape) == tuple(a.shape),
            f"{on} should have shape {tuple(a.shape)}, got {tuple(out.shape)}",
        )
        expect_equal(out.reveal(), (a == b).double(), f"the revealed bits of {on}")


@exercise(
    "16.one_hot_select",
    task="write one_hot_select(match, values): from shared 0/1 bits match (1 on the row whose key "
    "equals the query) and the shared column values, return (value, found) as SharedTensors: the "
    "selected value and 1 if some row matched, else 0",
    nudge="multiply each row's value by its match bit on shares: every product is 0 except on the "
    "matching row; the bits themselves say whether there was a match",
    hint="value = (match * values).sum(), found = match.sum(): one Beaver product for all rows, "
    "sums are local",
)
def _(one_hot_select) -> None:
    expect_callable(one_hot_select, "one_hot_select", "16.one_hot_select")
    values = torch.tensor([40, 0, -7, 2**31 - 1, 13], dtype=torch.int64)
    for n in (2, 3):
        for row in (2, 1, 3, None):
            bits = torch.zeros(5, dtype=torch.int64)
            if row is not None:
                bits[row] = 1
            reference = Session(n, rng=InsecureSeededRandom(10 + n))
            rm, rv = reference.share_integers(bits), reference.share_integers(values)
            protocol = protocol_opened_elements(
                reference, lambda m, v: ((m * v).sum(), m.sum()), rm, rv
            )
            session = Session(n, rng=InsecureSeededRandom(10 + n))
            match, column = session.share_integers(bits), session.share_integers(values)
            session.log.reset()
            on = (
                f"one_hot_select(match, values) for {n} parties' shares of match = "
                f"{bits.tolist()} and values = {values.tolist()}"
            )
            result = one_hot_select(match, column)
            expect_not_none(result, on)
            expect(
                isinstance(result, tuple) and len(result) == 2,
                f"return a pair (value, found); {on} returned {type(result).__name__}",
            )
            value = _shared_result(result[0], f"the value of {on}")
            found = _shared_result(result[1], f"found of {on}")
            expect_only_protocol_openings(session, protocol, on)
            expect(
                value.numel() == 1 and found.numel() == 1,
                f"value and found of {on} should each be one number (sum over the rows), got "
                f"shapes {tuple(value.shape)} and {tuple(found.shape)}",
            )
            want = 0 if row is None else int(values[row])
            expect_equal(
                value.reveal().reshape(()), torch.tensor(float(want)), f"the value of {on}"
            )
            expect_equal(
                found.reveal().reshape(()),
                torch.tensor(0.0 if row is None else 1.0),
                f"found of {on}",
            )
