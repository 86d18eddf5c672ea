"""Checkers for the second half of Part II (lessons 07–08): PATE and DP-SGD.

Exercises ask for a function; the checker calls it on its own inputs and compares with
:mod:`course_lib.dp`, so a learner's code is tested on cases they did not see.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from course_lib.dp.accounting import rdp_epsilon
from course_lib.dp.pate import gnmax_epsilon
from course_lib.exercises._registry import (
    exercise,
    expect,
    expect_callable,
    expect_close,
    expect_equal,
)


def _whole_number(value: Any, what: str) -> int:
    """``value`` as an int when it is a whole number in any numeric form — ``int``, a numpy
    integer, a 0-d tensor, or a float like ``881.0`` — never a bool or a fraction (Incorrect)."""
    shown = repr(value)
    if isinstance(value, torch.Tensor):
        expect(value.dim() == 0, f"{what} should be one number, got a tensor of shape "
               f"{tuple(value.shape)}")  # fmt: skip
        value = value.item()
    elif isinstance(value, np.generic):
        value = value.item()
    expect(
        not isinstance(value, bool),
        f"{what} should be a whole number of steps, got {shown} (a True/False)",
    )
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    expect(isinstance(value, int), f"{what} should be a whole number of steps, got {shown}")
    return value


# -- 07 PATE ---------------------------------------------------------------------------------------


@exercise(
    "07.vote_counts",
    task="write vote_counts(predictions, num_classes): for each query (column), how many teachers "
    "voted for each class, a (queries, classes) tensor",
    nudge="count the votes of one column at a time; a class nobody voted for counts 0",
    hint="for each query q, torch.bincount(predictions[:, q], minlength=num_classes)",
)
def _(vote_counts) -> None:
    expect_callable(vote_counts, "vote_counts", "07.vote_counts")
    predictions = torch.tensor([[0, 2, 2, 1], [0, 2, 1, 1], [3, 2, 1, 1]])  # 3 teachers, 4 queries
    expected = torch.tensor([[2, 0, 0, 1], [0, 0, 3, 0], [0, 2, 1, 0], [0, 3, 0, 0]])
    answer = vote_counts(predictions, 4)
    expect_equal(answer, expected, "your vote counts")


@exercise(
    "07.gnmax_data_independent",
    task="write data_independent_epsilon(queries, sigma, delta): the ε of answering that many "
    "queries with GNMax at noise σ, by the data-independent RDP bound",
    nudge="RDP adds up over queries at each order α; convert to (ε, δ) only at the end",
    hint="each answer costs α/σ² of RDP at every order α; add them up over the queries and use "
    "rdp_to_epsilon(rdp, delta, orders)",
)
def _(epsilon_fn) -> None:
    expect_callable(epsilon_fn, "data_independent_epsilon", "07.gnmax_data_independent")
    for queries, sigma, delta in [(100, 40.0, 1e-5), (10, 5.0, 1e-6), (1000, 100.0, 1e-5)]:
        expected = gnmax_epsilon([[1, 0]] * queries, sigma, delta, data_dependent=False)
        expect_close(
            float(epsilon_fn(queries, sigma, delta)),
            expected,
            rtol=1e-6,
            what=f"ε for {queries} queries at σ = {sigma}",
        )


# -- 08 DP-SGD -------------------------------------------------------------------------------------


@exercise(
    "08.clip_per_sample",
    task="write clip_per_sample(grads, max_norm): each row (one example's gradient) scaled down to "
    "norm at most max_norm; rows already inside stay as they are",
    nudge="one norm per row; only rows longer than max_norm shrink",
    hint="norms = grads.norm(dim=1, keepdim=True); scale each row by min(1, C / norm)",
)
def _(clip) -> None:
    expect_callable(clip, "clip_per_sample", "08.clip_per_sample")
    grads = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0], [-6.0, 8.0]])
    answer = clip(grads.clone(), 1.0)
    expected = torch.tensor([[0.6, 0.8], [0.3, 0.4], [0.0, 0.0], [-0.6, 0.8]])
    expect(isinstance(answer, torch.Tensor), "return a tensor of clipped gradients")
    expect_close(
        answer,
        expected,
        rtol=1e-4,
        atol=1e-5,
        what="clipping rows (norms 5, 0.5, 0 and 10) to norm 1",
    )
    big = torch.randn(64, 100, generator=torch.Generator().manual_seed(0)) * 3
    norms = clip(big.clone(), 2.0).norm(dim=1)
    expect(bool(torch.all(norms <= 2.0 + 1e-4)), "some clipped rows still have norm above C")


@exercise(
    "08.max_steps",
    task="make `max_steps` the largest number of DP-SGD steps (noise 1.0, sampling rate 0.01, "
    "δ = 1e-5) that keeps ε at most 2.0",
    nudge="ε grows with every step: find where rdp_epsilon crosses 2.0",
    hint="increase steps until rdp_epsilon(1.0, 0.01, steps, 1e-5) exceeds 2.0 (or bisect)",
)
def _(steps) -> None:
    steps = _whole_number(steps, "max_steps")
    expect(rdp_epsilon(1.0, 0.01, steps, 1e-5) <= 2.0, f"{steps} steps spend more than ε = 2")
    expect(rdp_epsilon(1.0, 0.01, steps + 1, 1e-5) > 2.0, f"you can afford more than {steps} steps")
