"""Secure comparison, and what it unlocks: ReLU, max-pooling and argmax.

Nobody may look at ``x`` to decide whether ``x < 0``, so the parties compute the sign bit (the most
significant bit, msb) of the shared ring element with a circuit:

1. **Arithmetic → binary.** ``x = x_0 + x_1 + … (mod 2^64)``. Party ``i`` knows its ``x_i``
   outright, so ``x_i`` is trivially XOR-shared (party ``i`` holds it, the others hold 0).
2. **A binary adder circuit** adds those XOR-shared words bit by bit: a Kogge–Stone parallel-prefix
   adder computes every carry in ``log2(64) = 6`` levels. XOR gates are local; each level's AND
   gates use binary Beaver triples from the dealer and cost one round (all 64 bits of all elements
   at once — each 64-bit word holds 64 bits of the circuit). ``n`` parties need ``n − 1`` additions.
3. **The sign bit** of the sum is XOR-shared; one more round converts it to an additive sharing
   (mask it with a random bit the dealer shared both ways, open, unmask).

The result is **exact**: bit 63 of the shared ring element, without any approximation, for every
value with ``|x| < 2^63`` ring units — the whole representable range. Cost per element:
``7(n − 1) + 1`` rounds and ``8·n(n−1)·(24(n − 1) + 1)`` bytes (``n − 1`` adders of 24 opened words
each, one opened word to convert the bit).

From ``b = [x < 0]``: ``relu(x) = x · (1 − b)`` (one more multiplication, by a bit, so no truncation
and no error), ``max(x, y) = y + relu(x − y)``, and max-pool / argmax by tournaments of ``max``.
"""

from __future__ import annotations

import torch

from course_lib.smpc.tensor import SharedTensor
from course_lib.validation import check_int_in_range

__all__ = ["less_than_zero", "relu", "maximum", "max_pool2d", "argmax", "binary_add"]

ONE = torch.tensor(1, dtype=torch.int64)


def _and(tensor: SharedTensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Bitwise AND of XOR-shared words ``x`` and ``y`` (stacked) with a binary Beaver triple."""
    session = tensor.session
    a, b, c = session.dealer.binary_triple(tuple(x.shape[1:]))
    d, e = session.open_xor(x ^ a, y ^ b)  # one round; masked, so uniformly random
    z = c ^ (d & b) ^ (e & a)
    z[0] ^= d & e
    return z


def binary_add(tensor: SharedTensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """XOR shares of ``x + y mod 2^64`` from XOR shares of ``x`` and ``y`` (Kogge–Stone, 7 rounds).

    ``tensor`` only provides the session. ``g`` marks bit positions that *generate* a carry and
    ``p`` those that *propagate* one; each level doubles the span they describe.
    """
    p0 = x ^ y
    g, p = _and(tensor, x, y), p0
    for shift in (1, 2, 4, 8, 16, 32):
        if shift < 32:
            both = _and(tensor, torch.stack([p, p], 1), torch.stack([g << shift, p << shift], 1))
            g, p = g ^ both[:, 0], both[:, 1]  # ^ acts as OR: the two terms are never both 1
        else:  # last level: the propagate bits are not needed any more
            g = g ^ _and(tensor, p, g << shift)
    return p0 ^ (g << 1)


def less_than_zero(x: SharedTensor) -> SharedTensor:
    """Shared bits, 1 where ``x < 0`` and 0 elsewhere (scale 0). Exact."""
    session = x.session
    n = session.n_parties
    with session.log.operation("compare"):
        own = torch.zeros_like(x.shares)
        own[0] = x.shares[0]
        total = own  # party 0's share, XOR-shared (the others hold 0)
        for i in range(1, n):
            own = torch.zeros_like(x.shares)
            own[i] = x.shares[i]
            total = binary_add(x, total, own)
        msb = (total < 0).to(torch.int64)  # bit 63 of each XOR share, as 0/1
        bit_xor, bit_arith = session.dealer.random_bit(tuple(x.shape))
        (masked,) = session.open_xor((msb ^ bit_xor) & ONE)
        # msb = masked XOR bit = masked + bit − 2·masked·bit, computed on additive shares
        shares = bit_arith * (1 - 2 * masked)
        shares[0] += masked
    return SharedTensor(shares, session, 0)


def relu(x: SharedTensor) -> SharedTensor:
    """``max(x, 0)``, exactly: ``x · (1 − [x < 0])``."""
    with x.session.log.operation("relu"):
        return x * (1 - less_than_zero(x))


def maximum(x: SharedTensor, y: SharedTensor) -> SharedTensor:
    """Elementwise ``max(x, y) = y + relu(x − y)``, exactly."""
    with x.session.log.operation("max"):
        return y + relu(x - y)


def _tournament_max(values: SharedTensor) -> SharedTensor:
    """Maximum over the last dimension by rounds of pairwise ``maximum``."""
    while values.shape[-1] > 1:
        m = values.shape[-1]
        half = m // 2
        winners = maximum(values[..., 0 : 2 * half : 2], values[..., 1 : 2 * half : 2])
        values = SharedTensor.cat([winners, values[..., 2 * half :]], dim=-1) if m % 2 else winners
    return values[..., 0]


def max_pool2d(x: SharedTensor, kernel_size: int, stride: int | None = None) -> SharedTensor:
    """``torch.nn.functional.max_pool2d`` on a shared (N, C, H, W) tensor, without padding."""
    kernel_size = check_int_in_range(kernel_size, "max_pool2d's kernel_size", 1)
    stride = kernel_size if stride is None else check_int_in_range(stride, "max_pool2d's stride", 1)
    if x.dim() != 4:
        raise ValueError(f"max_pool2d needs an (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    if kernel_size > min(x.shape[-2:]):
        raise ValueError(f"a {kernel_size}×{kernel_size} window does not fit {tuple(x.shape[-2:])}")
    with x.session.log.operation("maxpool"):
        windows = x.shares.unfold(3, kernel_size, stride).unfold(4, kernel_size, stride)
        windows = windows.reshape(*windows.shape[:5], kernel_size * kernel_size)
        return _tournament_max(SharedTensor(windows, x.session, x.scale_bits))


def argmax(x: SharedTensor) -> SharedTensor:
    """One-hot (shared, scale = x's) of the maximum along the last dimension; ties → first index.

    A tournament: each match compares two candidates (one secure comparison) and moves both the
    winning value and its one-hot index forward with one multiplication by the comparison bit.
    """
    session = x.session
    if x.dim() == 0 or x.shape[-1] == 0:
        raise ValueError(
            f"argmax needs a non-empty last dimension, got shape {tuple(x.shape)}: there is no "
            "maximum of nothing"
        )
    m = x.shape[-1]
    with session.log.operation("argmax"):
        shares = torch.zeros((session.n_parties, *x.shape, m), dtype=torch.int64)
        shares[0] = torch.eye(m, dtype=torch.int64) << x.scale_bits  # public one-hots, party 0
        index = SharedTensor(shares, session, x.scale_bits)
        values = x
        while values.shape[-1] > 1:
            k = values.shape[-1]
            half = k // 2
            lv, rv = values[..., 0 : 2 * half : 2], values[..., 1 : 2 * half : 2]
            li, ri = index[..., 0 : 2 * half : 2, :], index[..., 1 : 2 * half : 2, :]
            left_wins = 1 - less_than_zero(lv - rv)  # left ≥ right: ties go to the lower index
            diff = SharedTensor.cat([(lv - rv).unsqueeze(-1), li - ri], dim=-1)
            moved = left_wins.unsqueeze(-1).expand(*diff.shape) * diff
            new_values, new_index = rv + moved[..., 0], ri + moved[..., 1:]
            if k % 2:
                new_values = SharedTensor.cat([new_values, values[..., 2 * half :]], dim=-1)
                new_index = SharedTensor.cat([new_index, index[..., 2 * half :, :]], dim=-2)
            values, index = new_values, new_index
        return index[..., 0, :]
