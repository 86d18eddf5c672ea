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

import torch

from course_lib.fixed_point import check_ring_tensor
from course_lib.validation import check_int_in_range

__all__ = ["ring_matmul", "ring_conv2d", "conv2d_output_shape", "check_on_cpu"]


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
    if padding:
        x = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    kh, kw = w.shape[2], w.shape[3]
    patches = x.unfold(2, kh, stride).unfold(3, kw, stride)  # N, C, OH, OW, kh, kw
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, -1)
    out = ring_matmul(patches, w.reshape(o, -1).T)
    return out.reshape(n, oh, ow, o).permute(0, 3, 1, 2).contiguous()
