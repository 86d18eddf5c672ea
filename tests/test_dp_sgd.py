"""DP-SGD: per-sample gradients, clipping, noise, Poisson sampling and a short private run."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.data import load_mnist
from course_lib.dp.dpsgd import (
    DPSGD,
    PoissonSampler,
    clip_gradients,
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
