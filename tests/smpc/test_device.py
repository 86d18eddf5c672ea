"""The SMPC engine is CPU by design (issue 16; see course_lib.smpc's docstring).

Real values from a GPU are copied to the CPU where they enter the engine; ring tensors (raw shares)
on another device are refused with a clear ValueError. The refusal is tested here on PyTorch's
``meta`` device (a non-CPU device every machine has); the copying runs under ``make gpu-check``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from course_lib.randomness import InsecureSeededRandom
from course_lib.smpc import (
    Session,
    SharedTensor,
    encrypted_predict,
    ring_conv2d,
    ring_matmul,
    share,
    share_xor,
)

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
ON_THE_CPU = "secret shares live on the CPU"


def _meta(*shape: int) -> torch.Tensor:
    return torch.zeros(shape, dtype=torch.int64, device="meta")


@pytest.mark.parametrize(
    "call",
    [
        lambda: share(_meta(3), 2),
        lambda: share_xor(_meta(3), 2),
        lambda: ring_matmul(_meta(2, 2), torch.zeros(2, 2, dtype=torch.int64)),
        lambda: ring_matmul(torch.zeros(2, 2, dtype=torch.int64), _meta(2, 2)),
        lambda: ring_conv2d(_meta(1, 1, 4, 4), torch.zeros(1, 1, 2, 2, dtype=torch.int64)),
        lambda: SharedTensor(_meta(2, 3), Session(rng=InsecureSeededRandom(0)), 16),
    ],
    ids=["share", "share_xor", "matmul-left", "matmul-right", "conv2d", "SharedTensor"],
)
def test_ring_tensors_off_the_cpu_are_refused_by_name(call):
    with pytest.raises(
        ValueError, match=f"is on meta, but {ON_THE_CPU}.*Session.share.*\\.cpu\\(\\)"
    ):
        call()


def test_the_engine_still_computes_on_the_cpu():
    s = Session(rng=InsecureSeededRandom(0))
    x, y = s.share(torch.tensor([1.5, -2.0])), s.share(torch.tensor([4.0, 0.25]))
    product = (x * y).reveal()
    assert product.device.type == "cpu"
    torch.testing.assert_close(product, torch.tensor([6.0, -0.5], dtype=torch.float64))


@CUDA
def test_cuda_values_are_shared_from_the_cpu_and_revealed_there():
    s = Session(rng=InsecureSeededRandom(0))
    x = s.share(torch.tensor([1.5, -2.0], device="cuda"))
    assert x.shares.device.type == "cpu"
    y = x * torch.tensor([2.0, 3.0], device="cuda") + torch.tensor([1.0, 1.0], device="cuda")
    torch.testing.assert_close(y.reveal(), torch.tensor([4.0, -5.0], dtype=torch.float64))
    k = s.share_integers(torch.tensor([3, -4], device="cuda"))
    assert torch.equal((k * torch.tensor([2, 2], device="cuda")).reveal(), torch.tensor([6, -8]))


@CUDA
def test_cuda_model_encrypted_prediction_matches_its_plaintext_prediction():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    model = model.cuda()
    x = torch.rand(4, 1, 6, 6, device="cuda")
    predicted = encrypted_predict(model, x, Session(rng=InsecureSeededRandom(1)))
    assert predicted.device.type == "cpu"
    assert torch.equal(predicted, model(x).argmax(dim=1).cpu())
    assert next(model.parameters()).device.type == "cuda"  # the model stays where it was
