"""Fixed-point encoding and additive / XOR secret sharing (course_lib.smpc)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chi2

from course_lib.exercises import check
from course_lib.randomness import InsecureSeededRandom, SecureRandom
from course_lib.smpc import FixedPoint, reconstruct, reconstruct_xor, share, share_xor

SETTINGS = settings(deadline=None, max_examples=40)


@SETTINGS
@given(seed=st.integers(0, 2**32), n=st.integers(2, 5), size=st.integers(1, 50))
def test_reconstruction_is_exact_for_any_ring_element(seed, n, size):
    rng = InsecureSeededRandom(seed)
    secret = rng.int64((size,))
    assert torch.equal(reconstruct(share(secret, n, rng)), secret)
    assert torch.equal(reconstruct_xor(share_xor(secret, n, rng)), secret)


@SETTINGS
@given(
    values=st.lists(st.floats(-32767.0, 32767.0, allow_nan=False), min_size=1, max_size=30),
    bits=st.integers(1, 30),
)
def test_encode_decode_round_trip_within_half_an_ulp(values, bits):
    fp = FixedPoint(bits)
    x = torch.tensor(values, dtype=torch.float64)
    x = x[x.abs() < fp.max_abs]
    decoded = fp.decode(fp.encode(x))
    assert torch.all((decoded - x).abs() <= fp.resolution / 2)


def test_representable_range_is_stated_and_enforced():
    fp = FixedPoint(16)
    assert fp.max_abs == 2.0**15 and fp.resolution == 2.0**-16
    fp.encode(torch.tensor([32767.99, -32767.99]))
    for bad in (32768.0, -40000.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            fp.encode(torch.tensor([bad]))


@pytest.mark.parametrize("bits", [0, 31, 2.5])
def test_bad_precision_is_rejected(bits):
    with pytest.raises((ValueError, TypeError)):
        FixedPoint(bits)


def test_floats_and_bad_party_counts_are_rejected():
    with pytest.raises(TypeError, match="int64"):
        share(torch.tensor([1.5]), 2)
    with pytest.raises(TypeError, match="int64"):
        reconstruct(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="at least 2"):
        share(torch.tensor([1]), 1)
    with pytest.raises(TypeError):
        share(torch.tensor([1]), 2.0)


@pytest.mark.parametrize("secret_value", [0, 1, -(2**63), 2**40 + 12345])
def test_a_single_share_is_uniform_whatever_the_secret(secret_value):
    """Chi-square test of the top byte and the bottom byte of party 0's share (255 d.o.f.)."""
    rng = InsecureSeededRandom(7)
    count = 256 * 100
    shares = share(torch.full((count,), secret_value, dtype=torch.int64), 2, rng)
    critical = chi2.ppf(1 - 1e-4, df=255)  # a uniform source fails with probability 1e-4
    for party in (0, 1):
        for byte in ((shares[party] >> 56) & 0xFF, shares[party] & 0xFF):
            observed = torch.bincount(byte, minlength=256).double()
            statistic = ((observed - 100.0) ** 2 / 100.0).sum().item()
            assert statistic < critical, (party, statistic, critical)


def test_default_randomness_is_secure_and_unseeded():
    secret = torch.tensor([42])
    assert not torch.equal(share(secret, 2), share(secret, 2))


def _correct(secret, n, rng):
    shares = [rng.int64(secret.shape) for _ in range(n - 1)]
    return torch.stack([*shares, secret - torch.stack(shares).sum(dim=0)])


def _correct_in_one_draw(secret, n, rng):
    random = rng.int64((n - 1, *secret.shape))
    return torch.cat([random, (secret - random.sum(dim=0))[None]])


def _small_masks(secret, n, rng):  # the broken scheme lesson 15 warns against
    masks = rng.int64((n - 1, *secret.shape)) >> 40
    return torch.cat([masks, (secret - masks.sum(dim=0))[None]])


def _ignores_rng(secret, n, rng):
    return _correct(secret, n, SecureRandom())


def _own_seed(secret, n, rng):
    return _correct(secret, n, InsecureSeededRandom(1234))


def _draws_but_discards(secret, n, rng):
    rng.int64((n - 1, *secret.shape))  # looks as if it used the rng
    random = torch.randint(-(2**63), 2**63 - 1, (n - 1, *secret.shape))
    return torch.cat([random, (secret - random.sum(dim=0))[None]])


@pytest.mark.parametrize(
    ("answer", "passes"),
    [
        (_correct, True),
        (_correct_in_one_draw, True),
        (_small_masks, False),
        (_ignores_rng, False),
        (_own_seed, False),
        (_draws_but_discards, False),
    ],
)
def test_share_secret_checker_tests_security_not_just_sums(answer, passes, capsys):
    """Old checker: every one of these passed (their shares all add up to the secret)."""
    assert bool(check("15.share_secret", answer)) is passes
    if not passes:
        assert "✗" in capsys.readouterr().out
