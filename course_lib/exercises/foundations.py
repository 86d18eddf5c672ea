"""Checkers for Part I (lessons 00–03): warm-up, tensors, neural networks, transfer learning."""

from __future__ import annotations

import torch
from torch import nn

from course_lib.exercises._registry import exercise, expect, expect_close, expect_equal
from course_lib.models import MLP, SmallCNN

_RECORDS = [
    {"name": "Ana", "age": 34, "diabetes": True},
    {"name": "Ben", "age": 51, "diabetes": False},
    {"name": "Chen", "age": 29, "diabetes": True},
    {"name": "Dara", "age": 62, "diabetes": False},
    {"name": "Eli", "age": 45, "diabetes": True},
]

# -- 00 welcome ---------------------------------------------------------------------------------


@exercise(
    "00.count_where", hint="loop over the records, or sum(1 for r in records if r[key] == value)"
)
def _(count_where) -> None:
    expect(callable(count_where), "pass your function itself: check('00.count_where', count_where)")
    expect_equal(
        count_where(_RECORDS, "diabetes", True), 3, "count_where(records, 'diabetes', True)"
    )
    expect_equal(count_where(_RECORDS, "age", 51), 1, "count_where(records, 'age', 51)")
    expect_equal(count_where([], "age", 51), 0, "count_where([], 'age', 51)")


@exercise("00.mean_age", hint="sum(r['age'] for r in records) / len(records)")
def _(mean_age) -> None:
    expect(callable(mean_age), "pass your function itself: check('00.mean_age', mean_age)")
    expect_close(mean_age(_RECORDS), 44.2, what="mean_age(records)")
    expect_close(mean_age(_RECORDS[:1]), 34.0, what="mean_age of one record")


# -- 01 tensors ---------------------------------------------------------------------------------


@exercise("01.reshape", hint="torch.arange(12).reshape(3, 4) — or .view(3, 4)")
def _(answer) -> None:
    expect_equal(answer, torch.arange(12).reshape(3, 4), "your 3×4 tensor")


@exercise("01.broadcast", hint="a column (5, 1) times a row (1, 5) broadcasts to (5, 5)")
def _(answer) -> None:
    numbers = torch.arange(1, 6)
    expect_equal(answer, numbers[:, None] * numbers[None, :], "your multiplication table")


@exercise("01.independent_copy", hint="t.clone() copies the data; t.view(...) and t[:] share it")
def _(independent_copy) -> None:
    original = torch.arange(6.0)
    copy = independent_copy(original)
    expect(isinstance(copy, torch.Tensor), f"expected a tensor, got {type(copy).__name__}")
    expect_equal(copy, original, "the copy")
    copy[0] = 100.0
    expect(original[0].item() == 0.0, "changing the copy changed the original: they share memory")


@exercise(
    "01.gradient",
    hint="x = torch.tensor(2.0, requires_grad=True); y = x**3 + 2*x; y.backward(); x.grad",
)
def _(answer) -> None:
    expect_close(answer, 14.0, what="dy/dx at x = 2")


# -- 02 neural networks -------------------------------------------------------------------------


@exercise("02.neuron", hint="torch.sigmoid(x @ w + b)")
def _(neuron) -> None:
    generator = torch.Generator().manual_seed(2)
    x, w, b = (
        torch.randn(4, 3, generator=generator),
        torch.randn(3, generator=generator),
        torch.tensor(0.5),
    )
    expect_close(neuron(x, w, b), torch.sigmoid(x @ w + b), what="neuron(x, w, b)")


@exercise("02.param_count", hint="sum(p.numel() for p in model.parameters()) — weights and biases")
def _(answer) -> None:
    expected = sum(p.numel() for p in MLP(784, (128,), 10).parameters())
    expect_equal(answer, expected, "the number of parameters")


@exercise("02.accuracy", hint="(logits.argmax(dim=1) == labels).float().mean().item()")
def _(accuracy) -> None:
    logits = torch.tensor([[2.0, 1.0], [0.1, 0.9], [3.0, -1.0], [0.0, 5.0]])
    expect_close(accuracy(logits, torch.tensor([0, 1, 1, 1])), 0.75, what="accuracy on 4 examples")
    expect_close(
        accuracy(logits, torch.tensor([1, 0, 1, 0])), 0.0, what="accuracy when all are wrong"
    )


# -- 03 transfer learning -----------------------------------------------------------------------


@exercise(
    "03.freeze_features", hint="for p in model.features.parameters(): p.requires_grad = False"
)
def _(freeze_features) -> None:
    model = SmallCNN()
    result = freeze_features(model)
    model = result if isinstance(result, nn.Module) else model
    expect(
        not any(p.requires_grad for p in model.features.parameters()),
        "some feature weights still train",
    )
    expect(all(p.requires_grad for p in model.head.parameters()), "the head must stay trainable")


@exercise("03.trainable_count", hint="only the new head trains: (512×32 + 32) + (32×5 + 5)")
def _(answer) -> None:
    expected = sum(p.numel() for p in SmallCNN(num_classes=5).head.parameters())
    expect_equal(answer, expected, "the number of trainable parameters")
