"""Checkers for lessons 18 (homomorphic encryption) and 19 (private set intersection)."""

from __future__ import annotations

import math

from course_lib.exercises._registry import exercise, expect, expect_equal
from course_lib.psi import P25519, naive_hash_to_u, on_curve25519
from course_lib.validation import is_integer

# A toy Paillier key: n = 17 · 19, g = n + 1. Far too small to be secure; fine for checking.
_P, _Q = 17, 19
_N = _P * _Q
_LAMBDA = math.lcm(_P - 1, _Q - 1)
_MU = pow(_LAMBDA, -1, _N)


def _decrypt(c: int) -> int:
    return ((pow(c, _LAMBDA, _N * _N) - 1) // _N) * _MU % _N


# -- 18 homomorphic encryption ------------------------------------------------------------------


@exercise(
    "18.paillier_encrypt",
    task="write paillier_encrypt(m, r, n): the Paillier encryption of m with randomness r, g = n+1",
    nudge="with g = n + 1 the formula needs only one modular power, all taken modulo n²",
    hint="c = (1 + m·n) · rⁿ mod n², i.e. ((1 + m*n) * pow(r, n, n*n)) % (n*n)",
)
def _(paillier_encrypt) -> None:
    expect(
        callable(paillier_encrypt),
        "pass your function: check('18.paillier_encrypt', paillier_encrypt)",
    )
    for m, r in [(0, 2), (5, 7), (42, 100), (_N - 1, 31)]:
        c = paillier_encrypt(m, r, _N)
        expect(
            isinstance(c, int),
            f"paillier_encrypt({m}, {r}, {_N}) should return an int, got {type(c).__name__}",
        )
        expect(0 <= c < _N * _N, f"paillier_encrypt({m}, {r}, {_N}) = {c} is not reduced modulo n²")
        expect_equal(_decrypt(c), m, f"the decryption of paillier_encrypt({m}, {r}, {_N})")
        expect_equal(
            c, (1 + m * _N) * pow(r, _N, _N * _N) % (_N * _N), f"paillier_encrypt({m}, {r}, {_N})"
        )


@exercise(
    "18.paillier_add",
    task="write add_encrypted(c1, c2, n): a ciphertext of the sum of the two plaintexts",
    nudge="Paillier is additively homomorphic: which operation on ciphertexts adds plaintexts?",
    hint="multiplying ciphertexts adds plaintexts: (c1 * c2) % (n * n)",
)
def _(add_encrypted) -> None:
    expect(callable(add_encrypted), "pass your function: check('18.paillier_add', add_encrypted)")
    n2 = _N * _N
    for m1, m2, r1, r2 in [(3, 4, 2, 5), (100, 250, 7, 11), (_N - 1, 2, 3, 13)]:
        c1 = (1 + m1 * _N) * pow(r1, _N, n2) % n2
        c2 = (1 + m2 * _N) * pow(r2, _N, n2) % n2
        c = add_encrypted(c1, c2, _N)
        expect(isinstance(c, int) and 0 <= c < n2, "the result should be an int reduced modulo n²")
        expect_equal(_decrypt(c), (m1 + m2) % _N, f"decrypt(add_encrypted(E({m1}), E({m2}))) mod n")


@exercise(
    "18.levels_needed",
    task="answer with the number of multiplicative levels the network Linear → x² → Linear → x² → "
    "Linear needs",
    nudge="each multiplication in a chain uses one level; count them along the network",
    hint="count the multiplications in a row: each plaintext-weight matmul is one, each x² is one",
)
def _(answer) -> None:
    expect(is_integer(answer), f"answer with a whole number (an int), got {answer!r}")
    expect(answer != 3, "3 covers Linear → x² → Linear; this network has one more x² and Linear")
    expect_equal(answer, 5, "levels for Linear → x² → Linear → x² → Linear")


# -- 19 private set intersection ----------------------------------------------------------------

_TOY_P = 1019  # a safe prime: 1019 = 2 · 509 + 1


@exercise(
    "19.blind",
    task="write blind(values, key, p): every value raised to the power key modulo p",
    nudge="Python's three-argument pow computes a power modulo p quickly",
    hint="[pow(v, key, p) for v in values]",
)
def _(blind) -> None:
    expect(callable(blind), "pass your function: check('19.blind', blind)")
    values = [4, 9, 25, 100]  # squares: elements of the prime-order subgroup
    a, b = 123, 456
    once = blind(values, a, _TOY_P)
    expect(
        list(once) == [pow(v, a, _TOY_P) for v in values],
        f"blind({values}, {a}, {_TOY_P}) is {once}",
    )
    expect(
        list(blind(blind(values, a, _TOY_P), b, _TOY_P))
        == list(blind(blind(values, b, _TOY_P), a, _TOY_P)),
        "blinding with a then b should equal blinding with b then a",
    )


@exercise(
    "19.intersect",
    task="write intersect(my_items, my_double, their_double): the set of my items the other party "
    "also holds",
    nudge="my_double[i] belongs to my_items[i]; an item is shared when that value is among theirs",
    hint="theirs = set(their_double); keep each x of my_items whose my_double value is in theirs",
)
def _(intersect) -> None:
    expect(callable(intersect), "pass your function: check('19.intersect', intersect)")
    mine = ["ana", "ben", "chen", "dara"]
    my_double = [pow(h, 77, _TOY_P) for h in (4, 9, 16, 25)]
    their_double = [pow(h, 77, _TOY_P) for h in (25, 36, 9)]  # "ben" (9) and "dara" (25) shared
    got = intersect(mine, my_double, their_double)
    expect_equal(set(got), {"ben", "dara"}, "intersect(...) on the example")
    expect_equal(set(intersect(mine, my_double, [])), set(), "intersect with an empty reply")


@exercise(
    "19.on_curve",
    task="write on_curve(u): True when u³ + 486662u² + u is a square modulo P25519 (zero counts)",
    nudge="Euler's criterion: raise the right-hand side to the power (p − 1) / 2 modulo p",
    hint="Euler's criterion: pow(u**3 + 486662*u*u + u, (P - 1) // 2, P) is 1 for a non-zero "
    "square, 0 for zero and P - 1 otherwise; return whether it is 0 or 1",
)
def _(on_curve) -> None:
    expect(callable(on_curve), "pass your function: check('19.on_curve', on_curve)")
    hashed = [int.from_bytes(naive_hash_to_u(f"patient-{i}"), "little") for i in range(40)]
    for u in [0, 1, 2, 3, 4, 5, 9, P25519 - 1, *hashed]:
        got = on_curve(u)
        expect(isinstance(got, bool), f"on_curve({u}) should return True or False, got {got!r}")
        right = on_curve25519(u.to_bytes(32, "little"))
        if u == 0:
            expect(got, "on_curve(0): the right-hand side is 0 = 0², a square, so u = 0 is on it")
        expect(
            got == right,
            f"on_curve({u}) is {got}, but u³ + 486662u² + u is "
            f"{'a square' if right else 'not a square'} modulo 2²⁵⁵ − 19",
        )
