"""Seeding, training and evaluation loops shared by every lesson.

``fit`` is deliberately plain PyTorch — forward, loss, backward, step — so that later parts can
swap one piece (a private optimiser, a federated client) and keep the rest.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from course_lib.validation import as_integer, check_dataset, check_positive, check_positive_int

__all__ = [
    "History",
    "model_device",
    "seed_everything",
    "make_loader",
    "train_epoch",
    "evaluate",
    "fit",
    "accuracy",
]


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and PyTorch so a lesson gives the same numbers every run.

    (Data loaders get their own seeded generator from :func:`make_loader`.)
    """
    seed = as_integer(seed, "seed")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)


def make_loader(
    dataset: Dataset, batch_size: int = 64, *, shuffle: bool = True, seed: int = 0
) -> DataLoader:
    """A :class:`DataLoader` whose shuffle order is fixed by ``seed``.

    ``dataset`` is any map-style dataset of ``(input, label)`` pairs (``TypeError`` otherwise).
    """
    check_dataset(dataset)
    batch_size = check_positive_int(batch_size, "batch_size")
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); the CPU for a model without any."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose arg-max matches the label."""
    if logits.shape[0] != labels.shape[0]:
        raise ValueError(f"{logits.shape[0]} predictions but {labels.shape[0]} labels")
    return (logits.argmax(dim=1) == labels).float().mean().item()


@dataclass
class History:
    """Per-epoch metrics returned by :func:`fit` (lists, one entry per epoch)."""

    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)

    @property
    def epochs(self) -> int:
        return len(self.train_loss)

    def __str__(self) -> str:
        rows = ["epoch  train_loss  train_acc  val_loss  val_acc"]
        for i in range(self.epochs):
            val = (
                f"{self.val_loss[i]:8.4f}  {self.val_acc[i]:7.2%}"
                if i < len(self.val_loss)
                else "       -        -"
            )
            rows.append(f"{i + 1:5d}  {self.train_loss[i]:10.4f}  {self.train_acc[i]:9.2%}  {val}")
        return "\n".join(rows)


def train_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable = nn.functional.cross_entropy,
    *,
    progress: bool = True,
    desc: str = "train",
) -> tuple[float, float]:
    """One pass over ``loader``; returns (mean loss, accuracy) on the training batches."""
    model.train()
    device = model_device(model)
    total_loss, correct, seen = 0.0, 0, 0
    for inputs, labels in tqdm(loader, desc=desc, leave=False, disable=not progress):
        inputs, labels = inputs.to(device), labels.to(device)
        optimizer.zero_grad()
        logits = model(inputs)
        loss = loss_fn(logits, labels)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(labels)
        correct += (logits.argmax(1) == labels).sum().item()
        seen += len(labels)
    if seen == 0:
        raise ValueError("the training loader yielded no batches")
    return total_loss / seen, correct / seen


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: Iterable, loss_fn: Callable = nn.functional.cross_entropy
) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` over ``loader`` (no gradients, eval mode).

    Batches are moved to the model's device.
    """
    model.eval()
    device = model_device(model)
    total_loss, correct, seen = 0.0, 0, 0
    for inputs, labels in loader:
        inputs, labels = inputs.to(device), labels.to(device)
        logits = model(inputs)
        total_loss += loss_fn(logits, labels, reduction="sum").item()
        correct += (logits.argmax(1) == labels).sum().item()
        seen += len(labels)
    if seen == 0:
        raise ValueError("the evaluation loader yielded no batches")
    return total_loss / seen, correct / seen


def fit(
    model: nn.Module,
    train_loader: Iterable,
    val_loader: Iterable | None = None,
    *,
    epochs: int = 1,
    lr: float = 0.1,
    optimizer: torch.optim.Optimizer | None = None,
    loss_fn: Callable = nn.functional.cross_entropy,
    progress: bool = True,
) -> History:
    """Train ``model`` for ``epochs`` (SGD with ``lr`` unless an optimizer is given).

    A progress bar shows each epoch's loss; the returned :class:`History` holds the curves
    (validation ones too when ``val_loader`` is given) for :func:`course_lib.plots.plot_history`.
    """
    epochs = check_positive_int(epochs, "epochs")
    lr = check_positive(lr, "lr (the learning rate)")
    optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=lr)
    history = History()
    bar = tqdm(range(epochs), desc="epochs", disable=not progress)
    for epoch in bar:
        loss, acc = train_epoch(
            model, train_loader, optimizer, loss_fn, progress=progress, desc=f"epoch {epoch + 1}"
        )
        history.train_loss.append(loss)
        history.train_acc.append(acc)
        postfix = {"loss": f"{loss:.3f}", "acc": f"{acc:.1%}"}
        if val_loader is not None:
            val_loss, val_acc = evaluate(model, val_loader, loss_fn)
            history.val_loss.append(val_loss)
            history.val_acc.append(val_acc)
            postfix["val_acc"] = f"{val_acc:.1%}"
        bar.set_postfix(postfix)
    return history
