"""The trusted dealer (a "crypto provider"): correlated randomness prepared before the computation.

Multiplying two secret-shared numbers needs help. A dealer who takes no part in the computation and
sees none of its inputs hands out, ahead of time, shares of random values with a known relation:

- **Beaver triples** ``(a, b, c = a ∘ b)`` for any bilinear ``∘`` — elementwise product, matmul,
  convolution — used by :meth:`SharedTensor.__mul__ <course_lib.smpc.tensor.SharedTensor>` & co.;
- **binary triples** ``(a, b, c = a AND b)`` on XOR-shared 64-bit words, for the adder circuit of
  the comparison protocol;
- **random bits** shared both ways (XOR and additively), to convert a bit from one sharing to the
  other;
- **truncation masks**: shares of a uniform ``r`` (offset by ``2^62``) and of two values derived
  from ``r >> f`` and ``msb(r)``, for dividing a shared number by ``2^f``.

The dealer must not collude with any party (with the shares of ``a`` it could unmask ``x − a``).
Real systems replace it by cryptographic protocols (oblivious transfer or homomorphic encryption);
the online phase stays the same. Everything it sends is counted as offline bytes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from course_lib.randomness import RandomSource, resolve_random_source
from course_lib.smpc.communication import CommunicationLog
from course_lib.smpc.sharing import check_party_count, share, share_xor

__all__ = ["Dealer"]

RingOp = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Dealer:
    """Produces correlated randomness for ``n_parties``, as stacked shares (dimension 0 = party)."""

    def __init__(
        self, n_parties: int, rng: RandomSource | None = None, log: CommunicationLog | None = None
    ) -> None:
        self.n_parties = check_party_count(n_parties)
        self.rng = resolve_random_source(rng)
        self.log = log

    def _share(self, secret: torch.Tensor) -> torch.Tensor:
        if self.log is not None:
            self.log.record_dealer(secret.numel())
        return share(secret, self.n_parties, self.rng)

    def _share_xor(self, secret: torch.Tensor) -> torch.Tensor:
        if self.log is not None:
            self.log.record_dealer(secret.numel())
        return share_xor(secret, self.n_parties, self.rng)

    def beaver_triple(
        self, op: RingOp, x_shape: tuple[int, ...], y_shape: tuple[int, ...]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Shares of uniform ``a`` (shaped like x), ``b`` (like y) and ``c = op(a, b)``."""
        a, b = self.rng.int64(x_shape), self.rng.int64(y_shape)
        return self._share(a), self._share(b), self._share(op(a, b))

    def binary_triple(
        self, shape: tuple[int, ...]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """XOR shares of uniform 64-bit words ``a``, ``b`` and ``c = a & b`` (bitwise AND)."""
        a, b = self.rng.int64(shape), self.rng.int64(shape)
        return self._share_xor(a), self._share_xor(b), self._share_xor(a & b)

    def random_bit(self, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """A uniform bit per element, XOR-shared and additively shared."""
        bit = self.rng.int64(shape) < 0  # the sign bit of a uniform word is a fair coin
        bit = bit.to(torch.int64)
        return self._share_xor(bit), self._share(bit)

    def truncation_mask(
        self, shape: tuple[int, ...], bits: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Shares of ``r + 2^62`` for a uniform ``r``, and of the two values a truncation by
        ``f = bits`` can need from ``r`` (``r`` read as unsigned; see
        :meth:`SharedTensor._open_truncated <course_lib.smpc.tensor.SharedTensor>`):

        - ``if_nonneg = msb(r)·2^(64−f) − (r >> f) − 2^(62−f)``, used when the opened
          ``c = x + 2^62 + r`` is non-negative as an int64 (``msb(c) = 0``);
        - ``if_neg = 2^(64−f) − (r >> f) − 2^(62−f)``, used when it is negative.

        The public offset ``2^62`` is added to the mask here, once, rather than by party 0 online.
        """
        r = self.rng.int64(shape)
        top = _as_int64(1 << (64 - bits))  # 2^(64−f) as an int64 (−2^63 when f = 1)
        offset = ((r >> bits) & ((1 << (64 - bits)) - 1)).neg_().sub_(1 << (62 - bits))
        if_neg = offset + top  # offset = −(r >> f) − 2^(62−f), with r >> f a logical shift
        if_nonneg = offset.add_((r >> 63) & top)  # r >> 63 is −1 (all ones) where msb(r) = 1
        return self._share(r.add_(1 << 62)), self._share(if_nonneg), self._share(if_neg)


def _as_int64(value: int) -> int:
    """``value`` modulo 2^64 as the int64 that stands for it (2^63 is −2^63)."""
    return (value + 2**63) % 2**64 - 2**63
