"""course_lib.dp.finetuning: the transformer is causal, LoRA starts as the frozen model, the
course's per-sequence gradients match a loop and Opacus, DP fine-tuning changes only what it
should, σ is solved to the target ε, and bad input is refused before anything changes."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from course_lib.dp.accounting import rdp_epsilon
from course_lib.dp.dpsgd import DPSGD, clip_gradients, per_sample_gradients
from course_lib.dp.finetuning import (
    CharTransformer,
    NextCharView,
    fine_tune,
    sequence_dataset,
    sequence_loss,
    sequence_losses,
    sequence_perplexity,
)
from course_lib.dp.memorization import ALPHABET, Canary, exposure, stdlib_corpus
from course_lib.lora import add_lora, count_parameters, freeze_all_but, merge_lora
from course_lib.randomness import InsecureSeededRandom

CONTEXT = 12


def _model(seed: int = 0) -> CharTransformer:
    torch.manual_seed(seed)
    return CharTransformer(context=CONTEXT, d_model=16, n_heads=2, n_layers=2)


@pytest.fixture(scope="module")
def data() -> torch.utils.data.TensorDataset:
    return sequence_dataset(stdlib_corpus(2_000), CONTEXT)


def test_sequences_are_non_overlapping_and_shifted_by_one() -> None:
    text = "abcdefghij" * 3  # 30 characters: 3 sequences of 9 (context 8), 3 left over
    data = sequence_dataset(text, 8)
    inputs, targets = data.tensors
    assert inputs.shape == targets.shape == (3, 8)
    assert "".join(ALPHABET[int(i)] for i in inputs[1]) == "jabcdefg"
    assert torch.equal(targets[:, :-1], inputs[:, 1:])
    with pytest.raises(ValueError):
        sequence_dataset("abc", 8)


def test_the_transformer_is_causal_and_shaped_for_cross_entropy() -> None:
    model = _model().eval()
    x = torch.randint(0, len(ALPHABET), (3, CONTEXT))
    logits = model(x)
    assert logits.shape == (3, len(ALPHABET), CONTEXT)
    changed = x.clone()
    changed[:, 7] = (changed[:, 7] + 1) % len(ALPHABET)
    after = model(changed)
    assert torch.equal(after[:, :, :7], logits[:, :, :7])  # the past does not see the future
    assert not torch.allclose(after[:, :, 7:], logits[:, :, 7:])
    view = NextCharView(model)
    torch.testing.assert_close(view(x), logits[:, :, -1])
    with pytest.raises(ValueError):
        model(torch.zeros(1, CONTEXT + 1, dtype=torch.long))


def test_sequence_loss_is_the_mean_per_sequence(data) -> None:
    model = _model().eval()
    x, y = data.tensors[0][:5], data.tensors[1][:5]
    logits = model(x)
    per_char = torch.nn.functional.cross_entropy(logits, y, reduction="none")  # (5, CONTEXT)
    torch.testing.assert_close(sequence_loss(logits, y, "none"), per_char.mean(1))
    torch.testing.assert_close(sequence_loss(logits, y, "sum"), per_char.mean(1).sum())
    torch.testing.assert_close(sequence_loss(logits, y), per_char.mean())
    losses = sequence_losses(model, data)
    assert losses.shape == (len(data),)
    assert sequence_perplexity(model, data) == pytest.approx(math.exp(float(losses.mean())))
    with pytest.raises(ValueError):
        sequence_loss(logits, y, "max")


def test_lora_with_b_zero_is_the_frozen_model_exactly_and_merges_back(data) -> None:
    model = _model()
    x = data.tensors[0][:6]
    before = model(x)
    add_lora(model, ("attn.query", "attn.value"), rank=4, alpha=8.0)
    assert torch.equal(model(x), before)
    assert count_parameters(model) == 2 * 2 * 4 * (16 + 16)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    moved = model(x)
    assert (moved - before).abs().max() > 1e-2
    torch.testing.assert_close(merge_lora(model)(x), moved, rtol=1e-5, atol=1e-5)


def _lora_model_with_nonzero_b() -> CharTransformer:
    model = _model(3)
    add_lora(model, ("attn.query", "attn.value"), rank=2, alpha=4.0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.3)
    return model


def test_per_sequence_gradients_of_the_lora_model_match_a_loop_and_opacus(data) -> None:
    from opacus import GradSampleModule

    model = _lora_model_with_nonzero_b()
    x, y = data.tensors[0][:6], data.tensors[1][:6]
    ours = per_sample_gradients(model, x, y, sequence_loss)
    loop = per_sample_gradients(model, x, y, sequence_loss, method="loop")
    assert set(ours) == {n for n, p in model.named_parameters() if p.requires_grad}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrapped = GradSampleModule(model, loss_reduction="sum")
        sequence_loss(wrapped(x), y, reduction="sum").backward()
        theirs = {
            name.removeprefix("_module."): p.grad_sample
            for name, p in wrapped.named_parameters()
            if p.requires_grad
        }
        wrapped._close()
    assert set(theirs) == set(ours)
    for name, g in ours.items():
        assert g.shape[0] == 6 and g.abs().max() > 0
        torch.testing.assert_close(loop[name], g, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(theirs[name], g, rtol=1e-4, atol=1e-6)


def test_dpsgd_clipped_sum_on_the_lora_model_is_the_textbook_one(data) -> None:
    model = _lora_model_with_nonzero_b()
    x, y = data.tensors[0][:8], data.tensors[1][:8]
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    dp = DPSGD(model, optimizer, noise_multiplier=1.0, max_grad_norm=0.05, expected_batch_size=8)
    sums, params, norms, _ = dp.clipped_sum(x, y, sequence_loss)
    clipped, want_norms = clip_gradients(per_sample_gradients(model, x, y, sequence_loss), 0.05)
    assert (want_norms > 0.05).any()  # clipping is exercised
    torch.testing.assert_close(norms, want_norms, rtol=1e-4, atol=1e-7)
    named = {id(p): n for n, p in model.named_parameters()}
    for s, p in zip(sums, params, strict=True):
        torch.testing.assert_close(s, clipped[named[id(p)]].sum(0), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("variant", ["head", "lora", "full"])
def test_dp_fine_tuning_changes_only_the_trainable_parameters(data, variant: str) -> None:
    model = _model(1)
    if variant == "head":
        freeze_all_but(model, ("head.",))
    elif variant == "lora":
        add_lora(model, ("attn.query", "attn.value"), rank=2, alpha=4.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    q, steps = 0.25, 3
    result = fine_tune(
        model, data, steps=steps, sample_rate=q, lr=0.01, noise_multiplier=1.5,
        rng=InsecureSeededRandom(0),
    )  # fmt: skip
    assert len(result.losses) == steps and result.seconds_per_step > 0
    assert result.trainable == count_parameters(model)
    assert result.epsilon == pytest.approx(rdp_epsilon(1.5, q, steps, 1e-5))
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert not torch.equal(p, before[name]), f"{name} should have trained"
        else:
            assert torch.equal(p, before[name]), f"{name} is frozen but changed"
    if variant == "full":
        assert result.trainable == count_parameters(model, trainable_only=False)


def test_non_private_fine_tuning_reports_no_epsilon_and_lowers_the_loss(data) -> None:
    model = _model(2)
    before = sequence_losses(model, data).mean()
    result = fine_tune(
        model, data, steps=30, sample_rate=0.5, lr=1e-2, noise_multiplier=None,
        rng=InsecureSeededRandom(0),
    )  # fmt: skip
    assert result.epsilon == math.inf
    assert sequence_losses(model, data).mean() < before - 0.3


def test_bad_fine_tuning_arguments_are_refused_before_the_model_changes(data) -> None:
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    bad = [
        {"steps": 0}, {"sample_rate": 0.0}, {"lr": -1.0}, {"noise_multiplier": 0.0},
        {"noise_multiplier": math.nan}, {"delta": 1.0}, {"max_grad_norm": 0.0},
    ]  # fmt: skip
    for change in bad:
        kwargs = {"steps": 2, "sample_rate": 0.5, "lr": 0.1, "noise_multiplier": 1.0} | change
        with pytest.raises(ValueError):
            fine_tune(model, data, rng=InsecureSeededRandom(0), **kwargs)  # type: ignore[arg-type]
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        fine_tune(model, data, steps=2, sample_rate=0.5, lr=0.1, noise_multiplier=1.0)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))


def test_exposure_of_lesson_21_measures_the_transformer() -> None:
    model = _model()
    result = exposure(NextCharView(model), Canary("pin is ", "42", 0))
    assert result.n_candidates == 100 and 1 <= result.rank <= 100
