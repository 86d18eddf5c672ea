"""Ring products modulo 2^64 (course_lib.smpc.ring): the shift-and-add convolution path."""

import pytest
import torch

from course_lib.randomness import InsecureSeededRandom
from course_lib.smpc import ring_conv2d, ring_matmul
from course_lib.smpc.ring import SHIFT_ADD_MIN_PATCH_WORDS, ring_patches

MOD = 2**64


def signed(value: int) -> int:
    value %= MOD
    return value - MOD if value >= 2**63 else value


@pytest.mark.parametrize(
    ("image_shape", "kernel_shape", "stride", "padding"),
    [((1, 1, 100, 100), (1, 1, 10, 10), 1, 0), ((1, 2, 120, 120), (2, 2, 11, 11), 2, 3)],
)
def test_shift_and_add_convolution_equals_im2col_and_big_integers(
    image_shape, kernel_shape, stride, padding
):
    """Few channels, big patch matrix: ring_conv2d adds shifted views; same ring result."""
    rng = InsecureSeededRandom(11)
    x, w = rng.int64(image_shape), rng.int64(kernel_shape)
    got = ring_conv2d(x, w, stride, padding)
    n, o, oh, ow = got.shape
    kh, kw = kernel_shape[2:]
    assert n * oh * ow * image_shape[1] * kh * kw >= SHIFT_ADD_MIN_PATCH_WORDS  # the new path
    patches = ring_patches(x, (kh, kw), stride, padding)
    im2col = ring_matmul(patches, w.reshape(o, -1).T).reshape(n, oh, ow, o).permute(0, 3, 1, 2)
    assert torch.equal(got, im2col)
    xp = torch.nn.functional.pad(x, (padding,) * 4).tolist()
    channels = range(image_shape[1])
    for i, j in [(0, 0), (oh - 1, ow - 1), (oh // 2, 3)]:
        for out in range(o):
            exact = sum(
                xp[0][c][stride * i + u][stride * j + v] * int(w[out, c, u, v])
                for c in channels
                for u in range(kh)
                for v in range(kw)
            )
            assert got[0, out, i, j].item() == signed(exact)
