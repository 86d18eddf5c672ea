"""Matrix products and convolutions modulo 2^64.

torch ``int64`` arithmetic wraps around modulo 2^64, exactly the ring the shares live in, so a ring
matmul is just an int64 matmul. (We measured the alternative of cutting each 64-bit entry into
three 22-bit limbs and multiplying them with float64 BLAS — six float products, exact because every
partial sum stays below 2^53 — and on the course's 2-core machines plain int64 matmul was faster;
``benchmarks/smpc.py`` re-measures both.) Convolutions have no int64 kernel in PyTorch, so
:func:`ring_conv2d` unfolds image patches (im2col) and multiplies them with the kernels.

Ring tensors live on the CPU: CUDA has no int64 matrix product (cuBLAS multiplies only floating
point; pytorch/pytorch#44428), so :func:`check_on_cpu` refuses shares on another device with a
clear ``ValueError`` instead of PyTorch's ``"addmm_cuda" not implemented for 'Long'``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from course_lib.fixed_point import check_ring_tensor
from course_lib.validation import check_int_in_range

__all__ = [
    "ring_matmul",
    "ring_conv2d",
    "ring_patches",
    "conv2d_output_shape",
    "check_on_cpu",
]


def check_on_cpu(x: torch.Tensor, what: str) -> torch.Tensor:
    """Return ``x`` if it is on the CPU, where the SMPC engine keeps every ring tensor; else raise
    ``ValueError`` (see :mod:`course_lib.smpc`: shares are CPU tensors by design)."""
    if x.device.type != "cpu":
        raise ValueError(
            f"{what} is on {x.device}, but secret shares live on the CPU (CUDA has no int64 "
            "matrix product): share real values with Session.share, which copies them to the "
            "CPU, or move the ring tensor there yourself with .cpu()"
        )
    return x


def ring_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` modulo 2^64 for 2-D int64 tensors."""
    check_on_cpu(check_ring_tensor(a, "the left operand"), "the left operand")
    check_on_cpu(check_ring_tensor(b, "the right operand"), "the right operand")
    if a.dim() != 2 or b.dim() != 2:
        raise ValueError(
            f"ring_matmul multiplies 2-D matrices, got shapes {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.shape[1] != b.shape[0]:
        raise ValueError(
            f"cannot multiply shapes {tuple(a.shape)} and {tuple(b.shape)}: inner dimensions differ"
        )
    return a @ b


def conv2d_output_shape(
    image_shape: tuple[int, ...], kernel_shape: tuple[int, ...], stride: int, padding: int
) -> tuple[int, int, int, int]:
    """Shape of ``conv2d(image, kernel)`` — and a clear error when the shapes, ``stride`` (an int
    ≥ 1) or ``padding`` (an int ≥ 0) do not fit."""
    stride = check_int_in_range(stride, "stride", 1)
    padding = check_int_in_range(padding, "padding", 0)
    if len(image_shape) != 4 or len(kernel_shape) != 4:
        raise ValueError(
            "conv2d needs (N, C, H, W) images and (O, C, kh, kw) kernels, got "
            f"{tuple(image_shape)} and {tuple(kernel_shape)}"
        )
    n, c, h, w = image_shape
    o, kc, kh, kw = kernel_shape
    if c != kc:
        raise ValueError(f"the image has {c} channels but the kernel expects {kc}")
    if 0 in (c, o, kh, kw):
        raise ValueError(
            f"empty dimension: {c} channels, {o} kernels of {kh}×{kw} — nothing to convolve"
        )
    oh, ow = (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1
    if oh <= 0 or ow <= 0:
        raise ValueError(f"a {kh}×{kw} kernel does not fit a {h}×{w} image with padding {padding}")
    return n, o, oh, ow


def ring_conv2d(
    x: torch.Tensor, w: torch.Tensor, stride: int = 1, padding: int = 0
) -> torch.Tensor:
    """2-D convolution (cross-correlation, as ``torch.nn.functional.conv2d``) modulo 2^64, no bias.

    ``x`` is (N, C, H, W) and ``w`` is (O, C, kh, kw).
    """
    check_on_cpu(check_ring_tensor(x, "the image"), "the image")
    check_on_cpu(check_ring_tensor(w, "the kernel"), "the kernel")
    n, o, oh, ow = conv2d_output_shape(tuple(x.shape), tuple(w.shape), stride, padding)
    patch_words = n * oh * ow * x.shape[1] * w.shape[2] * w.shape[3]
    if o * x.shape[1] <= SHIFT_ADD_MAX_CHANNELS and patch_words >= SHIFT_ADD_MIN_PATCH_WORDS:
        return _shift_add_conv2d(x, w, stride, padding, (oh, ow))
    patches = ring_patches(x, (w.shape[2], w.shape[3]), stride, padding)
    out = ring_matmul(patches, w.reshape(o, -1).T)
    return out.reshape(n, oh, ow, o).permute(0, 3, 1, 2).contiguous()


#: With at most this many (output × input) channel pairs and an im2col patch matrix of at least
#: :data:`SHIFT_ADD_MIN_PATCH_WORDS` int64 words (4 MiB), :func:`ring_conv2d` adds up one shifted
#: view of the image per kernel tap instead of building the patches, which are kh·kw times the
#: image: CrypTen's benchmark convolution (one 10×10 kernel on a 100×100 image) copies 6.6 MB
#: into patches for a matrix–vector product. Measured with one thread: 1.0 ms instead of 2.2 ms
#: there, 1.5 vs 6.7 ms for two images; below these limits im2col is as fast or faster.
SHIFT_ADD_MAX_CHANNELS = 4
SHIFT_ADD_MIN_PATCH_WORDS = 2**19


def _shift_add_conv2d(
    x: torch.Tensor, w: torch.Tensor, stride: int, padding: int, out_hw: tuple[int, int]
) -> torch.Tensor:
    """conv2d as a sum over kernel taps ``(o, c, i, j)`` of ``w[o, c, i, j] · x[:, c, i::s, j::s]``
    (int64 multiply-adds with the tap as a scalar: exact modulo 2^64 like every ring operation).
    For few channels only: one torch call per tap."""
    (oh, ow), n = out_hw, x.shape[0]
    if padding:
        x = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    out = torch.zeros((n, w.shape[0], oh, ow), dtype=torch.int64)
    rows, cols = stride * (oh - 1) + 1, stride * (ow - 1) + 1
    for o, kernel in enumerate(w.tolist()):
        target = out[:, o]
        for c, taps in enumerate(kernel):
            for i, row in enumerate(taps):
                for j, tap in enumerate(row):
                    shifted = x[:, c, i : i + rows : stride, j : j + cols : stride]
                    target.add_(shifted, alpha=tap)
    return out


def ring_patches(
    x: torch.Tensor, kernel_size: Sequence[int], stride: int, padding: int
) -> torch.Tensor:
    """The image patches (im2col) a convolution multiplies: ``(N·OH·OW, C·kh·kw)`` for an
    ``(N, C, H, W)`` image, rows in ``(n, oh, ow)`` order, columns in ``(c, i, j)`` order — the
    order of ``kernel.reshape(O, -1)``. Internal: the caller has checked the shapes
    (:func:`conv2d_output_shape`)."""
    kh, kw = kernel_size
    if padding:
        x = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    patches = x.unfold(2, kh, stride).unfold(3, kw, stride)  # N, C, OH, OW, kh, kw
    n, _, oh, ow = patches.shape[:4]
    return patches.permute(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, -1)
