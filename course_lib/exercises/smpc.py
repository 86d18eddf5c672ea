"""Checkers for Part IV, secure multi-party computation (lessons 15–17)."""

from __future__ import annotations

import torch

from course_lib.exercises._registry import exercise, expect, expect_close, expect_equal
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
    hint="draw n−1 shares with rng.int64(secret.shape); the last is secret minus their sum "
    "(int64 wraps around modulo 2^64); stack them with torch.stack",
)
def _(share_secret) -> None:
    expect(
        callable(share_secret), "pass your function itself: check('15.share_secret', share_secret)"
    )
    for n, seed in [(2, 0), (3, 1), (5, 2)]:
        secret = torch.tensor([0, 42, -7, 2**62, -(2**63)], dtype=torch.int64)
        rng = _CountingRandom(seed)
        shares = share_secret(secret, n, rng)
        expect(
            isinstance(shares, torch.Tensor) and shares.dtype == torch.int64,
            "return the shares as one int64 tensor (torch.stack them)",
        )
        expect(
            tuple(shares.shape) == (n, 5),
            f"with {n} parties the shares should have shape ({n}, 5), got {tuple(shares.shape)}",
        )
        expect_equal(shares.sum(dim=0), secret, f"the sum of your {n} shares")
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
            "ring, not with small random numbers",
        )


@exercise("15.encode", hint="torch.round(x * 2**precision_bits).to(torch.int64)")
def _(encode) -> None:
    expect(callable(encode), "pass your function itself: check('15.encode', encode)")
    x = torch.tensor([0.0, 1.5, -2.25, 3.14159, -0.0001, 1000.0])
    for bits in (8, 16):
        got = encode(x, bits)
        expect(
            isinstance(got, torch.Tensor) and got.dtype == torch.int64,
            "return an int64 tensor (ring elements)",
        )
        expect_equal(got, FixedPoint(bits).encode(x), f"encode(x, {bits})")


@exercise("15.decode", hint="ring.double() / 2**precision_bits — int64 already holds the sign")
def _(decode) -> None:
    expect(callable(decode), "pass your function itself: check('15.decode', decode)")
    ring = torch.tensor([0, 98304, -147456, 1], dtype=torch.int64)
    expect_close(
        decode(ring, 16),
        torch.tensor([0.0, 1.5, -2.25, 2**-16]),
        rtol=0,
        atol=1e-12,
        what="decode(ring, 16)",
    )


# -- 16 SMPC arithmetic -------------------------------------------------------------------------


@exercise(
    "16.beaver_multiply",
    hint="open eps = (x − a).sum(0) and delta = (y − b).sum(0); then z = c + eps*b + delta*a, and "
    "party 0 (z[0]) also adds eps*delta",
)
def _(beaver_multiply) -> None:
    expect(callable(beaver_multiply), "pass your function itself")
    for n, seed in [(2, 0), (3, 1)]:
        rng = InsecureSeededRandom(seed)
        x, y = rng.int64((6,)) >> 40, rng.int64((6,)) >> 40
        a, b = rng.int64((6,)), rng.int64((6,))
        split = Session(n, rng=rng).share_integers
        z = beaver_multiply(
            split(x).shares, split(y).shares, split(a).shares, split(b).shares, split(a * b).shares
        )
        expect(
            isinstance(z, torch.Tensor) and tuple(z.shape) == (n, 6),
            f"return the stacked shares of the product, shape ({n}, 6)",
        )
        expect_equal(reconstruct(z), x * y, f"the reconstructed product ({n} parties)")


@exercise(
    "16.matmul_bytes",
    hint="3 opened matrices: ε (m×k), δ (k×p), then x·y + r (m×p); "
    "each element: 8 bytes from every party to every other, 8·n·(n−1)",
)
def _(matmul_bytes) -> None:
    expect(callable(matmul_bytes), "pass your function itself")
    for n, (m, k, p) in [(2, (4, 6, 3)), (3, (1, 10, 2)), (4, (5, 5, 5))]:
        s = Session(n, rng=InsecureSeededRandom(0))
        x, y = s.share(torch.ones(m, k)), s.share(torch.ones(k, p))
        with s.log.measure() as cost:
            x @ y
        expect_equal(matmul_bytes(n, m, k, p), cost.bytes, f"matmul_bytes({n}, {m}, {k}, {p})")


# -- 17 encrypted deep learning -----------------------------------------------------------------


@exercise("17.hard_sigmoid", hint="torch.clamp(z / 4 + 0.5, 0, 1)")
def _(hard_sigmoid) -> None:
    expect(callable(hard_sigmoid), "pass your function itself")
    z = torch.tensor([-5.0, -2.0, -1.0, 0.0, 0.5, 2.0, 7.0])
    expect_close(
        hard_sigmoid(z),
        torch.tensor([0.0, 0.0, 0.25, 0.5, 0.625, 1.0, 1.0]),
        what="hard_sigmoid(z)",
    )


@exercise("17.secure_relu", hint="x * (1 - x.ltz()): x.ltz() is 1 where x < 0, computed on shares")
def _(secure_relu) -> None:
    expect(callable(secure_relu), "pass your function itself")
    s = Session(2, rng=InsecureSeededRandom(0))
    values = torch.tensor([-3.5, -(2**-16), 0.0, 2**-16, 1.25, 300.0], dtype=torch.float64)
    x = s.share(values)
    with s.log.measure() as cost:
        out = secure_relu(x)
    expect(
        isinstance(out, SharedTensor), "return a SharedTensor (do not reveal inside the function)"
    )
    expect(
        cost.bytes > 0 and "reveal" not in s.log.by_operation,
        "compute the ReLU on shares with x.ltz(), without revealing x",
    )
    expect_equal(out.reveal(), values.clamp(min=0), "secure_relu(x).reveal()")
