"""DP-SGD: per-sample gradients, clipping, noise, Poisson sampling and a short private run."""

import copy
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Subset, TensorDataset

from course_lib.data import load_mnist
from course_lib.dp.dpsgd import (
    DPSGD,
    PoissonSampler,
    clip_gradients,
    example_losses,
    gaussian_noise,
    per_sample_gradients,
    train_private,
)
from course_lib.models import MLP, SmallCNN
from course_lib.randomness import InsecureSeededRandom

Z = 5.0  # every statistical bound below is a 5-standard-error band (two-sided p ≈ 6e-7)


def batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


class Mixed(nn.Module):
    """Padding, dilation, a Linear over positions (3-D input) and one over flat features."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, stride=2, padding=2, dilation=2)
        self.seq = nn.Linear(14, 5)
        self.out = nn.Linear(4 * 14 * 5, 10, bias=False)

    def forward(self, x):
        h = torch.tanh(self.conv(x))  # (n, 4, 14, 14)
        h = torch.tanh(self.seq(h.flatten(1, 2)))  # Linear on (n, 56, 14)
        return self.out(h.flatten(1))


@pytest.mark.parametrize("model_fn", [SmallCNN, MLP, Mixed])
def test_per_sample_gradients_equal_single_example_gradients(model_fn):
    torch.manual_seed(0)
    model = model_fn()
    x, y = batch()
    grads = per_sample_gradients(model, x, y)
    for i in range(len(x)):
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        for name, p in model.named_parameters():
            torch.testing.assert_close(grads[name][i], p.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("model_fn", [SmallCNN, MLP, Mixed])
def test_fast_clipped_sum_equals_the_textbook_one(model_fn):
    torch.manual_seed(0)
    model = model_fn()
    x, y = batch(16)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    kwargs = {"noise_multiplier": 1.0, "max_grad_norm": 0.05, "expected_batch_size": 16}
    fast = DPSGD(model, optimizer, method="taps", **kwargs)
    slow = DPSGD(model, optimizer, method="vmap", **kwargs)
    sums_fast, params_fast, norms_fast, loss_fast = fast.clipped_sum(x, y)
    sums_slow, params_slow, norms_slow, loss_slow = slow.clipped_sum(x, y)
    torch.testing.assert_close(norms_fast, norms_slow, rtol=1e-4, atol=1e-6)
    assert loss_fast == pytest.approx(loss_slow, rel=1e-5)
    by_param = {id(p): s for p, s in zip(params_slow, sums_slow, strict=True)}
    for p, s in zip(params_fast, sums_fast, strict=True):
        torch.testing.assert_close(s, by_param[id(p)], rtol=1e-4, atol=1e-6)


def sequence_loss(logits, targets, reduction="mean", ignore_index=-100):
    """Cross-entropy of per-position logits (batch, positions, classes)."""
    return F.cross_entropy(
        logits.transpose(1, 2), targets, reduction=reduction, ignore_index=ignore_index
    )


@pytest.mark.parametrize("max_grad_norm", [100.0, 0.05])  # no clipping at all, and clipping
@pytest.mark.parametrize("ignore", [False, True])
def test_every_path_clips_the_same_per_example_loss_of_a_sequence(max_grad_norm, ignore):
    """A per-position loss: the fast path once clipped the gradient of the *sum* over positions
    while vmap and the loop clipped the *mean* (12× apart on 12 positions). Every path now uses
    example_losses — the mean over positions, ignored positions included as zeros."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 5))
    x, y = torch.randn(6, 12, 4), torch.randint(0, 5, (6, 12))
    if ignore:
        y[0, :7] = -100  # some positions carry no target
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    kwargs = {"noise_multiplier": 1.0, "max_grad_norm": max_grad_norm, "expected_batch_size": 6}
    results = {}
    for method in ("taps", "vmap", "loop"):
        dpsgd = DPSGD(model, optimizer, method=method, **kwargs)
        sums, params, norms, loss = dpsgd.clipped_sum(x, y, sequence_loss)
        results[method] = ({id(p): g for p, g in zip(params, sums, strict=True)}, norms, loss)
    losses = example_losses(sequence_loss, model(x), y).detach()
    want = sequence_loss(model(x), y, reduction="none").mean(1)
    torch.testing.assert_close(losses, want)
    _, vmap_norms, vmap_loss = results["vmap"]
    for method in ("taps", "loop"):
        sums, norms, loss = results[method]
        torch.testing.assert_close(norms, vmap_norms, rtol=1e-4, atol=1e-6)
        assert loss == pytest.approx(vmap_loss, rel=1e-5) == pytest.approx(float(losses.sum()))
        for key, g in sums.items():
            torch.testing.assert_close(g, results["vmap"][0][key], rtol=1e-4, atol=1e-6)
    # and they are the gradients of the mean over positions: unclipped, their sum is autograd's
    if max_grad_norm == 100.0:
        assert float(vmap_norms.max()) < max_grad_norm
        live = example_losses(sequence_loss, model(x), y)
        reference = torch.autograd.grad(live.sum(), list(model.parameters()))
        for p, g in zip(model.parameters(), reference, strict=True):
            torch.testing.assert_close(results["taps"][0][id(p)], g, rtol=1e-4, atol=1e-6)


def test_a_loss_without_a_batch_dimension_is_refused():
    model = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="one loss per example"):
        example_losses(
            lambda logits, y, reduction="mean": F.cross_entropy(logits, y),
            model(torch.randn(4, 3)),
            torch.zeros(4, dtype=torch.long),
        )


def test_clipping_bounds_every_example():
    torch.manual_seed(0)
    grads = per_sample_gradients(SmallCNN(), *batch(8))
    clipped, norms = clip_gradients(grads, max_grad_norm=0.01)
    clipped_norms = torch.cat([g.flatten(1) for g in clipped.values()], dim=1).norm(dim=1)
    assert torch.all(norms > 0.01)  # all of them needed clipping...
    assert torch.all(clipped_norms <= 0.01 * (1 + 1e-5))  # ...and now respect the bound
    _, unclipped = clip_gradients(grads, max_grad_norm=1e6)
    torch.testing.assert_close(unclipped, norms)  # a generous bound leaves them alone


def test_gaussian_noise_has_the_requested_mean_and_std():
    n, std = 400_000, 2.5
    z = gaussian_noise((n,), std, InsecureSeededRandom(0)).double()
    assert abs(z.mean().item()) < Z * std / math.sqrt(n)
    # the sample variance of n normals has standard error σ²·√(2/(n-1))
    assert abs(z.var().item() - std**2) < Z * std**2 * math.sqrt(2 / (n - 1))
    # a fourth moment of 3σ⁴ (kurtosis of a normal; standard error √96/√n in units of σ⁴)
    assert abs((z / std).pow(4).mean().item() - 3) < Z * math.sqrt(96 / n)
    assert gaussian_noise((3, 4), 1.0).shape == (3, 4)


def test_private_step_adds_noise_of_std_sigma_c_over_batch_size():
    # an empty batch: the update is pure noise, -lr · N(0, σ²C²) / expected batch size
    model = nn.Linear(300, 100)
    before = [p.detach().clone() for p in model.parameters()]
    sigma, clip, expected = 1.3, 0.7, 50.0
    dp = DPSGD(
        model,
        torch.optim.SGD(model.parameters(), lr=1.0),
        noise_multiplier=sigma,
        max_grad_norm=clip,
        expected_batch_size=expected,
        rng=InsecureSeededRandom(1),
    )
    dp.step(torch.empty(0, 300), torch.empty(0, dtype=torch.long))
    change = torch.cat(
        [(b - p.detach()).flatten() for b, p in zip(before, model.parameters(), strict=True)]
    )
    target, n = sigma * clip / expected, change.numel()
    assert abs(change.double().std().item() - target) < Z * target / math.sqrt(2 * (n - 1))


def test_poisson_sampler_includes_each_example_with_probability_q():
    n, q = 1000, 0.05
    sampler = PoissonSampler(n, q, steps=400, rng=InsecureSeededRandom(0))
    assert len(sampler) == 400
    counts = torch.zeros(n)
    sizes = []
    for indices in sampler:
        counts[indices] += 1
        sizes.append(len(indices))
    total_draws = 400 * n
    assert abs(sum(sizes) - q * total_draws) < Z * math.sqrt(total_draws * q * (1 - q))
    assert len(set(sizes)) > 5  # the batch size varies
    assert len(PoissonSampler(n, q)) == 20  # one epoch by default


def test_short_private_training_run_learns():
    torch.manual_seed(0)
    train = load_mnist(train=True, max_samples=2000)
    test = load_mnist(train=False, max_samples=500)
    history = train_private(
        MLP(),
        train,
        test,
        epochs=3,
        sample_rate=0.05,
        lr=2.0,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        rng=InsecureSeededRandom(0),
        progress=False,
    )
    assert history.val_acc[-1] > 0.7  # chance is 0.1
    assert 0 < history.epsilon[0] < history.epsilon[-1] < 10
    assert len(history.epsilon) == len(history.train_loss) == 3


def test_models_outside_linear_and_conv_fall_back_to_vmap():
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 8), nn.LayerNorm(8), nn.Linear(8, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    dp = DPSGD(model, optimizer, noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=4)
    assert dp.method == "vmap"
    with pytest.raises(ValueError, match="vmap"):
        DPSGD(
            model,
            optimizer,
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            expected_batch_size=4,
            method="taps",
        )
    dp.step(*batch(4))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"noise_multiplier": -1.0}, "noise_multiplier"),
        ({"noise_multiplier": float("nan")}, "noise_multiplier"),
        ({"max_grad_norm": 0.0}, "max_grad_norm"),
        ({"expected_batch_size": -5}, "expected_batch_size"),
        ({"method": "magic"}, "method"),
    ],
)
def test_bad_settings_raise_value_error(kwargs, message):
    model = MLP()
    args = {"noise_multiplier": 1.0, "max_grad_norm": 1.0, "expected_batch_size": 8} | kwargs
    with pytest.raises(ValueError, match=message):
        DPSGD(model, torch.optim.SGD(model.parameters(), lr=0.1), **args)


def test_bad_inputs_raise_value_error():
    model = MLP()
    dp = DPSGD(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        expected_batch_size=8,
    )
    x, y = batch(4)
    with pytest.raises(ValueError, match="targets"):
        dp.step(x, y[:3])
    with pytest.raises(ValueError, match="BatchNorm"):
        bn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
        DPSGD(
            bn,
            torch.optim.SGD(bn.parameters(), lr=0.1),
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            expected_batch_size=8,
        )
    for rate in (0.0, 1.5):
        with pytest.raises(ValueError, match="sample_rate"):
            PoissonSampler(100, rate)
    with pytest.raises(ValueError, match="standard deviation"):
        gaussian_noise((3,), -1.0)
    with pytest.raises(ValueError, match="epochs"):
        train_private(
            model,
            load_mnist(max_samples=10),
            epochs=0,
            sample_rate=0.1,
            lr=0.1,
            noise_multiplier=1.0,
        )


# -- non-finite per-example gradients: zeroed and counted, never let through -----------------------

POISONS = {
    "nan in one coordinate": lambda x: x.index_put_((torch.tensor([0]),), torch.tensor(math.nan)),
    "+inf in one coordinate": lambda x: x.index_put_((torch.tensor([0]),), torch.tensor(math.inf)),
    "-inf in one coordinate": lambda x: x.index_put_((torch.tensor([0]),), torch.tensor(-math.inf)),
    "nan everywhere": lambda x: x.fill_(math.nan),
    "+inf everywhere": lambda x: x.fill_(math.inf),
    "-inf everywhere": lambda x: x.fill_(-math.inf),
}


def _dpsgd(model, method="auto", sigma=1.0, clip=0.1, rng=None):
    return DPSGD(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        noise_multiplier=sigma,
        max_grad_norm=clip,
        expected_batch_size=8,
        method=method,
        rng=rng,
    )


def _by_param(sums, params):
    """Clipped sums keyed by parameter identity (a tied parameter's pieces added up)."""
    out = {}
    for s, p in zip(sums, params, strict=True):
        out[id(p)] = out.get(id(p), 0) + s
    return out


def _assert_the_bad_example_is_zeroed_and_counted(dp, model, x, x_bad, y, reference_method):
    """Example 2 of ``x_bad`` is non-finite: its norm is, the others' are not; the clipped sum and
    loss equal those of the batch without it (by ``reference_method``); a step counts it once and
    leaves every weight finite."""
    sums, params, norms, loss = dp.clipped_sum(x_bad, y)
    keep = [0, 1, 3, 4, 5]
    assert not torch.isfinite(norms[2]) and torch.isfinite(norms[keep]).all()
    assert dp._batch_nonfinite == 1
    clean = _dpsgd(model, reference_method).clipped_sum(x[keep], y[keep])
    expected = _by_param(clean[0], clean[1])
    for p, s in _by_param(sums, params).items():
        torch.testing.assert_close(s, expected[p], rtol=1e-4, atol=1e-6)
    assert loss == pytest.approx(clean[3], rel=1e-5)
    dp.step(x_bad, y)
    assert dp.nonfinite_examples == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("method", ["taps", "vmap", "loop"])
@pytest.mark.parametrize("poison", list(POISONS))
def test_a_non_finite_example_contributes_zero_and_is_counted(method, poison):
    torch.manual_seed(0)
    model = MLP(784, (16,), 10)
    x, y = batch(6)
    x_bad = x.clone()
    POISONS[poison](x_bad[2].view(-1))
    _assert_the_bad_example_is_zeroed_and_counted(_dpsgd(model, method), model, x, x_bad, y, method)


@pytest.mark.parametrize("method", ["taps", "vmap"])
def test_one_example_moves_the_clipped_sum_by_at_most_c(method):
    torch.manual_seed(0)
    model, clip = SmallCNN(), 0.05
    x, y = batch(8)
    huge = x.clone()
    huge[3] *= 1e6  # an outlier with a finite but enormous gradient
    with_it = _by_param(*_dpsgd(model, method, clip=clip).clipped_sum(huge, y)[:2])
    keep = [i for i in range(8) if i != 3]
    without = _by_param(*_dpsgd(model, method, clip=clip).clipped_sum(x[keep], y[keep])[:2])
    moved = torch.cat([(with_it[p] - without[p]).flatten() for p in with_it]).norm()
    assert moved <= clip * (1 + 1e-4)


def test_clip_gradients_zeroes_non_finite_rows():
    grads = {"w": torch.tensor([[3.0, 4.0], [math.nan, 1.0], [math.inf, 0.0], [0.3, 0.4]])}
    clipped, norms = clip_gradients(grads, 1.0)
    torch.testing.assert_close(
        clipped["w"],
        torch.tensor([[0.6, 0.8], [0.0, 0.0], [0.0, 0.0], [0.3, 0.4]]),
        atol=1e-5,
        rtol=0,
    )
    assert torch.isnan(norms[1]) and torch.isinf(norms[2])


# -- the fast path knows when it does not apply ----------------------------------------------------


def brute_force_clipped_sum(model, x, y, clip):
    """Per-example autograd on the whole model, clipped: the definition, with no shortcuts."""
    params = [p for p in model.parameters() if p.requires_grad]
    totals = [torch.zeros_like(p) for p in params]
    for i in range(len(x)):
        loss = F.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        grads = [
            torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)
        ]
        norm = torch.sqrt(sum(g.square().sum() for g in grads))
        factor = min(1.0, clip / (norm.item() + 1e-6))
        totals = [t + factor * g for t, g in zip(totals, grads, strict=True)]
    return {id(p): t for p, t in zip(params, totals, strict=True)}


class LoRALinear(nn.Linear):
    """A frozen weight plus a trainable low-rank term added in its own forward."""

    def __init__(self, d_in, d_out, rank=2):
        super().__init__(d_in, d_out)
        self.weight.requires_grad_(False)
        self.lora_a = nn.Parameter(torch.randn(rank, d_in) * 0.1)
        self.lora_b = nn.Parameter(torch.randn(d_out, rank) * 0.1)

    def forward(self, x):
        return super().forward(x) + x @ self.lora_a.T @ self.lora_b.T


class ScaledLinear(nn.Linear):
    """A subclass that only changes forward (no extra parameters)."""

    def forward(self, x):
        return F.linear(2.0 * x, self.weight, self.bias)


class TiedPair(nn.Module):
    """Two Linear layers sharing one weight (an autoencoder-style tie)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(10, 10), nn.Linear(10, 10)
        self.b.weight = self.a.weight
        self.head = nn.Linear(10, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.b(torch.tanh(self.a(x)))))


class UsedOutside(nn.Module):
    """A layer's weight also used directly in forward, outside the layer."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(10, 10)
        self.head = nn.Linear(10, 3)

    def forward(self, x):
        h = torch.tanh(self.a(x))
        return self.head(torch.tanh(h @ self.a.weight.T))


def _weight_norm_new():
    from torch.nn.utils.parametrizations import weight_norm

    return nn.Sequential(weight_norm(nn.Linear(10, 8)), nn.Tanh(), nn.Linear(8, 3))


def _weight_norm_old():
    with pytest.warns(FutureWarning):
        layer = torch.nn.utils.weight_norm(nn.Linear(10, 8))
    return nn.Sequential(layer, nn.Tanh(), nn.Linear(8, 3))


@pytest.mark.parametrize(
    "model_fn",
    [
        lambda: nn.Sequential(LoRALinear(10, 8), nn.Tanh(), nn.Linear(8, 3)),
        lambda: nn.Sequential(ScaledLinear(10, 8), nn.Tanh(), nn.Linear(8, 3)),
        TiedPair,
        UsedOutside,
        _weight_norm_new,
        _weight_norm_old,
    ],
    ids=["lora", "overridden-forward", "tied", "used-outside", "weight_norm", "weight_norm-hook"],
)
def test_the_fast_path_falls_back_where_it_would_be_wrong(model_fn):
    torch.manual_seed(0)
    model = model_fn()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 10, generator=g), torch.randint(0, 3, (6,), generator=g)
    clip = 0.2
    dp = _dpsgd(model, "auto", clip=clip)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the dynamic check warns when it falls back
        sums, params, _, _ = dp.clipped_sum(x, y)
    assert dp.method == "vmap" and dp.fallback_reason
    ours = _by_param(sums, params)
    expected = brute_force_clipped_sum(model, x, y, clip)
    assert ours.keys() == expected.keys()
    for p, s in ours.items():
        torch.testing.assert_close(s, expected[p], rtol=1e-4, atol=1e-6)


def test_explicit_taps_is_refused_where_it_does_not_apply():
    with pytest.raises(ValueError, match="LoRA"):
        _dpsgd(nn.Sequential(ScaledLinear(10, 8), nn.Linear(8, 3)), "taps")
    with pytest.raises(ValueError, match="tied"):
        _dpsgd(TiedPair(), "taps")
    dp = _dpsgd(UsedOutside(), "taps")  # only the first batch can tell
    with pytest.raises(ValueError, match="outside its layer"):
        dp.clipped_sum(torch.randn(4, 10), torch.randint(0, 3, (4,)))


def test_plain_layers_keep_the_fast_path_after_the_check():
    torch.manual_seed(0)
    model = MLP(784, (16,), 10)
    dp = _dpsgd(model)
    dp.clipped_sum(*batch(4))
    assert dp.method == "taps" and dp.fallback_reason is None


# -- recurrent and attention layers ----------------------------------------------------------------


class TinyLM(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.embed = nn.Embedding(12, 6)
        layers = {"gru": nn.GRU, "lstm": nn.LSTM, "rnn": nn.RNN}
        if kind in layers:
            self.mix = layers[kind](6, 6, batch_first=True)
        else:
            self.mix = nn.MultiheadAttention(6, 2, batch_first=True)
        self.out = nn.Linear(6, 12)

    def forward(self, x):
        h = self.embed(x)
        h = self.mix(h, h, h)[0] if self.kind == "attention" else self.mix(h)[0]
        return self.out(h[:, -1])


@pytest.mark.parametrize("kind", ["gru", "lstm", "rnn", "attention"])
def test_recurrent_and_attention_models_get_exact_clipped_sums(kind):
    torch.manual_seed(0)
    model = TinyLM(kind)
    g = torch.Generator().manual_seed(2)
    x, y = torch.randint(0, 12, (5, 7), generator=g), torch.randint(0, 12, (5,), generator=g)
    dp = _dpsgd(model, clip=0.3)
    assert dp.method == ("vmap" if kind == "attention" else "loop")
    ours = _by_param(*dp.clipped_sum(x, y)[:2])
    expected = brute_force_clipped_sum(model, x, y, 0.3)
    for p, s in ours.items():
        torch.testing.assert_close(s, expected[p], rtol=1e-4, atol=1e-6)


def test_vmap_on_a_gru_is_refused_up_front():
    with pytest.raises(ValueError, match="GRU.*loop"):
        _dpsgd(TinyLM("gru"), "vmap")


def test_train_private_trains_a_gru():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(3)
    data = TensorDataset(torch.randint(0, 12, (40, 5), generator=g), torch.randint(0, 12, (40,)))
    history = train_private(
        TinyLM("gru"),
        data,
        epochs=1,
        sample_rate=0.2,
        lr=0.5,
        noise_multiplier=1.0,
        rng=InsecureSeededRandom(0),
        progress=False,
    )
    assert len(history.epsilon) == 1 and math.isfinite(history.train_loss[0])


# -- train_private: everything checked before the model is touched ---------------------------------


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"noise_multiplier": 0.0}, ValueError, "noise_multiplier"),
        ({"noise_multiplier": np.float32(0.0)}, ValueError, "noise_multiplier"),
        ({"noise_multiplier": torch.tensor(0.0)}, ValueError, "noise_multiplier"),
        ({"noise_multiplier": -1.0}, ValueError, "noise_multiplier"),
        ({"delta": 1.0}, ValueError, "delta"),
        ({"sample_rate": 0.0}, ValueError, "sample_rate"),
        ({"max_grad_norm": math.nan}, ValueError, "max_grad_norm"),
        ({"momentum": -0.5}, ValueError, "momentum"),
        ({"lr": True}, TypeError, "lr"),
        ({"method": "fast"}, ValueError, "method"),
        ({"test_data": torch.zeros(3)}, TypeError, "test_data"),
    ],
)
def test_train_private_refuses_bad_settings_before_touching_the_model(kwargs, error, message):
    torch.manual_seed(0)
    model = MLP(16, (8,), 2)
    before = _params(model)
    data = TensorDataset(torch.randn(20, 16), torch.randint(0, 2, (20,)))
    args = dict(epochs=1, sample_rate=0.5, lr=0.5, noise_multiplier=1.0, progress=False) | kwargs
    with pytest.raises(error, match=message):
        train_private(model, data, **args)
    for b, p in zip(before, model.parameters(), strict=True):
        assert torch.equal(b, p)


def test_train_private_accepts_numpy_and_tensor_scalars_and_any_map_style_dataset():
    torch.manual_seed(0)
    base = TensorDataset(torch.randn(40, 16), torch.randint(0, 2, (40,)))
    history = train_private(
        MLP(16, (8,), 2),
        Subset(base, range(32)),
        Subset(base, range(32, 40)),
        epochs=1,
        sample_rate=np.float32(0.25),
        lr=torch.tensor(0.5),
        noise_multiplier=torch.tensor(1.1),
        delta=np.float32(1e-5),
        rng=InsecureSeededRandom(0),
        progress=False,
    )
    assert len(history.val_acc) == 1 and 0 <= history.val_acc[0] <= 1


def test_training_metrics_on_private_data_are_labelled_outside_the_guarantee():
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(20, 16), torch.randint(0, 2, (20,)))
    history = train_private(
        MLP(16, (8,), 2),
        data,
        epochs=2,
        sample_rate=0.5,
        lr=0.5,
        noise_multiplier=1.0,
        rng=InsecureSeededRandom(0),
        progress=False,
    )
    assert {"train_loss", "train_acc", "nonfinite_examples"} <= set(history.outside_guarantee)
    assert history.nonfinite_examples == [0, 0]
    text = str(history)
    assert "train_loss*" in text and "outside the (ε, δ = 1e-05) guarantee" in text


# -- devices: every tensor follows the model ------------------------------------------------------

DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
    ),
]


@pytest.mark.parametrize("device", DEVICES)
def test_noise_is_secure_and_lands_on_the_device(device):
    noise = gaussian_noise((1000,), 2.0, device=device, dtype=torch.float64)
    assert noise.device.type == device and noise.dtype == torch.float64
    seeded = gaussian_noise((10,), 1.0, InsecureSeededRandom(5), device=device)
    torch.testing.assert_close(seeded.cpu(), gaussian_noise((10,), 1.0, InsecureSeededRandom(5)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["taps", "vmap", "loop"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_private_step_runs_where_the_model_lives(device, method, dtype):
    torch.manual_seed(0)
    model = SmallCNN().to(device=device, dtype=dtype)
    x, y = batch(4)
    x[1, 0, 0, 0] = math.nan
    dp = _dpsgd(model, method, rng=InsecureSeededRandom(0))
    sums, _, norms, _ = dp.clipped_sum(x.to(device=device, dtype=dtype), y.to(device))
    assert norms.device.type == device and all(s.device.type == device for s in sums)
    dp.step(x.to(device=device, dtype=dtype), y.to(device))
    assert dp.nonfinite_examples == 1
    for p in model.parameters():
        assert p.device.type == device and p.dtype == dtype and torch.isfinite(p).all()


@pytest.mark.parametrize("device", DEVICES)
def test_train_private_on_the_device_with_cpu_data(device):
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(20, 16), torch.randint(0, 2, (20,)))
    model = MLP(16, (8,), 2).to(device)
    history = train_private(
        model,
        data,
        data,
        epochs=1,
        sample_rate=0.5,
        lr=0.5,
        noise_multiplier=1.0,
        rng=InsecureSeededRandom(0),
        progress=False,
    )
    assert next(model.parameters()).device.type == device and len(history.val_acc) == 1


@pytest.mark.parametrize(
    ("model_fn", "seeded"),
    [(MLP, True), (SmallCNN, True), (SmallCNN, False), (Mixed, False)],
    ids=["MLP-seeded", "SmallCNN-seeded", "SmallCNN-secure", "Mixed-secure"],
)
def test_the_per_example_guards_run_only_when_a_batch_has_a_non_finite_gradient(
    model_fn, seeded, monkeypatch
):
    """A finite batch costs one finiteness check and no per-example masking; a batch with a NaN
    example goes through the masks (and is still zeroed and counted) — on the seeded route and on
    the secure one (materialised per-sample gradients)."""
    calls = {"where": 0, "isfinite": 0}
    where, isfinite = torch.where, torch.isfinite

    def counting(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    torch.manual_seed(0)
    dp = _dpsgd(model_fn(), "taps", rng=InsecureSeededRandom(0) if seeded else None)
    x, y = batch(6)
    dp.step(x, y)  # the first batch also checks the taps against autograd
    monkeypatch.setattr(torch, "where", counting("where", where))
    monkeypatch.setattr(torch, "isfinite", counting("isfinite", isfinite))
    dp.step(x, y)
    assert calls == {"where": 0, "isfinite": 1} and dp.nonfinite_examples == 0
    x[4, 0, 4, 4] = math.nan  # a pixel every model reads (Mixed's dilated conv skips odd ones)
    dp.step(x, y)
    assert calls["where"] > 0 and dp.nonfinite_examples == 1
    assert all(isfinite(p).all() for p in dp.model.parameters())


class SingleChannelConv(nn.Module):
    def __init__(self, kernel, stride, padding, dilation):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, kernel, stride=stride, padding=padding, dilation=dilation)
        self.out = nn.LazyLinear(10)

    def forward(self, x):
        return self.out(torch.tanh(self.conv(x)).flatten(1))


@pytest.mark.parametrize(
    "geometry",
    [(8, 2, 3, 1), (3, 2, 2, 2), ((3, 2), (1, 2), (0, 1), 1), (4, 3, 0, 1), (5, 1, 0, (2, 1))],
)
@pytest.mark.parametrize("secure", [True, False])
def test_single_channel_conv_norms_match_the_textbook_in_both_modes(geometry, secure):
    """Secure runs take a faster route for a one-channel convolution's norms (a grouped
    convolution, stride 3 leaving input rows unused included); seeded runs keep the patches. Both
    must give autograd's per-sample norms, and zero a non-finite example."""
    torch.manual_seed(0)
    model = SingleChannelConv(*geometry)
    x, y = batch(6)
    model(x)  # materialise the lazy layer
    rng = None if secure else InsecureSeededRandom(0)
    fast = _dpsgd(model, "taps", clip=0.05, rng=rng)
    _, _, norms, _ = fast.clipped_sum(x, y)
    _, _, expected, _ = _dpsgd(model, "vmap", clip=0.05).clipped_sum(x, y)
    torch.testing.assert_close(norms, expected, rtol=1e-4, atol=1e-6)
    x[2, 0, 4, 4] = math.inf
    sums, _, norms, _ = fast.clipped_sum(x, y)
    assert not torch.isfinite(norms[2]) and torch.isfinite(norms[[0, 1, 3, 4, 5]]).all()
    assert all(torch.isfinite(s).all() for s in sums) and fast._batch_nonfinite == 1


# -- the materialised per-sample route (secure noise: rounding may differ from the seeded one) ----


class ConvNet(nn.Module):
    """Multi-channel convolutions with padding, stride, dilation and a non-square kernel, and a
    single-channel first layer: every geometry the materialised route builds patches for."""

    def __init__(self, geometry=((3, 2), 2, (1, 2), (2, 1))):
        super().__init__()
        kernel, stride, padding, dilation = geometry
        self.first = nn.Conv2d(1, 3, 3, stride=1, padding=1)
        self.conv = nn.Conv2d(3, 5, kernel, stride=stride, padding=padding, dilation=dilation)
        self.out = nn.LazyLinear(10)

    def forward(self, x):
        h = torch.tanh(self.first(x))
        return self.out(torch.tanh(self.conv(h)).flatten(1))


def _in_layout(model, x, layout):
    if layout == "channels_last":
        cl = torch.channels_last
        return model.to(memory_format=cl), x.contiguous(memory_format=cl)
    return model, x


CONV_GEOMETRIES = [((3, 2), 2, (1, 2), (2, 1)), (4, 2, 0, 1), (3, 1, 2, 2), ((2, 3), (3, 1), 0, 1)]


@pytest.mark.parametrize("layer_kind", ["conv", "single-channel conv", "sequence linear"])
@pytest.mark.parametrize("layout", ["default", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("copies", ["numpy", "torch"])
def test_materialised_per_sample_gradients_equal_the_exact_ones(
    layer_kind, layout, dtype, copies, monkeypatch
):
    """_per_sample_weight_gradients against per-example autograd in float64: numpy's patches and
    the grouped convolution for one input channel (CPU float), and torch's strided copy for
    everything (what a GPU or another dtype takes)."""
    from course_lib.dp import dpsgd

    if copies == "torch":
        monkeypatch.setattr(dpsgd, "_cpu_float", lambda x: False)
    torch.manual_seed(0)
    if layer_kind == "sequence linear":
        layer, x = nn.Linear(7, 4), torch.randn(5, 6, 7)
        g = torch.randn(5, 6, 4)
    else:
        channels = 1 if layer_kind == "single-channel conv" else 3
        layer = nn.Conv2d(channels, 4, (3, 2), stride=2, padding=(1, 2), dilation=(2, 1))
        x = torch.randn(5, channels, 11, 9)
        layer, x = _in_layout(layer, x, layout)
        g = torch.randn_like(layer(x))
    layer, x, g = layer.to(dtype), x.to(dtype), g.to(dtype)
    grads, to_weight = dpsgd._per_sample_weight_gradients(layer, x, g)
    layer64 = copy.deepcopy(layer).double()
    expected = torch.stack(
        [
            torch.autograd.grad(
                (layer64(x[i : i + 1].double()) * g[i : i + 1].double()).sum(), layer64.weight
            )[0]
            for i in range(len(x))
        ]
    )
    assert grads.dtype == dtype and grads.shape[:2] == (len(x), layer.weight.shape[0])
    for i in range(len(x)):  # to_weight puts one example's gradient in the weight's order
        torch.testing.assert_close(
            to_weight(grads[i].flatten()).double(), expected[i], rtol=1e-5, atol=1e-5
        )
    coefficients = torch.randn(len(x), dtype=dtype)
    torch.testing.assert_close(
        to_weight(coefficients @ grads.flatten(1)).double(),
        torch.einsum("i,i...->...", coefficients.double(), expected),
        rtol=1e-4,
        atol=1e-4,
    )


def test_materialised_route_declines_flat_linear_layers_and_layers_past_the_limit(monkeypatch):
    from course_lib.dp import dpsgd

    conv, x = nn.Conv2d(2, 3, 3), torch.randn(4, 2, 6, 6)
    g = torch.randn(4, 3, 4, 4)
    assert (
        dpsgd._per_sample_weight_gradients(nn.Linear(3, 2), torch.randn(4, 3), torch.randn(4, 2))
        is None
    )
    assert dpsgd._per_sample_weight_gradients(conv, x, g) is not None
    monkeypatch.setattr(dpsgd, "_PER_SAMPLE_LIMIT", 4 * conv.weight.numel() - 1)
    assert dpsgd._per_sample_weight_gradients(conv, x, g) is None


@pytest.mark.parametrize(
    "model_fn", [SmallCNN, Mixed, ConvNet, lambda: ConvNet(CONV_GEOMETRIES[2])]
)
@pytest.mark.parametrize("layout", ["default", "channels_last"])
@pytest.mark.parametrize("limit", ["materialised", "ghost norms"])
def test_secure_fast_path_equals_vmap_and_the_loop(model_fn, layout, limit, monkeypatch):
    """With secure noise the fast path materialises per-sample conv and sequence gradients (or,
    past the size limit, takes the ghost-norm routes): norms, clipped sums and loss all match the
    textbook vmap and loop paths, in both memory layouts."""
    from course_lib.dp import dpsgd

    if limit == "ghost norms":
        monkeypatch.setattr(dpsgd, "_PER_SAMPLE_LIMIT", 0)
    calls = []
    original = dpsgd._per_sample_weight_gradients
    monkeypatch.setattr(
        dpsgd,
        "_per_sample_weight_gradients",
        lambda *args: calls.append(1) or original(*args),
    )
    torch.manual_seed(0)
    model, (x, y) = model_fn(), batch(8)
    model(x)  # materialise lazy layers
    model, x = _in_layout(model, x, layout)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    kwargs = {"noise_multiplier": 1.0, "max_grad_norm": 0.05, "expected_batch_size": 8}
    fast = DPSGD(model, optimizer, method="taps", **kwargs)
    assert fast.rng.secure
    sums, params, norms, loss = fast.clipped_sum(x, y)
    assert calls  # the route was asked (and, past the limit, declined)
    assert all(s.shape == p.shape for s, p in zip(sums, params, strict=True))
    for method in ("vmap", "loop"):
        ref_sums, ref_params, ref_norms, ref_loss = DPSGD(
            model, optimizer, method=method, **kwargs
        ).clipped_sum(x, y)
        torch.testing.assert_close(norms, ref_norms, rtol=1e-4, atol=1e-6)
        assert loss == pytest.approx(ref_loss, rel=1e-5)
        expected = _by_param(ref_sums, ref_params)
        for p, s in _by_param(sums, params).items():
            torch.testing.assert_close(s, expected[p], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("model_fn", [SmallCNN, Mixed, ConvNet])
@pytest.mark.parametrize("layout", ["default", "channels_last"])
@pytest.mark.parametrize("poison", list(POISONS))
@pytest.mark.parametrize("copies", ["numpy", "torch"])
def test_secure_fast_path_zeroes_and_counts_non_finite_examples(
    model_fn, layout, poison, copies, monkeypatch
):
    """Non-finite examples through the materialised route: numpy's copies and product on the
    CPU, torch's strided copy and bmm (what a GPU takes) otherwise."""
    from course_lib.dp import dpsgd

    if copies == "torch":
        monkeypatch.setattr(dpsgd, "_cpu_float", lambda x: False)
    torch.manual_seed(0)
    model, (x, y) = model_fn(), batch(6)
    model(x)
    x_bad = x.clone()
    POISONS[poison](x_bad[2].view(-1))
    model, x = _in_layout(model, x, layout)
    _, x_bad = _in_layout(model, x_bad, layout)
    dp = _dpsgd(model, "taps")
    assert dp.rng.secure
    _assert_the_bad_example_is_zeroed_and_counted(dp, model, x, x_bad, y, "vmap")


def test_seeded_runs_keep_their_arithmetic(monkeypatch):
    """Seeded (reproducible) runs never take the materialised route, so lessons' seeded numbers
    are computed exactly as before."""
    from course_lib.dp import dpsgd

    def refuse(*args):
        raise AssertionError("the materialised route ran in a seeded run")

    monkeypatch.setattr(dpsgd, "_per_sample_weight_gradients", refuse)
    torch.manual_seed(0)
    model, (x, y) = ConvNet(), batch(4)
    model(x)  # materialise the lazy layer
    dp = _dpsgd(model, "taps", rng=InsecureSeededRandom(0))
    dp.step(x, y)
    with pytest.raises(AssertionError, match="materialised route ran"):
        _dpsgd(model, "taps").step(x, y)  # secure noise does take it


class ConvUsedOutside(nn.Module):
    """A convolution's weight also used directly in forward, outside the layer."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.head = nn.Linear(2 * 6 * 6, 3)

    def forward(self, x):
        h = torch.tanh(self.conv(x))
        return self.head(torch.tanh(F.conv2d(h, self.conv.weight, padding=1)).flatten(1))


def test_secure_fast_path_still_falls_back_for_a_conv_weight_used_outside_its_layer():
    torch.manual_seed(0)
    model = ConvUsedOutside()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 2, 6, 6, generator=g), torch.randint(0, 3, (6,), generator=g)
    dp = _dpsgd(model, "auto", clip=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sums, params, _, _ = dp.clipped_sum(x, y)
    assert dp.method == "vmap" and dp.fallback_reason
    expected = brute_force_clipped_sum(model, x, y, 0.2)
    for p, s in _by_param(sums, params).items():
        torch.testing.assert_close(s, expected[p], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_secure_fast_path_runs_where_the_model_lives(device, dtype):
    """On a GPU the patches are torch's strided copy (the single-channel layer too)."""
    torch.manual_seed(0)
    model = ConvNet().to(dtype=dtype)
    x, y = batch(6)
    model(x.to(dtype))
    model = model.to(device)
    x = x.to(device=device, dtype=dtype)
    y = y.to(device)
    sums, params, norms, _ = _dpsgd(model, "taps").clipped_sum(x, y)
    ref_sums, ref_params, ref_norms, _ = _dpsgd(model, "vmap").clipped_sum(x, y)
    assert norms.device.type == device and all(s.device.type == device for s in sums)
    torch.testing.assert_close(norms, ref_norms, rtol=1e-4, atol=1e-6)
    expected = _by_param(ref_sums, ref_params)
    for p, s in _by_param(sums, params).items():
        torch.testing.assert_close(s, expected[p], rtol=1e-4, atol=1e-6)
