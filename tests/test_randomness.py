"""The course's random sources: secure by default, seeded only on request, unbiased."""

from __future__ import annotations

import math
import os

import pytest
import torch

from course_lib.dp.dpsgd import gaussian_noise
from course_lib.randomness import InsecureSeededRandom, SecureRandom, resolve_random_source


def _chi_square_bytes(sample: torch.Tensor) -> float:
    counts = torch.bincount(
        sample.view(torch.uint8).flatten().to(torch.int64), minlength=256
    ).double()
    expected = counts.sum() / 256
    return float(((counts - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("source", [SecureRandom(), InsecureSeededRandom(7)])
def test_int64_bytes_are_uniform(source) -> None:
    # chi-square with 255 degrees of freedom: the 99.9% quantile is about 330
    assert _chi_square_bytes(source.int64(20_000)) < 330


def test_uniform_floats_in_unit_interval_with_right_mean() -> None:
    u = InsecureSeededRandom(0).uniform(100_000)
    assert u.dtype == torch.float64 and u.min() >= 0.0 and u.max() < 1.0
    # mean of U(0,1) has standard error 1/sqrt(12 n); allow 5 standard errors
    assert abs(u.mean().item() - 0.5) < 5 / math.sqrt(12 * 100_000)


def test_randbelow_is_unbiased() -> None:
    rng = InsecureSeededRandom(1)
    draws = torch.tensor([rng.randbelow(3) for _ in range(6000)])
    counts = torch.bincount(draws, minlength=3).double()
    assert counts.sum() == 6000 and ((counts - 2000) ** 2 / 2000).sum() < 13.8  # chi2(2) 99.9%


def test_seeded_is_reproducible_and_secure_is_not() -> None:
    assert torch.equal(InsecureSeededRandom(5).int64(8), InsecureSeededRandom(5).int64(8))
    assert not torch.equal(SecureRandom().int64(8), SecureRandom().int64(8))
    assert SecureRandom.secure and not InsecureSeededRandom.secure
    assert "INSECURE" in repr(InsecureSeededRandom(5))


def test_resolve_defaults_to_secure() -> None:
    assert isinstance(resolve_random_source(None), SecureRandom)
    seeded = InsecureSeededRandom(0)
    assert resolve_random_source(seeded) is seeded
    with pytest.raises(TypeError, match="RandomSource"):
        resolve_random_source(42)  # type: ignore[arg-type]


def test_bad_input() -> None:
    rng = SecureRandom()
    with pytest.raises(ValueError, match="positive"):
        rng.randbelow(0)
    with pytest.raises(ValueError, match="probability"):
        rng.bernoulli(1.5, 3)
    with pytest.raises(ValueError, match="shape"):
        rng.int64((2, -1))
    with pytest.raises(TypeError, match="seed"):
        InsecureSeededRandom(1.5)  # type: ignore[arg-type]
    assert rng.int64((0, 3)).shape == (0, 3)


def test_secure_streams_are_fresh_per_instance_and_not_reproducible() -> None:
    """Two SecureRandom instances (same process, same moment) never share a stream."""
    a, b = SecureRandom(), SecureRandom()
    first = a.bytes(64)
    assert first != b.bytes(64) and first != a.bytes(64)  # nor does one repeat itself
    assert first != bytes(64)  # the keystream, not the zeros it encrypts
    assert _chi_square_bytes(torch.frombuffer(bytearray(a.bytes(160_000)), dtype=torch.int64)) < 330


def test_secure_source_rekeys_after_its_byte_budget(monkeypatch) -> None:
    rng = SecureRandom()
    rekeys = []
    original = rng._rekey
    monkeypatch.setattr(rng, "_rekey", lambda: (rekeys.append(1), original()))
    monkeypatch.setattr(rng, "REKEY_BYTES", 64)
    out = rng.bytes(200)  # 64 under the first key, then 64 + 64 + 8 under three fresh keys
    assert len(out) == 200 and len(rekeys) == 3
    assert len({out[i : i + 64] for i in range(0, 192, 64)}) == 3


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")
def test_a_forked_child_does_not_continue_the_parents_stream() -> None:
    rng = SecureRandom()
    rng.bytes(16)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: write what it draws next, then leave without running pytest's exit
        os.write(write_end, rng.bytes(32))
        os._exit(0)
    os.close(write_end)
    parent = rng.bytes(32)
    child = os.read(read_end, 32)
    os.waitpid(pid, 0)
    assert len(child) == 32 and child != parent


def test_the_seeded_source_says_it_is_insecure_and_the_secure_one_does_not() -> None:
    assert not InsecureSeededRandom.secure and SecureRandom.secure
    assert (
        "INSECURE" in repr(InsecureSeededRandom(3)) and "INSECURE" in InsecureSeededRandom.__doc__
    )
    assert "INSECURE" not in repr(SecureRandom())
    with pytest.raises(ValueError, match="non-negative"):
        SecureRandom().bytes(-1)


# -- Gaussian noise (course_lib.dp.dpsgd.gaussian_noise): exactly N(0, σ²) from either source ------

Z = 5.0  # every statistical bound below is a 5-standard-error band (two-sided p ≈ 6e-7)
NOISE_SOURCES = {"secure": SecureRandom, "seeded": lambda: InsecureSeededRandom(11)}


def _normal_cdf(z: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.erfc(-z / math.sqrt(2))


@pytest.fixture(scope="module", params=list(NOISE_SOURCES))
def standard_noise(request) -> torch.Tensor:
    """A million draws of N(0, 1) noise (float32, as DP-SGD uses it), in float64 for the tests."""
    return gaussian_noise((1_000_000,), 1.0, NOISE_SOURCES[request.param]()).double()


def test_noise_mean_variance_and_kurtosis_are_those_of_n01(standard_noise) -> None:
    z, n = standard_noise, len(standard_noise)
    assert abs(z.mean().item()) < Z / math.sqrt(n)
    assert abs(z.var().item() - 1) < Z * math.sqrt(2 / (n - 1))
    assert abs(z.pow(4).mean().item() - 3) < Z * math.sqrt(96 / n)


def test_noise_passes_a_kolmogorov_smirnov_test_against_n01(standard_noise) -> None:
    z, n = standard_noise.sort().values, len(standard_noise)
    cdf = _normal_cdf(z)
    ranks = torch.arange(1, n + 1, dtype=torch.float64)
    d = max((ranks / n - cdf).max().item(), (cdf - (ranks - 1) / n).max().item())
    # P(√n·D > 1.95) ≈ 0.001 (Kolmogorov's distribution); a standard deviation off by 1% already
    # gives √n·D ≈ 2.4 at this n
    assert math.sqrt(n) * d < 1.95


@pytest.mark.parametrize("threshold", [2.0, 3.0, 4.0, 4.5])
def test_noise_tails_have_the_normal_mass(standard_noise, threshold) -> None:
    n = len(standard_noise)
    p = math.erfc(threshold / math.sqrt(2))  # P(|Z| > t)
    count = int((standard_noise.abs() > threshold).sum())
    assert abs(count - n * p) < Z * math.sqrt(n * p * (1 - p)) + 1


def test_noise_values_are_uncorrelated_with_their_neighbours_and_box_muller_partners(
    standard_noise,
) -> None:
    z, n = standard_noise, len(standard_noise)
    half = n // 2
    bound = Z / math.sqrt(half)
    assert abs(torch.corrcoef(torch.stack([z[:-1], z[1:]]))[0, 1].item()) < Z / math.sqrt(n)
    # the pair (√(-2 ln u)·cos, √(-2 ln u)·sin) is stored as z[i], z[i + n/2]: independent
    # normals, so neither they nor their squares (which share the radius) are correlated
    first, second = z[:half], z[half:]
    assert abs(torch.corrcoef(torch.stack([first, second]))[0, 1].item()) < bound
    assert abs(torch.corrcoef(torch.stack([first**2, second**2]))[0, 1].item()) < bound
    # and the squared radius z₁² + z₂² is exponential with mean 2: P(r² > 4) = e⁻²
    p = math.exp(-2)
    count = int((first**2 + second**2 > 4).sum())
    assert abs(count - half * p) < Z * math.sqrt(half * p * (1 - p))


def test_secure_noise_is_fresh_and_seeded_noise_repeats() -> None:
    a, b = gaussian_noise((10_000,), 1.0), gaussian_noise((10_000,), 1.0)
    assert not torch.equal(a, b) and abs(torch.corrcoef(torch.stack([a, b]))[0, 1]) < Z / 100
    rng = SecureRandom()
    assert not torch.equal(gaussian_noise((64,), 1.0, rng), gaussian_noise((64,), 1.0, rng))
    seeded = gaussian_noise((7,), 1.0, InsecureSeededRandom(3))
    assert torch.equal(seeded, gaussian_noise((7,), 1.0, InsecureSeededRandom(3)))


def test_seeded_noise_keeps_its_exact_values() -> None:
    """Lessons' seeded outputs depend on these bits: a faster transform must not change them."""
    expected = [-0.8106995820999146, 0.6821484565734863, -0.6683363318443298, 1.3303290605545044]
    expected += [1.3997633457183838]
    assert torch.equal(gaussian_noise((5,), 1.0, InsecureSeededRandom(0)), torch.tensor(expected))
    scaled = gaussian_noise((3,), 2.5, InsecureSeededRandom(123))
    assert scaled.tolist() == [-0.24008479714393616, -1.8647077083587646, 1.714784026145935]
    # float64 noise is made in float64 (tests/dp/test_noise_precision.py): its own values
    wide = gaussian_noise((3,), 2.5, InsecureSeededRandom(123), dtype=torch.float64)
    assert wide.dtype == torch.float64
    assert wide.equal(gaussian_noise((3,), 2.5, InsecureSeededRandom(123), dtype=torch.float64))


class _ZeroKeystream:
    """Stands in for the cipher so that the transform sees chosen bytes."""

    def __init__(self, fill: int) -> None:
        self.fill = fill

    def update_into(self, data, out) -> int:
        out[: len(data)] = bytes([self.fill]) * len(data)
        return len(data)


def test_secure_transform_reaches_the_far_tail_and_the_centre(monkeypatch) -> None:
    """u = 2⁻⁵³ (53 zero bits) must give the radius √(106 ln 2) ≈ 8.57: float32 rounding of the
    uniform would cut the tail at 5.8σ (24 bits) and leak; all-ones bits give radius 0."""
    from course_lib.dp import dpsgd

    monkeypatch.setattr(dpsgd, "_keystream", lambda rng: _ZeroKeystream(0))
    z = gaussian_noise((6,), 2.0, SecureRandom())
    far = 2.0 * math.sqrt(-2 * math.log(2.0**-53))
    # angle 0: cos = 1 for the first of each pair, sin = 0 for the second
    torch.testing.assert_close(z, torch.tensor([far] * 3 + [0.0] * 3), rtol=2e-6, atol=0)
    monkeypatch.setattr(dpsgd, "_keystream", lambda rng: _ZeroKeystream(0xFF))
    assert gaussian_noise((4,), 1.0, SecureRandom()).abs().max() < 1e-3


@pytest.mark.parametrize("count", [0, 1, 2, 3, 1001])
def test_noise_has_the_requested_shape_dtype_and_scale(count) -> None:
    for source in (None, InsecureSeededRandom(0)):
        z = gaussian_noise((count, 1), 0.0, source)
        assert z.shape == (count, 1) and z.dtype == torch.float32 and (z == 0).all()
        z = gaussian_noise((count,), 3.0, source, dtype=torch.float64)
        assert z.dtype == torch.float64 and z.shape == (count,) and torch.isfinite(z).all()
    with pytest.raises(ValueError, match="std"):
        gaussian_noise((3,), -1.0)


class _FixedKey(SecureRandom):
    """A secure source whose key is chosen (a known-answer test of what is done with it)."""

    def bytes(self, n: int) -> bytes:
        return bytes(range(n))


def test_secure_noise_is_box_muller_of_chacha20_of_zeros_computed_out_of_place() -> None:
    """The fast path encrypts its buffer in place (``update_into(buffer, buffer)``), which
    ``cryptography`` does not document: a known-answer test against the out-of-place keystream
    and a float64 Box–Muller from the same bits."""
    import numpy as np
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    from course_lib.dp.dpsgd import _secure_normals

    count = 10_001  # odd: the last pair is cut
    pairs = (count + 1) // 2
    key = bytes(range(48))
    stream = Cipher(algorithms.ChaCha20(key[:32], key[32:]), mode=None).encryptor()
    raw = np.frombuffer(stream.update(bytes(12 * pairs)), dtype=np.uint8)
    words = raw[: 8 * pairs].view("<u8") & np.uint64((1 << 53) - 1)
    u = (words.astype(np.float64) + 1.0) * 2.0**-53
    angle = raw[8 * pairs :].view("<i4").astype(np.float64) * (2 * math.pi * 2.0**-32)
    radius = np.sqrt(-2.0 * np.log(u))
    reference = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:count]
    fast = _secure_normals(_FixedKey(), count, 1.0).astype(np.float64)
    # float32 arithmetic: within a few float32 ulps of the float64 reference, value by value
    assert np.allclose(fast, reference, rtol=2e-6, atol=2e-6)
