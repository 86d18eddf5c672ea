"""Checkers for lesson 20, the capstone: secure, private federated learning across hospitals."""

from __future__ import annotations

import torch

from course_lib.exercises._registry import (
    exercise,
    expect,
    expect_callable,
    expect_close,
    expect_equal,
)
from course_lib.fl.secure_aggregation import generate_key_pair
from course_lib.fl.secure_syft import PrivacyPolicy, mask_update, unmask_average
from course_lib.randomness import InsecureSeededRandom


@exercise(
    "20.average_of_masked",
    task="write average_of_masked(masked_uploads, frac_bits): the hospitals' average update as "
    "real numbers, from their masked int64 uploads",
    nudge="the masks only cancel in the sum, and only in the ring: add first, decode afterwards",
    hint="add the int64 tensors as they are (the sum wraps around in Z_2^64 and the masks cancel), "
    "then divide by 2**frac_bits to decode and by the number of uploads to average",
)
def _(average_fn) -> None:
    expect_callable(average_fn, "average_of_masked", "20.average_of_masked")
    rng = InsecureSeededRandom(20)
    for hospitals, frac_bits in ((3, 24), (5, 16)):
        pairs = [generate_key_pair(rng) for _ in range(hospitals)]
        keys = [public.hex() for _, public in pairs]
        g = torch.Generator().manual_seed(hospitals)
        updates = [torch.randn(200, generator=g) * 0.01 for _ in range(hospitals)]
        masked = [
            mask_update(u, secret, keys, 1, frac_bits)
            for u, (secret, _) in zip(updates, pairs, strict=True)
        ]
        got = average_fn([m.clone() for m in masked], frac_bits)
        expect(isinstance(got, torch.Tensor), "return a tensor: the average update")
        expect_close(
            got,
            unmask_average(masked, frac_bits),
            rtol=0,
            atol=2.0**-frac_bits,
            what=f"the average of {hospitals} masked uploads ({frac_bits} fractional bits)",
        )


@exercise(
    "20.rounds_within_budget",
    task="write rounds_within_budget(policy, epochs_per_round): the most rounds whose total ε "
    "stays within policy.epsilon_budget",
    nudge="policy.epsilon(total_epochs) gives ε after that many epochs: try more and more rounds",
    hint="count up: rounds r = 1, 2, ... while policy.epsilon(r * epochs_per_round) stays "
    "≤ policy.epsilon_budget; return the last r that fitted (0 if none)",
)
def _(rounds_fn) -> None:
    expect_callable(rounds_fn, "rounds_within_budget", "20.rounds_within_budget")
    cases = [
        (PrivacyPolicy(4.0, 1e-5, 1.6, 1.0, 0.125), 2, 4),
        (PrivacyPolicy(4.0, 1e-5, 1.6, 1.0, 0.125), 1, 9),
        (PrivacyPolicy(1.0, 1e-5, 1.0, 1.0, 0.25), 2, 0),
        (PrivacyPolicy(5.0, 1e-6, 1.5, 0.5, 0.1), 2, 6),
    ]
    for policy, epochs, expected in cases:
        # the expected counts were worked out with the course accountant; keep them honest
        expect(
            policy.epsilon(expected * epochs) <= policy.epsilon_budget
            and policy.epsilon((expected + 1) * epochs) > policy.epsilon_budget,
            "internal: a checker case is wrong",
        )
        expect_equal(
            rounds_fn(policy, epochs),
            expected,
            what=f"rounds for budget ε = {policy.epsilon_budget} at {epochs} epochs per round",
        )
