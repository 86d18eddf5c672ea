"""Fixed-point numbers in the ring Z_2^64.

Secret sharing works on integers modulo 2^64 (torch ``int64`` arithmetic wraps around exactly like
that). Real numbers are carried as *fixed-point* integers: ``v`` is stored as ``round(v * 2**f)``,
with ``f`` fractional bits (``precision_bits``, 16 by default, i.e. a resolution of 2^-16 ≈ 1.5e-5).

Representable range
-------------------
The encoder accepts values with ``|v| < 2**(31 - f)`` (±32,768 at f = 16). That bound is chosen so
that the product of any two encodable values, which briefly lives at scale ``2**(2f)`` before it is
truncated back, stays below 2^62 and is truncated correctly (see :mod:`course_lib.smpc.tensor`).
Anything outside the range raises :class:`ValueError` — it is never silently wrapped. Results of
arithmetic on shares are not checked (nobody sees them): a long dot product whose value before
truncation exceeds ``2**(62 - 2f)`` (about 10^9 at f = 16) wraps around and decodes to garbage, so
know your ranges.
"""

from __future__ import annotations

import math

import torch

__all__ = ["FixedPoint", "RING_BITS", "check_ring_tensor"]

#: Shares are elements of Z_2^RING_BITS, held in torch int64.
RING_BITS = 64


def check_ring_tensor(x: object, what: str = "a ring tensor") -> torch.Tensor:
    """Return ``x`` if it is an ``int64`` tensor (an element of Z_2^64); else raise ``TypeError``.

    Ring operations refuse floats on purpose: a float that sneaks into share arithmetic would be
    rounded, and a share that is off by one bit reconstructs to garbage.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch.int64 tensor, got {type(x).__name__}")
    if x.dtype != torch.int64:
        raise TypeError(
            f"{what} must have dtype torch.int64 (ring elements), got {x.dtype}; "
            "encode real numbers first with FixedPoint.encode"
        )
    return x


class FixedPoint:
    """Encode real numbers as fixed-point elements of Z_2^64 and decode them back.

    >>> fp = FixedPoint(precision_bits=16)
    >>> fp.decode(fp.encode(torch.tensor([1.5, -0.25])))
    tensor([ 1.5000, -0.2500], dtype=torch.float64)
    """

    def __init__(self, precision_bits: int = 16) -> None:
        if not isinstance(precision_bits, int) or isinstance(precision_bits, bool):
            raise TypeError(f"precision_bits must be an int, got {type(precision_bits).__name__}")
        if not 1 <= precision_bits <= 30:
            raise ValueError(f"precision_bits must be between 1 and 30, got {precision_bits}")
        self.precision_bits = precision_bits
        self.scale = 1 << precision_bits

    @property
    def max_abs(self) -> float:
        """Largest magnitude (exclusive) the encoder accepts: ``2**(31 - precision_bits)``."""
        return float(2 ** (31 - self.precision_bits))

    @property
    def resolution(self) -> float:
        """The smallest step between two encodable numbers, one "ulp": ``2**-precision_bits``."""
        return 1.0 / self.scale

    def encode(self, values: torch.Tensor | float, scale_bits: int | None = None) -> torch.Tensor:
        """``round(values * 2**scale_bits)`` as int64; ``scale_bits`` defaults to the precision.

        Raises ``ValueError`` for NaN, infinities and values outside ``±max_abs``.
        """
        bits = self.precision_bits if scale_bits is None else scale_bits
        x = torch.as_tensor(values, dtype=torch.float64)
        if not bool(torch.isfinite(x).all()):
            raise ValueError("cannot encode NaN or infinite values")
        if x.numel() and float(x.abs().max()) >= self.max_abs:
            raise ValueError(
                f"value {float(x.abs().max()):.6g} is outside the representable range "
                f"(-{self.max_abs:g}, {self.max_abs:g}) of {self.precision_bits}-bit fixed point "
                "in Z_2^64; scale your data down (or use fewer precision bits)"
            )
        return torch.round(x * 2.0**bits).to(torch.int64)

    def decode(self, ring: torch.Tensor, scale_bits: int | None = None) -> torch.Tensor:
        """Interpret int64 ring elements as signed fixed-point numbers (float64)."""
        check_ring_tensor(ring, "the value to decode")
        bits = self.precision_bits if scale_bits is None else scale_bits
        # Split into high and low parts so that no precision is lost converting to float64.
        high = torch.bitwise_right_shift(ring, bits).to(torch.float64)
        low = (ring & ((1 << bits) - 1)).to(torch.float64)
        return high + low / math.ldexp(1.0, bits)

    def __repr__(self) -> str:
        return f"FixedPoint(precision_bits={self.precision_bits})"
