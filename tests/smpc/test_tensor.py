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


# -- dimensions: the value's, never the parties' axis of the shares (review of 8858a10, F1/F4) ----

VALUES = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])


def _x(n_parties: int) -> SharedTensor:
    return session(n_parties, 20 + n_parties).share(VALUES)


# Each call with a dim that lands on the parties' axis (-3 for a 2-D value; -4 for unsqueeze) or
# past the last dimension. On 8858a10, flatten(-3) revealed 21.0, cat(dim=-3) stacked 4 "shares",
# sum(dim=-3) added the parties' shares (each result share was the plaintext) and
# transpose(0, -3) swapped the parties' axis with a value axis.
BAD_DIMS = {
    "flatten(-3)": lambda x: x.flatten(-3),
    "flatten(0, -3)": lambda x: x.flatten(0, -3),
    "flatten(2)": lambda x: x.flatten(2),
    "unsqueeze(-4)": lambda x: x.unsqueeze(-4),
    "unsqueeze(3)": lambda x: x.unsqueeze(3),
    "sum(dim=-3)": lambda x: x.sum(dim=-3),
    "sum(dim=2)": lambda x: x.sum(dim=2),
    "transpose(0, -3)": lambda x: x.transpose(0, -3),
    "transpose(2, 0)": lambda x: x.transpose(2, 0),
    "cat(dim=-3)": lambda x: SharedTensor.cat([x, x], dim=-3),
    "cat(dim=2)": lambda x: SharedTensor.cat([x, x], dim=2),
    "size(-3)": lambda x: x.size(-3),
    "size(2)": lambda x: x.size(2),
}


@pytest.mark.parametrize("n_parties", [2, 3])
@pytest.mark.parametrize("call", sorted(BAD_DIMS))
def test_dims_outside_the_value_raise_index_error_and_never_reach_the_parties_axis(call, n_parties):
    x = _x(n_parties)
    before, reads = x.session.log.total, x.session.log.share_reads
    with pytest.raises(IndexError, match="out of range: expected"):
        BAD_DIMS[call](x)
    assert x.session.log.total == before and x.session.log.share_reads == reads


@pytest.mark.parametrize("call", ["flatten", "unsqueeze", "sum", "cat", "transpose"])
def test_dims_must_be_integers(call):
    x = _x(2)
    with pytest.raises(TypeError, match="must be an integer"):
        {
            "flatten": lambda: x.flatten(0.0),
            "unsqueeze": lambda: x.unsqueeze(True),
            "sum": lambda: x.sum(dim=1.5),
            "cat": lambda: SharedTensor.cat([x, x], dim="0"),
            "transpose": lambda: x.transpose(0, None),
        }[call]()


VALID = {
    "flatten()": lambda t: t.flatten(),
    "flatten(-2)": lambda t: t.flatten(-2),
    "flatten(0, -1)": lambda t: t.flatten(0, -1),
    "unsqueeze(-1)": lambda t: t.unsqueeze(-1),
    "unsqueeze(-3)": lambda t: t.unsqueeze(-3),
    "unsqueeze(2)": lambda t: t.unsqueeze(2),
    "sum(dim=-1)": lambda t: t.sum(dim=-1),
    "sum(dim=-2)": lambda t: t.sum(dim=-2),
    "sum(dim=0)": lambda t: t.sum(dim=0),
    "sum()": lambda t: t.sum(),
    "transpose(-1, -2)": lambda t: t.transpose(-1, -2),
    "transpose(0, -1)": lambda t: t.transpose(0, -1),
    "expand(4, 2, 3)": lambda t: t.expand(4, 2, 3),
    "expand(2, 2, -1, 3)": lambda t: t.expand(2, 2, -1, 3),
    "unsqueeze(1).expand(2, 4, 3)": lambda t: t.unsqueeze(1).expand(2, 4, 3),
    "[:, [2, 0]]": lambda t: t[:, [2, 0]],
    "[[1, 0], [2, 0]]": lambda t: t[[1, 0], [2, 0]],
    "[None, ..., 1]": lambda t: t[None, ..., 1],
    "[t > 2] (a mask)": lambda t: t[VALUES > 2],
}


@pytest.mark.parametrize("n_parties", [2, 3])
@pytest.mark.parametrize("call", sorted(VALID))
def test_valid_dims_and_indices_reveal_what_torch_computes(call, n_parties):
    x = _x(n_parties)
    expected = VALID[call](VALUES)
    got = VALID[call](x)
    assert got.shares.shape == (n_parties, *expected.shape)
    assert torch.equal(got.reveal(), expected.double())


@pytest.mark.parametrize("n_parties", [2, 3])
def test_cat_size_and_scalars_match_torch(n_parties):
    x = _x(n_parties)
    both = torch.cat([VALUES, 2 * VALUES], dim=-1)
    assert torch.equal(SharedTensor.cat([x, x * 2], dim=-1).reveal(), both.double())
    assert torch.equal(SharedTensor.cat((x, x), dim=-2).reveal(), torch.cat([VALUES] * 2).double())
    assert (x.size(-2), x.size(-1), x.size(1)) == (2, 3, 3)
    # advanced indices separated by a slice: torch moves their dimension to the front — the
    # parties' axis must stay first (3-D so that the moved dimension is a value dimension)
    cube = torch.arange(24.0).reshape(2, 3, 4)
    got = x.session.share(cube)[[0, 1], :, [3, 0]]
    assert got.shares.shape == (n_parties, 2, 3)
    assert torch.equal(got.reveal(), cube[[0, 1], :, [3, 0]].double())
    # a 0-dimensional value: torch lets dims 0 and -1 name it
    scalar = x.sum()
    assert scalar.dim() == 0 and scalar.reveal().item() == 21.0
    assert torch.equal(scalar.flatten().reveal(), torch.tensor([21.0], dtype=torch.float64))
    assert scalar.sum(dim=-1).reveal().item() == scalar.transpose(0, -1).reveal().item() == 21.0
    assert torch.equal(scalar.unsqueeze(-1).reveal(), torch.tensor([21.0], dtype=torch.float64))
    with pytest.raises(IndexError):
        scalar.sum(dim=1)
    with pytest.raises(ValueError, match="zero-dimensional"):
        SharedTensor.cat([scalar, scalar])


def test_cat_and_expand_refuse_bad_arguments():
    x = _x(2)
    with pytest.raises(ValueError, match="at least one"):
        SharedTensor.cat([])
    with pytest.raises(TypeError, match="list or tuple"):
        SharedTensor.cat(t for t in [x, x])
    with pytest.raises(TypeError, match="takes SharedTensors"):
        SharedTensor.cat([x, VALUES])
    with pytest.raises(ValueError, match="at least 2 sizes"):
        x.expand(3)
    with pytest.raises(ValueError, match="start_dim .* after"):
        x.flatten(1, 0)


def test_internal_results_still_check_one_share_per_party():
    x = _x(3)
    with pytest.raises(ValueError, match="3 parties"):
        x._new(x._shares[:2])
    with pytest.raises(ValueError, match="3 parties"):
        x._new(torch.zeros((), dtype=torch.int64))


@pytest.mark.parametrize("n_parties", [2, 3])
def test_truncation_is_exact_up_to_2_62_and_fails_silently_beyond_as_documented(n_parties):
    """The documented range (module docstring, truncate): floor or floor + 1 for |x| ≤ 2^62 ring
    units, always; x = 1.5·2^62 is wrong with probability (|x| − 2^62) / 2^63 = 1/4 per element
    (binomial, 4000 elements: sd 0.7 %, the band is ±5 sd)."""
    s = session(n_parties, 30 + n_parties)
    edges = torch.tensor([2**62, -(2**62), 2**62 - 1, -(2**62) + 1] * 500)
    out = reconstruct(shared(s, edges).truncate(F).shares)
    assert all(g - (v >> F) in (0, 1) for g, v in zip(out.tolist(), edges.tolist(), strict=True))
    beyond = torch.full((4000,), 3 * 2**61, dtype=torch.int64)
    error = reconstruct(shared(s, beyond).truncate(F).shares) - (beyond >> F)
    wrong = ((error < 0) | (error > 1)).double().mean().item()
    assert 0.215 < wrong < 0.285
    assert set(error[(error < 0) | (error > 1)].abs().unique().tolist()) <= {
        2 ** (64 - F) - 1,
        2 ** (64 - F),
    }
