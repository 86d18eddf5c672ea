"""Where the course's randomness comes from.

Privacy code needs randomness an adversary cannot predict. Differential-privacy noise drawn from a
seeded pseudo-random generator can be *subtracted back out* by anyone who learns the seed, and
secret shares drawn from one reveal the secret. So every privacy primitive in ``course_lib`` draws
from a :class:`RandomSource`, and the default is :class:`SecureRandom` (the operating system's
cryptographically secure generator, ``os.urandom``).

Lessons also need *reproducible* numbers so that a learner sees what the text describes. For that
there is :class:`InsecureSeededRandom`: explicit, seeded, and labelled insecure wherever it shows
up.

Both sources produce raw bytes; everything else (uniform 64-bit ring elements, uniform floats,
unbiased integers below a bound) is derived from the bytes in one place, so the two behave
identically apart from where the bytes come from.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "RandomSource",
    "SecureRandom",
    "InsecureSeededRandom",
    "resolve_random_source",
]

Shape = int | Sequence[int]


def _as_shape(shape: Shape) -> tuple[int, ...]:
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if any((not isinstance(d, int)) or d < 0 for d in shape):
        raise ValueError(f"a shape must be non-negative integers, got {shape!r}")
    return shape


class RandomSource(ABC):
    """A source of random bytes, and the tensors and integers derived from them."""

    #: True when an adversary cannot predict the output (no seed exists to learn).
    secure: bool = False

    @abstractmethod
    def bytes(self, n: int) -> bytes:
        """Return ``n`` uniformly random bytes."""

    def int64(self, shape: Shape) -> torch.Tensor:
        """Uniform elements of the ring Z_2^64, stored as torch ``int64`` (two's complement)."""
        shape = _as_shape(shape)
        count = int(np.prod(shape, dtype=np.int64))
        if count == 0:
            return torch.empty(shape, dtype=torch.int64)
        raw = bytearray(self.bytes(8 * count))
        return torch.frombuffer(raw, dtype=torch.int64).reshape(shape)

    def uniform(self, shape: Shape) -> torch.Tensor:
        """Uniform ``float64`` values in [0, 1) with 53 random bits each."""
        words = self.int64(shape)
        top53 = torch.bitwise_right_shift(words, 11) & ((1 << 53) - 1)
        return top53.to(torch.float64) * 2.0**-53

    def randbelow(self, n: int) -> int:
        """An unbiased uniform integer in ``[0, n)`` (rejection sampling, no modulo bias)."""
        if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
            raise ValueError(f"randbelow needs a positive integer bound, got {n!r}")
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
    """Cryptographically secure randomness from the operating system (``os.urandom``).

    The default everywhere in ``course_lib``: use it for anything that protects real data.
    """

    secure = True

    def bytes(self, n: int) -> bytes:
        return os.urandom(n)

    def __repr__(self) -> str:
        return "SecureRandom()"


class InsecureSeededRandom(RandomSource):
    """Reproducible randomness for teaching — **INSECURE**.

    Anyone who knows (or guesses) the seed can recompute every "random" value, so noise can be
    removed and secret shares combined. Use it only to make a lesson's numbers repeatable.
    """

    secure = False

    def __init__(self, seed: int) -> None:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"the seed must be an int, got {type(seed).__name__}")
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
