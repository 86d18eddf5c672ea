"""Lesson 21's functions run where the model lives (issue 16): on the CPU here, on CUDA under
``make gpu-check``. The CUDA case compares with the CPU numbers of the same weights."""

from __future__ import annotations

import copy

import pytest
import torch

from course_lib.dp.memorization import (
    Canary,
    CharMLP,
    exposure,
    greedy_extract,
    log_perplexities,
    next_char_dataset,
    perplexity,
    secret_log_perplexities,
    train_lm,
)

DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
    ),
]
TEXT = "the pin of alice is 1234 and the module reads the file. " * 20


@pytest.mark.parametrize("device", DEVICES)
def test_training_and_measurements_follow_the_model_to_its_device(device):
    torch.manual_seed(0)
    cpu_model = CharMLP(context=8, hidden=16)
    model = copy.deepcopy(cpu_model).to(device)
    data = next_char_dataset(TEXT, 8)  # CPU tensors, as the lesson builds them
    losses = train_lm(model, data, epochs=1, seed=0)
    assert model.out.weight.device.type == device and losses[0] > 0
    cpu_model.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})

    scores = secret_log_perplexities(model, "the pin of alice is ", 2)
    direct = log_perplexities(model, "the pin of alice is ", ["12", "34"])
    assert scores.device.type == device and direct.device.type == device
    expected = secret_log_perplexities(cpu_model, "the pin of alice is ", 2)
    torch.testing.assert_close(scores.cpu(), expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(direct.cpu()[0], scores.cpu()[12], rtol=1e-4, atol=1e-4)
    assert perplexity(model, data) == pytest.approx(perplexity(cpu_model, data), rel=1e-4)
    assert greedy_extract(model, "the pin ", 5) == greedy_extract(cpu_model, "the pin ", 5)
    canary = Canary("the pin of alice is ", "12", 1)
    assert exposure(model, canary).rank == exposure(cpu_model, canary).rank
