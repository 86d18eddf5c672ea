"""The shared input checks: one rule for numbers, privacy parameters and datasets everywhere."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, IterableDataset, Subset, TensorDataset

from course_lib.validation import (
    as_integer,
    as_number,
    check_dataset,
    check_delta,
    check_epsilon,
    check_noise_multiplier,
    check_nonnegative,
    check_positive,
    check_positive_int,
    check_sample_rate,
    dataset_size,
    dataset_tensors,
    is_integer,
)


def test_accepts_positive_numbers() -> None:
    assert check_positive(3, "sigma") == 3.0 and isinstance(check_positive(3, "sigma"), float)


@pytest.mark.parametrize(
    "value", [1e-5, np.float32(1e-5), np.float64(1e-5), torch.tensor(1e-5), np.array(1e-5)]
)
def test_every_kind_of_scalar_is_the_same_delta(value: object) -> None:
    assert check_delta(value) == pytest.approx(1e-5, rel=1e-6)
    assert isinstance(check_delta(value), float)


@pytest.mark.parametrize("bad", [0, -1.5, math.nan, math.inf, np.float32("nan")])
def test_out_of_range_values_are_value_errors_with_the_name(bad: object) -> None:
    with pytest.raises(ValueError, match="sigma"):
        check_positive(bad, "sigma")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [True, np.bool_(True), "2", None, [1.0], torch.ones(2)])
def test_non_numbers_are_type_errors_with_the_name(bad: object) -> None:
    with pytest.raises(TypeError, match="sigma"):
        check_positive(bad, "sigma")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, 1, 1.5, -1e-9, math.nan])
def test_delta_must_be_a_probability_strictly_inside(bad: float) -> None:
    with pytest.raises(ValueError, match="delta"):
        check_delta(bad)


def test_delta_zero_only_when_allowed() -> None:
    assert check_delta(0, allow_zero=True) == 0.0
    assert check_delta(np.float32(0.0), allow_zero=True) == 0.0
    with pytest.raises(ValueError, match="delta"):
        check_delta(1.0, allow_zero=True)


def test_privacy_parameters() -> None:
    assert check_epsilon(torch.tensor(0.5)) == 0.5
    with pytest.raises(ValueError, match="epsilon"):
        check_epsilon(0.0)
    assert check_noise_multiplier(np.float32(1.5)) == 1.5
    with pytest.raises(ValueError, match="no noise"):
        check_noise_multiplier(0.0)
    assert check_noise_multiplier(0.0, allow_zero=True) == 0.0
    assert check_sample_rate(1.0) == 1.0 and check_sample_rate(1e-14) == 1e-14
    for bad in (0.0, 1.0000001):
        with pytest.raises(ValueError, match="sample_rate"):
            check_sample_rate(bad)
    assert check_nonnegative(0, "momentum") == 0.0
    with pytest.raises(ValueError, match="momentum"):
        check_nonnegative(-0.1, "momentum")


def test_integers() -> None:
    assert as_integer(np.int64(3), "steps") == 3 and check_positive_int(torch.tensor(2), "k") == 2
    for bad in (3.0, True, "3"):
        with pytest.raises(TypeError, match="steps"):
            as_integer(bad, "steps")
    with pytest.raises(ValueError, match="epochs"):
        check_positive_int(0, "epochs")
    assert as_number(np.int32(7), "x") == 7.0


class _Pairs(Dataset):
    """A map-style dataset that is neither a TensorDataset nor a Subset (like torchvision's)."""

    def __len__(self) -> int:
        return 5

    def __getitem__(self, i: int):
        return torch.full((2,), float(i)), i % 2


class _Stream(IterableDataset):
    def __iter__(self):
        yield torch.zeros(2), 0


def test_datasets_of_every_map_style_kind_give_the_same_tensors() -> None:
    x, y = torch.arange(20.0).reshape(10, 2), torch.arange(10) % 3
    base = TensorDataset(x, y)
    inputs, labels = dataset_tensors(Subset(Subset(base, [1, 3, 5, 7]), [0, 2]))
    torch.testing.assert_close(inputs, x[[1, 5]])
    torch.testing.assert_close(labels, y[[1, 5]])
    inputs, labels = dataset_tensors(_Pairs())
    torch.testing.assert_close(inputs[:, 0], torch.arange(5.0))
    assert labels.tolist() == [0, 1, 0, 1, 0]


@pytest.mark.parametrize("bad", [_Stream(), torch.zeros(3, 2), [(torch.zeros(2), 0)]])
def test_non_map_style_datasets_are_type_errors(bad: object) -> None:
    with pytest.raises(TypeError, match="train_data"):
        check_dataset(bad, "train_data")


def test_empty_and_unlabelled_datasets_are_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        check_dataset(TensorDataset(torch.zeros(0, 2), torch.zeros(0)), "test_data")
    with pytest.raises(TypeError, match="pair"):
        check_dataset(TensorDataset(torch.zeros(3, 2)), "test_data")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3, True), (np.int64(3), True), (np.uint8(0), True), (-7, True),
        (True, False), (np.bool_(True), False), (3.0, False), (np.float64(3), False),
        (torch.tensor(3), False), ("3", False), (None, False),
    ],
)  # fmt: skip
def test_is_integer_is_the_one_rule(value: object, expected: bool) -> None:
    """NumPy integers are integers; bools (Python or NumPy) are not; nothing is unwrapped."""
    assert is_integer(value) is expected


def test_dataset_size_checks_before_it_counts() -> None:
    data = TensorDataset(torch.zeros(5, 2), torch.zeros(5))
    assert dataset_size(data) == 5 and dataset_size(Subset(data, [0, 3])) == 2
    with pytest.raises(TypeError, match="map-style"):
        dataset_size(torch.zeros(5, 2), "train")
    with pytest.raises(ValueError):
        dataset_size(Subset(data, []), "train")
