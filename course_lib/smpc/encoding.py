"""Fixed-point numbers in the ring Z_2^64.

Secret sharing works on integers modulo 2^64 (torch ``int64`` arithmetic wraps around exactly like
that). Real numbers are carried as *fixed-point* integers: ``v`` is stored as ``round(v * 2**f)``,
with ``f`` fractional bits (``precision_bits``, 16 by default, i.e. a resolution of 2^-16 ≈ 1.5e-5),
by the course's one encoder, :class:`course_lib.fixed_point.FixedPointEncoder`.

Representable range
-------------------
The encoder accepts values whose encoding satisfies ``|round(v * 2**f)| < 2**31``, i.e.
``|v| < 2**(31 - f)`` (±32,768 at f = 16) **checked after rounding** (32767.99999 rounds up to
2^31 · 2^-16 and is refused). That bound is chosen so that the product of any two encodable values,
which briefly lives at scale ``2**(2f)`` before it is truncated back, stays below 2^62 and is
truncated correctly (see :mod:`course_lib.smpc.tensor`). Anything outside the range raises
:class:`ValueError` — it is never silently wrapped. Results of arithmetic on shares are not checked
(nobody sees them): a long dot product whose value before truncation exceeds ``2**(62 - 2f)``
(about 10^9 at f = 16) wraps around and decodes to garbage, so know your ranges.
"""

from __future__ import annotations

import numpy as np
import torch

from course_lib.fixed_point import FixedPointEncoder

__all__ = ["FixedPoint", "RING_BITS"]

#: Shares are elements of Z_2^RING_BITS, held in torch int64.
RING_BITS = 64

#: Encodings of inputs stay below 2^ENCODED_BITS in magnitude, so products stay below 2^62.
ENCODED_BITS = 31


class FixedPoint(FixedPointEncoder):
    """The SMPC encoder: ``precision_bits`` fractional bits, range ``|v| < 2**(31 - bits)``.

    >>> import torch
    >>> fp = FixedPoint(precision_bits=16)
    >>> fp.decode(fp.encode(torch.tensor([1.5, -0.25])))
    tensor([ 1.5000, -0.2500], dtype=torch.float64)
    """

    def __init__(self, precision_bits: int = 16) -> None:
        if not isinstance(precision_bits, int) or isinstance(precision_bits, bool):
            raise TypeError(f"precision_bits must be an int, got {type(precision_bits).__name__}")
        if not 1 <= precision_bits <= 30:
            raise ValueError(f"precision_bits must be between 1 and 30, got {precision_bits}")
        super().__init__(precision_bits, float(2 ** (ENCODED_BITS - precision_bits)))

    def encode(
        self, values: torch.Tensor | np.ndarray | float, frac_bits: int | None = None
    ) -> torch.Tensor:
        """As :meth:`FixedPointEncoder.encode`, always on the CPU: a tensor on a GPU is copied to
        the CPU first, because the SMPC engine keeps its ring elements there (see
        :mod:`course_lib.smpc`)."""
        if isinstance(values, torch.Tensor):
            values = values.detach().cpu()
        return super().encode(values, frac_bits)

    @property
    def precision_bits(self) -> int:
        return self.frac_bits

    def __repr__(self) -> str:
        return f"FixedPoint(precision_bits={self.precision_bits})"
