"""Noise as precise as the release it protects.

Float32 noise cast to float64 stays on float32's grid: a float64 release ``sum + noise`` then tells
the true sum from a neighbour's, because ``release − candidate`` is a float32 number only for the
true one (a reviewer's attack, in the spirit of Mironov 2012). These tests play that attacker
against gaussian_noise, DP-SGD on a float64 model and DP-FedAvg with a float64 template.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from course_lib.dp.dpsgd import DPSGD, gaussian_noise
from course_lib.fl.dp_fedavg import dp_aggregate
from course_lib.randomness import InsecureSeededRandom, SecureRandom


def _on_float32_grid(values: torch.Tensor) -> float:
    """The fraction of ``values`` that are float32 numbers."""
    values = values.double()
    return float((values.float().double() == values).double().mean())


def _guess_rates(noise: torch.Tensor, true_sum: float, other: float) -> tuple[float, float]:
    """The attacker says "the true sum" when ``release − candidate`` is a float32 number: how
    often that holds for the true sum (TPR) and for the neighbour's (FPR)."""
    release = torch.tensor(true_sum, dtype=torch.float64) + noise.double()
    return _on_float32_grid(release - true_sum), _on_float32_grid(release - other)


SOURCES = [
    pytest.param(SecureRandom, id="secure"),
    pytest.param(lambda: InsecureSeededRandom(3), id="seeded"),
]


@pytest.mark.parametrize("source", SOURCES)
def test_float64_noise_is_not_on_float32s_grid_and_the_attack_is_a_coin_flip(source) -> None:
    noise = gaussian_noise((20_000,), 1.0, source(), dtype=torch.float64)
    assert noise.dtype == torch.float64
    assert _on_float32_grid(noise) < 1e-3
    tpr, fpr = _guess_rates(noise, 0.3, 0.3 + 1e-9)
    assert tpr < 0.01 and fpr < 0.01


@pytest.mark.parametrize("source", SOURCES)
def test_float32_noise_in_a_float64_release_is_what_the_attack_exploits(source) -> None:
    """The control: the same attacker against float32 noise cast to float64 wins."""
    noise = gaussian_noise((20_000,), 1.0, source()).double()
    tpr, fpr = _guess_rates(noise, 0.3, 0.3 + 1e-9)
    assert tpr > 0.5 and fpr < 0.01


@pytest.mark.parametrize("source", SOURCES)
def test_float64_noise_is_standard_normal(source) -> None:
    noise = gaussian_noise((200_000,), 2.0, source(), dtype=torch.float64).numpy() / 2.0
    assert abs(noise.mean()) < 0.01 and abs(noise.var() - 1.0) < 0.015
    assert stats.kstest(noise, "norm").pvalue > 1e-3
    assert np.abs(noise).max() > 4.0  # the tails are there
    assert gaussian_noise((5,), 1.0, InsecureSeededRandom(3), dtype=torch.float64).equal(
        gaussian_noise((5,), 1.0, InsecureSeededRandom(3), dtype=torch.float64)
    )


def test_dp_sgd_on_a_float64_model_adds_float64_noise() -> None:
    """An empty batch takes a pure-noise step: the gradient is noise / expected batch size."""
    model = nn.Linear(50, 40).double()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = DPSGD(
        model,
        torch.optim.SGD(model.parameters(), lr=1.0),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        expected_batch_size=1,
    )
    optimizer.step(torch.zeros(0, 50, dtype=torch.float64), torch.zeros(0, dtype=torch.long))
    start = torch.cat([b.reshape(-1) for b in before])
    released = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    step = released - start  # −noise / expected batch size, as the model stores it
    assert step.dtype == torch.float64 and step.std() > 0.5
    assert _on_float32_grid(step) < 0.05


def test_dp_fedavg_with_a_float64_template_adds_float64_noise() -> None:
    template = {"w": torch.zeros(20_000, dtype=torch.float64)}
    released, _ = dp_aggregate(
        [], template=template, clip_norm=1.0, noise_multiplier=1.0, expected_clients=1.0
    )
    assert released["w"].dtype == torch.float64 and _on_float32_grid(released["w"]) < 1e-3
    narrow, _ = dp_aggregate(
        [], template={"w": torch.zeros(10, dtype=torch.float32)}, clip_norm=1.0,
        noise_multiplier=1.0, expected_clients=1.0,
    )  # fmt: skip
    assert narrow["w"].dtype == torch.float32
