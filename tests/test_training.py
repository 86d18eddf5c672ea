"""The 02.train_loop checker: correct loops pass however they are written, broken ones fail."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from course_lib.exercises import check


def correct(model, loader, optimizer, epochs):
    losses = []
    for _ in range(epochs):
        total = 0.0
        for inputs, labels in loader:
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(inputs), labels)
            loss.backward()
            optimizer.step()
            total += loss.item()
        losses.append(total / len(loader))
    return losses


def zero_grad_after_step_with_module_loss(model, loader, optimizer, epochs):
    criterion = nn.CrossEntropyLoss()
    model.train()
    history = []
    for _ in range(epochs):
        batch_losses = []
        for x, y in loader:
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            batch_losses.append(loss.detach())
        history.append(torch.stack(batch_losses).mean())  # tensors are fine too
    return tuple(history)


def no_zero_grad(model, loader, optimizer, epochs):
    losses = []
    for _ in range(epochs):
        total = 0.0
        for inputs, labels in loader:
            loss = nn.functional.cross_entropy(model(inputs), labels)
            loss.backward()
            optimizer.step()
            total += loss.item()
        losses.append(total / len(loader))
    return losses


def no_step(model, loader, optimizer, epochs):
    losses = []
    for _ in range(epochs):
        for inputs, labels in loader:
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(inputs), labels)
            loss.backward()
        losses.append(loss.item())
    return losses


def one_epoch_only(model, loader, optimizer, epochs):
    return correct(model, loader, optimizer, 1) * epochs


def mse_loss(model, loader, optimizer, epochs):
    losses = []
    for _ in range(epochs):
        for inputs, labels in loader:
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(model(inputs)[:, 1], labels.float())
            loss.backward()
            optimizer.step()
        losses.append(loss.item())
    return losses


def summed_losses(model, loader, optimizer, epochs):
    return [value * len(loader) for value in correct(model, loader, optimizer, epochs)]


def forgot_return(model, loader, optimizer, epochs):
    correct(model, loader, optimizer, epochs)


def not_started(model, loader, optimizer, epochs):
    raise NotImplementedError("write the training loop")


@pytest.mark.parametrize("loop", [correct, zero_grad_after_step_with_module_loss])
def test_correct_loops_pass(loop, capsys):
    assert check("02.train_loop", loop)
    assert "✓ 02.train_loop" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("loop", "says"),
    [
        (no_zero_grad, "never zeroes the gradients"),
        (no_step, "weights have not changed"),
        (one_epoch_only, "different from the reference"),
        (mse_loss, "different from the reference"),
        (summed_losses, "divide the sum by the number of batches"),
        (forgot_return, "did you forget `return`?"),
        (not_started, "not implemented yet"),
    ],
)
def test_broken_loops_fail_with_a_reason(loop, says, capsys):
    assert not check("02.train_loop", loop)
    out = capsys.readouterr().out
    assert "✗ 02.train_loop" in out and says in out


def test_passing_the_result_instead_of_the_function(capsys):
    assert not check("02.train_loop", [0.7, 0.5])
    assert "pass your function itself" in capsys.readouterr().out
