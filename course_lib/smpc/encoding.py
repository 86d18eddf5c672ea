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
(about 10^9 at f = 16) is truncated wrongly — with probability about (|x| − 2^62)/2^63 between
2^62 and 2^63 ring units, always past 2^63, where the ring itself wraps — and decodes to garbage,
so know your ranges.

Public constants
----------------
A public number that *scales* shared values — a learning rate, ``lr / batch size``, ``1 / B`` — is
encoded with the same ``f`` fractional bits, i.e. rounded to a multiple of ``2^-f``. A small
constant loses most of its digits that way (``0.01 / 2000 = 5e-6`` becomes 0 at f = 16, and
``0.05 / 2000`` becomes ``2^-15``, 22 % too large), and every later step inherits the error.
:func:`check_public_constant` therefore **refuses** (``ValueError``) any such constant whose
relative rounding error ``|round(c·2^f)/2^f − c| / |c|`` exceeds
:data:`PUBLIC_CONSTANT_TOLERANCE` (1 %); exact constants (0.25, 1/32) and large enough ones
pass. :meth:`SharedTensor.__mul__ <course_lib.smpc.tensor.SharedTensor>` applies it to every
public scalar factor, and the trainers check their step sizes before the first step.
"""

from __future__ import annotations

import numpy as np
import torch

from course_lib.fixed_point import FixedPointEncoder
from course_lib.validation import as_number, check_int_in_range

__all__ = ["FixedPoint", "PUBLIC_CONSTANT_TOLERANCE", "RING_BITS", "check_public_constant"]

#: Shares are elements of Z_2^RING_BITS, held in torch int64.
RING_BITS = 64

#: Encodings of inputs stay below 2^ENCODED_BITS in magnitude, so products stay below 2^62.
ENCODED_BITS = 31

#: Largest relative rounding error accepted for a public constant that scales shared values.
PUBLIC_CONSTANT_TOLERANCE = 0.01


def check_public_constant(value: object, precision_bits: int, what: str) -> float:
    """``value`` as a float if its fixed-point rounding is exact enough, else ``ValueError``.

    ``value`` is rounded to ``round(value · 2^precision_bits) / 2^precision_bits``, as the
    encoder does; the relative error of that rounding must be at most
    :data:`PUBLIC_CONSTANT_TOLERANCE` (0 is exact). ``what`` names the constant in the message
    (e.g. ``"the step lr / batch size = 0.01 / 2000"``). ``TypeError`` for a bool or non-number,
    ``ValueError`` for NaN or ±∞.
    """
    number = as_number(value, what)
    scale = 2.0**precision_bits
    rounded = round(number * scale) / scale
    if number != 0 and abs(rounded - number) > PUBLIC_CONSTANT_TOLERANCE * abs(number):
        raise ValueError(
            f"{what} = {number:g} becomes {rounded:g} in fixed point with {precision_bits} "
            f"fractional bits (multiples of 2^-{precision_bits}): a relative error of "
            f"{abs(rounded - number) / abs(number):.1%}, above the "
            f"{PUBLIC_CONSTANT_TOLERANCE:.0%} accepted for a public constant. Use a larger "
            "constant (a larger learning rate or a smaller batch) or a session with more "
            "precision_bits"
        )
    return number


class FixedPoint(FixedPointEncoder):
    """The SMPC encoder: ``precision_bits`` fractional bits, range ``|v| < 2**(31 - bits)``.

    >>> import torch
    >>> fp = FixedPoint(precision_bits=16)
    >>> fp.decode(fp.encode(torch.tensor([1.5, -0.25])))
    tensor([ 1.5000, -0.2500], dtype=torch.float64)
    """

    def __init__(self, precision_bits: int = 16) -> None:
        precision_bits = check_int_in_range(precision_bits, "precision_bits", 1, 30)
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
