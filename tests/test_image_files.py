"""Lesson 02's image files: written PNGs read back exactly, with ImageFolder and by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import datasets, transforms

from course_lib.data import ImageDataset
from course_lib.image_files import write_image_folder


def _digits(n: int = 30, seed: int = 0) -> ImageDataset:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (n, 1, 28, 28), generator=generator)
    labels = torch.arange(n) % 3
    return ImageDataset(
        pixels.float() / 255, labels, name="toy", source="test", classes=["zero", "one", "two"]
    )


def test_image_folder_reads_back_every_pixel_and_label(tmp_path):
    data = _digits()
    root = write_image_folder(data, tmp_path / "digits")
    folder = datasets.ImageFolder(
        root, transform=transforms.Compose([transforms.Grayscale(1), transforms.ToTensor()])
    )
    assert folder.classes == sorted(data.classes)
    assert len(folder) == len(data)
    # ImageFolder numbers the classes alphabetically: map its labels back to the dataset's
    to_ours = {i: data.classes.index(name) for i, name in enumerate(folder.classes)}
    for (path, label), (image, _) in zip(folder.samples, folder, strict=True):
        index = int(path.rsplit("/", 1)[-1].removesuffix(".png"))
        assert to_ours[label] == int(data.labels[index])
        assert torch.equal(image, data.images[index])


def test_per_class_keeps_the_first_images_of_each_class(tmp_path):
    data = _digits()
    root = write_image_folder(data, tmp_path / "few", per_class=2)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    assert files == [
        "one/01.png",
        "one/04.png",
        "two/02.png",
        "two/05.png",
        "zero/00.png",
        "zero/03.png",
    ]
    assert Image.open(root / "one" / "04.png").mode == "L"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"per_class": 0}, ValueError, "per_class"),
        ({"per_class": 1.5}, TypeError, "per_class"),
        ({"per_class": True}, TypeError, "per_class"),
        ({"per_class": np.bool_(True)}, TypeError, "per_class"),
    ],
)
def test_bad_arguments_fail_before_writing(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        write_image_folder(_digits(), tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_refuses_a_tensor_dataset_and_a_non_empty_folder(tmp_path):
    with pytest.raises(TypeError, match="ImageDataset"):
        write_image_folder(torch.utils.data.TensorDataset(torch.zeros(2)), tmp_path / "x")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not an empty folder"):
        write_image_folder(_digits(), tmp_path / "busy")
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["notes.txt"]


def test_refuses_pixels_outside_0_1(tmp_path):
    data = _digits()
    bright = ImageDataset(data.images * 2, data.labels, name="x", source="t", classes=data.classes)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        write_image_folder(bright, tmp_path / "bright")
    assert not (tmp_path / "bright").exists()


def test_per_class_takes_a_numpy_integer(tmp_path):
    root = write_image_folder(_digits(), tmp_path / "out", per_class=np.int64(2))
    counts = {folder.name: len(list(folder.iterdir())) for folder in root.iterdir()}
    assert counts and set(counts.values()) == {2}
