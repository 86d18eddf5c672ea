"""Private set intersection (PSI) and a private database lookup (PIR).

**Diffie–Hellman PSI.** Two parties — say two hospitals — each hold a set of patient identifiers and
want to know which patients they share, without revealing anyone else. Both hash every identifier
to an element of a group of prime order and *blind* it with a secret scalar. Because scalar
multiplication commutes, ``b·(a·H(x)) = a·(b·H(x))``: the doubly blinded values of shared
identifiers match, while a singly blinded value looks random to anyone without the scalar (the
decisional Diffie–Hellman assumption, with ``H`` modelled as a random oracle; Huberman, Franklin &
Hogg 1999, "Enhancing privacy and trust in electronic communities").

Protocol and threat model (*semi-honest* parties: both follow the protocol and try to learn more
from what they see). The *client* learns the intersection and the size of the server's set; the
*server* learns only the size of the client's set. Nothing protects against a *malicious* party: a
client may put guessed identifiers into its set, a server may answer with a different set.

1. client → server, a :class:`PSIRequest`: a fresh 16-byte request id and ``a·H(x)`` for each of
   its items, in a random order;
2. server → client, a :class:`PSIReply`: the SHA-256 digest of the request it answers,
   ``b·(a·H(x))`` for each received value *in the same order*, and ``b·H(y)`` for each of its own
   items, in a random order;
3. the client checks that the digest is that of its latest request (a stale, replayed or misrouted
   reply raises ``ValueError`` instead of pairing blinded values with the wrong items), computes
   ``a·(b·H(y))`` and keeps the ``x`` whose ``b·a·H(x)`` is among them.

Two messages, ``2·|X| + |Y|`` group elements of 32 bytes on the wire, plus 16 bytes of request id
and 32 bytes of digest. Every received element is validated (canonical ristretto255 encoding, not
the identity) before it is used.

**The group.** ristretto255 (RFC 9496) through libsodium (the ``rbcl`` bindings): a group of prime
order ``ℓ = 2²⁵² + 27742317777372353535851937790883648493`` built on Curve25519, with 32-byte
canonical encodings. ``H(x) = from_hash(SHA-512(tag ‖ x))`` — libsodium's
``crypto_core_ristretto255_from_hash``, the RFC 9496 §4.3.4 element derivation from 64 uniform
bytes, which is how libsodium's documentation hashes to the group. Secret scalars are 64 bytes from
the random source reduced modulo ``ℓ`` (``crypto_core_ristretto255_scalar_reduce``, RFC 9496 §4.4;
bias ≈ 2⁻²⁵⁹), drawn from :class:`~course_lib.randomness.SecureRandom` unless a seeded — and then
INSECURE — source is passed for a reproducible lesson.

*Why not a Curve25519 u-coordinate?* :func:`naive_hash_to_u` shows the mistake this module once
made: a hashed u-coordinate lies on Curve25519 or on its quadratic twist with probability about ½
each, X25519 scalar multiplication keeps that membership, and anyone can test it
(:func:`on_curve25519`, Euler's criterion). Every blinded value then carries one public bit of
``H(x)``: a server that knows the client holds identifier A or B guesses which every time the bits
differ. In a prime-order group every element is like every other, and there is no such bit.

**Identifiers.** Items are ``str`` or ``bytes``. A ``str`` is put in Unicode normal form NFC and
encoded as UTF-8, so ``"é"`` typed as one code point or as ``e`` + combining accent is the same
identifier; ``bytes`` are compared as they are (a ``str`` and its UTF-8 bytes are one identifier).
Nothing else is normalised: case, whitespace and punctuation count (``"Ana" ≠ "ana"``), so both
parties must format identifiers the same way before running the protocol. The intersection is
returned as these bytes.

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
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from course_lib.randomness import RandomSource, resolve_random_source

# rbcl and phe come with the [he] extra, which only lessons 18-19 install: they are imported where
# they are used, so that importing this module (the lesson 19 checkers do, and `check` loads every
# checker) works in a lesson that installed another extra.
if TYPE_CHECKING:
    from phe.paillier import EncryptedNumber, PaillierPrivateKey, PaillierPublicKey

__all__ = [
    "P25519",
    "PIRClient",
    "PIRServer",
    "PSIClient",
    "PSIReply",
    "PSIRequest",
    "PSIResult",
    "PSIServer",
    "hash_to_point",
    "naive_hash_to_u",
    "on_curve25519",
    "private_set_intersection",
]

POINT_BYTES = 32
REQUEST_ID_BYTES = 16
DIGEST_BYTES = 32
_DOMAIN = b"course_lib.psi.v2/hash-to-ristretto255"
_NAIVE_DOMAIN = b"course_lib.psi.v1/hash-to-x25519"
_REQUEST_DOMAIN = b"course_lib.psi.v2/request"
_IDENTITY = bytes(POINT_BYTES)  # the canonical encoding of ristretto255's neutral element
P25519 = 2**255 - 19  #: the prime of Curve25519's field (RFC 7748)
CURVE25519_A = 486662  #: the coefficient A of Curve25519, v² = u³ + A·u² + u

Item = str | bytes


def _item_bytes(item: Item) -> bytes:
    """The identifier's canonical bytes: NFC-normalised UTF-8 for ``str``, unchanged ``bytes``."""
    if isinstance(item, str):
        try:
            return unicodedata.normalize("NFC", item).encode("utf-8")
        except UnicodeEncodeError as error:
            raise ValueError(
                f"identifier {item!r} is not valid Unicode text (a lone surrogate?)"
            ) from error
    if isinstance(item, bytes):
        return item
    raise TypeError(
        f"set items must be str or bytes identifiers, got {type(item).__name__}: {item!r}"
    )


def hash_to_point(item: Item) -> bytes:
    """``H(item)``: a ristretto255 element (32 bytes), ``from_hash(SHA-512(tag ‖ item))``.

    Identifiers are canonicalised first (NFC for ``str``, see the module docstring).
    """
    from rbcl import crypto_core_ristretto255_from_hash

    return crypto_core_ristretto255_from_hash(hashlib.sha512(_DOMAIN + _item_bytes(item)).digest())


def naive_hash_to_u(item: Item) -> bytes:
    """TEACHING ONLY — the *insecure* hash this module used to use: a Curve25519 u-coordinate.

    SHA-512 of a tag and the item, cut to 32 bytes with the top bit cleared (RFC 7748). About half
    of these values lie on Curve25519's quadratic twist rather than on the curve, and
    :func:`on_curve25519` tells which — a bit that X25519 blinding preserves (lesson 19 plays the
    resulting attack). Use :func:`hash_to_point` for anything real.
    """
    digest = bytearray(hashlib.sha512(_NAIVE_DOMAIN + _item_bytes(item)).digest()[:POINT_BYTES])
    digest[-1] &= 0x7F
    return bytes(digest)


def on_curve25519(u: bytes) -> bool:
    """Whether the 32-byte little-endian u-coordinate ``u`` belongs to Curve25519 (else its twist).

    ``u`` is on the curve ``v² = u³ + 486662u² + u`` over GF(2²⁵⁵ − 19) exactly when the right-hand
    side is a square, which Euler's criterion decides: ``rhs^((p−1)/2) ∈ {0, 1}`` (RFC 7748 §4.1
    gives the curve; the top bit of ``u`` is ignored, as X25519 does). Anyone can compute it — that
    is the leak of :func:`naive_hash_to_u`.
    """
    if not isinstance(u, bytes) or len(u) != POINT_BYTES:
        raise ValueError(f"a u-coordinate is {POINT_BYTES} bytes, got {u!r}")
    x = int.from_bytes(u, "little") & ((1 << 255) - 1)
    rhs = (x * x * x + CURVE25519_A * x * x + x) % P25519
    return pow(rhs, (P25519 - 1) // 2, P25519) in (0, 1)


def _check_point(point: object, where: str) -> bytes:
    """Return ``point`` if it is a valid ristretto255 encoding other than the identity."""
    if not isinstance(point, bytes) or len(point) != POINT_BYTES:
        shown = f"{len(point)} bytes" if isinstance(point, bytes) else type(point).__name__
        raise ValueError(f"{where} must be a {POINT_BYTES} bytes group element, got {shown}")
    if point == _IDENTITY:
        raise ValueError(f"{where} is the identity element, which no honest party sends")
    from rbcl import crypto_core_ristretto255_is_valid_point

    # RFC 9496 §4.3.1 reads all 256 bits, so a set top bit means s ≥ p; the libsodium inside rbcl
    # 1.1.2 ignores that bit (two encodings of one element), hence the explicit check
    if point[-1] & 0x80 or not crypto_core_ristretto255_is_valid_point(point):
        raise ValueError(
            f"{where} is not a valid ristretto255 element (not a canonical encoding of a group "
            f"element): {point.hex()}"
        )
    return point


class _Blinder:
    """Multiplication of ristretto255 elements by one secret scalar, uniform in ``[1, ℓ)``."""

    def __init__(self, rng: RandomSource) -> None:
        from rbcl import crypto_core_ristretto255_scalar_reduce

        scalar = _IDENTITY
        while scalar == _IDENTITY:  # zero has probability ≈ 2⁻²⁵²; it would blind to the identity
            scalar = crypto_core_ristretto255_scalar_reduce(rng.bytes(64))
        self._scalar = scalar

    def __call__(self, point: bytes) -> bytes:
        from rbcl import crypto_scalarmult_ristretto255

        return crypto_scalarmult_ristretto255(self._scalar, point)


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
class PSIRequest:
    """The client's message: a fresh request id and its blinded points ``a·H(x)``."""

    request_id: bytes
    points: tuple[bytes, ...]

    @property
    def digest(self) -> bytes:
        """SHA-256 of the whole request: what the reply names to say which request it answers."""
        return hashlib.sha256(_REQUEST_DOMAIN + self.request_id + b"".join(self.points)).digest()

    @property
    def nbytes(self) -> int:
        return REQUEST_ID_BYTES + POINT_BYTES * len(self.points)


@dataclass(frozen=True)
class PSIReply:
    """The server's message: which request it answers, the client's points blinded again (same
    order) and its own blinded set (shuffled)."""

    request_digest: bytes
    double_blinded: tuple[bytes, ...]
    server_blinded: tuple[bytes, ...]

    @property
    def nbytes(self) -> int:
        return DIGEST_BYTES + POINT_BYTES * (len(self.double_blinded) + len(self.server_blinded))


class PSIClient:
    """The party that learns the intersection (e.g. hospital A).

    One secret scalar per client; each :meth:`request` reshuffles the items and replaces the
    request awaiting a reply, and :meth:`intersect` accepts only the reply to that request, once.
    """

    def __init__(self, items: Iterable[Item], *, rng: RandomSource | None = None) -> None:
        self._rng = resolve_random_source(rng)
        self._items = _as_set(items, "the client")
        self._blind = _Blinder(self._rng)
        self._pending: tuple[bytes, list[bytes]] | None = None

    def request(self) -> PSIRequest:
        """Message 1: a fresh request id and ``a·H(x)`` for every item, shuffled."""
        order = _shuffled(self._items, self._rng)
        request = PSIRequest(
            self._rng.bytes(REQUEST_ID_BYTES), tuple(self._blind(hash_to_point(x)) for x in order)
        )
        self._pending = (request.digest, order)
        return request

    def intersect(self, reply: PSIReply) -> set[bytes]:
        """The items (as canonical bytes) that the server also holds.

        Raises ``RuntimeError`` when no request awaits a reply, ``TypeError`` for a non-reply and
        ``ValueError`` for a reply to another request or one carrying an invalid group element.
        """
        if self._pending is None:
            raise RuntimeError(
                "no request is waiting for a reply: call request(), send it to the server and "
                "pass the server's reply to intersect() (each reply is used once)"
            )
        if not isinstance(reply, PSIReply):
            raise TypeError(f"expected the server's PSIReply, got {type(reply).__name__}")
        digest, order = self._pending
        if reply.request_digest != digest:
            raise ValueError(
                "this reply answers a different request than the latest one sent (a stale, "
                "replayed or misrouted reply): its blinded values would be paired with the wrong "
                "items. Use the reply to the latest request()."
            )
        if len(reply.double_blinded) != len(order):
            raise ValueError(
                f"the reply blinds {len(reply.double_blinded)} points but {len(order)} were sent"
            )
        for i, point in enumerate(reply.double_blinded):
            _check_point(point, f"double-blinded point {i} of the reply")
        theirs = {
            self._blind(_check_point(point, f"server point {i} of the reply"))
            for i, point in enumerate(reply.server_blinded)
        }
        self._pending = None
        return {x for x, point in zip(order, reply.double_blinded, strict=True) if point in theirs}


class PSIServer:
    """The party that answers (e.g. hospital B); it learns only how many items the client has."""

    def __init__(self, items: Iterable[Item], *, rng: RandomSource | None = None) -> None:
        self._rng = resolve_random_source(rng)
        self._items = _as_set(items, "the server")
        self._blind = _Blinder(self._rng)

    def respond(self, request: PSIRequest) -> PSIReply:
        """Message 2: name the request, blind its points again (same order), add its own, shuffled.

        Raises ``TypeError`` for a non-request and ``ValueError`` (before any work) for a request
        id of the wrong length or a point that is not a valid ristretto255 element.
        """
        if not isinstance(request, PSIRequest):
            raise TypeError(f"expected the client's PSIRequest, got {type(request).__name__}")
        if not isinstance(request.request_id, bytes) or len(request.request_id) != REQUEST_ID_BYTES:
            raise ValueError(f"the request id must be {REQUEST_ID_BYTES} bytes")
        points = [
            _check_point(p, f"point {i} of the request") for i, p in enumerate(request.points)
        ]
        double = tuple(self._blind(point) for point in points)
        own = tuple(self._blind(hash_to_point(y)) for y in _shuffled(self._items, self._rng))
        return PSIReply(request.digest, double, own)


@dataclass(frozen=True)
class PSIResult:
    """What the client learned, and what the protocol cost (bytes on the wire, both ways)."""

    intersection: set[bytes]
    messages: int
    bytes_to_server: int
    bytes_to_client: int
    request: PSIRequest
    reply: PSIReply


def private_set_intersection(
    client_items: Iterable[Item], server_items: Iterable[Item], *, rng: RandomSource | None = None
) -> PSIResult:
    """Run both sides of DH-PSI in one process and return the client's view with its cost.

    The intersection is returned as canonical ``bytes`` (str identifiers NFC-normalised and UTF-8
    encoded). ``rng`` (default: secure) supplies both parties' secret scalars, request id and
    shuffles; a seeded source makes the run reproducible and INSECURE.
    """
    rng = resolve_random_source(rng)
    client = PSIClient(client_items, rng=rng)
    server = PSIServer(server_items, rng=rng)
    request = client.request()
    reply = server.respond(request)
    return PSIResult(client.intersect(reply), 2, request.nbytes, reply.nbytes, request, reply)


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
