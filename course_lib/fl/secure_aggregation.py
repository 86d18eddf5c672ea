"""Secure aggregation: the server learns the *sum* of the clients' updates and nothing else.

Federated learning keeps raw data on the clients, but each client's model update still says a lot
about its data (lesson 12 rebuilds training images from one). Two ways to aggregate:

- :class:`TrustedAggregator` — the baseline: the server receives every update in the clear and
  must be trusted not to look.
- :func:`secure_sum` — the pairwise-masking protocol of Bonawitz et al., *Practical Secure
  Aggregation for Privacy-Preserving Machine Learning* (CCS 2017). Every pair of clients agrees on a
  secret seed by Diffie–Hellman key agreement (X25519); client ``i`` adds the pseudo-random mask
  expanded from each pair seed, with a ``+`` sign towards higher ids and ``−`` towards lower ones,
  so the masks cancel in the sum. A masked update on its own is a uniformly random vector.

  If a client vanishes after the others masked against it, its masks would not cancel. So before
  masking, every client splits its key-agreement secret key into Shamir shares (``t``-of-``n``, see
  :func:`shamir_split`) and gives one, encrypted, to each other client. When a client drops out the
  survivors hand the server their shares of *its* key; the server rebuilds it, recomputes the
  orphaned pair masks and removes them. Each client also adds a private *self-mask* (also shared).
  The self-mask is for the *late* client: one whose upload arrives after the server declared it
  dropped. The server then holds its mask key (to remove the orphaned pair masks) and its masked
  upload — which is still hidden by the self-mask, because for every peer an honest client reveals
  in a round either the self-mask share or the mask-key share, never both
  (:meth:`SecAggClient.unmasking_shares` refuses the second kind, however the server asks).

The two sides are :class:`SecAggClient` and :class:`SecAggServer`; :func:`secure_sum` drives one
round with every message passing through the server.

Numbers live in the ring Z_2^64 (torch ``int64`` wraps around): updates are fixed-point encoded
with ``frac_bits`` fractional bits (:func:`encode_fixed_point`), so the sum is exact up to that
encoding. An update holding NaN or ±inf is refused with an error naming its client
(:func:`check_finite_update`): it has no fixed-point encoding, and dropping it silently would
change whose data is in the sum.

Threat model
    *Honest-but-curious* (semi-honest) server and clients — the first version of the paper: every
    party follows the protocol and tries to learn from what it sees. Then the server learns only the
    sum of the included updates, and fewer than ``t`` colluding clients learn nothing about another
    client's update. Against a *malicious* server this implementation keeps one defence: a client
    never reveals both shares of one peer, so a server that lies about who dropped out still cannot
    unmask anyone. What it does **not** protect against: there are no signatures and no
    consistency-check round, so a server that substitutes public keys in round 0 (a
    man-in-the-middle: it gives each client a key it made itself) or sends different survivor
    lists to different clients is excluded *by assumption*; the paper's malicious-secure version
    adds both (a PKI signing every key, and a round where clients sign and compare the survivor
    list). Nothing here hides the sum itself: that is what differential privacy is for (DP-FedAvg).

Randomness (secret keys, self-mask seeds, Shamir coefficients, nonces) comes from a
:class:`~course_lib.randomness.RandomSource`: secure by default, seeded only when asked (insecure,
for reproducible lessons).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from course_lib.fixed_point import FixedPointEncoder
from course_lib.randomness import RandomSource, resolve_random_source
from course_lib.validation import as_integer, as_number, check_int_in_range

__all__ = [
    "PRIME",
    "Share",
    "shamir_split",
    "shamir_reconstruct",
    "check_finite_update",
    "encode_fixed_point",
    "decode_fixed_point",
    "expand_seed",
    "generate_key_pair",
    "add_pairwise_masks",
    "TrustedAggregator",
    "Transcript",
    "SecAggClient",
    "SecAggServer",
    "SecAggResult",
    "secure_sum",
    "secure_fedavg",
]

#: The Mersenne prime 2^521 − 1: Shamir shares live in the field of integers modulo it, which
#: holds any 32-byte secret.
PRIME = 2**521 - 1
_PRIME_BYTES = (PRIME.bit_length() + 7) // 8
_SEED_BYTES = 32


# -- Shamir secret sharing ---------------------------------------------------------------------


@dataclass(frozen=True)
class Share:
    """One Shamir share: the point ``(x, y)`` on a secret polynomial of degree ``threshold − 1``."""

    x: int
    y: int
    threshold: int
    prime: int = PRIME


def shamir_split(
    secret: int,
    *,
    threshold: int,
    num_shares: int,
    rng: RandomSource | None = None,
    prime: int = PRIME,
) -> list[Share]:
    """Split ``secret`` into ``num_shares`` shares, any ``threshold`` of which rebuild it.

    The secret is the constant term of a random polynomial ``f`` of degree ``threshold − 1`` over
    the integers mod ``prime``; share ``k`` is ``(k, f(k))`` for ``k = 1 … num_shares``. Any
    ``threshold − 1`` shares are uniformly distributed whatever the secret: they reveal nothing.
    """
    threshold = as_integer(threshold, "threshold")
    num_shares = as_integer(num_shares, "num_shares")
    prime = as_integer(prime, "prime")
    if not 1 <= threshold <= num_shares:
        raise ValueError(
            f"need 1 <= threshold <= num_shares, got threshold={threshold}, num_shares={num_shares}"
        )
    if num_shares >= prime:
        raise ValueError(f"at most {prime - 1} shares fit in the field of size {prime}")
    secret = as_integer(secret, "secret")
    if not 0 <= secret < prime:
        raise ValueError(f"the secret must lie in [0, prime), got {secret}")
    rng = resolve_random_source(rng)
    coefficients = [secret] + [rng.randbelow(prime) for _ in range(threshold - 1)]
    shares = []
    for x in range(1, num_shares + 1):
        y = 0
        for c in reversed(coefficients):  # Horner's rule
            y = (y * x + c) % prime
        shares.append(Share(x, y, threshold, prime))
    return shares


def shamir_reconstruct(shares: Iterable[Share]) -> int:
    """Rebuild the secret from at least ``threshold`` shares (Lagrange interpolation at 0).

    Raises ``ValueError`` with fewer shares than the threshold — with ``t − 1`` shares every secret
    is equally likely, so there is nothing to compute — or with shares of different sharings.
    """
    shares = list(shares)
    if not shares:
        raise ValueError("no shares given")
    if not all(isinstance(s, Share) for s in shares):
        raise TypeError("shamir_reconstruct expects Share objects (from shamir_split)")
    threshold, prime = shares[0].threshold, shares[0].prime
    if any(s.threshold != threshold or s.prime != prime for s in shares):
        raise ValueError("the shares come from different sharings (threshold or prime differ)")
    xs = [s.x for s in shares]
    if len(set(xs)) != len(xs):
        raise ValueError(f"two shares have the same x coordinate: {sorted(xs)}")
    if len(shares) < threshold:
        raise ValueError(
            f"{len(shares)} shares cannot rebuild a secret shared with threshold {threshold}: "
            f"at least {threshold} are needed (fewer reveal nothing at all)"
        )
    used = shares[:threshold]
    secret = 0
    for i, si in enumerate(used):
        numerator, denominator = 1, 1
        for j, sj in enumerate(used):
            if i != j:
                numerator = numerator * (-sj.x) % prime
                denominator = denominator * (si.x - sj.x) % prime
        secret = (secret + si.y * numerator * pow(denominator, -1, prime)) % prime
    return secret


# -- the ring Z_2^64 ---------------------------------------------------------------------------


def check_finite_update(update: torch.Tensor, who: str) -> None:
    """Raise ``ValueError`` naming ``who`` (e.g. ``"client 2"``) if ``update`` holds NaN or ±inf.

    Aggregation refuses such an update instead of dropping it: a non-finite value has no
    fixed-point encoding, one NaN would make the whole sum NaN, and dropping the update silently
    would change whose data the sum holds. The caller decides whether to leave that client out.
    """
    if not isinstance(update, torch.Tensor):
        raise TypeError(f"{who}'s update is a {type(update).__name__}, expected a torch.Tensor")
    if not update.is_floating_point():
        return
    bad = ~torch.isfinite(update.detach())
    if bad.any():
        first = int(bad.flatten().nonzero()[0])
        raise ValueError(
            f"{who}'s update holds {int(bad.sum())} non-finite value(s) (NaN or ±inf) among "
            f"{update.numel()}, the first at flat index {first}: refusing to aggregate it "
            "(leave that client out of the round, or find why its training diverged)"
        )


def encode_fixed_point(
    x: torch.Tensor, frac_bits: int = 16, *, max_abs: float | None = None
) -> torch.Tensor:
    """Encode real numbers as ring elements: ``round(x · 2^frac_bits)`` as ``int64`` (Z_2^64),
    with the course's one encoder (:class:`course_lib.fixed_point.FixedPointEncoder`).

    ``max_abs`` (default and largest allowed: ``2^(62 − frac_bits)``) bounds ``|x|`` so that a sum
    of many encodings does not wrap around; the bound is checked *after* rounding
    (``|round(x · 2^frac_bits)| < max_abs · 2^frac_bits``: a value just below it that rounds up is
    refused too). Larger values, NaN and ±inf raise ``ValueError`` instead of being clipped.
    Returns an int64 tensor of ``x``'s shape.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"fixed-point encoding takes floating-point tensors, got {x.dtype}")
    frac_bits = check_int_in_range(frac_bits, "frac_bits", 0, 52)
    largest = 2.0 ** (62 - frac_bits)
    max_abs = largest if max_abs is None else as_number(max_abs, "max_abs")
    if not 0 < max_abs <= largest:
        raise ValueError(
            f"max_abs must lie in (0, 2^(62 − frac_bits)] = (0, {largest:.3g}], got {max_abs!r}"
        )
    return FixedPointEncoder(frac_bits, max_abs).encode(x.detach().cpu())  # ring elements: CPU


def decode_fixed_point(v: torch.Tensor, frac_bits: int = 16) -> torch.Tensor:
    """Inverse of :func:`encode_fixed_point` (ring elements read as signed two's complement),
    as float64."""
    if not isinstance(v, torch.Tensor) or v.dtype != torch.int64:
        raise TypeError("decode_fixed_point expects an int64 tensor of ring elements")
    return FixedPointEncoder(frac_bits, 1.0).decode(v)


def expand_seed(seed: bytes, numel: int) -> torch.Tensor:
    """Expand a secret seed into ``numel`` pseudo-random ring elements with SHAKE-256 (a
    cryptographic extendable-output function: without the seed the output is indistinguishable from
    uniform)."""
    if not isinstance(seed, bytes | bytearray) or len(seed) < 16:
        raise ValueError("a PRG seed must be at least 16 bytes")
    if numel == 0:
        return torch.empty(0, dtype=torch.int64)  # CPU by design: masks are int64 ring elements
    stream = bytearray(hashlib.shake_256(bytes(seed)).digest(8 * numel))
    return torch.frombuffer(stream, dtype=torch.int64)


def _kdf(shared_secret: bytes, purpose: bytes, session: bytes, a: int, b: int) -> bytes:
    """Derive a 32-byte key from a Diffie–Hellman shared secret, bound to its use and the pair."""
    info = b"course_lib secagg|" + purpose + b"|" + session + b"|%d|%d" % (min(a, b), max(a, b))
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared_secret)


# -- the trusted baseline ----------------------------------------------------------------------


class TrustedAggregator:
    """The baseline: clients send their updates in the clear and the server adds them up.

    ``seen`` keeps everything the server received, to make the point that it could inspect (or
    invert, lesson 12) any individual update. An update with NaN or ±inf is refused
    (:func:`check_finite_update`), as in :func:`secure_sum`.
    """

    def __init__(self) -> None:
        self.seen: dict[int, torch.Tensor] = {}

    def receive(self, client_id: int, update: torch.Tensor) -> None:
        if client_id in self.seen:
            raise ValueError(f"client {client_id} already sent an update this round")
        check_finite_update(update, f"client {client_id}")
        if self.seen:
            shape = next(iter(self.seen.values())).shape
            if update.shape != shape:
                raise ValueError(
                    f"client {client_id}'s update has shape {tuple(update.shape)}, others "
                    f"{tuple(shape)}: all clients must send updates of the same shape"
                )
        self.seen[client_id] = update.detach().clone()

    def total(self) -> torch.Tensor:
        if not self.seen:
            raise ValueError("no client has sent an update")
        return torch.stack(list(self.seen.values())).sum(0)


# -- the protocol ------------------------------------------------------------------------------


@dataclass
class Transcript:
    """Messages and bytes per protocol round, as they would cross the network."""

    messages: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)

    def record(self, round_name: str, nbytes: int) -> None:
        self.messages[round_name] = self.messages.get(round_name, 0) + 1
        self.bytes[round_name] = self.bytes.get(round_name, 0) + nbytes

    def __str__(self) -> str:
        rows = [f"{'round':<28}{'messages':>9}{'bytes':>12}"]
        for name in self.messages:
            rows.append(f"{name:<28}{self.messages[name]:>9}{self.bytes[name]:>12,}")
        total_m, total_b = sum(self.messages.values()), sum(self.bytes.values())
        rows.append(f"{'total':<28}{total_m:>9}{total_b:>12,}")
        return "\n".join(rows)


@dataclass
class SecAggResult:
    """What :func:`secure_sum` returns.

    ``total`` is the decoded sum over ``included`` (the clients whose masked update arrived);
    ``masked_updates`` is exactly what the server received from each of them — uniformly random
    ring elements; ``dropped`` lists the clients whose update never arrived and whose pair masks the
    server removed with the survivors' help.
    """

    total: torch.Tensor
    encoded_total: torch.Tensor
    included: list[int]
    dropped: list[int]
    masked_updates: dict[int, torch.Tensor]
    transcript: Transcript


PublicKeys = Mapping[int, tuple[bytes, bytes]]

#: The two kinds of share a client can reveal about a peer in the unmasking round.
SELF_MASK, MASK_KEY = "self-mask", "mask key"


class SecAggClient:
    """One client's side of the protocol, holding encoded update ``encoded`` (int64 ring
    elements, see :func:`encode_fixed_point`) in round ``session``.

    The methods follow the rounds of :func:`secure_sum`: :meth:`public_keys` (0),
    :meth:`share_keys` / :meth:`receive_shares` (1), :meth:`masked_input` (2),
    :meth:`unmasking_shares` (3). The client remembers, per peer, which kind of share it has
    revealed this round, and refuses to reveal the other kind.
    """

    def __init__(self, cid: int, encoded: torch.Tensor, rng: RandomSource, session: bytes):
        if not isinstance(encoded, torch.Tensor) or encoded.dtype != torch.int64:
            raise TypeError("a client holds its update as int64 ring elements (encode_fixed_point)")
        self.cid, self.encoded, self.rng, self.session = cid, encoded, rng, session
        # c: keys to encrypt shares for other clients; s: keys to agree on pair masks
        self.c_sk = X25519PrivateKey.from_private_bytes(rng.bytes(_SEED_BYTES))
        self.s_sk_raw = rng.bytes(_SEED_BYTES)
        self.s_sk = X25519PrivateKey.from_private_bytes(self.s_sk_raw)
        self.self_seed = rng.bytes(_SEED_BYTES)
        self.received: dict[int, tuple[Share, Share]] = {}  # peer -> (mask-key, self-mask) share
        self.threshold: int | None = None
        self.uploaded = False
        self.revealed: dict[int, str] = {}  # peer -> the kind of share revealed this round

    def public_keys(self) -> tuple[bytes, bytes]:
        return self.c_sk.public_key().public_bytes_raw(), self.s_sk.public_key().public_bytes_raw()

    def _channel(self, other: int, c_pk: bytes) -> AESGCM:
        shared = self.c_sk.exchange(X25519PublicKey.from_public_bytes(c_pk))
        return AESGCM(_kdf(shared, b"share encryption", self.session, self.cid, other))

    def share_keys(self, keys: PublicKeys, threshold: int) -> dict[int, bytes]:
        """Shamir-share the mask key and the self-mask seed; encrypt share j for client j."""
        others = sorted(keys)
        n = len(others)
        self.threshold = threshold
        s_shares = shamir_split(
            int.from_bytes(self.s_sk_raw, "big"), threshold=threshold, num_shares=n, rng=self.rng
        )
        b_shares = shamir_split(
            int.from_bytes(self.self_seed, "big"), threshold=threshold, num_shares=n, rng=self.rng
        )
        out = {}
        for j, s_share, b_share in zip(others, s_shares, b_shares, strict=True):
            if j == self.cid:
                self.received[j] = (s_share, b_share)
                continue
            plaintext = b"".join(
                v.to_bytes(_PRIME_BYTES, "big") for v in (s_share.x, s_share.y, b_share.y)
            )
            nonce = self.rng.bytes(12)
            aad = b"%d->%d" % (self.cid, j)
            out[j] = nonce + self._channel(j, keys[j][0]).encrypt(nonce, plaintext, aad)
        return out

    def receive_shares(
        self, ciphertexts: Mapping[int, bytes], keys: PublicKeys, threshold: int
    ) -> None:
        for sender, blob in ciphertexts.items():
            aad = b"%d->%d" % (sender, self.cid)
            plain = self._channel(sender, keys[sender][0]).decrypt(blob[:12], blob[12:], aad)
            x, s_y, b_y = (
                int.from_bytes(plain[k * _PRIME_BYTES : (k + 1) * _PRIME_BYTES], "big")
                for k in range(3)
            )
            self.received[sender] = (Share(x, s_y, threshold), Share(x, b_y, threshold))

    def masked_input(self, keys: PublicKeys, active: Sequence[int]) -> torch.Tensor:
        """``y = x + PRG(b) + Σ_{j>i} PRG(s_ij) − Σ_{j<i} PRG(s_ij)`` in Z_2^64."""
        y = self.encoded.flatten() + expand_seed(self.self_seed, self.encoded.numel())
        peers = {j: keys[j][1] for j in active}
        self.uploaded = True
        return add_pairwise_masks(y, self.cid, self.s_sk_raw, peers, self.session)

    def unmasking_shares(self, included: Iterable[int], dropped: Iterable[int]) -> dict[int, Share]:
        """Self-mask shares of the ``included`` clients, mask-key shares of the ``dropped`` ones.

        Refuses (``ValueError``, revealing nothing) a request that would give the server both
        kinds of share of one peer this round — in one request or across several — since with
        both it could strip every mask off that peer's upload; a request naming this client as
        dropped although it uploaded; one with fewer survivors than the threshold; and one naming
        clients it holds no share of.
        """
        included, dropped = set(included), set(dropped)
        if included & dropped:
            raise ValueError(
                f"the server asked for both shares of client(s) {sorted(included & dropped)}: "
                "refusing (with both it could unmask their updates)"
            )
        unknown = (included | dropped) - set(self.received)
        if unknown:
            raise ValueError(f"client {self.cid} holds no shares of client(s) {sorted(unknown)}")
        if self.uploaded and self.cid in dropped:
            raise ValueError(
                f"the server says client {self.cid} dropped out, but it uploaded its masked "
                "input: refusing to help rebuild its mask key"
            )
        if self.threshold is not None and len(included) < self.threshold:
            raise ValueError(
                f"only {len(included)} clients are said to have survived, below the threshold "
                f"{self.threshold}: refusing to reveal shares"
            )
        wanted = {j: SELF_MASK for j in included} | {j: MASK_KEY for j in dropped}
        clashes = sorted(j for j, kind in wanted.items() if self.revealed.get(j, kind) != kind)
        if clashes:
            raise ValueError(
                f"client {self.cid} already revealed the other kind of share of client(s) "
                f"{clashes} this round: a client reveals a peer's self-mask share or its "
                "mask-key share, never both, so refusing"
            )
        self.revealed.update(wanted)
        return {j: self.received[j][0 if kind == MASK_KEY else 1] for j, kind in wanted.items()}


def generate_key_pair(rng: RandomSource | None = None) -> tuple[bytes, bytes]:
    """A fresh X25519 key pair for agreeing on pair masks: ``(secret key, public key)``, 32 raw
    bytes each. The secret key stays with its owner; the public key may be shown to anyone."""
    secret = resolve_random_source(rng).bytes(_SEED_BYTES)
    public = X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes_raw()
    return secret, public


def add_pairwise_masks(
    encoded: torch.Tensor,
    my_id: int,
    secret_key: bytes,
    peer_public_keys: Mapping[int, bytes],
    session: bytes,
) -> torch.Tensor:
    """Mask ring elements for a secure sum: ``encoded + Σ_{j>i} PRG(s_ij) − Σ_{j<i} PRG(s_ij)``.

    ``s_ij`` is the seed client ``my_id`` (= i) agrees with client j by Diffie–Hellman: its own
    ``secret_key`` with j's public key. Client j computes the same seed from its secret key and
    i's public key, and adds the mask with the opposite sign, so once *every* client's masked
    vector is summed the masks cancel exactly. ``peer_public_keys`` maps the other clients' ids to
    their public keys (an entry for ``my_id`` itself is ignored); ``session`` (e.g. the round)
    makes every round's masks fresh. Returns a flat int64 tensor.
    """
    if not isinstance(encoded, torch.Tensor) or encoded.dtype != torch.int64:
        raise TypeError("add_pairwise_masks takes int64 ring elements (see encode_fixed_point)")
    sk = X25519PrivateKey.from_private_bytes(secret_key)
    numel = encoded.numel()
    masked = encoded.flatten().clone()
    for j, public_key in peer_public_keys.items():
        if j == my_id:
            continue
        shared = sk.exchange(X25519PublicKey.from_public_bytes(public_key))
        mask = expand_seed(_kdf(shared, b"pair mask", session, my_id, j), numel)
        masked = masked + mask if j > my_id else masked - mask
    return masked


def _int_to_seed(value: int) -> bytes:
    return value.to_bytes(_SEED_BYTES, "big")


class SecAggServer:
    """The server's side of :func:`secure_sum` for ``n`` clients with vectors of ``numel`` ring
    elements: it relays messages, collects masked inputs and unmasking shares, and computes the
    sum. It never sees a key, seed or share in the clear except those revealed in round 3.
    """

    def __init__(self, n: int, threshold: int, numel: int, session: bytes) -> None:
        self.n, self.threshold, self.numel, self.session = n, threshold, numel, session
        self.transcript = Transcript()
        self.keys: dict[int, tuple[bytes, bytes]] = {}
        self.masked: dict[int, torch.Tensor] = {}
        self.revealed: dict[int, list[Share]] = {j: [] for j in range(n)}
        self.responders: list[int] = []

    def advertise(self, keys: Mapping[int, tuple[bytes, bytes]]) -> dict[int, tuple[bytes, bytes]]:
        """Round 0: collect every client's two public keys and broadcast the list."""
        self.keys = dict(keys)
        for _ in range(self.n):
            self.transcript.record("0 advertise keys (up)", 64)
            self.transcript.record("0 key list (down)", 64 * self.n)
        return self.keys

    def route(self, outgoing: Mapping[int, Mapping[int, bytes]]) -> dict[int, dict[int, bytes]]:
        """Round 1: forward each encrypted share to its recipient (``{recipient: {sender: …}}``)."""
        inbox: dict[int, dict[int, bytes]] = {j: {} for j in range(self.n)}
        for i, out in outgoing.items():
            self.transcript.record("1 share keys (up)", sum(len(b) for b in out.values()))
            for j, blob in out.items():
                inbox[j][i] = blob
        for j in range(self.n):
            self.transcript.record("1 shares (down)", sum(len(b) for b in inbox[j].values()))
        return inbox

    def receive_masked(self, cid: int, masked: torch.Tensor) -> None:
        """Round 2: one client's masked input."""
        self.masked[cid] = masked
        self.transcript.record("2 masked input (up)", 8 * self.numel)

    def survivors(self) -> tuple[list[int], list[int]]:
        """End of round 2: ``(included, dropped)``; ``ValueError`` below the threshold."""
        included = sorted(self.masked)
        if len(included) < self.threshold:
            raise ValueError(
                f"only {len(included)} masked updates arrived but the threshold is "
                f"{self.threshold}: too few survivors to unmask the sum"
            )
        return included, sorted(set(range(self.n)) - set(included))

    def receive_unmasking(self, cid: int, shares: Mapping[int, Share]) -> None:
        """Round 3: one survivor's shares (it got the survivor list first)."""
        self.transcript.record("3 survivor list (down)", 4 * len(self.masked))
        self.transcript.record("3 unmasking shares (up)", len(shares) * 2 * _PRIME_BYTES)
        self.responders.append(cid)
        for j, share in shares.items():
            self.revealed[j].append(share)

    def unmasked_total(self) -> torch.Tensor:
        """Add the masked inputs, remove the self-masks and the dropped clients' orphaned pair
        masks (flat int64). ``ValueError`` when fewer than ``threshold`` survivors answered."""
        if len(self.responders) < self.threshold:
            raise ValueError(
                f"only {len(self.responders)} clients answered the unmasking round but the "
                f"threshold is {self.threshold}: the server cannot remove the masks, so the sum is "
                "lost (by design: fewer than threshold clients cannot reveal anyone's secrets)"
            )
        included, dropped = self.survivors()
        total = torch.zeros(self.numel, dtype=torch.int64)  # CPU by design: int64 ring sums
        for i in included:
            total = total + self.masked[i]
        for i in included:
            seed = _int_to_seed(shamir_reconstruct(self.revealed[i]))
            total = total - expand_seed(seed, self.numel)
        peers = {i: self.keys[i][1] for i in included}
        for j in dropped:
            # the survivors' masks towards j are orphaned: add what j itself would have added,
            # which is exactly their negation
            sk_j = _int_to_seed(shamir_reconstruct(self.revealed[j]))
            total = total + add_pairwise_masks(
                torch.zeros_like(total), j, sk_j, peers, self.session
            )
        return total


def _check_drops(n: int, drop_before_upload: Iterable[int], drop_before_unmasking: Iterable[int]):
    gone_early, gone_late = set(drop_before_upload), set(drop_before_unmasking)
    for name, ids in (("drop_before_upload", gone_early), ("drop_before_unmasking", gone_late)):
        if not ids <= set(range(n)):
            raise ValueError(f"{name} names unknown clients {sorted(ids - set(range(n)))}")
    if gone_early & gone_late:
        raise ValueError("a client cannot drop out twice")
    return gone_early, gone_late


def secure_sum(
    updates: Sequence[torch.Tensor],
    *,
    threshold: int | None = None,
    drop_before_upload: Iterable[int] = (),
    drop_before_unmasking: Iterable[int] = (),
    frac_bits: int = 16,
    rng: RandomSource | None = None,
    session: bytes = b"round-0",
) -> SecAggResult:
    """Run the Bonawitz et al. protocol on ``updates`` (client ``i`` holds ``updates[i]``).

    Rounds (all messages go through the server, which forwards what is addressed to others):

    0. *advertise keys* — each client publishes two X25519 public keys;
    1. *share keys* — each client Shamir-shares (``threshold``-of-n) its mask secret key and its
       self-mask seed, and sends share j to client j, encrypted with AES-GCM under a key agreed
       with j;
    2. *masked input* — each client uploads ``x + self-mask + pair masks``; the clients in
       ``drop_before_upload`` vanish here (after the others have masked against them);
    3. *unmasking* — the survivors (minus ``drop_before_unmasking``) send the server, for each other
       client, the self-mask share if its upload arrived or the mask-key share if it did not.

    The server (:class:`SecAggServer`) rebuilds the self-mask seeds of the included clients and the
    mask keys of the dropped ones, subtracts every mask that does not cancel, and decodes the exact
    sum of the included updates. ``threshold`` defaults to a majority, ``n // 2 + 1``.

    Raises ``ValueError`` when updates differ in shape, when an update holds NaN or ±inf (naming
    the client), when a value is too large to sum without wrapping around, when fewer than
    ``threshold`` clients answer the unmasking round (the sum is then unrecoverable — by design),
    or on malformed arguments.

    >>> from course_lib.randomness import InsecureSeededRandom
    >>> updates = [torch.tensor([1.0, 2.0]), torch.tensor([0.5, -1.0]), torch.tensor([2.0, 0.0])]
    >>> result = secure_sum(updates, drop_before_upload=[2], rng=InsecureSeededRandom(0))
    >>> result.total.tolist(), result.included, result.dropped
    ([1.5, 1.0], [0, 1], [2])
    """
    updates = list(updates)
    n = len(updates)
    if n < 2:
        raise ValueError(f"secure aggregation needs at least 2 clients, got {n}")
    for i, u in enumerate(updates):
        check_finite_update(u, f"client {i}")
        if u.shape != updates[0].shape:
            raise ValueError(
                f"update {i} has shape {tuple(u.shape)} but update 0 has {tuple(updates[0].shape)}:"
                " all clients must send updates of the same shape"
            )
    threshold = n // 2 + 1 if threshold is None else threshold
    threshold = check_int_in_range(threshold, "threshold", 2, n)
    frac_bits = check_int_in_range(frac_bits, "frac_bits", 0, 52)
    gone_early, gone_late = _check_drops(n, drop_before_upload, drop_before_unmasking)
    rng = resolve_random_source(rng)
    limit = 2.0 ** (62 - frac_bits - math.ceil(math.log2(n)))
    encoded = [encode_fixed_point(u, frac_bits, max_abs=limit) for u in updates]

    clients = {i: SecAggClient(i, encoded[i], rng, session) for i in range(n)}
    server = SecAggServer(n, threshold, updates[0].numel(), session)
    keys = server.advertise({i: c.public_keys() for i, c in clients.items()})
    inbox = server.route({i: c.share_keys(keys, threshold) for i, c in clients.items()})
    for j, c in clients.items():
        c.receive_shares(inbox[j], keys, threshold)
    for i, c in clients.items():
        if i not in gone_early:  # the others vanish after everyone masked against them
            server.receive_masked(i, c.masked_input(keys, sorted(clients)))
    included, dropped = server.survivors()
    for i in included:
        if i not in gone_late:
            server.receive_unmasking(i, clients[i].unmasking_shares(included, dropped))
    shape = updates[0].shape
    encoded_total = server.unmasked_total().reshape(shape)
    return SecAggResult(
        total=decode_fixed_point(encoded_total, frac_bits).to(updates[0].dtype),
        encoded_total=encoded_total,
        included=included,
        dropped=dropped,
        masked_updates={i: m.reshape(shape) for i, m in server.masked.items()},
        transcript=server.transcript,
    )


def _flatten(state: Mapping[str, torch.Tensor]) -> torch.Tensor:
    # on the CPU: masking is int64 ring arithmetic; load_state_dict copies the mean to any device
    return torch.cat([t.detach().cpu().to(torch.float64).flatten() for t in state.values()])


def secure_fedavg(
    states: Sequence[Mapping[str, torch.Tensor]],
    weights: Sequence[float],
    *,
    threshold: int | None = None,
    drop_before_upload: Iterable[int] = (),
    frac_bits: int = 16,
    rng: RandomSource | None = None,
    session: bytes = b"round-0",
) -> dict[str, torch.Tensor]:
    """FedAvg through secure aggregation: the server learns ``Σ w_k θ_k / Σ w_k`` and no ``θ_k``.

    Each client uploads ``[w_k · θ_k, w_k]`` masked; the server divides the two sums. A dropped
    client is left out of both. Same arguments as :func:`secure_sum`; a state with NaN or ±inf, or
    a weight that is not a finite positive number, raises ``ValueError`` naming the client.
    """
    if len(states) != len(weights):
        raise ValueError(f"{len(states)} client states but {len(weights)} weights")
    if not states:
        raise ValueError("cannot average zero models: no client sent an update")
    names = list(states[0])
    for k, s in enumerate(states):
        if list(s) != names or any(s[n].shape != states[0][n].shape for n in names):
            raise ValueError(f"client {k}'s model differs from client 0's: same model needed")
        for name in names:
            check_finite_update(s[name], f"client {k} ({name})")
    for k, w in enumerate(weights):
        if as_number(w, f"client {k}'s weight (sample count)") <= 0:
            raise ValueError(
                f"client {k}'s weight (sample count) must be a finite positive number, got {w!r}"
            )
    vectors = [
        # CPU by design: _flatten brings each client's state to the CPU, where the masking runs
        torch.cat([_flatten(s) * float(w), torch.tensor([float(w)], dtype=torch.float64)])
        for s, w in zip(states, weights, strict=True)
    ]
    result = secure_sum(
        vectors,
        threshold=threshold,
        drop_before_upload=drop_before_upload,
        frac_bits=frac_bits,
        rng=rng,
        session=session,
    )
    mean = result.total[:-1] / result.total[-1]
    out, offset = {}, 0
    for name in names:
        ref = states[0][name]
        chunk = mean[offset : offset + ref.numel()].reshape(ref.shape)
        out[name] = (
            chunk.round().to(ref.dtype) if not ref.is_floating_point() else chunk.to(ref.dtype)
        )
        offset += ref.numel()
    return out
