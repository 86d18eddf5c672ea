"""Checkers for Part IV, secure multi-party computation (lessons 15–17)."""

from __future__ import annotations

import torch

from course_lib.exercises._registry import exercise, expect, expect_close, expect_equal
from course_lib.randomness import InsecureSeededRandom
from course_lib.smpc import FixedPoint, Session, SharedTensor, reconstruct

# -- 15 secret sharing --------------------------------------------------------------------------


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
        shares = share_secret(secret, n, InsecureSeededRandom(seed))
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
            not torch.equal(shares[0], secret) and bool((shares[0] != 0).all()),
            "the first share must be random, not the secret itself or zero",
        )
    again = share_secret(torch.tensor([5]), 2, InsecureSeededRandom(99))
    other = share_secret(torch.tensor([5]), 2, InsecureSeededRandom(100))
    expect(not torch.equal(again, other), "use the rng you are given for the random shares")


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
