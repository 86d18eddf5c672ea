"""Fixed-point numbers: the one encoder of real numbers as integers used by the whole course.

Secret sharing (:mod:`course_lib.smpc`), Paillier encryption (:mod:`course_lib.he.paillier`) and
masked secure aggregation compute on integers, so a real number ``x`` travels as the integer
``k = round(x · 2^f)`` with ``f`` *fractional bits* (resolution ``2^-f``), and comes back as
``k / 2^f``. Rounding is the only error: at most half a resolution step, ``2^-(f+1)``.

**The range is checked after rounding.** Every protocol reserves room for ``|k| < max_abs · 2^f``
(so that sums or products of encodings do not overflow their slot or wrap around the ring). A value
just *below* ``max_abs`` can still round *up* to ``max_abs · 2^f`` and overflow — e.g. with
``f = 24`` and ``max_abs = 256``, ``256 − 2^-26`` rounds to ``2^32``, which a 33-bit signed slot
reads back as ``−256``. So the encoder rounds first and then checks ``|k| < max_abs · 2^f``;
anything else (and NaN, ±inf) raises ``ValueError``. Nothing is clipped or wrapped silently.

>>> enc = FixedPointEncoder(frac_bits=8, max_abs=4.0)
>>> enc.encode(torch.tensor([1.5, -0.25]))
tensor([384, -64])
>>> enc.decode(enc.encode(torch.tensor([1.5, -0.25])))
tensor([ 1.5000, -0.2500], dtype=torch.float64)
>>> enc.encode(torch.tensor([4.0 - 2**-10]))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: value 3.9990234375 rounds to 1024 = 4 · 2^8, outside the range |x| < 4 ...
"""

from __future__ import annotations

import math

import numpy as np
import torch

from course_lib.validation import check_int_in_range, check_positive

__all__ = ["FixedPointEncoder", "check_ring_tensor"]

#: Encodings are torch ``int64``: the integer ``k`` must fit in 63 bits plus a sign.
_MAX_SCALED = 2.0**63


def check_ring_tensor(x: object, what: str = "a ring tensor") -> torch.Tensor:
    """Return ``x`` if it is an ``int64`` tensor (an element of Z_2^64); else raise ``TypeError``.

    Integer code refuses floats on purpose: a float that sneaks into share arithmetic would be
    rounded, and a share that is off by one bit reconstructs to garbage.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch.int64 tensor, got {type(x).__name__}")
    if x.dtype != torch.int64:
        raise TypeError(
            f"{what} must have dtype torch.int64 (ring elements), got {x.dtype}; "
            "encode real numbers first with a fixed-point encoder"
        )
    return x


def _is_int(x: torch.Tensor) -> bool:
    return x.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def _check_bits(value: object, name: str) -> int:
    return check_int_in_range(value, name, 0, 62)


class FixedPointEncoder:
    """``round(x · 2^frac_bits)`` as ``int64``, for ``|x| < max_abs`` checked after rounding.

    ``frac_bits`` (0–62) sets the resolution ``2^-frac_bits``; ``max_abs`` (> 0) is the range
    parameter: an encoding ``k`` is accepted only if ``|k| < max_abs · 2^frac_bits`` (which must be
    at most ``2^63``). Each protocol picks ``max_abs`` so its sums/products cannot overflow.
    :meth:`encode` and :meth:`decode` take an optional other ``frac_bits`` (a value at another
    scale, e.g. integers at scale 0); the range in real units stays ``max_abs``.
    """

    def __init__(self, frac_bits: int, max_abs: float) -> None:
        self.frac_bits = _check_bits(frac_bits, "frac_bits")
        self.max_abs = check_positive(max_abs, "max_abs")
        self._limit(self.frac_bits)  # validates max_abs · 2^frac_bits ≤ 2^63

    @property
    def resolution(self) -> float:
        """The step between two encodable numbers, one "ulp": ``2^-frac_bits``."""
        return 2.0**-self.frac_bits

    def _limit(self, bits: int) -> float:
        limit = math.ldexp(self.max_abs, bits)
        if limit > _MAX_SCALED:
            raise ValueError(
                f"max_abs · 2^frac_bits = {self.max_abs:g} · 2^{bits} does not fit in int64 "
                "(at most 2^63): lower max_abs or frac_bits"
            )
        return limit

    def encode(
        self, values: torch.Tensor | np.ndarray | float, frac_bits: int | None = None
    ) -> torch.Tensor:
        """``round(values · 2^bits)`` as an int64 tensor of the same shape (``bits`` defaults to
        ``frac_bits``; ties round to even, as ``torch.round``).

        Raises ``TypeError`` for non-numeric input and ``ValueError`` for NaN, ±inf and any value
        whose *rounded* encoding lies outside ``|k| < max_abs · 2^bits``.
        """
        bits = self.frac_bits if frac_bits is None else _check_bits(frac_bits, "frac_bits")
        limit = self._limit(bits)
        if isinstance(values, bool) or not isinstance(
            values, int | float | torch.Tensor | np.ndarray | list | tuple
        ):
            raise TypeError(f"cannot encode a {type(values).__name__}; pass numbers or a tensor")
        # Python floats and lists go through NumPy, which keeps them float64 (torch would make them
        # float32 and round 2^15 − 2^-17 to 2^15 before we look at it).
        x = values if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values))
        if x.dtype == torch.bool or x.is_complex() or not (x.is_floating_point() or _is_int(x)):
            raise TypeError(f"cannot encode a tensor of dtype {x.dtype}; pass real numbers")
        x = x.detach().to(torch.float64)
        if not bool(torch.isfinite(x).all()):
            raise ValueError("cannot encode NaN or infinite values")
        scaled = torch.round(x * 2.0**bits)  # exact: multiplying by a power of two
        if scaled.numel():
            worst = int(scaled.abs().argmax())
            if float(scaled.flatten()[worst].abs()) >= limit:
                value, rounded = float(x.flatten()[worst]), float(scaled.flatten()[worst])
                raise ValueError(
                    f"value {value!r} rounds to {rounded:.0f} = {rounded / 2**bits:g} · 2^{bits}, "
                    f"outside the range |x| < {self.max_abs:g} of this {bits}-bit fixed point "
                    "(checked after rounding): it does not fit; scale your data down or widen "
                    "the range"
                )
        return scaled.to(torch.int64)

    def decode(self, encoded: torch.Tensor, frac_bits: int | None = None) -> torch.Tensor:
        """``encoded / 2^bits`` as float64 (two's complement = signed), correctly rounded to within
        2^-52 relative error, exact whenever ``|encoded| < 2^53``."""
        check_ring_tensor(encoded, "the value to decode")
        bits = self.frac_bits if frac_bits is None else _check_bits(frac_bits, "frac_bits")
        # Split into an integer part and a *centred* fraction |low| ≤ 2^(bits-1), so that no
        # precision is lost converting to float64 (a plain low part near 2^bits would round up).
        high = torch.bitwise_right_shift(encoded, bits)
        low = encoded & ((1 << bits) - 1)
        if bits:
            upper = low >= (1 << (bits - 1))
            high, low = high + upper.long(), low - (upper.long() << bits)
        return high.to(torch.float64) + low.to(torch.float64) / math.ldexp(1.0, bits)

    def __repr__(self) -> str:
        return f"FixedPointEncoder(frac_bits={self.frac_bits}, max_abs={self.max_abs:g})"
