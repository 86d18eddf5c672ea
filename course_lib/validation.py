"""Input checks shared across course_lib, with messages a learner can act on.

Every public function that takes a privacy parameter (ε, δ, σ, a sample rate, a clipping bound …)
or a dataset checks it here, *before* it does anything else, so the same value is accepted or
refused the same way everywhere (Opacus keeps its checks in one place for the same reason).

The rules:

* A **number** is a Python ``int``/``float``, a NumPy scalar (``np.float32(1e-5)``) or a
  one-element torch tensor (``torch.tensor(1.1)``); it comes back as a Python ``float``. ``bool``,
  strings and other objects raise ``TypeError``; NaN and ±∞ raise ``ValueError``.
* An **integer** is a Python or NumPy integer (or an integer tensor with one element), never a
  ``bool`` or a float with an integral value; it comes back as a Python ``int``.
* A value of the right type but outside its range (ε ≤ 0, δ ∉ (0, 1), q ∉ (0, 1] …) raises
  ``ValueError`` whose message names the parameter and says what it means.
* A **dataset** is any map-style ``torch.utils.data.Dataset`` (``TensorDataset``, ``Subset``,
  torchvision datasets …) whose items are ``(input, label)`` pairs; anything else raises
  ``TypeError`` up front, and an empty one ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Sized
from typing import Any, TypeGuard, cast

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, Subset, TensorDataset

__all__ = [
    "as_number",
    "as_integer",
    "is_integer",
    "check_positive",
    "check_nonnegative",
    "check_epsilon",
    "check_delta",
    "check_sensitivity",
    "check_noise_multiplier",
    "check_sample_rate",
    "check_positive_int",
    "check_nonnegative_int",
    "check_int_in_range",
    "check_dataset",
    "dataset_size",
    "dataset_tensors",
]


def _unwrap(value: object) -> object:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.dtype.is_complex:
            raise TypeError(f"expected a single number, got a tensor of shape {tuple(value.shape)}")
        return value.item()
    if isinstance(value, np.ndarray) and value.shape == ():
        return value[()]
    return value


def as_number(value: object, name: str) -> float:
    """``value`` as a finite Python float (see the module docstring for what counts as a number).

    Raises ``TypeError`` for non-numbers (including ``bool``) and ``ValueError`` for NaN or ±∞.
    """
    try:
        value = _unwrap(value)
    except TypeError as error:
        raise TypeError(f"{name} must be a number: {error}") from None
    if isinstance(value, bool | np.bool_) or not isinstance(
        value, int | float | np.integer | np.floating
    ):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {number}")
    return number


def is_integer(value: object) -> TypeGuard[int | np.integer]:
    """The one rule for integers: Python and NumPy integers are integers; bools (Python or NumPy)
    are not. No unwrapping: a one-element tensor is not an integer here (:func:`as_integer` takes
    one)."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def as_integer(value: object, name: str) -> int:
    """``value`` as a Python int; ``TypeError`` unless an integer (bool and floats refused)."""
    try:
        value = _unwrap(value)
    except TypeError as error:
        raise TypeError(f"{name} must be an integer: {error}") from None
    if not is_integer(value):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    return int(value)


def check_positive(value: object, name: str) -> float:
    """``value`` as a float; ``ValueError`` unless it is a finite number > 0."""
    number = as_number(value, name)
    if number <= 0:
        raise ValueError(f"{name} must be positive, got {number}")
    return number


def check_nonnegative(value: object, name: str) -> float:
    """``value`` as a float; ``ValueError`` unless it is a finite number ≥ 0."""
    number = as_number(value, name)
    if number < 0:
        raise ValueError(f"{name} must be ≥ 0, got {number}")
    return number


def check_epsilon(value: object, name: str = "epsilon") -> float:
    """A privacy loss ε: a finite number > 0."""
    number = as_number(value, name)
    if number <= 0:
        raise ValueError(
            f"{name} must be positive: it bounds how much one person can change the output "
            f"distribution (ε = 0 would mean the answer ignores the data), got {number}"
        )
    return number


def check_delta(value: object, name: str = "delta", *, allow_zero: bool = False) -> float:
    """A failure probability δ: strictly between 0 and 1 (``allow_zero``: 0 too, for pure ε-DP)."""
    number = as_number(value, name)
    if allow_zero and number == 0:
        return 0.0
    if not 0.0 < number < 1.0:
        low = "0 ≤" if allow_zero else "0 <"
        raise ValueError(
            f"{name} is a probability of failure and must satisfy {low} {name} < 1 (typically "
            f"much smaller than 1/n, e.g. 1e-5), got {number}"
        )
    return number


def check_sensitivity(value: object, name: str = "sensitivity") -> float:
    """A query's sensitivity Δ (how far one person can move the answer): finite and > 0."""
    number = as_number(value, name)
    if number <= 0:
        raise ValueError(
            f"{name} is how far one person can move the answer, so it must be positive "
            f"(a query whose answer never changes needs no noise), got {number}"
        )
    return number


def check_noise_multiplier(
    value: object, name: str = "noise_multiplier", *, allow_zero: bool = False
) -> float:
    """A noise multiplier σ (noise std in units of the sensitivity): finite and > 0.

    ``allow_zero`` accepts σ = 0 (no noise, no privacy) where a caller wants to show that case.
    """
    number = as_number(value, name)
    if number < 0 or (number == 0 and not allow_zero):
        raise ValueError(
            f"{name} must be positive (σ = 0 means no noise and no privacy), got {number}"
        )
    return number


def check_sample_rate(value: object, name: str = "sample_rate") -> float:
    """A Poisson sampling rate q: the probability that an example joins a batch, in (0, 1]."""
    number = as_number(value, name)
    if not 0.0 < number <= 1.0:
        raise ValueError(
            f"{name} is the probability that an example joins a batch, in (0, 1]; got {number}"
        )
    return number


def check_positive_int(value: object, name: str) -> int:
    """An integer ≥ 1."""
    number = as_integer(value, name)
    if number <= 0:
        raise ValueError(f"{name} must be a positive integer, got {number}")
    return number


def check_nonnegative_int(value: object, name: str) -> int:
    """An integer ≥ 0."""
    number = as_integer(value, name)
    if number < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {number}")
    return number


def check_int_in_range(
    value: object, name: str, low: int | None = None, high: int | None = None
) -> int:
    """An integer with ``low ≤ value ≤ high`` (either bound may be ``None``: unbounded)."""
    number = as_integer(value, name)
    if (low is not None and number < low) or (high is not None and number > high):
        bounds = (
            f"between {low} and {high}"
            if low is not None and high is not None
            else f"at least {low}"
            if low is not None
            else f"at most {high}"
        )
        raise ValueError(f"{name} must be {bounds}, got {number}")
    return number


def check_dataset(dataset: object, name: str = "dataset") -> Dataset:
    """A non-empty map-style dataset whose items are ``(input, label, ...)`` tuples.

    Accepts ``TensorDataset``, ``Subset`` and any dataset with ``__len__`` and ``__getitem__``
    (torchvision's included). Raises ``TypeError`` for anything else (an ``IterableDataset``, a
    bare tensor, a list of pairs …) and ``ValueError`` for an empty dataset.
    """
    if isinstance(dataset, IterableDataset) or not isinstance(dataset, Dataset):
        raise TypeError(
            f"{name} must be a map-style torch Dataset of (input, label) pairs, e.g. "
            f"TensorDataset(images, labels), a Subset of one or load_mnist(); got "
            f"{type(dataset).__name__}"
        )
    if not hasattr(dataset, "__len__"):
        raise TypeError(
            f"{name} must have a length (len(dataset)); {type(dataset).__name__} has not"
        )
    if len(cast(Sized, dataset)) == 0:
        raise ValueError(f"{name} is empty")
    first = dataset[0]
    if not isinstance(first, tuple | list) or len(first) < 2:
        raise TypeError(
            f"each item of {name} must be an (input, label) pair; item 0 is {type(first).__name__}"
        )
    return dataset


def dataset_size(dataset: object, name: str = "dataset") -> int:
    """``len(dataset)`` of a dataset :func:`check_dataset` accepts (it runs the check)."""
    return len(cast(Sized, check_dataset(dataset, name)))


def dataset_tensors(dataset: object, name: str = "dataset") -> tuple[torch.Tensor, torch.Tensor]:
    """All inputs and labels of a map-style dataset as two tensors, shapes (N, ...) and (N,).

    A ``TensorDataset`` (or a ``Subset`` of one, however nested) is read without a copy loop;
    other datasets are read item by item and stacked.
    """
    dataset = check_dataset(dataset, name)
    indices: Any = None
    base = dataset
    while isinstance(base, Subset):
        indices = (
            torch.as_tensor(base.indices)
            if indices is None
            else torch.as_tensor(base.indices)[indices]
        )
        base = base.dataset
    if isinstance(base, TensorDataset):
        inputs, labels = base.tensors[:2]
        if indices is not None:
            inputs, labels = inputs[indices], labels[indices]
        return inputs, labels
    items = [dataset[i] for i in range(len(cast(Sized, dataset)))]
    inputs = torch.stack([torch.as_tensor(item[0]) for item in items])
    labels = torch.as_tensor([int(item[1]) for item in items])
    return inputs, labels
