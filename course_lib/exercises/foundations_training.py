"""Checkers for Part I exercises in which the learner trains or builds a network (lessons 02–03).

The checker runs the learner's code on its own small, seeded data and compares the result with
the reference: the same loop trained from the same starting weights on the same batches must end
with the same weights, whichever correct way the loop is written.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from course_lib.exercises._registry import (
    Incorrect,
    exercise,
    expect,
    expect_callable,
    expect_not_none,
)

#: The checker's data: 64 random 2-d points in two classes split by a line, 4 batches of 16.
_POINTS = "64 random 2-d points (seed 0) in 2 classes, batches of 16, SGD lr 0.5, 5 epochs"


def _problem() -> tuple[nn.Module, DataLoader, torch.optim.Optimizer]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=generator)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2))
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=False)
    return model, loader, torch.optim.SGD(model.parameters(), lr=0.5)


def _reference(model: nn.Module, loader: DataLoader, optimizer, epochs: int, *, zero_grad=True):
    for _ in range(epochs):
        for inputs, labels in loader:
            if zero_grad:
                optimizer.zero_grad()
            nn.functional.cross_entropy(model(inputs), labels).backward()
            optimizer.step()


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(
        torch.allclose(p, q, rtol=1e-4, atol=1e-6)
        for p, q in zip(a.parameters(), b.parameters(), strict=True)
    )


@exercise(
    "02.train_loop",
    task=(
        "write training_loop(model, loader, optimizer, epochs): for every batch of every epoch "
        "— zero the gradients, forward, cross-entropy loss, backward, optimiser step — and "
        "return the list of each epoch's mean loss"
    ),
    nudge=(
        "the five steps, in order, inside two loops (epochs, then batches): "
        "optimizer.zero_grad(), logits = model(inputs), loss = cross_entropy(logits, labels), "
        "loss.backward(), optimizer.step()"
    ),
    hint=(
        "for _ in range(epochs): total = 0; for x, y in loader: optimizer.zero_grad(); "
        "loss = nn.functional.cross_entropy(model(x), y); loss.backward(); optimizer.step(); "
        "total += loss.item() — then append total / len(loader) to a list, and return the list"
    ),
)
def _(training_loop) -> None:
    expect_callable(training_loop, "training_loop", "02.train_loop")
    model, loader, optimizer = _problem()
    start = copy.deepcopy(model)
    losses = training_loop(model, loader, optimizer, 5)
    expect_not_none(losses, f"training_loop(model, loader, optimizer, 5) on {_POINTS}")
    expect(
        not _same_weights(model, start),
        f"after training_loop(model, loader, optimizer, 5) on {_POINTS} the weights have not "
        "changed: did you call loss.backward() and optimizer.step() for every batch?",
    )
    reference, ref_loader, ref_optimizer = _problem()
    _reference(reference, ref_loader, ref_optimizer, 5)
    if not _same_weights(model, reference):
        forgot, f_loader, f_optimizer = _problem()
        _reference(forgot, f_loader, f_optimizer, 5, zero_grad=False)
        expect(
            not _same_weights(model, forgot),
            f"on {_POINTS} your weights match a loop that never zeroes the gradients: call "
            "optimizer.zero_grad() before each backward(), or the gradients of all earlier "
            "batches add up",
        )
        raise Incorrect(
            f"on {_POINTS} your weights end up different from the reference loop's (one "
            "optimiser step per batch, cross-entropy loss, every batch of every epoch)"
        )
    expect(
        isinstance(losses, list | tuple) and len(losses) == 5,
        f"training_loop(model, loader, optimizer, 5) should return 5 losses (one per epoch), got "
        f"{losses!r}"[:300],
    )
    values = [float(loss) for loss in losses]
    expect(
        values[-1] < values[0],
        f"on {_POINTS} your epoch losses {[round(v, 3) for v in values]} do not go down: "
        "return each epoch's mean loss, in order",
    )
    expect(
        all(0 < v < 1.0 for v in values),
        f"on {_POINTS} your epoch losses {[round(v, 3) for v in values]} are not mean batch "
        "losses (expected values between 0 and 1 here): divide the sum by the number of batches",
    )
