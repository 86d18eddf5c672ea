"""Lesson 20's exercise checkers accept the right answers and reject plausible wrong ones."""

import pytest
import torch

from course_lib.exercises import check
from course_lib.fl.secure_aggregation import decode_fixed_point


def average_of_masked(masked_uploads, frac_bits):
    total = torch.zeros_like(masked_uploads[0])
    for masked in masked_uploads:
        total = total + masked
    return decode_fixed_point(total, frac_bits) / len(masked_uploads)


def averaged_as_floats(masked_uploads, frac_bits):
    """Wrong: decoding each upload first loses the exact cancellation of the masks."""
    return sum(decode_fixed_point(m, frac_bits) for m in masked_uploads) / len(masked_uploads)


def rounds_within_budget(policy, epochs_per_round):
    rounds = 0
    while policy.epsilon((rounds + 1) * epochs_per_round) <= policy.epsilon_budget:
        rounds += 1
    return rounds


def one_round_too_many(policy, epochs_per_round):
    return rounds_within_budget(policy, epochs_per_round) + 1


@pytest.mark.parametrize(
    ("name", "right", "wrong"),
    [
        ("20.average_of_masked", average_of_masked, averaged_as_floats),
        ("20.rounds_within_budget", rounds_within_budget, one_round_too_many),
    ],
)
def test_capstone_checkers(name, right, wrong, capsys: pytest.CaptureFixture[str]) -> None:
    assert check(name, right)
    assert not check(name, wrong)
    assert not check(name, 3)  # a number, not the function
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"✓ {name}") and out[1].startswith(f"✗ {name}")
    assert "pass your function itself" in "\n".join(out[2:])
