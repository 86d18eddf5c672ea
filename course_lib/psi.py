"""Private set intersection (PSI) and a private database lookup (PIR).

**Diffie–Hellman PSI.** Two parties — say two hospitals — each hold a set of patient identifiers and
want to know which patients they share, without revealing anyone else. Both hash every identifier
to a point of an elliptic curve and *blind* it with a secret scalar. Because scalar multiplication
commutes, ``b·(a·H(x)) = a·(b·H(x))``: the doubly blinded values of shared identifiers match,
while a singly blinded value looks random to anyone without the scalar (the decisional
Diffie–Hellman assumption, with ``H`` modelled as a random oracle).

Protocol (semi-honest parties; the *client* learns the intersection, the server learns only the
client's set size):

1. client → server: ``a·H(x)`` for each of its items, in a random order;
2. server → client: ``b·(a·H(x))`` for each received value, *in the same order*, and ``b·H(y)`` for
   each of its own items, in a random order;
3. the client computes ``a·(b·H(y))`` and keeps the ``x`` whose ``b·a·H(x)`` is among them.

Two messages, ``2·|X| + |Y|`` curve points of 32 bytes on the wire.

**The curve.** Curve25519 through the ``cryptography`` library's X25519 function, which computes
the u-coordinate of ``clamp(k)·P`` with the Montgomery ladder. ``H(x)`` is SHA-512 of a
domain-separation tag and ``x``, cut to 32 bytes with the top bit cleared (RFC 7748), used as a
u-coordinate. Such a u lies on Curve25519 or on its quadratic twist; both have a large
prime-order subgroup (about 2²⁵²), X25519 is designed to be secure on either ("twist security"),
and clamping clears the small cofactor. Scalar multiplication commutes on the x-line, so the
protocol is correct; the hash makes the discrete logarithm of every ``H(x)`` unknown, as DDH-PSI
requires. (A full hash-to-curve such as Elligator 2 onto ristretto255 would stay on one
prime-order group; this course keeps to the widely deployed primitive.)

**Private information retrieval.** :class:`PIRServer` / :class:`PIRClient` let a client fetch record
``i`` of a server's table without the server learning ``i``: the table is laid out as a
``rows × cols`` grid (``cols ≈ √n``); the client sends a Paillier-encrypted one-hot vector selecting
column ``c``; for every row the server computes ``Π_j E(s_j)^{d_rj} = E(d_rc)`` — an encrypted dot
product — and returns one ciphertext per row; the client decrypts the one of its row. Cost:
``cols`` ciphertexts up, ``rows`` ciphertexts down (≈ 2·√n), ``n`` modular exponentiations for the
server. The server must touch every record — otherwise it would learn which one was not needed.
PIR protects the *client's* choice only: decrypting other rows of the answer would reveal other
records of the selected column (hiding those too is *symmetric* PIR, i.e. oblivious transfer).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from phe.paillier import EncryptedNumber, PaillierPrivateKey, PaillierPublicKey

from course_lib.randomness import RandomSource, resolve_random_source

__all__ = [
    "PIRClient",
    "PIRServer",
    "PSIClient",
    "PSIReply",
    "PSIResult",
    "PSIServer",
    "hash_to_point",
    "private_set_intersection",
]

POINT_BYTES = 32
_DOMAIN = b"course_lib.psi.v1/hash-to-x25519"

Item = str | bytes


def _item_bytes(item: Item) -> bytes:
    if isinstance(item, str):
        return item.encode("utf-8")
    if isinstance(item, bytes):
        return item
    raise TypeError(
        f"set items must be str or bytes identifiers, got {type(item).__name__}: {item!r}"
    )


def hash_to_point(item: Item) -> bytes:
    """``H(item)``: a 32-byte X25519 u-coordinate derived from SHA-512 (random-oracle model)."""
    digest = bytearray(hashlib.sha512(_DOMAIN + _item_bytes(item)).digest()[:POINT_BYTES])
    digest[-1] &= 0x7F  # RFC 7748: the top bit of a u-coordinate is ignored; clear it
    return bytes(digest)


class _Blinder:
    """Multiplication of X25519 u-coordinates by one secret scalar."""

    def __init__(self, rng: RandomSource) -> None:
        self._key = X25519PrivateKey.from_private_bytes(rng.bytes(32))

    def __call__(self, point: bytes) -> bytes:
        if not isinstance(point, bytes) or len(point) != POINT_BYTES:
            raise ValueError(f"a blinded point must be {POINT_BYTES} bytes")
        return self._key.exchange(X25519PublicKey.from_public_bytes(point))


def _shuffled(values: list, rng: RandomSource) -> list:
    """Fisher–Yates shuffle driven by ``rng`` (so the order reveals nothing)."""
    values = list(values)
    for i in range(len(values) - 1, 0, -1):
        j = rng.randbelow(i + 1)
        values[i], values[j] = values[j], values[i]
    return values


def _as_set(items: Iterable[Item], who: str) -> list[bytes]:
    if isinstance(items, str | bytes):
        raise TypeError(
            f"{who}'s items must be a collection of identifiers, not one {type(items).__name__}"
        )
    return sorted({_item_bytes(item) for item in items})


@dataclass(frozen=True)
class PSIReply:
    """The server's single message: the client's points blinded again, and its own blinded set."""

    double_blinded: tuple[bytes, ...]
    server_blinded: tuple[bytes, ...]

    @property
    def nbytes(self) -> int:
        return POINT_BYTES * (len(self.double_blinded) + len(self.server_blinded))


class PSIClient:
    """The party that learns the intersection (e.g. hospital A)."""

    def __init__(self, items: Iterable[Item], *, rng: RandomSource | None = None) -> None:
        self._rng = resolve_random_source(rng)
        self._items = _as_set(items, "the client")
        self._blind = _Blinder(self._rng)
        self._order: list[bytes] | None = None

    def request(self) -> tuple[bytes, ...]:
        """Message 1: ``a·H(x)`` for every item, shuffled."""
        self._order = _shuffled(self._items, self._rng)
        return tuple(self._blind(hash_to_point(x)) for x in self._order)

    def intersect(self, reply: PSIReply) -> set[bytes]:
        """The items (as bytes) that the server also holds."""
        if self._order is None:
            raise RuntimeError("call request() and send it to the server before intersect()")
        if not isinstance(reply, PSIReply):
            raise TypeError(f"expected the server's PSIReply, got {type(reply).__name__}")
        if len(reply.double_blinded) != len(self._order):
            raise ValueError(
                f"the reply blinds {len(reply.double_blinded)} points "
                f"but {len(self._order)} were sent"
            )
        theirs = {self._blind(point) for point in reply.server_blinded}
        return {
            x for x, point in zip(self._order, reply.double_blinded, strict=True) if point in theirs
        }


class PSIServer:
    """The party that answers (e.g. hospital B); it learns only how many items the client has."""

    def __init__(self, items: Iterable[Item], *, rng: RandomSource | None = None) -> None:
        self._rng = resolve_random_source(rng)
        self._items = _as_set(items, "the server")
        self._blind = _Blinder(self._rng)

    def respond(self, request: Sequence[bytes]) -> PSIReply:
        """Message 2: blind the client's points again (same order) and send its own, shuffled."""
        if isinstance(request, bytes | str) or not isinstance(request, Sequence):
            raise TypeError("the request must be a sequence of 32-byte blinded points")
        double = tuple(self._blind(point) for point in request)
        own = tuple(self._blind(hash_to_point(y)) for y in _shuffled(self._items, self._rng))
        return PSIReply(double, own)


@dataclass(frozen=True)
class PSIResult:
    """What the client learned, and what the protocol cost."""

    intersection: set[bytes]
    messages: int
    bytes_to_server: int
    bytes_to_client: int
    request: tuple[bytes, ...]
    reply: PSIReply


def private_set_intersection(
    client_items: Iterable[Item], server_items: Iterable[Item], *, rng: RandomSource | None = None
) -> PSIResult:
    """Run both sides of DH-PSI in one process and return the client's view with its cost.

    The intersection is returned as ``bytes`` (str identifiers UTF-8 encoded). ``rng`` (default:
    secure) supplies both parties' secret scalars and shuffles.
    """
    rng = resolve_random_source(rng)
    client = PSIClient(client_items, rng=rng)
    server = PSIServer(server_items, rng=rng)
    request = client.request()
    reply = server.respond(request)
    return PSIResult(
        client.intersect(reply), 2, POINT_BYTES * len(request), reply.nbytes, request, reply
    )


# -- private information retrieval ---------------------------------------------------------------


def _record_int(record: Item, public_key: PaillierPublicKey) -> int:
    data = _item_bytes(record)
    value = int.from_bytes(b"\x01" + data, "big")  # the 0x01 keeps leading zero bytes
    if value > public_key.max_int:
        capacity = (public_key.max_int.bit_length() - 9) // 8
        raise ValueError(f"a record of {len(data)} bytes is too long: this key holds {capacity}")
    return value


@dataclass(frozen=True)
class PIRQuery:
    """The client's message: an encrypted one-hot column selector."""

    selector: tuple[EncryptedNumber, ...]
    public_key: PaillierPublicKey

    @property
    def nbytes(self) -> int:
        return len(self.selector) * ((2 * self.public_key.n.bit_length() + 7) // 8)


class PIRServer:
    """Holds a public table of ``n`` records (str or bytes) laid out as ``rows × cols``."""

    def __init__(self, records: Sequence[Item]) -> None:
        if isinstance(records, str | bytes) or not isinstance(records, Sequence):
            raise TypeError("records must be a sequence (list) of str or bytes")
        if len(records) == 0:
            raise ValueError("the database is empty: nothing to look up")
        self.records = [_item_bytes(r) for r in records]
        self.cols = math.isqrt(len(records) - 1) + 1
        self.rows = -(-len(records) // self.cols)

    def answer(self, query: PIRQuery) -> tuple[EncryptedNumber, ...]:
        """One ciphertext per row: ``E(Σ_j s_j · d_rj)``, the record of the selected column."""
        if not isinstance(query, PIRQuery):
            raise TypeError(f"expected a PIRQuery, got {type(query).__name__}")
        if len(query.selector) != self.cols:
            raise ValueError(
                f"the query selects among {len(query.selector)} columns, the table has {self.cols}"
            )
        out = []
        for r in range(self.rows):
            total = query.public_key.encrypt(0)
            for c, selected in enumerate(query.selector):
                index = r * self.cols + c
                if index < len(self.records):
                    total = total + selected * _record_int(self.records[index], query.public_key)
            out.append(total)
        return tuple(out)


class PIRClient:
    """Fetches one record by index; the server never sees which."""

    def __init__(
        self,
        public_key: PaillierPublicKey,
        private_key: PaillierPrivateKey,
        *,
        rng: RandomSource | None = None,
    ) -> None:
        if private_key.public_key != public_key:
            raise ValueError("the private key does not match the public key")
        self.public_key, self._private_key = public_key, private_key
        self._rng = resolve_random_source(rng)
        self._wanted: tuple[int, int] | None = None

    def query(self, index: int, n_records: int) -> PIRQuery:
        """Encrypt a one-hot selector for record ``index``'s column in a table of ``n_records``."""
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"the index must be an int, got {type(index).__name__}")
        if not 0 <= index < n_records:
            raise ValueError(f"index {index} is outside the table of {n_records} records")
        cols = math.isqrt(n_records - 1) + 1
        row, col = divmod(index, cols)
        self._wanted = (row, col)
        n = self.public_key.n
        selector = tuple(
            self.public_key.encrypt(int(c == col), r_value=1 + self._rng.randbelow(n - 1))
            for c in range(cols)
        )
        return PIRQuery(selector, self.public_key)

    def decode(self, answer: Sequence[EncryptedNumber]) -> bytes:
        """Decrypt the ciphertext of the wanted row and turn it back into the record's bytes."""
        if self._wanted is None:
            raise RuntimeError("call query() before decode()")
        row, _ = self._wanted
        if row >= len(answer):
            raise ValueError(
                f"the answer has {len(answer)} rows; the wanted record is in row {row}"
            )
        value = self._private_key.decrypt(answer[row])
        if not isinstance(value, int) or value <= 0:
            raise ValueError(
                "the decrypted answer is not a record: was the query made for this table?"
            )
        data = value.to_bytes((value.bit_length() + 7) // 8, "big")
        if data[0] != 1:
            raise ValueError(
                "the decrypted answer is not a record: was the query made for this table?"
            )
        return data[1:]
