"""Transfer learning helpers for lesson 03: class splits, few-label subsets, freezing, resnet18.

The offline-capable recipe: pretrain a network on some classes (digits 0–4), freeze its feature
extractor, and fine-tune only a new head on other classes (digits 5–9) from a handful of labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from course_lib.data import ImageDataset
from course_lib.paths import offline

__all__ = ["select_classes", "few_labels", "freeze", "count_trainable", "pretrained_resnet18"]


def select_classes(
    dataset: ImageDataset, classes: Sequence[int], *, relabel: bool = True
) -> ImageDataset:
    """The images of ``dataset`` whose label is in ``classes``.

    With ``relabel`` the labels become 0..len(classes)-1 in the given order (so digits 5–9 become
    0–4 and a 5-way head can learn them).
    """
    classes = list(classes)
    if not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be a non-empty list without repeats, got {classes}")
    unknown = set(classes) - set(range(len(dataset.classes)))
    if unknown:
        raise ValueError(f"{dataset.name} has no class {sorted(unknown)}")
    # CPU by design: datasets live on the CPU; training moves batches to the model's device
    keep = torch.isin(dataset.labels, torch.tensor(classes))
    labels = dataset.labels[keep]
    if relabel:
        # CPU by design: a label map for the CPU dataset's labels
        mapping = torch.full((len(dataset.classes),), -1, dtype=torch.int64)
        mapping[torch.tensor(classes)] = torch.arange(len(classes))  # CPU by design: as above
        labels = mapping[labels]
    names = [dataset.classes[c] for c in classes] if relabel else dataset.classes
    return ImageDataset(
        dataset.images[keep],
        labels,
        name=f"{dataset.name}{classes}",
        source=dataset.source,
        classes=names,
    )


def few_labels(dataset: ImageDataset, per_class: int, *, seed: int = 0) -> ImageDataset:
    """A balanced subset: ``per_class`` labelled images of every class (chosen by ``seed``)."""
    if per_class <= 0:
        raise ValueError(f"per_class must be positive, got {per_class}")
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(len(dataset.classes)):
        members = torch.nonzero(dataset.labels == c).flatten()
        if len(members) < per_class:
            raise ValueError(
                f"class {dataset.classes[c]!r} has only {len(members)} images, "
                f"fewer than per_class={per_class}"
            )
        # CPU by design: indices from a seeded CPU generator
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    index = torch.cat(chosen).sort().values
    return ImageDataset(
        dataset.images[index],
        dataset.labels[index],
        name=dataset.name,
        source=dataset.source,
        classes=dataset.classes,
    )


def freeze(module: nn.Module) -> nn.Module:
    """Stop gradients for every parameter of ``module`` (its weights stay as pretrained)."""
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


def count_trainable(model: nn.Module) -> int:
    """Number of parameters an optimiser would update."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def pretrained_resnet18() -> tuple[nn.Module | None, str]:
    """torchvision's ImageNet resnet18, or ``(None, reason)`` when its weights cannot be fetched.

    Weights are downloaded once into torch's cache; offline (``COURSE_OFFLINE=1`` or no network)
    the lesson skips this part cleanly instead of failing.
    """
    if offline():
        return (
            None,
            "COURSE_OFFLINE=1: skipping the pretrained resnet18 (its weights need a download)",
        )
    from torchvision.models import ResNet18_Weights, resnet18

    try:
        return resnet18(weights=ResNet18_Weights.DEFAULT), "ImageNet weights from torchvision"
    except Exception as error:  # no network, proxy, corrupt cache: say why and carry on
        return None, f"could not fetch resnet18 weights ({type(error).__name__}); skipping"
