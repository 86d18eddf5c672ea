"""Checkers for Part I (lessons 00–03): warm-up, tensors, neural networks, transfer learning.

Each checker runs the learner's answer on its own inputs and names them in every ✗ message, so
the learner can reproduce the failing case.
"""

from __future__ import annotations

import torch

from course_lib.exercises._registry import (
    exercise,
    expect,
    expect_callable,
    expect_close,
    expect_equal,
)
from course_lib.models import MLP, SmallCNN

#: The checker's table for lesson 00: the lesson's three records plus two it has not seen.
_RECORDS = [
    {"name": "Ana", "age": 34, "diabetes": True},
    {"name": "Ben", "age": 51, "diabetes": False},
    {"name": "Chen", "age": 29, "diabetes": True},
    {"name": "Dara", "age": 62, "diabetes": False},
    {"name": "Eli", "age": 45, "diabetes": True},
]
_ON_RECORDS = (
    "on the checker's 5 records (the lesson's Ana, Ben, Chen plus Dara, 62, no diabetes, "
    "and Eli, 45, diabetes)"
)

# -- 00 welcome ---------------------------------------------------------------------------------


@exercise(
    "00.count_where",
    task="write count_where(records, key, value): how many records have record[key] == value",
    nudge="look at each record in turn and count those whose record[key] equals value",
    hint="loop over the records, or sum(1 for r in records if r[key] == value)",
)
def _(count_where) -> None:
    expect_callable(count_where, "count_where", "00.count_where")
    expect_equal(
        count_where(_RECORDS, "diabetes", True),
        3,
        f"count_where(records, 'diabetes', True) {_ON_RECORDS}",
    )
    expect_equal(
        count_where(_RECORDS, "age", 51), 1, f"count_where(records, 'age', 51) {_ON_RECORDS}"
    )
    expect_equal(count_where([], "age", 51), 0, "count_where([], 'age', 51) on an empty table")


@exercise(
    "00.mean_age",
    task='write mean_age(records): the average of the "age" fields',
    nudge="an average is a total divided by a count",
    hint="sum(r['age'] for r in records) / len(records)",
)
def _(mean_age) -> None:
    expect_callable(mean_age, "mean_age", "00.mean_age")
    expect_close(mean_age(_RECORDS), 44.2, what=f"mean_age(records) {_ON_RECORDS}")
    expect_close(mean_age(_RECORDS[:1]), 34.0, what="mean_age of one record (Ana, 34)")


# -- 01 tensors ---------------------------------------------------------------------------------


@exercise(
    "01.reshape",
    task="make `answer` a 3×4 tensor holding 0, 1, …, 11 row by row",
    nudge="start from torch.arange(12) and give it a new shape; its numbers stay as they are",
    hint="torch.arange(12).reshape(3, 4) — or .view(3, 4)",
)
def _(answer) -> None:
    expect_equal(answer, torch.arange(12).reshape(3, 4), "your 3×4 tensor of 0…11")


@exercise(
    "01.broadcast",
    task="build the 5×5 multiplication table of 1…5 (answer[i, j] = (i+1)(j+1)) with broadcasting",
    nudge="multiply a column of 1…5 by a row of 1…5 and let broadcasting fill the table",
    hint="a column (5, 1) times a row (1, 5) broadcasts to (5, 5)",
)
def _(answer) -> None:
    numbers = torch.arange(1, 6)
    expect_equal(answer, numbers[:, None] * numbers[None, :], "your multiplication table of 1…5")


@exercise(
    "01.independent_copy",
    task="write independent_copy(t): the same values as t, in memory not shared with t",
    nudge="views and slices share memory with the original; you need a real copy",
    hint="t.clone() copies the data; t.view(...) and t[:] share it",
)
def _(independent_copy) -> None:
    expect_callable(independent_copy, "independent_copy", "01.independent_copy")
    original = torch.arange(6.0)
    copy = independent_copy(original)
    expect_equal(copy, original, "independent_copy(torch.arange(6.0))")
    expect(isinstance(copy, torch.Tensor), f"expected a tensor, got {type(copy).__name__}")
    copy[0] = 100.0
    expect(
        original[0].item() == 0.0,
        "after copy = independent_copy(t) with t = torch.arange(6.0), setting copy[0] = 100 "
        "changed t[0] too: they share memory",
    )


@exercise(
    "01.gradient",
    task="use autograd to compute dy/dx of y = x**3 + 2*x at x = 2 and store it in `answer`",
    nudge="make x a tensor with requires_grad=True, compute y from it, call y.backward()",
    hint="x = torch.tensor(2.0, requires_grad=True); y = x**3 + 2*x; y.backward(); x.grad",
)
def _(answer) -> None:
    expect_close(answer, 14.0, what="dy/dx of x**3 + 2*x at x = 2")


# -- 02 neural networks -------------------------------------------------------------------------


@exercise(
    "02.neuron",
    task="write neuron(x, w, b): sigmoid(x w + b) for a batch x (N, D), weights w (D,), bias b",
    nudge="one matrix product gives every example's weighted sum at once; then squash it",
    hint="torch.sigmoid(x @ w + b)",
)
def _(neuron) -> None:
    expect_callable(neuron, "neuron", "02.neuron")
    generator = torch.Generator().manual_seed(2)
    x, w, b = (
        torch.randn(4, 3, generator=generator),
        torch.randn(3, generator=generator),
        torch.tensor(0.5),
    )
    expect_close(
        neuron(x, w, b),
        torch.sigmoid(x @ w + b),
        what="neuron(x, w, b) with a random x (4, 3), w (3,) (seed 2) and b = 0.5",
    )


@exercise(
    "02.param_count",
    task="compute in code how many weights and biases MLP(784, (128,), 10) has",
    nudge="every layer has a weight matrix and a bias vector; model.parameters() lists them all",
    hint="sum(p.numel() for p in model.parameters()) — weights and biases",
)
def _(answer) -> None:
    expected = sum(p.numel() for p in MLP(784, (128,), 10).parameters())
    expect_equal(answer, expected, "the number of parameters of MLP(784, (128,), 10)")


@exercise(
    "02.accuracy",
    task="write accuracy(logits, labels): the fraction of rows whose highest score is the label",
    nudge="the predicted class of a row is the index of its largest score",
    hint="(logits.argmax(dim=1) == labels).float().mean().item()",
)
def _(accuracy) -> None:
    expect_callable(accuracy, "accuracy", "02.accuracy")
    logits = torch.tensor([[2.0, 1.0], [0.1, 0.9], [3.0, -1.0], [0.0, 5.0]])
    shown = "logits [[2, 1], [0.1, 0.9], [3, -1], [0, 5]]"
    expect_close(
        accuracy(logits, torch.tensor([0, 1, 1, 1])),
        0.75,
        what=f"accuracy with {shown} and labels [0, 1, 1, 1]",
    )
    expect_close(
        accuracy(logits, torch.tensor([1, 0, 1, 0])),
        0.0,
        what=f"accuracy with {shown} and labels [1, 0, 1, 0] (all wrong)",
    )


# -- 03 transfer learning -----------------------------------------------------------------------


@exercise(
    "03.freeze_features",
    task="write freeze_features(model): no gradients for model.features, model.head trainable",
    nudge="a parameter with requires_grad = False is left alone by backward() and the optimiser",
    hint="for p in model.features.parameters(): p.requires_grad = False",
)
def _(freeze_features) -> None:
    expect_callable(freeze_features, "freeze_features", "03.freeze_features")
    model = SmallCNN()
    result = freeze_features(model)
    if isinstance(result, SmallCNN):
        model = result
    expect(
        not any(p.requires_grad for p in model.features.parameters()),
        "after freeze_features(SmallCNN()) some feature weights still train",
    )
    expect(
        all(p.requires_grad for p in model.head.parameters()),
        "after freeze_features(SmallCNN()) the head must stay trainable",
    )


@exercise(
    "03.trainable_count",
    task="count, in code, the parameters left to train after freezing the features and "
    "attaching SmallCNN(num_classes=5).head",
    nudge="only parameters with requires_grad = True count, and after freezing that is the head",
    hint="only the new head trains: (512×32 + 32) + (32×5 + 5)",
)
def _(answer) -> None:
    expected = sum(p.numel() for p in SmallCNN(num_classes=5).head.parameters())
    expect_equal(answer, expected, "the number of trainable parameters")
