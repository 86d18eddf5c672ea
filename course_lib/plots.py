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

__all__ = ["plot_history", "show_convolution", "show_images"]

#: Height (inches) reserved above each image of :func:`show_images` for its caption.
CAPTION_HEIGHT = 0.25


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
    for what, seq in (("labels", labels), ("predictions", predictions)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"{n} images but {len(seq)} {what}")
    ncols = min(ncols, n)
    nrows = (n + ncols - 1) // ncols
    caption_height = CAPTION_HEIGHT if labels is not None or predictions is not None else 0.0
    # constrained layout reserves room for every caption, so a second row's titles never overlap
    # the images above them (tight_layout only spaced the grid as a whole)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(scale * ncols, (scale + caption_height) * nrows + (0.4 if title else 0)),
        squeeze=False,
        layout="constrained",
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
            vmin=-limit if limit is not None else None,  # limit is set exactly when symmetric
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
    return fig


def show_convolution(
    image: torch.Tensor,
    kernels: torch.Tensor,
    feature_maps: torch.Tensor,
    pooled: torch.Tensor | None = None,
    *,
    window: tuple[int, int] = (0, 0),
    kernel_names: Sequence[str] | None = None,
    scale: float = 2.0,
) -> Figure:
    """How a convolution layer sees an image: one row per kernel.

    Columns: the ``image`` (H, W) with the kernel's window at output position ``window`` (row,
    column) outlined; the kernel (k, k); its feature map (H-k+1, W-k+1) with that one output value
    outlined — it is the sum of the window's pixels times the kernel's weights; and, when given,
    the ``pooled`` feature map. ``kernels`` has shape (K, k, k) or (K, 1, k, k), ``feature_maps``
    (K, H-k+1, W-k+1) or (1, K, ·, ·) as ``torch.nn.functional.conv2d`` returns them (stride 1,
    no padding), ``pooled`` likewise. Raises ValueError when the shapes do not fit together.
    """
    from matplotlib.patches import Rectangle

    image = torch.as_tensor(image).detach().cpu().squeeze()
    kernels = torch.as_tensor(kernels).detach().cpu().reshape(-1, *kernels.shape[-2:])
    maps = torch.as_tensor(feature_maps).detach().cpu().reshape(-1, *feature_maps.shape[-2:])
    if image.dim() != 2:
        raise ValueError(f"image must be one grey image (H, W), got shape {tuple(image.shape)}")
    k = kernels.shape[-1]
    expected = (len(kernels), image.shape[0] - k + 1, image.shape[1] - k + 1)
    if kernels.shape[-2] != k or tuple(maps.shape) != expected:
        raise ValueError(
            f"{len(kernels)} kernels of {tuple(kernels.shape[-2:])} on a "
            f"{tuple(image.shape)} image give feature maps of shape {expected}, "
            f"got {tuple(maps.shape)}"
        )
    row, col = window
    if not (0 <= row < expected[1] and 0 <= col < expected[2]):
        raise ValueError(f"window {window} lies outside the feature map of {expected[1:]}")
    if pooled is not None:
        pooled = torch.as_tensor(pooled).detach().cpu().reshape(-1, *pooled.shape[-2:])
        if len(pooled) != len(kernels):
            raise ValueError(f"{len(kernels)} kernels but {len(pooled)} pooled maps")
    if kernel_names is not None and len(kernel_names) != len(kernels):
        raise ValueError(f"{len(kernels)} kernels but {len(kernel_names)} kernel names")
    ncols = 3 if pooled is None else 4
    fig, axes = plt.subplots(
        len(kernels),
        ncols,
        figsize=(scale * ncols, (scale + CAPTION_HEIGHT) * len(kernels)),
        squeeze=False,
        layout="constrained",
    )
    for i, ax_row in enumerate(axes):
        name = kernel_names[i] if kernel_names is not None else f"kernel {i}"
        limit = kernels[i].abs().max().item() or 1.0
        panels = [
            (image, "gray", None, "image"),
            (kernels[i], "RdBu", limit, name),
            (maps[i], "RdBu", maps[i].abs().max().item() or 1.0, "feature map"),
        ]
        if pooled is not None:
            panels.append((pooled[i], "RdBu", pooled[i].abs().max().item() or 1.0, "max-pooled"))
        for ax, (values, cmap, lim, caption) in zip(ax_row, panels, strict=True):
            ax.imshow(values, cmap=cmap, vmin=-lim if lim else None, vmax=lim)
            ax.set_title(caption, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        for ax, size in ((ax_row[0], k), (ax_row[2], 1)):  # the window and the pixel it produces
            outline = Rectangle(
                (col - 0.5, row - 0.5), size, size, fill=False, edgecolor="orange", linewidth=2
            )
            ax.add_patch(outline)
    return fig
