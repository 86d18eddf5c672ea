"""Plots every lesson reuses: training curves and image grids.

Each function draws on a new (or given) matplotlib figure and returns the figure, so a notebook can
show it inline and a test can inspect it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from course_lib.training import History

__all__ = ["plot_history", "show_images"]


def plot_history(
    history: History | Mapping[str, History],
    *,
    title: str | None = None,
    figsize: tuple[float, float] = (9, 3),
) -> Figure:
    """Loss and accuracy per epoch; pass ``{"label": history, ...}`` to compare several runs.

    Solid lines are training metrics, dashed lines validation metrics (when recorded).
    """
    runs = {"": history} if isinstance(history, History) else dict(history)
    if not runs:
        raise ValueError("plot_history needs at least one History")
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=figsize)
    for label, run in runs.items():
        epochs = range(1, run.epochs + 1)
        prefix = f"{label} " if label else ""
        (line,) = ax_loss.plot(epochs, run.train_loss, marker=".", label=f"{prefix}train")
        ax_acc.plot(
            epochs, run.train_acc, marker=".", color=line.get_color(), label=f"{prefix}train"
        )
        if run.val_loss:
            ax_loss.plot(
                epochs, run.val_loss, "--", color=line.get_color(), label=f"{prefix}validation"
            )
            ax_acc.plot(
                epochs, run.val_acc, "--", color=line.get_color(), label=f"{prefix}validation"
            )
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def show_images(
    images: torch.Tensor,
    labels: Sequence[int] | torch.Tensor | None = None,
    *,
    predictions: Sequence[int] | torch.Tensor | None = None,
    class_names: Sequence[str] | None = None,
    ncols: int = 8,
    title: str | None = None,
    cmap: str = "gray",
    symmetric: bool = False,
    scale: float = 1.2,
) -> Figure:
    """A grid of images, captioned with their label (and prediction, red when it is wrong).

    ``images`` has shape ``(N, H, W)`` or ``(N, C, H, W)`` with C = 1 or 3. With ``symmetric``
    each image's colour scale is centred on zero (for weights or gradients with a diverging cmap).
    """
    images = torch.as_tensor(images).detach().cpu()
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"images must have shape (N, H, W) or (N, C, H, W), got {tuple(images.shape)}"
        )
    n = len(images)
    if n == 0:
        raise ValueError("show_images needs at least one image")
    for name, seq in (("labels", labels), ("predictions", predictions)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"{n} images but {len(seq)} {name}")
    ncols = min(ncols, n)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(scale * ncols, scale * nrows + (0.4 if title else 0)), squeeze=False
    )

    def name(i: int) -> str:
        return class_names[i] if class_names is not None else str(i)

    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= n:
            continue
        img = images[k]
        limit = img.abs().max().item() if symmetric else None
        ax.imshow(
            img[0] if img.shape[0] == 1 else img.permute(1, 2, 0),
            cmap=cmap,
            vmin=-limit if symmetric else None,
            vmax=limit,
        )
        caption, color = [], "black"
        if labels is not None:
            caption.append(name(int(labels[k])))
        if predictions is not None:
            caption.append(f"→{name(int(predictions[k]))}")
            if labels is not None and int(predictions[k]) != int(labels[k]):
                color = "red"
        if caption:
            ax.set_title(" ".join(caption), fontsize=8, color=color)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
