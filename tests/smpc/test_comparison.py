"""Secure comparison, ReLU, max-pool and argmax are exact (course_lib.smpc)."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from course_lib.randomness import InsecureSeededRandom
from course_lib.smpc import Session, argmax, max_pool2d, maximum, reconstruct

SETTINGS = settings(deadline=None, max_examples=20)


def session(n, seed):
    return Session(n, rng=InsecureSeededRandom(seed))


@SETTINGS
@given(seed=st.integers(0, 10**6), n=st.integers(2, 4))
def test_less_than_zero_is_exact_for_every_ring_element(seed, n):
    s = session(n, seed)
    x = InsecureSeededRandom(seed + 1).int64((300,))
    edges = torch.tensor([0, 1, -1, 2**63 - 1, -(2**63), 2**31, -(2**31), 2**62, -(2**62)])
    x = torch.cat([x, edges, x >> 33])  # also small magnitudes, where the sign is in low bits
    bits = reconstruct(s.share_integers(x).ltz().shares)
    assert torch.equal(bits, (x < 0).to(torch.int64))


@SETTINGS
@given(seed=st.integers(0, 10**6), n=st.integers(2, 3))
def test_comparisons_relu_and_max_are_exact_on_encoded_values(seed, n):
    s = session(n, seed)
    g = torch.Generator().manual_seed(seed)
    # encoded values over the whole representable range, with ties and neighbours one ulp apart
    x = (torch.rand(60, generator=g, dtype=torch.float64) * 2 - 1) * 32767
    x = torch.round(torch.cat([x, torch.tensor([0.0, 2**-16, -(2**-16), 32767.5])]) * 2**16) / 2**16
    y = torch.cat([x[:30], x[30:] + 2**-16 * torch.tensor([1.0, -1.0]).repeat(17)[: len(x) - 30]])
    y = y.clamp(-32767.9, 32767.9)
    sx, sy = s.share(x), s.share(y)
    assert torch.equal((sx < sy).reveal(), (x < y).double())
    assert torch.equal((sx >= sy).reveal(), (x >= y).double())
    assert torch.equal((sx > sy).reveal(), (x > y).double())
    assert torch.equal((sx <= sy).reveal(), (x <= y).double())
    assert torch.equal(sx.relu().reveal(), x.clamp(min=0))
    assert torch.equal(maximum(sx, sy).reveal(), torch.maximum(x, y))


@SETTINGS
@given(
    seed=st.integers(0, 10**6),
    n=st.integers(2, 3),
    size=st.integers(3, 8),
    kernel=st.integers(1, 3),
    stride=st.integers(1, 2),
)
def test_max_pool_is_exact(seed, n, size, kernel, stride):
    s = session(n, seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.round(torch.randn(2, 2, size, size, generator=g, dtype=torch.float64) * 2**16) / 2**16
    expected = torch.nn.functional.max_pool2d(x, kernel, stride)
    assert torch.equal(max_pool2d(s.share(x), kernel, stride).reveal(), expected)


@SETTINGS
@given(seed=st.integers(0, 10**6), n=st.integers(2, 3), classes=st.integers(1, 11))
def test_argmax_is_exact_and_takes_the_first_of_ties(seed, n, classes):
    s = session(n, seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-3, 4, (12, classes), generator=g).double()  # many ties
    one_hot = argmax(s.share(x)).reveal()
    assert torch.equal(one_hot, torch.nn.functional.one_hot(x.argmax(1), classes).double())
