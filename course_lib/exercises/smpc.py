"""Checkers for Part IV, secure multi-party computation (lessons 15–17).

Each checker runs the learner's function on its own seeded inputs and names them in every ✗
message, so the learner can reproduce the failing case.
"""

from __future__ import annotations

import torch

from course_lib.exercises._registry import (
    exercise,
    expect,
    expect_callable,
    expect_close,
    expect_equal,
    expect_not_none,
)
from course_lib.exercises._smpc_audit import expect_only_protocol_openings, protocol_opened_elements
from course_lib.randomness import InsecureSeededRandom
from course_lib.smpc import FixedPoint, Session, SharedTensor, reconstruct

# -- 15 secret sharing --------------------------------------------------------------------------


class _CountingRandom(InsecureSeededRandom):
    """A seeded source that counts the bytes drawn from it (to see that an answer uses it)."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.drawn = 0

    def bytes(self, n: int) -> bytes:
        self.drawn += n
        return super().bytes(n)


def _uniform_bytes(share: torch.Tensor) -> bool:
    """Lesson 15's own test: chi-square of the top and the bottom byte of one party's share.

    With 256 × 64 samples a uniform share fails with probability 2·10^-6 per byte; masks drawn from
    a small range (the broken scheme lesson 15 warns against) fail by a huge margin.
    """
    critical = 380.0  # chi-square, 255 degrees of freedom: P(statistic > 380) ≈ 1e-6
    expected = share.numel() / 256
    for byte in ((share >> 56) & 0xFF, share & 0xFF):
        observed = torch.bincount(byte.flatten(), minlength=256).double()
        if float(((observed - expected) ** 2 / expected).sum()) > critical:
            return False
    return True


@exercise(
    "15.share_secret",
    task="write share_secret(secret, n_parties, rng): n_parties int64 shares of secret, drawn "
    "with rng, that add up to it, stacked into one (n_parties, *secret.shape) tensor",
    nudge="all shares but one are uniform random draws from the rng; the last one is chosen so "
    "that the sum comes out right",
    hint="draw n−1 shares with rng.int64(secret.shape); the last is secret minus their sum "
    "(int64 wraps around modulo 2^64); stack them with torch.stack",
)
def _(share_secret) -> None:
    expect_callable(share_secret, "share_secret", "15.share_secret")
    for n, seed in [(2, 0), (3, 1), (5, 2)]:
        secret = torch.tensor([0, 42, -7, 2**62, -(2**63)], dtype=torch.int64)
        call = f"share_secret(secret, {n}, rng) for secret = [0, 42, -7, 2**62, -2**63]"
        rng = _CountingRandom(seed)
        shares = share_secret(secret, n, rng)
        expect_not_none(shares, call)
        expect(
            isinstance(shares, torch.Tensor) and shares.dtype == torch.int64,
            "return the shares as one int64 tensor (torch.stack them)",
        )
        expect(
            tuple(shares.shape) == (n, 5),
            f"with {n} parties the shares should have shape ({n}, 5), got {tuple(shares.shape)}",
        )
        expect_equal(shares.sum(dim=0), secret, f"the sum of your {n} shares from {call}")
        expect(
            rng.drawn >= 8 * (n - 1) * secret.numel(),
            f"draw the random shares from the rng you are given: with {n} parties you need "
            f"{n - 1} × 5 random int64 values from it, your function drew {rng.drawn // 8}",
        )
        expect(
            torch.equal(share_secret(secret, n, InsecureSeededRandom(seed)), shares),
            "use only the rng you are given for the random shares (with the same seed your "
            "function must give the same shares)",
        )
    many = torch.full((256 * 64,), 10**6, dtype=torch.int64)
    for n in (2, 3):
        shares = share_secret(many, n, InsecureSeededRandom(10 + n))
        expect(
            all(_uniform_bytes(shares[party]) for party in range(n)),
            "one party's share is not uniformly distributed over all of int64 (its top or bottom "
            "byte fails lesson 15's chi-square test): mask with rng.int64, uniform over the whole "
            "ring, not with small random numbers (share_secret(secret, "
            f"{n}, rng) for a secret of 16,384 copies of 10**6)",
        )


@exercise(
    "15.encode",
    task="write encode(x, precision_bits): the float tensor x as int64 fixed-point numbers with "
    "precision_bits fractional bits",
    nudge="scale by 2 to the power precision_bits, then round to the nearest whole number",
    hint="torch.round(x * 2**precision_bits).to(torch.int64)",
)
def _(encode) -> None:
    expect_callable(encode, "encode", "15.encode")
    x = torch.tensor([0.0, 1.5, -2.25, 3.14159, -0.0001, 1000.0])
    for bits in (8, 16):
        call = (
            f"encode(x, {bits}) for x = torch.tensor([0.0, 1.5, -2.25, 3.14159, -0.0001, 1000.0])"
        )
        got = encode(x, bits)
        expect_not_none(got, call)
        expect(
            isinstance(got, torch.Tensor) and got.dtype == torch.int64,
            "return an int64 tensor (ring elements)",
        )
        expect_equal(got, FixedPoint(bits).encode(x), call)


@exercise(
    "15.decode",
    task="write decode(ring, precision_bits): the int64 fixed-point tensor ring back as floats",
    nudge="undo encode: a float division by the same power of two",
    hint="ring.double() / 2**precision_bits — int64 already holds the sign",
)
def _(decode) -> None:
    expect_callable(decode, "decode", "15.decode")
    ring = torch.tensor([0, 98304, -147456, 1], dtype=torch.int64)
    expect_close(
        decode(ring, 16),
        torch.tensor([0.0, 1.5, -2.25, 2**-16]),
        rtol=0,
        atol=1e-12,
        what="decode(ring, 16) for ring = torch.tensor([0, 98304, -147456, 1])",
    )


# -- 16 SMPC arithmetic -------------------------------------------------------------------------


def _is_beaver_sharing(
    z: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
) -> bool:
    """Whether ``z`` is Beaver's sharing of x·y: ``z_i = c_i + ε·b_i + δ·a_i`` with ``ε·δ`` added
    by one party (any one), ε = x − a and δ = y − b opened. A sharing made by reconstructing x and
    y is a different one (with overwhelming probability)."""
    eps, delta = (x - a).sum(0), (y - b).sum(0)
    local = c + eps * b + delta * a
    for party in range(z.shape[0]):
        expected = local.clone()
        expected[party] += eps * delta
        if torch.equal(z, expected):
            return True
    return False


@exercise(
    "16.beaver_multiply",
    task="write beaver_multiply(x, y, a, b, c): the stacked shares of x·y from stacked shares of "
    "x, y and a Beaver triple a, b, c = a·b, for any number of parties",
    nudge="open the masked differences x − a and y − b (they reveal nothing), then expand "
    "x·y = ((x − a) + a)·((y − b) + b)",
    hint="open eps = (x − a).sum(0) and delta = (y − b).sum(0); then z = c + eps*b + delta*a, and "
    "party 0 (z[0]) also adds eps*delta",
)
def _(beaver_multiply) -> None:
    expect_callable(beaver_multiply, "beaver_multiply", "16.beaver_multiply")
    for n, seed in [(2, 0), (3, 1)]:
        rng = InsecureSeededRandom(seed)
        x, y = rng.int64((6,)) >> 40, rng.int64((6,)) >> 40
        a, b = rng.int64((6,)), rng.int64((6,))
        split = Session(n, rng=rng).share_integers
        xs, ys, a_s, b_s = split(x).shares, split(y).shares, split(a).shares, split(b).shares
        c_s = split(a * b).shares
        z = beaver_multiply(xs.clone(), ys.clone(), a_s.clone(), b_s.clone(), c_s.clone())
        on = f"for {n} parties and 6 random int64 values of x and y (InsecureSeededRandom({seed}))"
        expect_not_none(z, f"beaver_multiply(x, y, a, b, c) {on}")
        expect(
            isinstance(z, torch.Tensor) and tuple(z.shape) == (n, 6),
            f"return the stacked shares of the product, shape ({n}, 6), {on}",
        )
        expect_equal(reconstruct(z), x * y, f"the reconstructed product {on}")
        expect(
            _is_beaver_sharing(z, xs, ys, a_s, b_s, c_s),
            "each party's share of the product must come from its own shares of a, b, c and the "
            "two opened values: z_i = c_i + ε·b_i + δ·a_i, and one party adds ε·δ. Yours add up "
            "to x·y but are a different sharing of it — reconstructing x and y (adding their "
            f"shares) and re-sharing the product reveals the inputs; {on}",
        )


@exercise(
    "16.matmul_bytes",
    task="write matmul_bytes(n, m, k, p): the online bytes of the shared product of an m×k and a "
    "k×p matrix among n parties, truncation included",
    nudge="count the elements of the three opened matrices, then how many bytes opening one "
    "element costs when every party sends its share to every other",
    hint="3 opened matrices: ε (m×k), δ (k×p), then x·y + r (m×p); "
    "each element: 8 bytes from every party to every other, 8·n·(n−1)",
)
def _(matmul_bytes) -> None:
    expect_callable(matmul_bytes, "matmul_bytes", "16.matmul_bytes")
    for n, (m, k, p) in [(2, (4, 6, 3)), (3, (1, 10, 2)), (4, (5, 5, 5))]:
        s = Session(n, rng=InsecureSeededRandom(0))
        x, y = s.share(torch.ones(m, k)), s.share(torch.ones(k, p))
        with s.log.measure() as cost:
            x @ y
        expect_equal(matmul_bytes(n, m, k, p), cost.bytes, f"matmul_bytes({n}, {m}, {k}, {p})")


# -- 17 encrypted deep learning -----------------------------------------------------------------


@exercise(
    "17.hard_sigmoid",
    task="write my_hard_sigmoid(z): the plaintext hard sigmoid of a float tensor",
    nudge="the hard sigmoid is a straight line through (0, 0.5), cut off to stay within [0, 1]",
    hint="torch.clamp(z / 4 + 0.5, 0, 1)",
)
def _(hard_sigmoid) -> None:
    expect_callable(hard_sigmoid, "my_hard_sigmoid", "17.hard_sigmoid")
    z = torch.tensor([-5.0, -2.0, -1.0, 0.0, 0.5, 2.0, 7.0])
    expect_close(
        hard_sigmoid(z),
        torch.tensor([0.0, 0.0, 0.25, 0.5, 0.625, 1.0, 1.0]),
        what="my_hard_sigmoid(z) for z = torch.tensor([-5.0, -2.0, -1.0, 0.0, 0.5, 2.0, 7.0])",
    )


@exercise(
    "17.secure_relu",
    task="write secure_relu(x): ReLU of a SharedTensor using x.ltz(), returning a SharedTensor "
    "without revealing anything",
    nudge="ReLU keeps x where x ≥ 0 and gives 0 elsewhere: x.ltz() tells you where, as shared 0/1",
    hint="x * (1 - x.ltz()): x.ltz() is 1 where x < 0, computed on shares",
)
def _(secure_relu) -> None:
    expect_callable(secure_relu, "secure_relu", "17.secure_relu")
    s = Session(2, rng=InsecureSeededRandom(0))
    values = torch.tensor([-3.5, -(2**-16), 0.0, 2**-16, 1.25, 300.0], dtype=torch.float64)
    x = s.share(values)
    on = "for x = 2 parties' shares of [-3.5, -2**-16, 0.0, 2**-16, 1.25, 300.0]"
    reference = Session(2, rng=InsecureSeededRandom(0))
    rx = reference.share(values)
    protocol = protocol_opened_elements(reference, lambda v: v * (1 - v.ltz()), rx)
    s.log.reset()
    out = secure_relu(x)
    expect_not_none(out, f"secure_relu(x) {on}")
    expect(
        isinstance(out, SharedTensor),
        f"return a SharedTensor (do not reveal inside the function); secure_relu(x) {on}",
    )
    expect_only_protocol_openings(s, protocol, f"secure_relu(x) {on}")
    expect_equal(out.reveal(), values.clamp(min=0), f"secure_relu(x).reveal() {on}")
