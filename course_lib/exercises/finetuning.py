"""Checkers for lesson 24: private fine-tuning of a small language model.

Each exercise asks for a function; the checker runs it on layers and models of shapes the lesson did
not use and compares with :mod:`course_lib.lora`, naming the input in every ✗ message. (The grader
adds random inputs of its own: :mod:`tools.grading.hidden`.)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from course_lib.exercises._registry import (
    FUNCTION_RETURNED_NONE,
    exercise,
    expect,
    expect_callable,
    expect_close,
)
from course_lib.lora import count_parameters


def lora_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    lora_a: torch.Tensor,
    lora_b: torch.Tensor,
    alpha: float,
) -> torch.Tensor:
    """``x Wᵀ + b + (alpha / r) · x Aᵀ Bᵀ`` with ``r = A.shape[0]`` (Hu et al. 2021, eq. 3)."""
    return x @ weight.T + bias + (alpha / lora_a.shape[0]) * (x @ lora_a.T @ lora_b.T)


@exercise(
    "24.lora_forward",
    task="write lora_forward(x, W, b, A, B, alpha): the output of a frozen linear layer (W, b) "
    "plus its LoRA update, scaled by alpha / rank",
    nudge="the rank r is the number of rows of A; the update is x → B(A x), scaled by alpha / r",
    hint="x @ W.T + b + (alpha / A.shape[0]) * (x @ A.T @ B.T)",
)
def _(lora_forward: Callable[..., torch.Tensor]) -> None:
    expect_callable(lora_forward, "lora_forward", "24.lora_forward")
    generator = torch.Generator().manual_seed(24)
    for n, d_in, d_out, rank, alpha in [(5, 7, 3, 2, 4.0), (1, 4, 6, 1, 1.0), (3, 9, 9, 3, 16.0)]:
        x, w, b = (
            torch.randn(n, d_in, generator=generator, dtype=torch.float64),
            torch.randn(d_out, d_in, generator=generator, dtype=torch.float64),
            torch.randn(d_out, generator=generator, dtype=torch.float64),
        )
        a = torch.randn(rank, d_in, generator=generator, dtype=torch.float64)
        b_lora = torch.randn(d_out, rank, generator=generator, dtype=torch.float64)
        what = f"lora_forward with x {n}×{d_in}, W {d_out}×{d_in}, rank {rank}, alpha {alpha}"
        got = lora_forward(x.clone(), w.clone(), b.clone(), a.clone(), b_lora.clone(), alpha)
        expect(got is not None, FUNCTION_RETURNED_NONE)
        expect_close(
            got, lora_reference(x, w, b, a, b_lora, alpha), rtol=1e-9, atol=1e-9, what=what
        )
    zero = torch.zeros(3, 2, dtype=torch.float64)
    x, w, b, a = torch.ones(2, 4), torch.eye(3, 4), torch.arange(3.0), torch.ones(2, 4)
    got = lora_forward(x.double(), w.double(), b.double(), a.double(), zero, 8.0)
    want = x.double() @ w.double().T + b.double()
    what = "lora_forward with B = 0 (it must equal the frozen layer)"
    expect_close(got, want, rtol=1e-12, atol=1e-12, what=what)


class _Tiny(nn.Module):
    """A model with a ``head`` and parameters elsewhere: embedding, a block, a norm."""

    def __init__(self, width: int, classes: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, width)
        self.block = nn.Sequential(
            nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width)
        )
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, classes)


@exercise(
    "24.freeze_all_but_head",
    task="write freeze_all_but_head(model): make exactly the parameters of model.head trainable "
    "(requires_grad=True) and every other parameter frozen; return the model",
    nudge="loop over model.parameters() to freeze, then switch model.head's parameters back on",
    hint="for p in model.parameters(): p.requires_grad_(False); then the same with True over "
    "model.head.parameters(); return model",
)
def _(freeze: Callable[[nn.Module], nn.Module]) -> None:
    expect_callable(freeze, "freeze_all_but_head", "24.freeze_all_but_head")
    for width, classes in [(4, 3), (8, 41)]:
        tiny = _Tiny(width, classes)
        tiny.head.weight.requires_grad_(False)  # a head frozen before must come back
        what = f"freeze_all_but_head on a model with width {width} and {classes} classes"
        result = freeze(tiny)
        expect(result is not None, FUNCTION_RETURNED_NONE)
        model = result if isinstance(result, nn.Module) else tiny
        wrong = [
            name
            for name, p in model.named_parameters()
            if p.requires_grad != name.startswith("head.")
        ]
        expect(not wrong, f"{what}: these parameters have the wrong requires_grad: {wrong}")


@exercise(
    "24.count_trainable",
    task="write count_trainable(model): how many numbers (not tensors) the optimiser will train, "
    "i.e. the total size of the parameters with requires_grad",
    nudge="p.numel() is a tensor's number of entries; skip parameters with requires_grad False",
    hint="sum(p.numel() for p in model.parameters() if p.requires_grad)",
)
def _(count: Callable[[nn.Module], int]) -> None:
    expect_callable(count, "count_trainable", "24.count_trainable")
    for width, frozen in [(4, ("embed", "block")), (6, ("head",)), (3, ())]:
        model = _Tiny(width, 5)
        for name in frozen:
            for p in model.get_submodule(name).parameters():
                p.requires_grad_(False)
        what = (
            f"count_trainable on a model of width {width} with {list(frozen) or 'nothing'} frozen"
        )
        got = count(model)
        expect(got is not None, FUNCTION_RETURNED_NONE)
        want = count_parameters(model)
        expect(int(got) == want, f"{what}: got {got}, expected {want}")
