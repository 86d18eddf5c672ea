"""course_lib.lora: a fresh adapter changes nothing, merging is exact, only adapters train, and
bad input is refused before the model changes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from course_lib.lora import LoRALinear, add_lora, count_parameters, freeze_all_but, merge_lora


def _mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))


def test_a_fresh_adapter_computes_exactly_the_frozen_layer() -> None:
    base = nn.Linear(6, 5)
    x = torch.randn(4, 6)
    want = base(x)
    layer = LoRALinear(base, rank=2, alpha=4.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(layer.lora_B.weight, torch.zeros(5, 2))
    assert (
        layer.lora_A.weight.abs().max() > 0
    )  # A random, B zero: B·A = 0 but the gradient of B is not
    assert torch.equal(layer(x), want)  # bit for bit
    assert not any(p.requires_grad for p in base.parameters())


def test_the_adapter_adds_alpha_over_rank_times_b_a() -> None:
    base = nn.Linear(6, 5)
    layer = LoRALinear(base, rank=3, alpha=6.0)
    with torch.no_grad():
        layer.lora_B.weight.normal_()
    x = torch.randn(7, 6)
    b, a = layer.lora_B.weight, layer.lora_A.weight
    torch.testing.assert_close(layer(x), base(x) + 2.0 * x @ a.T @ b.T)
    assert layer.scaling == 2.0


def test_merging_gives_the_adapter_forward() -> None:
    model = _mlp()
    add_lora(model, ["0", "2"], rank=2, alpha=3.0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    x = torch.randn(10, 6)
    merged = merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in merged.modules())
    assert all(isinstance(m, LoRALinear) for m in (model[0], model[2]))  # the original is kept
    torch.testing.assert_close(merged(x), model(x), rtol=1e-5, atol=1e-6)
    assert merged(x).sub(_mlp()(x)).abs().max() > 1e-3  # and it is not the pretrained function


def test_add_lora_freezes_everything_but_the_adapters() -> None:
    model = _mlp()
    names = add_lora(model, ["2"], rank=2)
    assert names == ["2"]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"2.lora_A.weight", "2.lora_B.weight"}
    assert count_parameters(model) == 2 * 8 + 3 * 2
    assert count_parameters(model, trainable_only=False) == 6 * 8 + 8 + 8 * 3 + 3 + 22


def test_freeze_all_but_keeps_exactly_the_prefixes() -> None:
    model = _mlp()
    assert freeze_all_but(model, ("2.",)) == ["2.weight", "2.bias"]
    assert [p.requires_grad for p in model.parameters()] == [False, False, True, True]
    assert count_parameters(model) == 27


@pytest.mark.parametrize("rank", [0, -1, 7, 2.5, math.nan])
def test_a_bad_rank_is_refused_before_the_model_changes(rank: float) -> None:
    model = _mlp()
    with pytest.raises((ValueError, TypeError)):
        add_lora(model, ["0", "2"], rank=rank)  # type: ignore[arg-type]
    assert all(p.requires_grad for p in model.parameters())
    assert isinstance(model[0], nn.Linear) and not isinstance(model[0], LoRALinear)


def test_bad_targets_and_alpha_are_refused() -> None:
    model = _mlp()
    with pytest.raises(ValueError, match="no layer"):
        add_lora(model, ["nothing"], rank=1)
    with pytest.raises(ValueError, match="not an nn.Linear"):
        add_lora(model, ["1"], rank=1)
    with pytest.raises(ValueError):
        add_lora(model, ["0"], rank=1, alpha=0.0)
    with pytest.raises(ValueError):
        freeze_all_but(model, ("nope.",))
    with pytest.raises(TypeError):
        LoRALinear(nn.Conv2d(1, 1, 3), rank=1)  # type: ignore[arg-type]
    assert all(p.requires_grad for p in model.parameters())
