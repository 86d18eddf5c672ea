"""course_lib.plots: captions never overlap images; the convolution picture checks its shapes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from course_lib.plots import show_convolution, show_images  # noqa: E402


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize(
    ("n", "ncols", "title"), [(24, 12, "a title"), (16, 8, None), (3, 8, None)]
)
def test_captions_never_overlap_an_image(n, ncols, title):
    labels = torch.arange(n) % 10
    fig = show_images(
        torch.rand(n, 28, 28), labels, predictions=(labels + 1) % 10, ncols=ncols, title=title
    )
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == n
    for ax in axes:
        caption = ax.title.get_window_extent(renderer)
        for other in axes:
            image = other.get_window_extent(renderer)
            assert not _overlaps(caption, image), f"caption {ax.title.get_text()!r} covers an image"


def test_show_convolution_draws_one_row_per_kernel_and_outlines_the_window():
    image = torch.rand(28, 28)
    kernels = torch.randn(3, 3, 3)
    maps = nn.functional.conv2d(image[None, None], kernels[:, None])
    pooled = nn.functional.max_pool2d(maps, 2)
    fig = show_convolution(image, kernels, maps, pooled, window=(5, 7))
    assert len(fig.axes) == 12
    window = fig.axes[0].patches[0]
    assert (window.get_x(), window.get_y(), window.get_width()) == (6.5, 4.5, 3)
    assert fig.axes[2].patches[0].get_width() == 1


def test_show_convolution_rejects_shapes_that_do_not_fit():
    image, kernels = torch.rand(28, 28), torch.randn(2, 3, 3)
    with pytest.raises(ValueError, match=r"feature maps of shape \(2, 26, 26\)"):
        show_convolution(image, kernels, torch.rand(2, 28, 28))
    maps = nn.functional.conv2d(image[None, None], kernels[:, None])
    with pytest.raises(ValueError, match="outside the feature map"):
        show_convolution(image, kernels, maps, window=(26, 0))
    with pytest.raises(ValueError, match="kernel names"):
        show_convolution(image, kernels, maps, kernel_names=["one"])
