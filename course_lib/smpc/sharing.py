"""Additive and XOR secret sharing among ``n ≥ 2`` parties.

*Additive* (arithmetic) sharing splits a ring element ``x`` into ``n`` shares that sum to ``x``
modulo 2^64: the first ``n − 1`` shares are uniformly random and the last is ``x`` minus their sum.
Any ``n − 1`` shares are uniformly distributed whatever ``x`` is, so they reveal nothing; all ``n``
together give ``x`` back exactly.

*XOR* (binary) sharing does the same with bitwise XOR in place of addition; the comparison protocol
uses it to work on the bits of a number.

Shares are stacked along a new leading dimension: ``shares[i]`` is party ``i``'s share. Randomness
comes from :mod:`course_lib.randomness` — :class:`~course_lib.randomness.SecureRandom` unless you
pass an (explicitly insecure) seeded source.
"""

from __future__ import annotations

import torch

from course_lib.fixed_point import check_ring_tensor
from course_lib.randomness import RandomSource, resolve_random_source
from course_lib.smpc.ring import check_on_cpu
from course_lib.validation import as_integer

__all__ = ["share", "reconstruct", "share_xor", "reconstruct_xor", "check_party_count"]


def check_party_count(n_parties: object) -> int:
    """Return ``n_parties`` if it is an int ≥ 2, else raise a clear error."""
    n_parties = as_integer(n_parties, "the number of parties")
    if n_parties < 2:
        raise ValueError(f"secret sharing needs at least 2 parties, got {n_parties}")
    return n_parties


def share(secret: torch.Tensor, n_parties: int, rng: RandomSource | None = None) -> torch.Tensor:
    """Split an int64 tensor into ``n_parties`` additive shares, stacked on dimension 0."""
    check_on_cpu(check_ring_tensor(secret, "the secret"), "the secret")
    check_party_count(n_parties)
    rng = resolve_random_source(rng)
    shares = rng.int64((n_parties, *secret.shape))
    others = shares[0] if n_parties == 2 else shares[:-1].sum(dim=0)
    torch.sub(secret, others, out=shares[-1])  # int64 arithmetic wraps modulo 2^64
    return shares


def reconstruct(shares: torch.Tensor) -> torch.Tensor:
    """Add the shares (dimension 0) modulo 2^64 to recover the secret."""
    check_ring_tensor(shares, "the shares")
    if shares.dim() == 0 or shares.shape[0] < 2:
        raise ValueError("reconstruct needs a stack of at least 2 shares on dimension 0")
    return shares.sum(dim=0)


def share_xor(
    secret: torch.Tensor, n_parties: int, rng: RandomSource | None = None
) -> torch.Tensor:
    """Split an int64 tensor into ``n_parties`` XOR shares (bitwise), stacked on dimension 0."""
    check_on_cpu(check_ring_tensor(secret, "the secret"), "the secret")
    check_party_count(n_parties)
    rng = resolve_random_source(rng)
    shares = rng.int64((n_parties, *secret.shape))
    shares[-1] = secret ^ reconstruct_xor(shares[:-1])
    return shares


def reconstruct_xor(shares: torch.Tensor) -> torch.Tensor:
    """XOR the shares (dimension 0) together to recover the secret."""
    check_ring_tensor(shares, "the shares")
    if shares.dim() == 0 or shares.shape[0] == 0:
        raise ValueError("reconstruct_xor needs a stack of shares on dimension 0")
    result = shares[0].clone()
    for s in shares[1:]:
        result ^= s
    return result
