"""Models, training loops, plots and transfer helpers of Part I."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from course_lib.data import ImageDataset
from course_lib.models import MLP, SmallCNN
from course_lib.plots import plot_history, show_images
from course_lib.training import (
    History,
    accuracy,
    evaluate,
    fit,
    make_loader,
    model_device,
    seed_everything,
)
from course_lib.transfer import (
    count_trainable,
    few_labels,
    freeze,
    pretrained_resnet18,
    select_classes,
)


def _blobs(n: int = 400) -> TensorDataset:
    """Two well-separated classes of 28×28 'images' (bright left half vs bright right half)."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 2
    images = torch.rand(n, 1, 28, 28, generator=g) * 0.3
    images[labels == 0, :, :, :14] += 0.7
    images[labels == 1, :, :, 14:] += 0.7
    return TensorDataset(images, labels)


def test_model_shapes_and_sizes() -> None:
    x = torch.rand(5, 1, 28, 28)
    assert MLP()(x).shape == (5, 10)
    assert sum(p.numel() for p in MLP(784, (128,), 10).parameters()) == 101_770
    cnn = SmallCNN()
    assert cnn(x).shape == (5, 10) and cnn.features(x).shape == (5, 512)
    assert sum(p.numel() for p in cnn.parameters()) == 26_010  # Opacus' MNIST example CNN
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in cnn.modules())
    with pytest.raises(ValueError, match="28, 28"):
        cnn(torch.rand(5, 1, 32, 32))
    with pytest.raises(ValueError, match="dropout"):
        MLP(dropout=1.0)


@pytest.mark.parametrize("model_fn", [lambda: MLP(hidden=(32,)), lambda: SmallCNN(num_classes=2)])
def test_fit_learns_a_separable_problem(model_fn) -> None:
    seed_everything(0)
    data = _blobs()
    history = fit(
        model_fn(),
        make_loader(data, 32),
        make_loader(data, 128, shuffle=False),
        epochs=3,
        lr=0.1,
        progress=False,
    )
    assert history.epochs == 3 and len(history.val_acc) == 3
    assert history.val_acc[-1] > 0.95 and history.train_loss[-1] < history.train_loss[0]
    assert "val_acc" in str(history)


def test_seed_everything_makes_training_reproducible() -> None:
    runs = []
    for _ in range(2):
        seed_everything(3)
        model = MLP(hidden=(16,))
        fit(model, make_loader(_blobs(64), 16, seed=3), epochs=1, progress=False)
        runs.append(torch.cat([p.flatten() for p in model.parameters()]))
    assert torch.equal(*runs)


def test_evaluate_and_accuracy() -> None:
    logits = torch.tensor([[3.0, 0.0], [0.0, 3.0], [3.0, 0.0]])
    assert accuracy(logits, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="labels"):
        accuracy(logits, torch.tensor([0, 1]))

    class Fixed(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return logits

    loss, acc = evaluate(Fixed(), [(torch.zeros(3), torch.tensor([0, 1, 1]))])
    assert acc == pytest.approx(2 / 3) and loss > 0


def test_training_rejects_bad_settings() -> None:
    loader = make_loader(_blobs(8), 4)
    with pytest.raises(ValueError, match="epochs"):
        fit(MLP(), loader, epochs=0)
    with pytest.raises(ValueError, match="learning rate"):
        fit(MLP(), loader, lr=-1.0)
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(_blobs(8), 0)
    with pytest.raises(TypeError, match="seed"):
        seed_everything("0")  # type: ignore[arg-type]


def test_plots_return_figures() -> None:
    history = History([1.0, 0.5], [0.5, 0.8], [1.1, 0.7], [0.4, 0.7])
    fig = plot_history({"a": history, "b": history})
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 4
    grid = show_images(
        torch.rand(10, 28, 28), torch.arange(10), predictions=torch.zeros(10), ncols=5
    )
    assert len(grid.axes) == 10 and grid.axes[1].title.get_color() == "red"
    with pytest.raises(ValueError, match="labels"):
        show_images(torch.rand(3, 28, 28), [1, 2])
    with pytest.raises(ValueError, match="History"):
        plot_history({})


def _digits() -> ImageDataset:
    labels = torch.arange(100) % 10
    return ImageDataset(
        torch.rand(100, 1, 28, 28),
        labels,
        name="digits",
        source="test",
        classes=[str(d) for d in range(10)],
    )


def test_select_classes_and_few_labels() -> None:
    five_to_nine = select_classes(_digits(), [5, 6, 7, 8, 9])
    assert len(five_to_nine) == 50 and five_to_nine.labels.unique().tolist() == [0, 1, 2, 3, 4]
    assert five_to_nine.classes == ["5", "6", "7", "8", "9"]
    few = few_labels(five_to_nine, 3)
    assert torch.equal(few.labels.bincount(), torch.full((5,), 3))
    with pytest.raises(ValueError, match="fewer than"):
        few_labels(five_to_nine, 11)
    with pytest.raises(ValueError, match="no class"):
        select_classes(_digits(), [3, 12])


def test_freeze_and_count_trainable() -> None:
    cnn = SmallCNN(num_classes=5)
    freeze(cnn.features)
    assert count_trainable(cnn) == 512 * 32 + 32 + 32 * 5 + 5
    assert not any(p.requires_grad for p in cnn.features.parameters())


def test_pretrained_resnet18_skips_cleanly(monkeypatch: pytest.MonkeyPatch) -> None:
    model, reason = pretrained_resnet18()
    assert model is None and "COURSE_OFFLINE" in reason
    import torchvision.models

    monkeypatch.setenv("COURSE_OFFLINE", "0")

    def no_network(**kwargs: object) -> None:
        raise OSError("no network")

    monkeypatch.setattr(torchvision.models, "resnet18", no_network)
    model, reason = pretrained_resnet18()
    assert model is None and "could not fetch" in reason


def test_loaders_accept_any_map_style_dataset_and_refuse_the_rest() -> None:
    from torch.utils.data import Subset

    data = _blobs(8)
    assert sum(len(y) for _, y in make_loader(Subset(data, range(5)), 2)) == 5
    with pytest.raises(TypeError, match="dataset"):
        make_loader(torch.zeros(8, 2), 4)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="batch_size"):
        make_loader(data, 2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="hidden"):
        MLP(hidden=(32.5,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="in_features"):
        MLP(in_features=0)


DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
    ),
]


@pytest.mark.parametrize("device", DEVICES)
def test_training_and_evaluation_follow_the_model_to_its_device(device) -> None:
    seed_everything(0)
    model = MLP(hidden=(8,), num_classes=2).to(device)
    loader = make_loader(_blobs(32), 8)  # CPU data
    history = fit(model, loader, loader, epochs=1, progress=False)
    assert len(history.val_acc) == 1
    assert model_device(model).type == device
    assert model_device(torch.nn.ReLU()) == torch.device("cpu")


# -- SmallCNNGroupNorm (issue #26: the DP-SGD recipe of benchmarks/dp_accuracy.py) ---------------


def test_small_cnn_group_norm_normalises_each_image_on_its_own() -> None:
    from course_lib.dp.dpsgd import DPSGD
    from course_lib.models import SmallCNNGroupNorm

    torch.manual_seed(0)
    plain = SmallCNN()
    torch.manual_seed(0)
    model = SmallCNNGroupNorm()
    # same parameters (no GroupNorm affine terms), same initialisation as SmallCNN
    assert sum(p.numel() for p in model.parameters()) == 26_010
    pairs = zip(plain.parameters(), model.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    x = torch.randn(6, 1, 28, 28)
    assert model(x).shape == (6, 10)
    assert isinstance(model.head[1], torch.nn.ReLU)
    assert isinstance(SmallCNNGroupNorm(activation="tanh").features[2], torch.nn.Tanh)
    # after the first GroupNorm, every group of 4 channels of every image has mean 0, variance 1
    normed = model.features[:2](x * 7.0 + 3.0)
    groups = normed.reshape(6, 4, -1)
    assert torch.allclose(groups.mean(-1), torch.zeros(6, 4), atol=1e-5)
    assert torch.allclose(groups.var(-1, unbiased=False), torch.ones(6, 4), atol=1e-3)
    # no example influences another's output (unlike BatchNorm): changing image 0 leaves 1–5
    changed = x.clone()
    changed[0] = torch.randn(1, 28, 28) * 5
    assert torch.equal(model(changed)[1:], model(x)[1:])
    assert not torch.allclose(model(changed)[0], model(x)[0])
    # every parameter sits in a Linear/Conv2d, so DP-SGD's fast path applies
    dp = DPSGD(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        expected_batch_size=6,
    )
    assert dp.method == "taps" and dp.fallback_reason is None


def test_small_cnn_group_norm_rejects_bad_settings() -> None:
    from course_lib.models import SmallCNNGroupNorm

    with pytest.raises(ValueError, match="divide 16 and 32"):
        SmallCNNGroupNorm(groups=3)
    with pytest.raises(ValueError, match="groups"):
        SmallCNNGroupNorm(groups=0)
    with pytest.raises(ValueError, match="activation"):
        SmallCNNGroupNorm(activation="sigmoid")
    with pytest.raises(ValueError, match=r"\(N, C, 28, 28\)"):
        SmallCNNGroupNorm()(torch.zeros(2, 1, 32, 32))
