"""Encrypted aggregation of model updates with the Paillier cryptosystem (``phe``).

Paillier encryption is *additively homomorphic*: multiplying two ciphertexts modulo ``n²`` gives an
encryption of the **sum** of their plaintexts. That is exactly what a federated server needs: it can
add up every client's encrypted update without being able to read any single one.

The story used by lesson 18:

* a **key holder** creates a key pair and gives the *public* key to every client;
* each **client** encodes its update as integers (fixed point, see :class:`FixedPointEncoding`) and
  encrypts it with the public key (:func:`encrypt_update`);
* the **aggregator** (the FL server) adds the ciphertexts (:func:`aggregate`) — it never holds the
  private key, so it learns nothing about any update;
* the key holder decrypts only the aggregate (:func:`decrypt_sum`).

The guarantee rests on the key holder never seeing an individual client's ciphertext (it could
decrypt it) and not colluding with the aggregator. Real deployments split the private key among
several parties (threshold Paillier) or use masking-based secure aggregation instead.

**Packing.** A Paillier plaintext is a number below ``n`` — 2,048 bits for a 2,048-bit key — while
one fixed-point weight needs ~40 bits. Encrypting each weight on its own wastes almost all of that
room and costs one slow modular exponentiation per weight. :class:`FixedPointEncoding` therefore
*packs* many weights into one plaintext, each in its own ``slot_bits``-wide slot with enough spare
high bits that adding up to ``max_summands`` updates never carries from one slot into the next. One
ciphertext then carries ~50 weights at 2,048 bits, which makes 2,048-bit keys affordable.

**Key size.** 2,048 bits (≈112-bit security, NIST SP 800-57) is the smallest modulus to use for real
data; 3,072 bits is what ``phe`` picks by default. Smaller keys appear in this course's tests only,
where speed matters and security is not what is being tested.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from phe import paillier
from phe.paillier import EncryptedNumber, PaillierPrivateKey, PaillierPublicKey

from course_lib.fixed_point import FixedPointEncoder
from course_lib.randomness import RandomSource, resolve_random_source
from course_lib.validation import as_integer

__all__ = [
    "MIN_SECURE_KEY_BITS",
    "EncryptedUpdate",
    "FixedPointEncoding",
    "aggregate",
    "decrypt_sum",
    "encrypt_update",
    "generate_keypair",
]

#: The smallest Paillier modulus acceptable for protecting real data (NIST SP 800-57: ≈112 bits).
MIN_SECURE_KEY_BITS = 2048

Update = torch.Tensor | Mapping[str, torch.Tensor]


def generate_keypair(
    key_bits: int = MIN_SECURE_KEY_BITS,
) -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    """A fresh Paillier key pair with a ``key_bits``-bit modulus ``n`` (primes from ``phe``'s
    ``random.SystemRandom``, the operating system's secure generator).

    Keys below :data:`MIN_SECURE_KEY_BITS` are allowed (tests and quick demos use them) but are not
    safe for real data.
    """
    key_bits = as_integer(key_bits, "key_bits")
    if key_bits < 256 or key_bits % 8:
        raise ValueError(
            f"key_bits must be a multiple of 8 and at least 256, got {key_bits} "
            f"(use >= {MIN_SECURE_KEY_BITS} for real data)"
        )
    return paillier.generate_paillier_keypair(n_length=key_bits)


@dataclass(frozen=True)
class FixedPointEncoding:
    """How real numbers become integers that Paillier can add, and how many share one ciphertext.

    A value ``x`` becomes ``round(x * 2**frac_bits) + 2**(int_bits + frac_bits)`` — a non-negative
    integer below ``2**(int_bits + frac_bits + 1)`` — when ``|round(x * 2**frac_bits)| <
    2**(int_bits + frac_bits)`` (``|x| < 2**int_bits`` checked after rounding, by the course's
    :class:`~course_lib.fixed_point.FixedPointEncoder`). Rounding is the
    only error: each encoded value is off by at most ``2**-(frac_bits + 1)``, a sum of ``k`` values
    by at most ``k * 2**-(frac_bits + 1)`` (:meth:`sum_error_bound`). Values outside the range raise
    a ``ValueError``; nothing is clipped.

    Each slot is ``slot_bits = int_bits + frac_bits + 1 + ceil(log2(max_summands))`` wide, so the
    sum of up to ``max_summands`` encodings still fits in its slot. ``pack=False`` puts one value
    per ciphertext (the textbook way, to compare against).
    """

    frac_bits: int = 24
    int_bits: int = 8
    max_summands: int = 64
    pack: bool = True

    def __post_init__(self) -> None:
        for name in ("frac_bits", "int_bits", "max_summands"):  # NumPy integers become ints
            object.__setattr__(self, name, as_integer(getattr(self, name), name))
        if self.frac_bits < 0 or self.int_bits < 0:
            raise ValueError("frac_bits and int_bits must be non-negative")
        if self.int_bits + self.frac_bits > 62:
            raise ValueError(
                f"int_bits + frac_bits must be at most 62, got {self.int_bits + self.frac_bits}"
            )
        if self.max_summands < 1:
            raise ValueError(f"max_summands must be at least 1, got {self.max_summands}")

    @property
    def offset(self) -> int:
        return 1 << (self.int_bits + self.frac_bits)

    @property
    def slot_bits(self) -> int:
        return self.int_bits + self.frac_bits + 1 + math.ceil(math.log2(self.max_summands))

    @property
    def precision(self) -> float:
        """The spacing of representable values, ``2**-frac_bits``."""
        return 2.0**-self.frac_bits

    def sum_error_bound(self, summands: int) -> float:
        """Largest possible gap between a decrypted sum of ``summands`` updates and the true sum."""
        return summands * 2.0 ** -(self.frac_bits + 1)

    def slots_per_ciphertext(self, public_key: PaillierPublicKey) -> int:
        """How many values fit in one plaintext, staying below ``phe``'s ``max_int = n // 3``."""
        if not self.pack:
            return 1
        slots = (public_key.max_int.bit_length() - 1) // self.slot_bits
        if slots < 1:
            raise ValueError(
                f"a {public_key.n.bit_length()}-bit key cannot hold one {self.slot_bits}-bit slot: "
                "use a bigger key or fewer bits"
            )
        return slots

    @property
    def encoder(self) -> FixedPointEncoder:
        """The course's fixed-point encoder with this encoding's range ``|x| < 2**int_bits``."""
        return FixedPointEncoder(self.frac_bits, 2.0**self.int_bits)

    def encode(self, values: np.ndarray) -> list[int]:
        """Non-negative fixed-point integers for a 1-D float array.

        The range is checked *after* rounding (:class:`~course_lib.fixed_point.FixedPointEncoder`):
        a value just below ``2**int_bits`` that rounds up to it would need one more bit than its
        slot has, so it raises ``ValueError`` like any other out-of-range value.
        """
        encoded = self.encoder.encode(np.asarray(values, dtype=np.float64))
        return [int(v) + self.offset for v in encoded.tolist()]

    def pack_ints(self, ints: Sequence[int], public_key: PaillierPublicKey) -> list[int]:
        """Group encoded ints into plaintexts of :meth:`slots_per_ciphertext` slots each."""
        slots = self.slots_per_ciphertext(public_key)
        packed = []
        for start in range(0, len(ints), slots):
            word = 0
            for j, value in enumerate(ints[start : start + slots]):
                word |= value << (j * self.slot_bits)
            packed.append(word)
        return packed

    def decode_sum(
        self, plaintexts: Sequence[int], count: int, summands: int, public_key: PaillierPublicKey
    ) -> np.ndarray:
        """Undo :meth:`pack_ints` and :meth:`encode` for a sum of ``summands`` encoded updates."""
        slots = self.slots_per_ciphertext(public_key)
        mask = (1 << self.slot_bits) - 1
        ints: list[int] = []
        for word in plaintexts:
            if word < 0:
                raise ValueError(
                    "a decrypted plaintext is negative: the ciphertexts were tampered with"
                )
            ints.extend((word >> (j * self.slot_bits)) & mask for j in range(slots))
        ints = ints[:count]
        centred = np.array([v - summands * self.offset for v in ints], dtype=np.float64)
        return centred * 2.0**-self.frac_bits


@dataclass(frozen=True)
class EncryptedUpdate:
    """One or more clients' updates, encrypted under one public key and summed slot by slot.

    ``summands`` counts how many updates were added into it. ``a + b`` adds two encrypted updates
    (what the aggregator does); ``nbytes`` is the size on the wire.
    """

    public_key: PaillierPublicKey
    ciphertexts: tuple[EncryptedNumber, ...]
    shapes: tuple[tuple[str, tuple[int, ...]], ...]
    encoding: FixedPointEncoding
    summands: int
    is_tensor: bool

    @property
    def numel(self) -> int:
        return sum(math.prod(shape) for _, shape in self.shapes)

    @property
    def nbytes(self) -> int:
        """Bytes on the wire: every ciphertext is a number below ``n²``."""
        return len(self.ciphertexts) * ((2 * self.public_key.n.bit_length() + 7) // 8)

    def __add__(self, other: EncryptedUpdate) -> EncryptedUpdate:
        if not isinstance(other, EncryptedUpdate):
            return NotImplemented
        if other.public_key != self.public_key:
            raise ValueError("these updates were encrypted under different public keys")
        if other.shapes != self.shapes or other.is_tensor != self.is_tensor:
            raise ValueError("these updates come from models with different parameters or shapes")
        if other.encoding != self.encoding:
            raise ValueError(f"different encodings: {self.encoding} vs {other.encoding}")
        summands = self.summands + other.summands
        if summands > self.encoding.max_summands:
            raise ValueError(
                f"summing {summands} updates would overflow the "
                f"{self.encoding.slot_bits}-bit slots "
                f"(max_summands={self.encoding.max_summands}): encrypt with a larger max_summands"
            )
        ciphertexts = tuple(a + b for a, b in zip(self.ciphertexts, other.ciphertexts, strict=True))
        return EncryptedUpdate(
            self.public_key, ciphertexts, self.shapes, self.encoding, summands, self.is_tensor
        )

    def __repr__(self) -> str:
        return (
            f"EncryptedUpdate({self.numel:,} values in {len(self.ciphertexts):,} ciphertexts, "
            f"{self.nbytes:,} bytes, sum of {self.summands})"
        )


def _flatten(update: Update) -> tuple[np.ndarray, tuple[tuple[str, tuple[int, ...]], ...], bool]:
    if isinstance(update, torch.Tensor):
        items, is_tensor = [("", update)], True
    elif isinstance(update, Mapping):
        items, is_tensor = list(update.items()), False
    else:
        raise TypeError(
            "an update must be a tensor or a dict of tensors (a state dict), "
            f"got {type(update).__name__}"
        )
    if not items:
        raise ValueError("the update is empty")
    flat, shapes = [], []
    for name, tensor in items:
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"parameter {name!r} is a {type(tensor).__name__}, not a tensor")
        if not tensor.dtype.is_floating_point:
            raise TypeError(f"parameter {name!r} has dtype {tensor.dtype}; updates must be floats")
        flat.append(tensor.detach().cpu().to(torch.float64).reshape(-1).numpy())  # HE: CPU
        shapes.append((name, tuple(tensor.shape)))
    return np.concatenate(flat), tuple(shapes), is_tensor


def encrypt_update(
    public_key: PaillierPublicKey,
    update: Update,
    *,
    encoding: FixedPointEncoding | None = None,
    rng: RandomSource | None = None,
) -> EncryptedUpdate:
    """Encrypt a model update (a tensor or a state dict) under ``public_key``.

    The encryption randomness ``r`` of every ciphertext comes from ``rng`` (default: the operating
    system's secure generator; an ``InsecureSeededRandom`` makes ciphertexts reproducible and
    breaks semantic security).
    """
    if not isinstance(public_key, PaillierPublicKey):
        raise TypeError(
            f"public_key must be a phe PaillierPublicKey, got {type(public_key).__name__}"
        )
    encoding = encoding or FixedPointEncoding()
    rng = resolve_random_source(rng)
    values, shapes, is_tensor = _flatten(update)
    plaintexts = encoding.pack_ints(encoding.encode(values), public_key)
    n = public_key.n
    ciphertexts = tuple(public_key.encrypt(p, r_value=1 + rng.randbelow(n - 1)) for p in plaintexts)
    return EncryptedUpdate(public_key, ciphertexts, shapes, encoding, 1, is_tensor)


def aggregate(updates: Sequence[EncryptedUpdate]) -> EncryptedUpdate:
    """The aggregator's job: add encrypted updates without decrypting anything."""
    updates = list(updates)
    if not updates:
        raise ValueError("nothing to aggregate: no encrypted updates were given")
    total = updates[0]
    for update in updates[1:]:
        total = total + update
    return total


def decrypt_sum(private_key: PaillierPrivateKey, encrypted: EncryptedUpdate) -> Update:
    """The key holder's job: decrypt an (aggregated) update into float64 tensors.

    Returns the *sum* of the ``encrypted.summands`` updates, in the shape they were given (a tensor
    or a state dict), exact up to :meth:`FixedPointEncoding.sum_error_bound`.
    """
    if not isinstance(private_key, PaillierPrivateKey):
        raise TypeError(
            f"private_key must be a phe PaillierPrivateKey, got {type(private_key).__name__}"
        )
    if not isinstance(encrypted, EncryptedUpdate):
        raise TypeError(f"expected an EncryptedUpdate, got {type(encrypted).__name__}")
    if private_key.public_key != encrypted.public_key:
        raise ValueError(
            "this private key does not belong to the key the update was encrypted with"
        )
    plaintexts = [private_key.decrypt(c) for c in encrypted.ciphertexts]
    flat = encrypted.encoding.decode_sum(
        plaintexts, encrypted.numel, encrypted.summands, encrypted.public_key
    )
    out, start = {}, 0
    for name, shape in encrypted.shapes:
        size = math.prod(shape)
        out[name] = torch.from_numpy(flat[start : start + size].copy()).reshape(shape)
        start += size
    return out[""] if encrypted.is_tensor else out
