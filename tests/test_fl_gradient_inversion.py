"""Gradient inversion: DLG/iDLG rebuild an image from one shared gradient; the metrics behave."""

from __future__ import annotations

import pytest
import torch

from course_lib.data import load_mnist
from course_lib.fl.gradient_inversion import (
    LeNetSigmoid,
    client_gradient,
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
