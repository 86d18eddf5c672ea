"""SharedTensor's products (course_lib.smpc.tensor): the batched Beaver cross terms and the
truncation fused into each product (issue 26 §3), pinned to exact Python integer arithmetic
modulo 2^64 whatever the batching; the scale limit and public-operand broadcasting.
"""

import pytest
import torch

from course_lib.randomness import InsecureSeededRandom
from course_lib.smpc import Session, SharedTensor, reconstruct
from course_lib.smpc.tensor import _conv2d_cross_terms, _matmul_cross_terms, _mul_cross_terms

F = 16


def session(n: int, seed: int = 0) -> Session:
    return Session(n, precision_bits=F, rng=InsecureSeededRandom(seed))


def encoded(seed: int, shape: tuple[int, ...], bound: int = 2**20) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-bound, bound, shape, generator=g, dtype=torch.int64)


def shared(s: Session, ints: torch.Tensor) -> SharedTensor:
    """Shares of the fixed-point value ints / 2^F (the ring integers themselves are shared)."""
    return SharedTensor(s.share_integers(ints).shares, s, F)


def python_matmul(x: torch.Tensor, y: torch.Tensor) -> list[list[int]]:
    xs, ys = x.tolist(), y.tolist()
    return [
        [sum(xs[i][t] * ys[t][j] for t in range(len(ys))) for j in range(len(ys[0]))]
        for i in range(len(xs))
    ]


@pytest.mark.parametrize("n_parties", [2, 3, 4])
def test_matmul_is_the_exact_product_truncated_by_at_most_one_unit(n_parties):
    s = session(n_parties, n_parties)
    x, y = encoded(1, (7, 5)), encoded(2, (5, 3))
    got = reconstruct((shared(s, x) @ shared(s, y)).shares).tolist()
    for row_got, row_exact in zip(got, python_matmul(x, y), strict=True):
        for value, exact in zip(row_got, row_exact, strict=True):
            assert value - (exact >> F) in (0, 1)  # >> on Python ints is the exact floor


@pytest.mark.parametrize("n_parties", [2, 3])
def test_mul_and_conv2d_are_exact_up_to_one_unit(n_parties):
    s = session(n_parties, 10 + n_parties)
    x, y = encoded(3, (4, 6)), encoded(4, (4, 6))
    got = reconstruct((shared(s, x) * shared(s, y)).shares).flatten().tolist()
    exact = [a * b >> F for a, b in zip(x.flatten().tolist(), y.flatten().tolist(), strict=True)]
    assert all(g - e in (0, 1) for g, e in zip(got, exact, strict=True))

    image, kernel = encoded(5, (2, 3, 6, 5), 2**12), encoded(6, (4, 3, 3, 2), 2**12)
    conv = shared(s, image).conv2d(shared(s, kernel), stride=2, padding=1)
    reference = torch.nn.functional.conv2d(image.double(), kernel.double(), stride=2, padding=1)
    # |every partial sum| < 2^53: the float64 reference is exact here
    assert reference.abs().max() < 2**50
    exact = torch.floor(reference / 2**F).long()
    assert ((reconstruct(conv.shares) - exact) >= 0).all()
    assert ((reconstruct(conv.shares) - exact) <= 1).all()


@pytest.mark.parametrize("n_parties", [2, 3])
def test_batched_cross_terms_equal_the_per_party_sums(n_parties):
    """Each party's row gets exactly op(ε, b_i) + op(a_i, δ), computed one party at a time."""
    rng = InsecureSeededRandom(7)
    p = n_parties
    cases = [
        (_matmul_cross_terms, (p, 5, 4), (p, 4, 3), (p, 5, 3), lambda u, v: u @ v),
        (_mul_cross_terms, (p, 4, 3), (p, 4, 3), (p, 4, 3), torch.mul),
    ]
    conv = (
        lambda z, a, b, e, d: _conv2d_cross_terms(z, a, b, e, d, stride=2, padding=1),
        (p, 2, 3, 7, 6),
        (p, 4, 3, 3, 3),
        (p, 2, 4, 4, 3),
        lambda u, v: _ring_conv(u, v),
    )
    for cross, a_shape, b_shape, z_shape, op in [*cases, conv]:
        a, b, z = rng.int64(a_shape), rng.int64(b_shape), rng.int64(z_shape)
        eps, delta = rng.int64(a_shape[1:]), rng.int64(b_shape[1:])
        expected = torch.stack([z[i] + op(eps, b[i]) + op(a[i], delta) for i in range(p)])
        cross(z, a, b, eps, delta)
        assert torch.equal(z, expected)


def _ring_conv(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    from course_lib.smpc import ring_conv2d

    return ring_conv2d(x, w, stride=2, padding=1)


@pytest.mark.parametrize("bits", [1, 60])
def test_truncation_at_the_extreme_bit_counts(bits):
    s = session(2, bits)
    x = InsecureSeededRandom(bits).int64((300,)) >> 2
    x = torch.cat([x, torch.tensor([0, 1, -1, 2**62 - 1, -(2**62)])])
    result = reconstruct(SharedTensor(s.share_integers(x).shares, s, bits).truncate(bits).shares)
    for value, got in zip(x.tolist(), result.tolist(), strict=True):
        assert got - (value >> bits) in (0, 1)


def test_products_beyond_60_fractional_bits_are_refused_before_anything_is_sent():
    s = session(2)
    ones = s.share_integers(torch.ones(3, 3, dtype=torch.int64)).shares
    x, y = SharedTensor(ones, s, 40), SharedTensor(ones, s, 50)
    image = y.reshape(1, 1, 3, 3)
    before = (s.log.total.rounds, s.log.total.offline_bytes, len(s.log.openings))
    for product, scale in (
        (lambda: x * x, "40 \\+ 40"),
        (lambda: x @ x, "40 \\+ 40"),
        (lambda: y * 0.5, "50 \\+ 16"),
        (lambda: y @ torch.eye(3), "50 \\+ 16"),
        (lambda: image.conv2d(torch.ones(1, 1, 1, 1)), "50 \\+ 16"),
    ):
        with pytest.raises(ValueError, match=f"scale_bits = {scale} fractional bits"):
            product()
    assert (s.log.total.rounds, s.log.total.offline_bytes, len(s.log.openings)) == before
    half = x * 0.5  # 40 + 16 bits is allowed: 2^-41, truncated to the session's 16 bits
    assert half.scale_bits == F and ((half.reveal() == 0) | (half.reveal() == 2.0**-F)).all()


@pytest.mark.parametrize("n_parties", [2, 3])
def test_public_products_broadcast_like_torch_for_any_party_count(n_parties):
    """A public operand with more dimensions than the shared one must not meet the party axis."""
    s = session(n_parties, 3)
    row, grid = torch.tensor([0.5, -1.25, 2.0]), torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.5, 4.0]])
    assert torch.equal((s.share(row) * grid).reveal(), (row * grid).double())
    assert torch.equal((s.share(grid) @ grid.T).reveal(), (grid @ grid.T).double())
    image, kernel = torch.ones(2, 1, 4, 4), torch.full((3, 1, 2, 2), 0.25)
    expected = torch.nn.functional.conv2d(image, kernel).double()
    assert torch.equal(s.share(image).conv2d(kernel).reveal(), expected)
