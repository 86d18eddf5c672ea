"""The course's one fixed-point encoder: range checked after rounding, exact round trips."""

from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from course_lib.fixed_point import FixedPointEncoder
from course_lib.smpc import FixedPoint

SETTINGS = settings(deadline=None, max_examples=60)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_the_range_is_checked_after_rounding_on_both_sides(sign):
    enc = FixedPointEncoder(frac_bits=8, max_abs=4.0)
    largest = 4.0 - 2**-8  # encodes to 1023, the largest magnitude that fits
    assert int(enc.encode(torch.tensor([sign * largest]))) == sign * 1023
    assert int(enc.encode(torch.tensor([sign * (largest + 2**-10)]))) == sign * 1023  # rounds down
    for bad in (4.0 - 2**-9, 4.0 - 2**-10, 4.0, 4.0 + 2**-8, 1e6):  # 4 − 2^-9 ties to even: 1024
        with pytest.raises(ValueError, match="outside the range"):
            enc.encode(torch.tensor([0.0, sign * bad]))


def test_smpc_encoder_refuses_values_that_round_up_to_two_to_the_31():
    fp = FixedPoint(16)
    assert fp.max_abs == 2.0**15 and fp.resolution == 2.0**-16
    top = 2.0**15 - 2.0**-16
    assert fp.encode(torch.tensor([top, -top], dtype=torch.float64)).tolist() == [
        2**31 - 1,
        -(2**31 - 1),
    ]
    for bad in (2.0**15 - 2.0**-17, -(2.0**15 - 2.0**-18), 2.0**15):
        with pytest.raises(ValueError, match="after rounding"):
            fp.encode(torch.tensor([bad], dtype=torch.float64))
        with pytest.raises(ValueError, match="after rounding"):
            fp.encode(bad)  # a Python float is not squeezed through float32 first


@SETTINGS
@given(
    frac_bits=st.integers(0, 40),
    int_bits=st.integers(0, 20),
    values=st.lists(st.floats(-(2.0**21), 2.0**21, allow_nan=False), min_size=1, max_size=20),
)
@example(frac_bits=24, int_bits=8, values=[256 - 2**-26])
@example(frac_bits=16, int_bits=15, values=[-(2.0**15 - 2.0**-17)])
def test_round_trip_within_half_an_ulp_or_a_clear_refusal(frac_bits, int_bits, values):
    enc = FixedPointEncoder(frac_bits, 2.0**int_bits)
    x = torch.tensor(values, dtype=torch.float64)
    fits = (torch.round(x * 2.0**frac_bits).abs() < 2.0 ** (int_bits + frac_bits)).all()
    if not fits:
        with pytest.raises(ValueError, match="outside the range"):
            enc.encode(x)
        return
    encoded = enc.encode(x)
    assert encoded.abs().max() < 2 ** (int_bits + frac_bits)  # what every protocol relies on
    assert torch.all((enc.decode(encoded) - x).abs() <= 2.0 ** -(frac_bits + 1))


@SETTINGS
@given(st.integers(-(2**63), 2**63 - 1), st.integers(0, 62))
def test_decode_is_exact_for_every_int64(k, bits):
    decoded = float(FixedPointEncoder(bits, 1.0).decode(torch.tensor([k]), bits))
    exact = Fraction(k, 2**bits)
    assert abs(Fraction(decoded) - exact) <= abs(exact) * Fraction(1, 2**52)  # float64 rounding
    if abs(k) < 2**53:
        assert Fraction(decoded) == exact  # fits a float64 mantissa: exactly


def test_inputs_numpy_lists_and_other_scales():
    enc = FixedPointEncoder(4, 8.0)
    assert enc.encode(np.array([0.5, -1.25])).tolist() == [8, -20]
    assert enc.encode([0.5]).tolist() == [8] and enc.encode(3).tolist() == 48
    assert enc.encode(torch.tensor([7.4]), frac_bits=0).tolist() == [7]  # integers at scale 0
    with pytest.raises(ValueError, match="after rounding"):
        enc.encode(torch.tensor([7.6]), frac_bits=0)  # rounds to 8


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((-1, 1.0), ValueError),
        ((63, 1.0), ValueError),
        ((2.5, 1.0), TypeError),
        ((True, 1.0), TypeError),
        ((8, 0.0), ValueError),
        ((8, float("inf")), ValueError),
        ((8, "4"), TypeError),
        ((8, 2.0**56), ValueError),  # 2^56 · 2^8 does not fit in int64
    ],
)
def test_bad_parameters(args, error):
    with pytest.raises(error):
        FixedPointEncoder(*args)


def test_bad_values():
    enc = FixedPointEncoder(8, 4.0)
    for bad in (float("nan"), float("-inf")):
        with pytest.raises(ValueError, match="NaN or infinite"):
            enc.encode(torch.tensor([1.0, bad]))
    with pytest.raises(TypeError, match="dtype"):
        enc.encode(torch.tensor([True]))
    with pytest.raises(TypeError, match="cannot encode"):
        enc.encode("1.5")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="int64"):
        enc.decode(torch.tensor([1.5]))
    assert enc.encode(torch.empty(0, 3)).shape == (0, 3)
