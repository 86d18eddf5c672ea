"""Lesson 24's checkers (course_lib.exercises.finetuning) and their hidden grading cases: the
solutions pass, plausible mistakes fail with a message naming the input.

The hidden cases are proposed for tools/grading/hidden.py; until they are merged there, the copies
below (same code) are what these tests run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from course_lib.exercises import _registry, check
from course_lib.exercises.finetuning import lora_reference
from course_lib.lora import count_parameters


@pytest.fixture(autouse=True)
def _fresh_attempts() -> None:
    _registry._WRONG_ATTEMPTS.clear()


def lora_forward(x, W, b, A, B, alpha):
    return x @ W.T + b + (alpha / A.shape[0]) * (x @ A.T @ B.T)


def freeze_all_but_head(model):
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.head.parameters():
        p.requires_grad_(True)
    return model


def count_trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


SOLUTIONS = {
    "24.lora_forward": lora_forward,
    "24.freeze_all_but_head": freeze_all_but_head,
    "24.count_trainable": count_trainable,
}


def _freeze_only_others(model):  # forgets to switch a previously frozen head back on
    for name, p in model.named_parameters():
        if not name.startswith("head."):
            p.requires_grad_(False)
    return model


MISTAKES = {
    # scaled by alpha instead of alpha / rank
    "24.lora_forward": lambda x, W, b, A, B, alpha: x @ W.T + b + alpha * (x @ A.T @ B.T),
    "24.freeze_all_but_head": _freeze_only_others,
    # counts tensors, not numbers
    "24.count_trainable": lambda model: sum(1 for p in model.parameters() if p.requires_grad),
}


# -- the tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
def test_the_solution_passes(name: str, contract) -> None:
    contract.solution_passes(name, SOLUTIONS[name])


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
def test_a_plausible_mistake_fails_naming_the_input(name: str, contract) -> None:
    contract.mistake_fails_naming_the_input(name, MISTAKES[name], naming=" with ")


def test_an_unstarted_exercise_gets_its_task(capsys: pytest.CaptureFixture[str]) -> None:
    def stub(model):
        raise NotImplementedError("your code here")

    assert not check("24.count_trainable", stub)
    assert "not implemented yet" in capsys.readouterr().out


def test_the_reference_lora_forward_is_the_course_adapter() -> None:
    from course_lib.lora import LoRALinear

    base = nn.Linear(5, 4).double()
    layer = LoRALinear(base, rank=2, alpha=6.0)
    with torch.no_grad():
        layer.lora_B.weight.normal_()
    x = torch.randn(3, 5, dtype=torch.float64)
    want = layer(x)
    got = lora_reference(x, base.weight, base.bias, layer.lora_A.weight, layer.lora_B.weight, 6.0)
    torch.testing.assert_close(got.detach(), want.detach())


REFERENCES = {
    "24.lora_forward": lora_reference,
    "24.freeze_all_but_head": freeze_all_but_head,
    "24.count_trainable": lambda model: count_parameters(model),
}


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
def test_hidden_cases_accept_the_solution_and_reject_the_mistake(name: str, contract) -> None:
    contract.hidden_cases_accept_and_reject(name, SOLUTIONS[name], MISTAKES[name], REFERENCES[name])
