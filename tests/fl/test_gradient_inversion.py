"""Gradient inversion: DLG/iDLG rebuild an image from one shared gradient; the metrics behave."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from course_lib.data import load_mnist
from course_lib.fl.gradient_inversion import (
    LeNetSigmoid,
    client_gradient,
    idlg_label_from_gradient,
    infer_label_idlg,
    invert_gradient,
    match_reconstructions,
    psnr,
    ssim,
)


@pytest.fixture(scope="module")
def mnist():
    return load_mnist(train=True, max_samples=50, seed=1)


@pytest.fixture(autouse=True)
def one_thread():
    # the attack's tiny convolutions run fastest on one thread (and are not slowed by contention)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_idlg_reads_the_label_off_the_gradient(mnist):
    model = LeNetSigmoid(seed=0)
    for k in range(10):
        x, y = mnist.images[k : k + 1], mnist.labels[k : k + 1]
        assert infer_label_idlg(client_gradient(model, x, y)[-2]) == y.item()


def test_dlg_recovers_an_image_from_a_batch_of_one_gradient(mnist):
    model = LeNetSigmoid(seed=0)
    x, y = mnist.images[:1], mnist.labels[:1]
    result = invert_gradient(model, client_gradient(model, x, y), iterations=20, seed=0)
    assert result.labels.tolist() == y.tolist()
    assert psnr(result.images[0], x[0]) > 30.0  # visually identical
    assert ssim(result.images[0], x[0]) > 0.95
    # a random guess is nowhere near
    assert psnr(torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(0)), x[0]) < 12


def test_noise_on_the_gradient_blunts_the_attack(mnist):
    model = LeNetSigmoid(seed=0)
    x, y = mnist.images[:1], mnist.labels[:1]
    grad = client_gradient(model, x, y)
    g = torch.Generator().manual_seed(0)
    noisy = [t + 0.1 * torch.randn(t.shape, generator=g) for t in grad]
    result = invert_gradient(model, noisy, labels=y, iterations=5, seed=0)
    assert psnr(result.images[0], x[0]) < 20.0


def test_metrics_on_known_values():
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 0.8
    assert ssim(x, x).tolist() == pytest.approx([1.0, 1.0])
    shifted = x + 0.1  # MSE 0.01 → 20 dB
    assert psnr(shifted, x).tolist() == pytest.approx([20.0, 20.0])
    assert psnr(shifted[0], x[0]) == pytest.approx(20.0)
    assert ssim(shifted[0], x[0]) < 1.0
    with pytest.raises(ValueError, match="shape"):
        psnr(x, x[0])


def test_match_reconstructions_undoes_a_permutation():
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    permuted = x[torch.tensor([3, 0, 4, 1, 2])]
    assert torch.equal(match_reconstructions(permuted, x), x)


def test_bad_input_is_rejected(mnist):
    model = LeNetSigmoid(seed=0)
    grad = client_gradient(model, mnist.images[:1], mnist.labels[:1])
    with pytest.raises(ValueError, match="one tensor per model parameter"):
        invert_gradient(model, grad[:-1])
    with pytest.raises(ValueError, match="optimizer"):
        invert_gradient(model, grad, optimizer="sgd")
    with pytest.raises(ValueError, match="labels"):
        invert_gradient(model, grad, num_images=2, labels=torch.tensor([1]))
    with pytest.raises(ValueError, match="labels"):
        client_gradient(model, mnist.images[:2], mnist.labels[:1])
    with pytest.raises(ValueError, match="classes × features"):
        infer_label_idlg(grad[-1])


def test_original_dlg_recovers_image_and_label_together(mnist):
    # without iDLG the label is optimised as a soft label along with the image
    model = LeNetSigmoid(seed=0)
    x, y = mnist.images[:1], mnist.labels[:1]
    result = invert_gradient(model, client_gradient(model, x, y), idlg=False, iterations=20)
    assert result.labels.tolist() == y.tolist()
    assert psnr(result.images[0], x[0]) > 30.0


DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
    ),
]


def _bias_free_mlp():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 32, bias=False),
        nn.Sigmoid(),
        nn.Linear(32, 10, bias=False),
    )


def test_idlg_finds_the_output_layer_by_module_when_it_has_no_bias(mnist):
    # the gradient list ends [..., hidden weight 32×784, output weight 10×32]: a fixed position
    # (the second to last tensor) would read the hidden layer and return a "label" up to 31
    model = _bias_free_mlp()
    for k in range(5):
        x, y = mnist.images[k : k + 1], mnist.labels[k : k + 1]
        grad = client_gradient(model, x, y)
        assert idlg_label_from_gradient(model, grad) == y.item()
        result = invert_gradient(model, grad, iterations=1, seed=0)
        assert result.labels.tolist() == y.tolist()


def test_idlg_refuses_where_the_trick_does_not_apply(mnist):
    x, y = mnist.images[:1], mnist.labels[:1]
    torch.manual_seed(0)
    signed = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.Tanh(), nn.Linear(16, 10))
    with pytest.raises(ValueError, match="sign pattern"):
        idlg_label_from_gradient(signed, client_gradient(signed, x, y))
    with pytest.raises(ValueError, match="sign pattern"):  # the default idlg=True refuses too
        invert_gradient(signed, client_gradient(signed, x, y), iterations=1)
    model = LeNetSigmoid(seed=0)
    g = torch.Generator().manual_seed(0)
    noisy = [t + 0.1 * torch.randn(t.shape, generator=g) for t in client_gradient(model, x, y)]
    with pytest.raises(ValueError, match="noise was added"):  # DP noise: refuse, don't guess
        idlg_label_from_gradient(model, noisy)
    conv_only = nn.Sequential(nn.Conv2d(1, 10, 28), nn.Flatten())
    with pytest.raises(ValueError, match="no nn.Linear layer"):
        invert_gradient(conv_only, client_gradient(conv_only, x, y), iterations=1)
    # two images in one gradient: the pattern is gone (two negative rows, or mixed signs)
    model = LeNetSigmoid(seed=0)
    pair = mnist.labels[:2]
    if pair[0] != pair[1]:
        with pytest.raises(ValueError, match="sign pattern"):
            idlg_label_from_gradient(model, client_gradient(model, mnist.images[:2], pair))
    # DLG without the trick still works on the tanh model: it just optimises a soft label
    result = invert_gradient(signed, client_gradient(signed, x, y), idlg=False, iterations=1)
    assert result.labels.shape == (1,)


def test_more_attack_budget_recovers_a_batch_that_a_small_budget_does_not(mnist):
    """What lesson 12 claims: a batch of 2 "resists" a short attack only because the attack was
    stopped early."""
    model = LeNetSigmoid(seed=0)
    x, y = mnist.images[:2], mnist.labels[:2]
    grad = client_gradient(model, x, y)
    short = invert_gradient(model, grad, num_images=2, labels=y, iterations=3, seed=0)
    long = invert_gradient(model, grad, num_images=2, labels=y, iterations=25, seed=0)
    short_psnr = psnr(match_reconstructions(short.images, x), x).mean()
    long_psnr = psnr(match_reconstructions(long.images, x), x).mean()
    assert short_psnr < 25.0 < 35.0 < long_psnr


def test_the_attack_stops_once_it_has_converged(mnist):
    model = LeNetSigmoid(seed=0)
    x, y = mnist.images[:1], mnist.labels[:1]
    grad = client_gradient(model, x, y)
    result = invert_gradient(model, grad, iterations=200, seed=0, record_every=7)
    steps = len(result.losses)
    assert steps < 200
    last, before = result.losses[-1], result.losses[-2]
    assert before - last < 1e-4 * before  # the step that triggered the stop made no progress
    assert all(
        a - b >= 1e-4 * a for a, b in zip(result.losses[:-2], result.losses[1:-1], strict=True)
    )
    assert result.snapshots[-1][0] == steps  # the last step is recorded
    assert psnr(result.images[0], x[0]) > 50.0
    full = invert_gradient(model, grad, iterations=steps + 3, seed=0, tolerance=0)
    assert len(full.losses) == steps + 3  # tolerance=0 spends the whole budget


@pytest.mark.parametrize("device", DEVICES)
def test_the_attack_runs_on_the_models_device(mnist, device):
    model = LeNetSigmoid(seed=0).to(device)
    x, y = mnist.images[:1].to(device), mnist.labels[:1].to(device)
    result = invert_gradient(model, client_gradient(model, x, y), iterations=2, record_every=1)
    assert result.images.device.type == device and result.labels.device.type == device
    assert result.snapshots[0][1].device.type == device
    assert float(psnr(result.images, x)[0]) == pytest.approx(psnr(result.images[0], x[0]))
    assert match_reconstructions(result.images, x).device.type == device
    assert 0 < ssim(result.images[0], x[0]) <= 1


@pytest.mark.parametrize("flag", [True, np.bool_(True)])
@pytest.mark.parametrize(
    "name", ["num_images", "iterations", "record_every", "seed", "tolerance", "lr"]
)
def test_bools_are_refused_before_the_attack_starts(mnist, flag, name):
    model = LeNetSigmoid(seed=0)
    grad = client_gradient(model, mnist.images[:1], mnist.labels[:1])
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(TypeError, match=name):
        invert_gradient(model, grad, **{name: flag})
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


def test_numpy_integers_are_taken(mnist):
    model = LeNetSigmoid(seed=0)
    grad = client_gradient(model, mnist.images[:1], mnist.labels[:1])
    kwargs = {"iterations": 2, "record_every": 1, "seed": 3}
    result = invert_gradient(
        model,
        grad,
        num_images=np.int64(1),
        tolerance=np.float64(0.0),
        **{k: np.int64(v) for k, v in kwargs.items()},
    )
    reference = invert_gradient(model, grad, num_images=1, tolerance=0.0, **kwargs)
    assert torch.equal(result.images, reference.images)
    assert result.losses == reference.losses
