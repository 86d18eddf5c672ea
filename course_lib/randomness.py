"""Where the course's randomness comes from.

Privacy code needs randomness an adversary cannot predict. Differential-privacy noise drawn from a
seeded pseudo-random generator can be *subtracted back out* by anyone who learns the seed, and
secret shares drawn from one reveal the secret. So every privacy primitive in ``course_lib`` draws
from a :class:`RandomSource`, and the default is :class:`SecureRandom`: a cryptographically secure
pseudo-random generator (CSPRNG) — the ChaCha20 keystream (RFC 8439, through the ``cryptography``
package / OpenSSL) under a fresh 256-bit key drawn from the operating system's generator
(``os.urandom``). That is how the operating system's own generators work (Linux's ``getrandom`` is a
ChaCha20 CSPRNG); doing it in-process avoids one system call per request and is several times
faster, which matters for the SMPC dealer's large batches of triples.

Lessons also need *reproducible* numbers so that a learner sees what the text describes. For that
there is :class:`InsecureSeededRandom`: explicit, seeded, and labelled insecure wherever it shows
up.

Both sources produce raw bytes; everything else (uniform 64-bit ring elements, uniform floats,
unbiased integers below a bound) is derived from the bytes in one place, so the two behave
identically apart from where the bytes come from.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from course_lib.validation import as_integer, check_nonnegative_int, check_positive_int

__all__ = [
    "RandomSource",
    "SecureRandom",
    "InsecureSeededRandom",
    "resolve_random_source",
]

Shape = int | Sequence[int]


def _as_shape(shape: Shape) -> tuple[int, ...]:
    if isinstance(shape, Sequence | torch.Size):
        return tuple(check_nonnegative_int(d, "each dimension of the shape") for d in shape)
    return (check_nonnegative_int(shape, "the shape"),)


class RandomSource(ABC):
    """A source of random bytes, and the tensors and integers derived from them."""

    #: True when an adversary cannot predict the output (no seed exists to learn).
    secure: bool = False

    @abstractmethod
    def bytes(self, n: int) -> bytes:
        """Return ``n`` uniformly random bytes."""

    def _fill(self, buffer: bytearray) -> None:
        """Overwrite ``buffer`` with random bytes (sources may do it without a copy)."""
        buffer[:] = self.bytes(len(buffer))

    def int64(self, shape: Shape) -> torch.Tensor:
        """Uniform elements of the ring Z_2^64, stored as torch ``int64`` (two's complement)."""
        shape = _as_shape(shape)
        count = int(np.prod(shape, dtype=np.int64))
        if count == 0:
            return torch.empty(shape, dtype=torch.int64)  # CPU by design: bytes from the CSPRNG
        raw = bytearray(8 * count)
        self._fill(raw)
        return torch.frombuffer(raw, dtype=torch.int64).reshape(shape)

    def uniform(self, shape: Shape) -> torch.Tensor:
        """Uniform ``float64`` values in [0, 1) with 53 random bits each."""
        words = self.int64(shape)
        top53 = torch.bitwise_right_shift(words, 11) & ((1 << 53) - 1)
        return top53.to(torch.float64) * 2.0**-53

    def randbelow(self, n: int) -> int:
        """An unbiased uniform integer in ``[0, n)`` (rejection sampling, no modulo bias)."""
        n = check_positive_int(n, "randbelow's bound n")
        k = n.bit_length()
        nbytes = (k + 7) // 8
        while True:
            value = int.from_bytes(self.bytes(nbytes), "little") >> (8 * nbytes - k)
            if value < n:
                return value

    def bernoulli(self, p: float, shape: Shape) -> torch.Tensor:
        """Boolean tensor whose entries are True with probability ``p``."""
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"a probability must lie in [0, 1], got {p!r}")
        return self.uniform(shape) < p


class SecureRandom(RandomSource):
    """Cryptographically secure randomness: a ChaCha20 keystream keyed from ``os.urandom``.

    Each instance draws its own 256-bit key and 96-bit nonce from the operating system, so two
    instances (or two runs) never produce the same stream and nobody can reproduce it — there is
    no seed to learn. Predicting the next output from earlier outputs is as hard as breaking
    ChaCha20 (it is a stream cipher: the keystream is indistinguishable from uniform bytes without
    the key). The key is replaced by a fresh one from ``os.urandom`` every
    :data:`REKEY_BYTES` bytes (well before ChaCha20's 32-bit block counter could wrap) and in a
    child process after ``fork`` (which would otherwise continue the parent's stream). Thread-safe.

    The default everywhere in ``course_lib``: use it for anything that protects real data.
    """

    secure = True

    #: Bytes drawn under one key before a fresh key is taken (2^32 bytes = 2^26 ChaCha20 blocks).
    REKEY_BYTES = 2**32

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rekey()

    def _rekey(self) -> None:
        key, nonce = os.urandom(32), os.urandom(12)
        # cryptography's ChaCha20 takes a 16-byte IV: a 4-byte block counter (start at 0), then
        # the 12-byte nonce (RFC 8439 layout).
        cipher = Cipher(algorithms.ChaCha20(key, bytes(4) + nonce), mode=None)
        self._keystream = cipher.encryptor()
        self._pid = os.getpid()
        self._used = 0

    def bytes(self, n: int) -> bytes:
        n = check_nonnegative_int(n, "the number of bytes")
        buffer = bytearray(n)
        self._fill(buffer)
        return bytes(buffer)

    def _fill(self, buffer: bytearray) -> None:
        view = memoryview(buffer)
        with self._lock:
            while len(view):
                if os.getpid() != self._pid or self._used >= self.REKEY_BYTES:
                    self._rekey()
                take = min(len(view), self.REKEY_BYTES - self._used)
                chunk = view[:take]
                chunk[:] = bytes(take)  # the keystream is ChaCha20's encryption of zeros
                self._keystream.update_into(chunk, chunk)  # in place, no copy
                self._used += take
                view = view[take:]

    def __repr__(self) -> str:
        return "SecureRandom()"


class InsecureSeededRandom(RandomSource):
    """Reproducible randomness for teaching — **INSECURE**.

    Anyone who knows (or guesses) the seed can recompute every "random" value, so noise can be
    removed and secret shares combined. Use it only to make a lesson's numbers repeatable.
    """

    secure = False

    def __init__(self, seed: int) -> None:
        seed = as_integer(seed, "the seed")
        self.seed = seed
        self._generator = np.random.Generator(np.random.PCG64(seed))

    def bytes(self, n: int) -> bytes:
        return self._generator.bytes(n)

    def __repr__(self) -> str:
        return f"InsecureSeededRandom(seed={self.seed})  # INSECURE: for reproducible teaching only"


def resolve_random_source(rng: RandomSource | None) -> RandomSource:
    """Return ``rng``, or a fresh :class:`SecureRandom` when it is ``None``.

    Functions take ``rng: RandomSource | None = None`` and call this, so the secure source is the
    default and a seeded one must be asked for by name.
    """
    if rng is None:
        return SecureRandom()
    if not isinstance(rng, RandomSource):
        raise TypeError(
            "rng must be a course_lib.randomness.RandomSource (SecureRandom() or "
            f"InsecureSeededRandom(seed)), got {type(rng).__name__}"
        )
    return rng
