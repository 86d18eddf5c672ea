"""Image datasets as files on disk: one folder per class, one PNG per image (lesson 02).

Real image data rarely comes as a tensor: it is a folder of files, sorted into a sub-folder per
class — the layout ``torchvision.datasets.ImageFolder`` reads. :func:`write_image_folder` writes
such a folder from an in-memory dataset, so a lesson can practise loading image files offline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from course_lib.data import ImageDataset
from course_lib.validation import check_positive_int

__all__ = ["write_image_folder"]


def write_image_folder(
    dataset: ImageDataset, root: str | Path, *, per_class: int | None = None
) -> Path:
    """Save ``dataset`` as ``root/<class name>/<index>.png`` grey 8-bit PNGs; returns ``root``.

    ``per_class`` keeps only the first that many images of each class (all when None). PNG is
    lossless and the course's images are bytes divided by 255, so reading a file back and dividing
    by 255 gives exactly the tensor it was written from. ``<index>`` is the image's position in
    ``dataset``, zero-padded so that files sort in dataset order.

    Raises TypeError for something that is not an :class:`~course_lib.data.ImageDataset`,
    ValueError for a non-positive ``per_class``, images that are not (N, 1, H, W) in [0, 1], or a
    ``root`` that exists and is not an empty folder — all before anything is written.
    """
    if not isinstance(dataset, ImageDataset):
        raise TypeError(
            f"write_image_folder needs a course_lib ImageDataset (e.g. load_mnist()), "
            f"got {type(dataset).__name__}"
        )
    if per_class is not None:
        per_class = check_positive_int(per_class, "per_class")
    images = dataset.images
    if images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(f"expected grey images (N, 1, H, W), got shape {tuple(images.shape)}")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ValueError("pixel values must lie in [0, 1] to be saved as 8-bit PNGs")
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ValueError(f"{root} already exists and is not an empty folder: pick a new one")
    width = len(str(max(len(dataset) - 1, 0)))
    pixels = (images[:, 0] * 255).round().to(torch.uint8).numpy()
    labels = dataset.labels.tolist()
    written = dict.fromkeys(range(len(dataset.classes)), 0)
    for index, label in enumerate(labels):
        if per_class is not None and written[label] >= per_class:
            continue
        folder = root / dataset.classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(pixels[index])).save(folder / f"{index:0{width}d}.png")
        written[label] += 1
    return root
