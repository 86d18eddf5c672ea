"""Checkers for the first half of Part II (lessons 04–06): databases, local DP, global DP.

Most exercises ask for a function; the checker calls it on its own inputs and compares with
:mod:`course_lib.dp`, so a learner's code is tested on cases they did not see.
"""

from __future__ import annotations

import math

import torch

from course_lib.dp.composition import advanced_composition
from course_lib.dp.databases import Query, empirical_sensitivity, parallel_databases
from course_lib.dp.mechanisms import gaussian_sigma_classic, randomized_response_epsilon
from course_lib.exercises._registry import (
    exercise,
    expect,
    expect_callable,
    expect_close,
    expect_equal,
    expect_not_none,
)

_DB = torch.tensor([1, 0, 1, 1, 0, 0, 1])


def _mean(db: torch.Tensor) -> torch.Tensor:
    return db.double().mean()


# -- 04 privacy and databases ------------------------------------------------------------------


@exercise(
    "04.parallel_databases",
    task="write get_parallel_dbs(db): the list of databases that each leave out exactly one "
    "person, in order (person 0 removed first)",
    nudge="a database of n people has n parallel databases, each one row shorter",
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
    task="write sensitivity(query, db): the largest change in query's result when one person is "
    "removed from db",
    nudge="compare the query on the full database with the query on every parallel database",
    hint="the largest abs(query(db) - query(pdb)) over the parallel databases pdb",
)
def _(sensitivity) -> None:
    expect_callable(sensitivity, "sensitivity", "04.sensitivity")
    queries: list[tuple[Query, str]] = [(torch.sum, "sum"), (_mean, "mean")]
    for query, name in queries:
        expect_close(
            float(sensitivity(query, _DB)),
            empirical_sensitivity(query, _DB),
            what=f"the empirical sensitivity of the {name} query on {_DB.tolist()}",
        )
    zeros = torch.zeros(5, dtype=torch.int64)
    expect_close(float(sensitivity(torch.sum, zeros)), 0.0, what="the sum's sensitivity on zeros")


@exercise(
    "04.differencing_attack",
    task="write reveal(db, index): person index's value, using only the sum of db and the sum of "
    "db without that person",
    nudge="two sums that differ by one person differ by exactly that person's value",
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


#: (user ids of a visit log, what it is): each row is one visit, several rows can be one person.
_VISIT_LOGS = [
    (torch.tensor([3, 1, 3, 3, 7, 1, 3]), "visits by users [3, 1, 3, 3, 7, 1, 3]"),
    (torch.tensor([5, 5, 5, 5, 5, 2]), "visits by users [5, 5, 5, 5, 5, 2]"),
    (torch.tensor([0, 1, 2, 3]), "visits by users [0, 1, 2, 3] (one each)"),
    (torch.tensor([9]), "a single visit by user 9"),
]


@exercise(
    "04.user_sensitivity",
    task="write user_sensitivity(user_ids): how far removing one *user* (all their rows) can move "
    "the count of rows",
    nudge="removing a user removes every row with their id; which user has the most rows?",
    hint="torch.unique(user_ids, return_counts=True)[1].max() — or torch.bincount(user_ids).max()",
)
def _(user_sensitivity) -> None:
    expect_callable(user_sensitivity, "user_sensitivity", "04.user_sensitivity")
    for user_ids, what in _VISIT_LOGS:
        expected = int(torch.unique(user_ids, return_counts=True)[1].max())
        got = user_sensitivity(user_ids.clone())
        expect_not_none(got, f"user_sensitivity on {what}")
        expect_close(float(got), float(expected), what=f"user_sensitivity on {what}")


# -- 05 local DP: randomized response ----------------------------------------------------------


@exercise(
    "05.coin_flip",
    task="write coin_flip_response(truth, first_coin, second_coin): where the first coin is heads "
    "(True) the true answer, elsewhere the second coin",
    nudge="the first coin decides, person by person, which tensor the answer comes from",
    hint="torch.where(first_coin, truth, second_coin): heads → the truth, tails → the second coin",
)
def _(coin_flip_response) -> None:
    expect_callable(coin_flip_response, "coin_flip_response", "05.coin_flip")
    truth = torch.tensor([True, True, False, False, True, False, True, False])
    first = torch.tensor([True, False, True, False, True, False, False, True])
    second = torch.tensor([False, False, True, True, True, False, True, False])
    expected = torch.where(first, truth, second)
    expect_equal(
        coin_flip_response(truth, first, second),
        expected,
        "coin_flip_response(truth, first, second) on the checker's 8 people",
    )


@exercise(
    "05.rr_epsilon",
    task="write rr_epsilon(p_truth): the ε of randomized response that tells the truth with "
    "probability p_truth and otherwise answers with a fair coin",
    nudge="ε is the log of the largest ratio P[yes | yes] / P[yes | no]",
    hint="P[yes | yes] = p + (1 - p)/2 and P[yes | no] = (1 - p)/2; ε is the log of their ratio",
)
def _(rr_epsilon) -> None:
    expect_callable(rr_epsilon, "rr_epsilon", "05.rr_epsilon")
    for p in (0.5, 0.25, 0.9):
        expect_close(float(rr_epsilon(p)), randomized_response_epsilon(p), what=f"rr_epsilon({p})")


@exercise(
    "05.debias",
    task="write debias(noisy_answers, p_truth): an unbiased estimate of the true fraction of yeses "
    "from the randomized answers",
    nudge="write the expected fraction of noisy yeses in terms of the true fraction, then solve",
    hint="E[observed] = p·π + (1 - p)/2, so π̂ = (observed - (1 - p)/2) / p",
)
def _(debias) -> None:
    expect_callable(debias, "debias", "05.debias")
    noisy = torch.tensor([1, 1, 0, 1, 0, 0, 1, 1, 1, 0], dtype=torch.bool)  # 60% said yes
    for p, expected in [(0.5, 0.7), (0.8, 0.625)]:
        expect_close(float(debias(noisy, p)), expected, what=f"debias(noisy, p_truth={p})")


@exercise(
    "05.group_privacy",
    task="write group_epsilon(p_truth, k): the ε that randomized response with truth probability "
    "p_truth guarantees to a group of k people (a household) as a whole",
    nudge="changing the whole group changes k answers, each by at most a factor e^ε",
    hint="k · ln((1 + p) / (1 - p)) — group privacy: k people cost k·ε",
)
def _(group_epsilon) -> None:
    expect_callable(group_epsilon, "group_epsilon", "05.group_privacy")
    for p, k in [(0.5, 1), (0.5, 4), (0.25, 3), (0.9, 2)]:
        got = group_epsilon(p, k)
        expect_not_none(got, f"group_epsilon({p}, {k})")
        expect_close(
            float(got), k * randomized_response_epsilon(p), what=f"group_epsilon({p}, {k})"
        )


# -- 06 global DP mechanisms -------------------------------------------------------------------


@exercise(
    "06.laplace_scale",
    task="write laplace_scale(sensitivity, epsilon): the scale b of the Laplace noise that makes a "
    "query of that sensitivity ε-DP",
    nudge="more sensitivity needs more noise, more ε allows less",
    hint="b = sensitivity / epsilon",
)
def _(laplace_scale) -> None:
    expect_callable(laplace_scale, "laplace_scale", "06.laplace_scale")
    for sensitivity, epsilon in [(1.0, 1.0), (1.0, 0.1), (5.0, 2.0)]:
        expect_close(
            float(laplace_scale(sensitivity, epsilon)),
            sensitivity / epsilon,
            what=f"laplace_scale({sensitivity}, {epsilon})",
        )


@exercise(
    "06.gaussian_sigma",
    task="write gaussian_sigma(sensitivity, epsilon, delta): the σ of the classic Gaussian "
    "mechanism for (ε, δ)-DP",
    nudge="σ grows with the sensitivity and with ln(1/δ), and shrinks as ε grows",
    hint="σ = Δ·√(2·ln(1.25/δ)) / ε  (math.sqrt, math.log)",
)
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
    task="write advanced_epsilon(epsilon, k, delta_prime): the total ε of k ε-DP mechanisms by the "
    "advanced composition theorem",
    nudge="the total has a √k term (depending on δ') and a k·ε·(e^ε − 1) term",
    hint="ε·√(2k·ln(1/δ')) + k·ε·(e^ε − 1)  (math.expm1(ε) is e^ε − 1)",
)
def _(advanced_epsilon) -> None:
    expect_callable(advanced_epsilon, "advanced_epsilon", "06.advanced_composition")
    for epsilon, k, delta_prime in [(0.1, 100, 1e-5), (0.5, 10, 1e-6)]:
        got = float(advanced_epsilon(epsilon, k, delta_prime))
        expected, _ = advanced_composition(epsilon, 0.0, k, delta_prime)
        expect_close(got, expected, what=f"advanced_epsilon({epsilon}, {k}, {delta_prime})")


#: (values, bound, what): incomes with an outlier, negative entries and values inside the bound.
_CLIP_CASES = [
    (torch.tensor([12.0, 250.0, 40.0, 1e9]), 100.0, "incomes [12, 250, 40, 1e9] with bound 100"),
    (torch.tensor([-5.0, 3.0, 0.0, 99.5]), 100.0, "values [-5, 3, 0, 99.5] with bound 100"),
    (torch.tensor([0.5, 2.0, 7.5]), 1.0, "values [0.5, 2, 7.5] with bound 1"),
]


@exercise(
    "06.bounded_sum",
    task="write bounded_sum(values, bound): the sum of the values after clamping each one to "
    "[0, bound], so that one person moves the sum by at most `bound`",
    nudge="clamp every person's value into [0, bound] *before* adding them up",
    hint="values.clamp(0, bound).sum()",
)
def _(bounded_sum) -> None:
    expect_callable(bounded_sum, "bounded_sum", "06.bounded_sum")
    for values, bound, what in _CLIP_CASES:
        got = bounded_sum(values.clone(), bound)
        expect_not_none(got, f"bounded_sum on {what}")
        expected = values.clamp(0, bound).sum().item()
        expect_close(float(got), expected, what=f"bounded_sum on {what}")
    # the point of clipping: no single person, however extreme, moves the answer by more than B
    base = torch.tensor([3.0, 8.0, 1.0])
    for extreme in (1e12, -1e12, math.inf):
        moved = abs(float(bounded_sum(torch.cat([base, torch.tensor([extreme])]), 10.0)) - 12.0)
        expect(
            moved <= 10.0,
            f"adding one person with value {extreme:g} to [3, 8, 1] (bound 10) moved your sum by "
            f"{moved:g}, more than the bound",
        )
