"""Arithmetic on shares: +, −, ×, matmul, conv2d and truncation (course_lib.smpc)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from course_lib.randomness import InsecureSeededRandom
from course_lib.smpc import (
    Session,
    SharedTensor,
    argmax,
    max_pool2d,
    reconstruct,
    ring_conv2d,
    ring_matmul,
)

SETTINGS = settings(deadline=None, max_examples=25)
F = 16
ULP = 2.0**-F


def session(n=2, seed=0):
    return Session(n, precision_bits=F, rng=InsecureSeededRandom(seed))


def values(seed, shape, scale):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1) * scale


def product_tolerance(x, y, inner=1):
    """Encoding rounds each input by ≤ ulp/2; truncation adds ≤ 1 ulp; summed over `inner` terms."""
    bound = inner * ((x.abs().max() + y.abs().max()) * ULP / 2 + ULP**2 / 4)
    return float(bound) + ULP + 1e-12


@SETTINGS
@given(
    seed=st.integers(0, 10**6),
    n=st.integers(2, 4),
    size=st.integers(1, 40),
    scale=st.sampled_from([1.0, 100.0, 30000.0]),
)
def test_addition_and_public_operations(seed, n, size, scale):
    s = session(n, seed)
    x, y = values(seed, (size,), scale / 2), values(seed + 1, (size,), scale / 2)
    sx, sy = s.share(x), s.share(y)
    tol = ULP  # two encodings, each within ulp/2
    assert torch.allclose((sx + sy).reveal(), x + y, atol=tol, rtol=0)
    assert torch.allclose((sx - sy).reveal(), x - y, atol=tol, rtol=0)
    assert torch.allclose((sx + 3.5).reveal(), x + 3.5, atol=tol, rtol=0)
    assert torch.allclose((2 - sx).reveal(), 2 - x, atol=tol, rtol=0)
    assert torch.allclose((sx * 3).reveal(), x * 3, atol=3 * ULP, rtol=0)


@SETTINGS
@given(
    seed=st.integers(0, 10**6),
    n=st.integers(2, 4),
    size=st.integers(1, 40),
    scale=st.sampled_from([0.01, 1.0, 100.0, 32000.0]),
)
def test_elementwise_product_within_tolerance(seed, n, size, scale):
    s = session(n, seed)
    x, y = values(seed, (size,), scale), values(seed + 1, (size,), min(scale, 30000.0 / scale))
    got = (s.share(x) * s.share(y)).reveal()
    assert torch.allclose(got, x * y, atol=product_tolerance(x, y), rtol=0)
    got_public = (s.share(x) * y).reveal()
    assert torch.allclose(got_public, x * y, atol=product_tolerance(x, y), rtol=0)


@SETTINGS
@given(
    seed=st.integers(0, 10**6),
    n=st.integers(2, 3),
    m=st.integers(1, 12),
    k=st.integers(1, 40),
    p=st.integers(1, 12),
)
def test_matmul_within_tolerance(seed, n, m, k, p):
    s = session(n, seed)
    x, y = values(seed, (m, k), 3.0), values(seed + 1, (k, p), 3.0)
    expected = x @ y
    tol = product_tolerance(x, y, inner=k)
    assert torch.allclose((s.share(x) @ s.share(y)).reveal(), expected, atol=tol, rtol=0)
    assert torch.allclose((s.share(x) @ y).reveal(), expected, atol=tol, rtol=0)
    assert torch.allclose((x @ s.share(y)).reveal(), expected, atol=tol, rtol=0)


@SETTINGS
@given(
    seed=st.integers(0, 10**6),
    n=st.integers(2, 3),
    batch=st.integers(1, 3),
    channels=st.integers(1, 3),
    out=st.integers(1, 4),
    size=st.integers(4, 9),
    kernel=st.integers(1, 4),
    stride=st.integers(1, 2),
    padding=st.integers(0, 2),
)
def test_conv2d_within_tolerance(seed, n, batch, channels, out, size, kernel, stride, padding):
    s = session(n, seed)
    x = values(seed, (batch, channels, size, size), 2.0)
    w = values(seed + 1, (out, channels, kernel, kernel), 2.0)
    expected = torch.nn.functional.conv2d(x, w, stride=stride, padding=padding)
    got = s.share(x).conv2d(s.share(w), stride=stride, padding=padding).reveal()
    tol = product_tolerance(x, w, inner=channels * kernel * kernel)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=tol, rtol=0)


def signed_mod_2_64(value: int) -> int:
    """A Python integer reduced modulo 2^64 into int64's signed range [-2^63, 2^63)."""
    value %= 2**64
    return value - 2**64 if value >= 2**63 else value


def bigint_dot(xs: list[int], ys: list[int]) -> int:
    return signed_mod_2_64(sum(x * y for x, y in zip(xs, ys, strict=True)))


@SETTINGS
@given(seed=st.integers(0, 10**6))
def test_ring_matmul_and_conv_match_python_big_integers_mod_2_64(seed):
    """The reference is exact integer arithmetic (no int64), reduced modulo 2^64 at the end."""
    rng = InsecureSeededRandom(seed)
    a, b = rng.int64((5, 33)), rng.int64((33, 4))
    rows, cols = a.tolist(), b.T.tolist()
    expected = [[bigint_dot(r, c) for c in cols] for r in rows]
    assert ring_matmul(a, b).tolist() == expected
    x, w = rng.int64((2, 3, 7, 7)), rng.int64((4, 3, 3, 3))
    got = ring_conv2d(x, w, stride=2, padding=1)
    assert got.shape == (2, 4, 4, 4)
    xp = torch.nn.functional.pad(x, (1, 1, 1, 1)).tolist()
    for n, o, i, j in [(0, 0, 0, 0), (1, 2, 1, 2), (0, 3, 3, 3), (1, 1, 2, 0)]:
        patch = [
            xp[n][c][2 * i + u][2 * j + v] for c in range(3) for u in range(3) for v in range(3)
        ]
        kernel = [w[o, c, u, v].item() for c in range(3) for u in range(3) for v in range(3)]
        assert got[n, o, i, j].item() == bigint_dot(patch, kernel)


@SETTINGS
@given(seed=st.integers(0, 10**6), n=st.integers(2, 4), bits=st.integers(1, 30))
def test_truncation_error_is_at_most_one_ulp(seed, n, bits):
    """The result is floor(x / 2^bits) or one more, for any |x| < 2^62 ring units."""
    s = session(n, seed)
    rng = InsecureSeededRandom(seed + 1)
    x = rng.int64((200,)) >> 2  # uniform in [-2^62, 2^62)
    edges = torch.tensor([0, 1, -1, 2**62 - 1, -(2**62), 2**bits, -(2**bits)])
    x = torch.cat([x, edges])
    shared = SharedTensor(s.share_integers(x).shares, s, bits)  # x / 2^bits
    result = reconstruct(shared.truncate(bits).shares).tolist()
    for value, got in zip(x.tolist(), result, strict=True):
        assert got - value // 2**bits in (0, 1)  # Python's // is the exact floor


def test_truncation_rounds_without_bias():
    s = session(2, 3)
    x = torch.full((20000,), 3, dtype=torch.int64)  # 3 / 4 = 0.75: rounds up 75% of the time
    result = reconstruct(SharedTensor(s.share_integers(x).shares, s, 2).truncate(2).shares)
    result = result.double()
    # mean of 20,000 Bernoulli(0.75): standard deviation 0.0031, so ±0.02 is > 6 sigma
    assert abs(result.mean().item() - 0.75) < 0.02


def test_clear_errors():
    s2, s3, other = session(2), session(3), session(2, 1)
    x = s2.share(torch.ones(2, 3))
    with pytest.raises(ValueError, match="mixed party counts"):
        x + s3.share(torch.ones(2, 3))
    with pytest.raises(ValueError, match="different sessions"):
        x * other.share(torch.ones(2, 3))
    with pytest.raises(ValueError, match="inner dimensions"):
        x @ s2.share(torch.ones(2, 3))
    with pytest.raises(ValueError, match="equal shapes"):
        x * s2.share(torch.ones(3, 2))
    with pytest.raises(ValueError, match="mixed party counts"):
        SharedTensor(torch.zeros(3, 4, dtype=torch.int64), s2, 16)
    with pytest.raises(TypeError, match="int64"):
        SharedTensor(torch.zeros(2, 4), s2, 16)
    with pytest.raises(TypeError, match="int64"):
        ring_matmul(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="outside the range"):
        s2.share(torch.tensor([1e6]))
    with pytest.raises(ValueError, match="channels"):
        s2.share(torch.ones(1, 2, 5, 5)).conv2d(s2.share(torch.ones(1, 3, 3, 3)))
    with pytest.raises(TypeError):
        x + "1"


def test_additions_broadcast_like_torch():
    s = session(3, 5)
    row, grid = torch.tensor([1.0, 2.0, 3.0]), torch.ones(2, 3)
    assert torch.equal((s.share(row) + grid).reveal(), (row + grid).double())
    assert torch.equal((s.share(grid) + s.share(row)).reveal(), (row + grid).double())
    assert torch.equal((s.share(row) - s.share(grid)).reveal(), (row - grid).double())


def test_shared_values_have_no_truth_value():
    """Old code: `if x < y:` was always taken, whatever the secret values."""
    s = session(2)
    x, y = s.share(torch.tensor([5.0])), s.share(torch.tensor([1.0]))
    with pytest.raises(TypeError, match="truth value of a SharedTensor is secret"):
        if x < y:
            pass
    with pytest.raises(TypeError, match="secret"):
        bool(x)
    with pytest.raises(TypeError, match="secret"):
        assert x == x


@SETTINGS
@given(seed=st.integers(0, 10**6), n=st.integers(2, 3))
def test_equality_is_a_secure_comparison(seed, n):
    s = session(n, seed)
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(-3, 4, (12,), generator=g).double() / 4
    b = torch.randint(-3, 4, (12,), generator=g).double() / 4
    b[:3] = a[:3]  # some certain ties
    x, y = s.share(a), s.share(b)
    s.log.reset()
    eq, ne = x == y, x != y
    assert isinstance(eq, SharedTensor) and eq.scale_bits == 0
    assert s.log.by_operation["eq"].rounds > 0 and not s.log.outputs  # computed on shares
    assert torch.equal(eq.reveal(), (a == b).double())
    assert torch.equal(ne.reveal(), (a != b).double())
    assert torch.equal((x == 0.25).reveal(), (a == 0.25).double())
    for other in (True, "1", None):
        with pytest.raises(TypeError, match="cannot combine"):
            x == other  # noqa: B015 — never a silent False


def test_bad_scales_strides_paddings_and_empty_dimensions():
    s = session(2)
    shares = torch.zeros(2, 3, dtype=torch.int64)
    for bad, error in ((-1, ValueError), (61, ValueError), (1.5, TypeError), (True, TypeError)):
        with pytest.raises(error, match="scale_bits"):
            SharedTensor(shares, s, bad)
    image, kernel = s.share(torch.ones(1, 1, 5, 5)), s.share(torch.ones(1, 1, 3, 3))
    for kwargs, error, match in [
        ({"stride": 0}, ValueError, "stride must be at least 1"),
        ({"stride": -1}, ValueError, "stride"),
        ({"stride": 1.5}, TypeError, "stride must be an int"),
        ({"padding": -1}, ValueError, "padding must be at least 0"),
        ({"padding": "same"}, TypeError, "padding must be an int"),
    ]:
        with pytest.raises(error, match=match):
            image.conv2d(kernel, **kwargs)
    with pytest.raises(ValueError, match="empty dimension"):
        s.share(torch.ones(1, 0, 5, 5)).conv2d(s.share(torch.ones(1, 0, 3, 3)))
    with pytest.raises(ValueError, match="non-empty last dimension"):
        argmax(s.share(torch.ones(4, 0)))
    with pytest.raises(ValueError, match="stride must be at least 1"):
        max_pool2d(image, 2, 0)
