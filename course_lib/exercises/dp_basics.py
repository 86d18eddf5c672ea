"""Checkers for the first half of Part II (lessons 04–06): databases, local DP, global DP.

Most exercises ask for a function; the checker calls it on its own inputs and compares with
:mod:`course_lib.dp`, so a learner's code is tested on cases they did not see.
"""

from __future__ import annotations

import torch

from course_lib.dp.composition import advanced_composition
from course_lib.dp.databases import empirical_sensitivity, parallel_databases
from course_lib.dp.mechanisms import gaussian_sigma_classic, randomized_response_epsilon
from course_lib.exercises._registry import (
    exercise,
    expect,
    expect_callable,
    expect_close,
    expect_equal,
)

_DB = torch.tensor([1, 0, 1, 1, 0, 0, 1])


def _mean(db: torch.Tensor) -> torch.Tensor:
    return db.double().mean()


# -- 04 privacy and databases ------------------------------------------------------------------


@exercise(
    "04.parallel_databases",
    hint="for each index i, torch.cat([db[:i], db[i + 1:]]) is the database without person i",
)
def _(get_parallel_dbs) -> None:
    expect_callable(get_parallel_dbs, "get_parallel_dbs", "04.parallel_databases")
    answer = list(get_parallel_dbs(_DB))
    expected = parallel_databases(_DB)
    expect(
        len(answer) == len(expected),
        f"a database of {len(_DB)} people has {len(expected)} parallel databases, "
        f"got {len(answer)}",
    )
    for i, (got, want) in enumerate(zip(answer, expected, strict=True)):
        expect_equal(torch.as_tensor(got), want, f"parallel database {i} (without person {i})")


@exercise(
    "04.sensitivity",
    hint="the largest abs(query(db) - query(pdb)) over the parallel databases pdb",
)
def _(sensitivity) -> None:
    expect_callable(sensitivity, "sensitivity", "04.sensitivity")
    for query, name in [(torch.sum, "sum"), (_mean, "mean")]:
        expect_close(
            float(sensitivity(query, _DB)),
            empirical_sensitivity(query, _DB),
            what=f"the empirical sensitivity of the {name} query on {_DB.tolist()}",
        )
    zeros = torch.zeros(5, dtype=torch.int64)
    expect_close(float(sensitivity(torch.sum, zeros)), 0.0, what="the sum's sensitivity on zeros")


@exercise(
    "04.differencing_attack",
    hint="sum(db) - sum(db without person i) is exactly person i's value",
)
def _(reveal) -> None:
    expect_callable(reveal, "reveal", "04.differencing_attack")
    database = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1, 1])
    for index in range(len(database)):
        got = float(reveal(database, index))
        expect(
            got == float(database[index]),
            f"reveal(db, {index}) gave {got:g}, but person {index}'s value is "
            f"{int(database[index])}",
        )


# -- 05 local DP: randomized response ----------------------------------------------------------


@exercise(
    "05.coin_flip",
    hint="torch.where(first_coin, truth, second_coin): heads → the truth, tails → the second coin",
)
def _(coin_flip_response) -> None:
    expect_callable(coin_flip_response, "coin_flip_response", "05.coin_flip")
    truth = torch.tensor([True, True, False, False, True, False, True, False])
    first = torch.tensor([True, False, True, False, True, False, False, True])
    second = torch.tensor([False, False, True, True, True, False, True, False])
    expected = torch.where(first, truth, second)
    got = torch.as_tensor(coin_flip_response(truth, first, second)).to(torch.bool)
    expect_equal(got, expected, "your noisy answers")


@exercise(
    "05.rr_epsilon",
    hint="P[yes | yes] = p + (1 - p)/2 and P[yes | no] = (1 - p)/2; ε is the log of their ratio",
)
def _(rr_epsilon) -> None:
    expect_callable(rr_epsilon, "rr_epsilon", "05.rr_epsilon")
    for p in (0.5, 0.25, 0.9):
        expect_close(float(rr_epsilon(p)), randomized_response_epsilon(p), what=f"rr_epsilon({p})")


@exercise(
    "05.debias",
    hint="E[observed] = p·π + (1 - p)/2, so π̂ = (observed - (1 - p)/2) / p",
)
def _(debias) -> None:
    expect_callable(debias, "debias", "05.debias")
    noisy = torch.tensor([1, 1, 0, 1, 0, 0, 1, 1, 1, 0], dtype=torch.bool)  # 60% said yes
    for p, expected in [(0.5, 0.7), (0.8, 0.625)]:
        expect_close(float(debias(noisy, p)), expected, what=f"debias(noisy, p_truth={p})")


# -- 06 global DP mechanisms -------------------------------------------------------------------


@exercise("06.laplace_scale", hint="b = sensitivity / epsilon")
def _(laplace_scale) -> None:
    expect_callable(laplace_scale, "laplace_scale", "06.laplace_scale")
    for sensitivity, epsilon in [(1.0, 1.0), (1.0, 0.1), (5.0, 2.0)]:
        expect_close(
            float(laplace_scale(sensitivity, epsilon)),
            sensitivity / epsilon,
            what=f"laplace_scale({sensitivity}, {epsilon})",
        )


@exercise("06.gaussian_sigma", hint="σ = Δ·√(2·ln(1.25/δ)) / ε  (math.sqrt, math.log)")
def _(gaussian_sigma) -> None:
    expect_callable(gaussian_sigma, "gaussian_sigma", "06.gaussian_sigma")
    for sensitivity, epsilon, delta in [(1.0, 0.5, 1e-5), (2.0, 0.9, 1e-3)]:
        expect_close(
            float(gaussian_sigma(sensitivity, epsilon, delta)),
            gaussian_sigma_classic(sensitivity, epsilon, delta),
            what=f"gaussian_sigma({sensitivity}, {epsilon}, {delta})",
        )


@exercise(
    "06.advanced_composition",
    hint="ε·√(2k·ln(1/δ')) + k·ε·(e^ε − 1)  (math.expm1(ε) is e^ε − 1)",
)
def _(advanced_epsilon) -> None:
    expect_callable(advanced_epsilon, "advanced_epsilon", "06.advanced_composition")
    for epsilon, k, delta_prime in [(0.1, 100, 1e-5), (0.5, 10, 1e-6)]:
        got = float(advanced_epsilon(epsilon, k, delta_prime))
        expected, _ = advanced_composition(epsilon, 0.0, k, delta_prime)
        expect_close(got, expected, what=f"advanced_epsilon({epsilon}, {k}, {delta_prime})")
