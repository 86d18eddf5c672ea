"""An encrypted key–value store: a table held in secret shares, looked up by a secret key.

A data owner splits a table of integer ``keys`` and ``values`` into additive shares among the
``n`` servers (the parties of a :class:`~course_lib.smpc.session.Session`); no server holds a
key or a value in the clear. A client shares its query key ``q`` the same way, and the servers
compute, on shares only, for **every** row ``i`` at once::

    match_i = [key_i == q]              # secure equality: 1 − [key_i < q] − [q < key_i]
    value   = Σ_i match_i · value_i     # the one-hot selection: one Beaver product per row
    found   = Σ_i match_i               # 1 if the key is in the table, else 0 (keys are distinct)

and deliver ``value`` and ``found`` to the client only (:meth:`SharedTensor.reveal
<course_lib.smpc.tensor.SharedTensor.reveal>` with ``to=``). A missing key gives ``value = 0`` —
indistinguishable from a stored 0 — which is why ``found`` comes with it.

**Cost.** The equality bits of all ``n`` rows come from one batched comparison circuit
(:mod:`.comparison`), so the rounds do not grow with the table: sharing the query (1) +
equality (``7(p − 1) + 1`` for ``p`` servers) + the selection product (1) + delivery (1) —
11 rounds with 2 servers, 18 with 3, for 10 rows or 1,000 (tests/smpc/test_database.py). The
bytes do grow, linearly: each row costs two comparisons (``8·p(p−1)·(24(p − 1) + 1)`` bytes each)
and one product (2 opened words, ``16·p(p−1)`` bytes).

**Threat model.** Semi-honest servers that do not collude (any ``p − 1`` of them together learn
nothing), a trusted dealer that colludes with nobody (see :mod:`.session`). Each server sees
only its own uniformly random shares and values opened under one-time masks, so its view is
independent of the query — including *which row* matched: every row is touched by the same
operations (the access pattern is hidden) and the messages have the same sizes whatever the
query, apart from how many keys are asked in one batch (and the table's size, which is public).
The client learns the value for its key and whether the key is present, nothing about other
rows. Nothing here protects against a cheating server (it can shift the answer) or stops
a client from asking for any key it likes.

Contrast: the Paillier PIR of :mod:`course_lib.psi` (lesson 19) needs one server only, but that
server holds the table in the clear and the client must know the row *index*; here the table
itself is secret, the client looks up by *key*, and privacy rests on the servers not colluding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, TypeGuard

import numpy as np
import torch

from course_lib.smpc.session import Participant, Session
from course_lib.smpc.tensor import SharedTensor
from course_lib.validation import is_integer

__all__ = ["KEY_RANGE", "VALUE_RANGE", "LookupResult", "SharedKeyValueStore"]

#: Keys are integers ``lo ≤ key < hi`` (e.g. 32-bit record ids): their differences stay far from
#: the ±2^63 wrap-around, so the comparisons of the equality test are exact.
KEY_RANGE = (0, 2**32)
#: Values are integers ``lo ≤ value < hi`` (32-bit signed, as int32): exact in the float64 the
#: library decodes to, and the one-hot sum of them cannot wrap around.
VALUE_RANGE = (-(2**31), 2**31)


class LookupResult(NamedTuple):
    """Shares of the looked-up ``value`` and of ``found`` (1 if the key exists, else 0).

    Both are scale-0 :class:`SharedTensor` s with the shape of the query: ``()`` for one key,
    ``(m,)`` for ``m`` keys.
    """

    value: SharedTensor
    found: SharedTensor


def _is_int(value: object) -> TypeGuard[int | np.integer]:
    """A Python or NumPy integer, not a bool (:func:`course_lib.validation.is_integer`)."""
    return is_integer(value)


def _integers(values: object, name: str, bounds: tuple[int, int]) -> torch.Tensor:
    """``values`` (an int, a sequence of ints, or a 0-/1-D integer torch tensor or NumPy array) as
    int64, checked, unshared."""
    lo, hi = bounds
    if isinstance(values, np.ndarray):
        if values.dtype.kind not in "iu":
            raise TypeError(f"{name} must be integers, got a NumPy array of dtype {values.dtype}")
        if values.ndim > 1:
            raise ValueError(
                f"{name} must be one number or a 1-D list, got shape {tuple(values.shape)}"
            )
        values = values.tolist()  # Python ints: range-checked exactly below, even for uint64
    if isinstance(values, torch.Tensor):
        if values.dtype == torch.bool or values.dtype.is_floating_point or values.is_complex():
            raise TypeError(f"{name} must be integers, got a tensor of dtype {values.dtype}")
        tensor = values.to(torch.int64)
    else:
        items = values if isinstance(values, Sequence) and not isinstance(values, str) else None
        if items is None and not _is_int(values):
            raise TypeError(
                f"{name} must be an int, a list of ints, or an integer torch tensor or NumPy "
                "array, got "
                f"{type(values).__name__}"
            )
        ints: list[int] = []
        for item in [values] if items is None else items:
            if not _is_int(item):
                raise TypeError(
                    f"{name} must be integers, got {item!r} ({type(item).__name__}); floats and "
                    "booleans are not keys or values — convert them explicitly"
                )
            number = int(item)
            if not lo <= number < hi:
                raise ValueError(f"{name} must lie in [{lo}, {hi}), got {item}")
            ints.append(number)
        tensor = torch.tensor(ints if items is not None else ints[0], dtype=torch.int64)
    if tensor.dim() > 1:
        raise ValueError(
            f"{name} must be one number or a 1-D list, got shape {tuple(tensor.shape)}"
        )
    if tensor.numel() and not (lo <= int(tensor.min()) and int(tensor.max()) < hi):
        bad = tensor[(tensor < lo) | (tensor >= hi)][0]
        raise ValueError(f"{name} must lie in [{lo}, {hi}), got {int(bad)}")
    return tensor


class SharedKeyValueStore:
    """A table of distinct integer keys and their integer values, secret-shared among servers.

    ``keys`` and ``values``: equal-length 1-D integer sequences or tensors, keys in
    :data:`KEY_RANGE`, values in :data:`VALUE_RANGE`. ``session``: the servers (its parties),
    dealer and cost log. ``owner``: who shares the table (as in :meth:`Session.share`; default an
    outside data owner). Raises ``TypeError`` for non-integers and ``ValueError`` for an empty
    table, mismatched lengths, out-of-range numbers or a repeated key — before any share is made.
    """

    def __init__(
        self, keys: object, values: object, session: Session, *, owner: Participant = None
    ) -> None:
        if not isinstance(session, Session):
            raise TypeError(f"session must be a course_lib.smpc.Session, got {type(session)}")
        key_tensor = _integers(keys, "the keys", KEY_RANGE)
        value_tensor = _integers(values, "the values", VALUE_RANGE)
        if key_tensor.dim() != 1 or value_tensor.dim() != 1:
            raise ValueError("keys and values must be 1-D lists (one entry per row)")
        if len(key_tensor) != len(value_tensor):
            raise ValueError(
                f"mismatched lengths: {len(key_tensor)} keys but {len(value_tensor)} values"
            )
        if len(key_tensor) == 0:
            raise ValueError("the table is empty: give at least one key and value")
        unique, counts = torch.unique(key_tensor, return_counts=True)
        if (counts > 1).any():
            raise ValueError(
                f"key {int(unique[counts > 1][0])} appears {int(counts.max())} times: keys must be "
                "distinct, or a lookup would return the SUM of their values"
            )
        session.participant(owner, "owner")  # a bad owner is refused before sharing
        self.session = session
        self.keys = session.share_integers(key_tensor, owner=owner)
        self.values = session.share_integers(value_tensor, owner=owner)

    def __len__(self) -> int:
        return self.keys.shape[0]

    def __repr__(self) -> str:
        return f"SharedKeyValueStore(rows={len(self)}, servers={self.session.n_parties})"

    def share_query(self, keys: object, client: Participant = "client") -> SharedTensor:
        """The client's key (an int → shape ``()``) or keys (1-D → ``(m,)``), secret-shared.

        Keys must lie in :data:`KEY_RANGE` (``TypeError`` / ``ValueError`` otherwise, before
        sharing). One round; charged to ``"share"``.
        """
        query = _integers(keys, "the query", KEY_RANGE)
        return self.session.share_integers(query, owner=client)

    def lookup(self, query: SharedTensor) -> LookupResult:
        """Shares of the value stored under each shared query key, and of whether it exists.

        All rows are compared with all query keys in one batched equality (``(m, n)`` bits), so
        the rounds are the same for any table size. Nothing is revealed.
        """
        if not isinstance(query, SharedTensor):
            raise TypeError(
                f"lookup needs the query as a SharedTensor (from share_query), got "
                f"{type(query).__name__}"
            )
        if query.session is not self.session:
            raise ValueError("the query belongs to a different session than the table")
        if query.scale_bits != 0 or query.dim() > 1:
            raise ValueError(
                "the query must be shared integers (scale 0) of shape () or (m,) — use share_query"
            )
        match = self.keys == query.unsqueeze(-1)  # (m, n) or (n,): 1 where key_i == q; "eq"
        values = self.values if match.dim() == 1 else self.values.unsqueeze(0).expand(*match.shape)
        value = (match * values).sum(dim=-1)  # one Beaver product for all rows: "mul"
        found = match.sum(dim=-1)  # local
        return LookupResult(value, found)

    def get(
        self, keys: object, client: Participant = "client"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Share ``keys`` from ``client``, look them up and deliver the answer to ``client`` only.

        Returns ``(values, found)``: int64 and bool tensors with the shape of ``keys``, what the
        client decodes. ``client`` must be a name or a server index — not ``None``, which would
        open the answer to every server. Value and found bit travel together: one round.
        """
        if client is None:
            raise ValueError(
                "client=None would reveal the answer to every server; name the client "
                "(e.g. 'client') or give a server index"
            )
        self.session.participant(client)  # checked before any work
        value, found = self.lookup(self.share_query(keys, client))
        both = SharedTensor.cat([value.unsqueeze(0), found.unsqueeze(0)]).reveal(to=client)
        return both[0].to(torch.int64), both[1].to(torch.int64) == 1
