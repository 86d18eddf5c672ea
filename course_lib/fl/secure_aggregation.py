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
  orphaned pair masks and removes them. Each client also adds a private *self-mask* (also shared),
  so that a client that was merely slow — and declared dropped — is not unmasked: for every client
  an honest survivor reveals either its self-mask share or its key share, never both.

Numbers live in the ring Z_2^64 (torch ``int64`` wraps around): updates are fixed-point encoded
with ``frac_bits`` fractional bits (:func:`encode_fixed_point`), so the sum is exact up to that
encoding. Security model: an honest-but-curious server and clients (the paper's "semi-honest"
version: no signatures, no consistency-check round); fewer than ``t`` colluding parties learn
nothing about an individual update.

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

from course_lib.randomness import RandomSource, resolve_random_source

__all__ = [
    "PRIME",
    "Share",
    "shamir_split",
    "shamir_reconstruct",
    "encode_fixed_point",
    "decode_fixed_point",
    "expand_seed",
    "generate_key_pair",
    "add_pairwise_masks",
    "TrustedAggregator",
    "Transcript",
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
    for name, value in (("threshold", threshold), ("num_shares", num_shares)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 1 <= threshold <= num_shares:
        raise ValueError(
            f"need 1 <= threshold <= num_shares, got threshold={threshold}, num_shares={num_shares}"
        )
    if num_shares >= prime:
        raise ValueError(f"at most {prime - 1} shares fit in the field of size {prime}")
    if isinstance(secret, bool) or not isinstance(secret, int):
        raise TypeError(f"the secret must be an int, got {type(secret).__name__}")
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


def encode_fixed_point(
    x: torch.Tensor, frac_bits: int = 16, *, max_abs: float | None = None
) -> torch.Tensor:
    """Encode real numbers as ring elements: ``round(x · 2^frac_bits)`` as ``int64`` (Z_2^64).

    ``max_abs`` (default: what fits, ``2^(62 − frac_bits)``) bounds ``|x|`` so that a sum of many
    encodings does not wrap around; larger values raise ``ValueError`` instead of being clipped.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"fixed-point encoding takes floating-point tensors, got {x.dtype}")
    if isinstance(frac_bits, bool) or not isinstance(frac_bits, int) or not 0 <= frac_bits <= 52:
        raise ValueError(f"frac_bits must be an integer in [0, 52], got {frac_bits!r}")
    limit = 2.0 ** (62 - frac_bits) if max_abs is None else max_abs
    x = x.detach().to(torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError("cannot encode NaN or infinite values")
    if x.numel() and x.abs().max().item() > limit:
        raise ValueError(
            f"a value of magnitude {x.abs().max().item():.3g} exceeds {limit:.3g}, the largest "
            f"that can be summed without wrapping around in Z_2^64 with {frac_bits} fractional bits"
        )
    return torch.round(x * 2.0**frac_bits).to(torch.int64)


def decode_fixed_point(v: torch.Tensor, frac_bits: int = 16) -> torch.Tensor:
    """Inverse of :func:`encode_fixed_point` (ring elements read as signed two's complement)."""
    if not isinstance(v, torch.Tensor) or v.dtype != torch.int64:
        raise TypeError("decode_fixed_point expects an int64 tensor of ring elements")
    return v.to(torch.float64) / 2.0**frac_bits


def expand_seed(seed: bytes, numel: int) -> torch.Tensor:
    """Expand a secret seed into ``numel`` pseudo-random ring elements with SHAKE-256 (a
    cryptographic extendable-output function: without the seed the output is indistinguishable from
    uniform)."""
    if not isinstance(seed, bytes | bytearray) or len(seed) < 16:
        raise ValueError("a PRG seed must be at least 16 bytes")
    if numel == 0:
        return torch.empty(0, dtype=torch.int64)
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
    invert, lesson 12) any individual update.
    """

    def __init__(self) -> None:
        self.seen: dict[int, torch.Tensor] = {}

    def receive(self, client_id: int, update: torch.Tensor) -> None:
        if client_id in self.seen:
            raise ValueError(f"client {client_id} already sent an update this round")
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


class _Client:
    """One client's side of the protocol (kept private: :func:`secure_sum` drives it)."""

    def __init__(self, cid: int, encoded: torch.Tensor, rng: RandomSource, session: bytes):
        self.cid, self.encoded, self.rng, self.session = cid, encoded, rng, session
        # c: keys to encrypt shares for other clients; s: keys to agree on pair masks
        self.c_sk = X25519PrivateKey.from_private_bytes(rng.bytes(_SEED_BYTES))
        self.s_sk_raw = rng.bytes(_SEED_BYTES)
        self.s_sk = X25519PrivateKey.from_private_bytes(self.s_sk_raw)
        self.self_seed = rng.bytes(_SEED_BYTES)
        self.received: dict[int, tuple[Share, Share]] = {}

    def public_keys(self) -> tuple[bytes, bytes]:
        return self.c_sk.public_key().public_bytes_raw(), self.s_sk.public_key().public_bytes_raw()

    def _channel(self, other: int, c_pk: bytes) -> AESGCM:
        shared = self.c_sk.exchange(X25519PublicKey.from_public_bytes(c_pk))
        return AESGCM(_kdf(shared, b"share encryption", self.session, self.cid, other))

    def share_keys(
        self, keys: Mapping[int, tuple[bytes, bytes]], threshold: int
    ) -> dict[int, bytes]:
        """Shamir-share the mask key and the self-mask seed; encrypt share j for client j."""
        others = sorted(keys)
        n = len(others)
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
        self,
        ciphertexts: Mapping[int, bytes],
        keys: Mapping[int, tuple[bytes, bytes]],
        threshold: int,
    ) -> None:
        for sender, blob in ciphertexts.items():
            aad = b"%d->%d" % (sender, self.cid)
            plain = self._channel(sender, keys[sender][0]).decrypt(blob[:12], blob[12:], aad)
            x, s_y, b_y = (
                int.from_bytes(plain[k * _PRIME_BYTES : (k + 1) * _PRIME_BYTES], "big")
                for k in range(3)
            )
            self.received[sender] = (Share(x, s_y, threshold), Share(x, b_y, threshold))

    def masked_input(
        self, keys: Mapping[int, tuple[bytes, bytes]], active: Sequence[int]
    ) -> torch.Tensor:
        """``y = x + PRG(b) + Σ_{j>i} PRG(s_ij) − Σ_{j<i} PRG(s_ij)`` in Z_2^64."""
        y = self.encoded.flatten() + expand_seed(self.self_seed, self.encoded.numel())
        peers = {j: keys[j][1] for j in active}
        return add_pairwise_masks(y, self.cid, self.s_sk_raw, peers, self.session)

    def unmasking_shares(self, included: Iterable[int], dropped: Iterable[int]) -> dict[int, Share]:
        """Self-mask shares of the included clients, key shares of the dropped — never both."""
        included, dropped = set(included), set(dropped)
        if included & dropped:
            raise ValueError("the server asked for both shares of one client: refusing")
        reveal = {j: self.received[j][1] for j in included}
        reveal.update({j: self.received[j][0] for j in dropped})
        return reveal


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

    The server rebuilds the self-mask seeds of the included clients and the mask keys of the
    dropped ones, subtracts every mask that does not cancel, and decodes the exact sum of the
    included updates. ``threshold`` defaults to a majority, ``n // 2 + 1``.

    Raises ``ValueError`` when updates differ in shape, when fewer than ``threshold`` clients answer
    the unmasking round (the sum is then unrecoverable — by design), or on malformed arguments.
    """
    updates = list(updates)
    n = len(updates)
    if n < 2:
        raise ValueError(f"secure aggregation needs at least 2 clients, got {n}")
    for i, u in enumerate(updates):
        if not isinstance(u, torch.Tensor):
            raise TypeError(f"update {i} is a {type(u).__name__}, expected a torch.Tensor")
        if u.shape != updates[0].shape:
            raise ValueError(
                f"update {i} has shape {tuple(u.shape)} but update 0 has {tuple(updates[0].shape)}:"
                " all clients must send updates of the same shape"
            )
    threshold = n // 2 + 1 if threshold is None else threshold
    if isinstance(threshold, bool) or not isinstance(threshold, int) or not 2 <= threshold <= n:
        raise ValueError(f"threshold must be an integer in [2, {n}], got {threshold!r}")
    gone_early, gone_late = set(drop_before_upload), set(drop_before_unmasking)
    for name, ids in (("drop_before_upload", gone_early), ("drop_before_unmasking", gone_late)):
        if not ids <= set(range(n)):
            raise ValueError(f"{name} names unknown clients {sorted(ids - set(range(n)))}")
    if gone_early & gone_late:
        raise ValueError("a client cannot drop out twice")
    rng = resolve_random_source(rng)
    limit = 2.0 ** (62 - frac_bits - math.ceil(math.log2(n)))
    encoded = [encode_fixed_point(u, frac_bits, max_abs=limit) for u in updates]
    numel = updates[0].numel()
    transcript = Transcript()

    clients = {i: _Client(i, encoded[i], rng, session) for i in range(n)}
    # round 0: public keys, broadcast by the server to everyone
    keys = {i: c.public_keys() for i, c in clients.items()}
    for _ in range(n):
        transcript.record("0 advertise keys (up)", 64)
        transcript.record("0 key list (down)", 64 * n)
    # round 1: encrypted shares, routed by the server
    inbox: dict[int, dict[int, bytes]] = {j: {} for j in range(n)}
    for i, c in clients.items():
        out = c.share_keys(keys, threshold)
        transcript.record("1 share keys (up)", sum(len(b) for b in out.values()))
        for j, blob in out.items():
            inbox[j][i] = blob
    for j, c in clients.items():
        transcript.record("1 shares (down)", sum(len(b) for b in inbox[j].values()))
        c.receive_shares(inbox[j], keys, threshold)
    # round 2: masked inputs; some clients vanish
    active = sorted(clients)
    masked = {}
    for i in active:
        if i in gone_early:
            continue
        masked[i] = clients[i].masked_input(keys, active)
        transcript.record("2 masked input (up)", 8 * numel)
    included = sorted(masked)
    dropped = sorted(gone_early)
    if len(included) < threshold:
        raise ValueError(
            f"only {len(included)} masked updates arrived but the threshold is {threshold}: "
            "too few survivors to unmask the sum"
        )
    # round 3: unmasking
    responders = [i for i in included if i not in gone_late]
    for _ in responders:
        transcript.record("3 survivor list (down)", 4 * len(included))
    if len(responders) < threshold:
        raise ValueError(
            f"only {len(responders)} clients answered the unmasking round but the threshold is "
            f"{threshold}: the server cannot remove the masks, so the sum is lost (by design: "
            "fewer than threshold clients cannot reveal anyone's secrets)"
        )
    revealed: dict[int, list[Share]] = {j: [] for j in range(n)}
    for i in responders:
        answer = clients[i].unmasking_shares(included, dropped)
        transcript.record("3 unmasking shares (up)", len(answer) * 2 * _PRIME_BYTES)
        for j, share in answer.items():
            revealed[j].append(share)

    # the server's work: add up, remove self-masks and the orphaned pair masks
    total = torch.zeros(numel, dtype=torch.int64)
    for i in included:
        total = total + masked[i]
    for i in included:
        total = total - expand_seed(_int_to_seed(shamir_reconstruct(revealed[i])), numel)
    for j in dropped:
        # the survivors' masks towards j are orphaned: add what j itself would have added, which
        # is exactly their negation
        sk_j = _int_to_seed(shamir_reconstruct(revealed[j]))
        peers = {i: keys[i][1] for i in included}
        total = total + add_pairwise_masks(torch.zeros_like(total), j, sk_j, peers, session)
    shape = updates[0].shape
    encoded_total = total.reshape(shape)
    return SecAggResult(
        total=decode_fixed_point(encoded_total, frac_bits).to(updates[0].dtype),
        encoded_total=encoded_total,
        included=included,
        dropped=dropped,
        masked_updates={i: m.reshape(shape) for i, m in masked.items()},
        transcript=transcript,
    )


def _flatten(state: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().to(torch.float64).flatten() for t in state.values()])


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
    client is left out of both. Same arguments as :func:`secure_sum`.
    """
    if len(states) != len(weights):
        raise ValueError(f"{len(states)} client states but {len(weights)} weights")
    if not states:
        raise ValueError("cannot average zero models: no client sent an update")
    names = list(states[0])
    for k, s in enumerate(states):
        if list(s) != names or any(s[n].shape != states[0][n].shape for n in names):
            raise ValueError(f"client {k}'s model differs from client 0's: same model needed")
    if any(w <= 0 for w in weights):
        raise ValueError("weights (sample counts) must be positive")
    vectors = [
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
