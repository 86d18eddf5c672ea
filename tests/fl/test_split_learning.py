"""Split learning: the split network computes exactly the unsplit network's gradients, logs what
crosses the wire, and its leakage helpers work."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from course_lib.fl.split_learning import (
    SplitNN,
    cluster_accuracy,
    fit_activation_decoder,
    split_sequential,
)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(4 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 10),
    )  # fmt: skip


def _batch(n=6):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("cut", [1, 3, 5])
def test_split_gradients_equal_the_unsplit_networks(cut):
    full = _model()
    reference = copy.deepcopy(full)
    x, y = _batch()
    F.cross_entropy(reference(x), y).backward()
    client, server = split_sequential(full, cut)
    split = SplitNN(client, server)
    split.compute_gradients(x, y)
    for (name, p), q in zip(full.named_parameters(), reference.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name


def test_u_shaped_gradients_equal_too_and_labels_stay_home():
    full = _model()
    reference = copy.deepcopy(full)
    x, y = _batch()
    F.cross_entropy(reference(x), y).backward()
    split = SplitNN(full[:3], full[3:6], client_head=full[6])
    loss = split.compute_gradients(x, y)
    assert loss.item() == pytest.approx(F.cross_entropy(reference(x), y).item(), rel=1e-6)
    for p, q in zip(full.parameters(), reference.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-6)
    sent = {what for _, what, _ in split.wire.entries}
    assert "labels" not in sent
    assert len(split.server_received_gradients) == 1


def test_wire_log_counts_bytes():
    full = _model()
    x, y = _batch(6)
    split = SplitNN(full[:3], full[3:])
    split.train_step(x, y)
    summary = split.wire.summary()
    assert summary[("client → server", "cut-layer activations")] == (1, 6 * 4 * 4 * 4 * 4)
    assert summary[("client → server", "labels")] == (1, 6 * 8)
    assert summary[("server → client", "gradient of activations")] == (1, 6 * 4 * 4 * 4 * 4)


def test_training_lowers_the_loss():
    full = _model()
    g = torch.Generator().manual_seed(2)
    patterns = torch.rand(10, 1, 8, 8, generator=g)  # one pattern per class, plus noise
    y = torch.arange(40) % 10
    x = patterns[y] + 0.1 * torch.randn(40, 1, 8, 8, generator=g)
    split = SplitNN(full[:3], full[3:], lr=1.0)
    losses = split.fit([(x, y)] * 10, epochs=8, progress=False)
    assert losses[-1] < 0.5 * losses[0], losses


def test_bad_input_gives_clear_errors():
    full = _model()
    split = SplitNN(full[:3], full[3:])
    x, y = _batch()
    with pytest.raises(ValueError, match="labels"):
        split.compute_gradients(x, y[:3])
    with pytest.raises(TypeError, match="int64"):
        split.compute_gradients(x, y.float())
    with pytest.raises(ValueError, match="cut"):
        split_sequential(full, 0)
    with pytest.raises(ValueError, match="cut"):
        split_sequential(full, len(full))
    with pytest.raises(TypeError):
        split_sequential(nn.Linear(2, 2), 1)
    with pytest.raises(ValueError, match="learning rate"):
        SplitNN(full[:3], full[3:], lr=0)


def test_decoder_inverts_an_injective_cut_layer():
    torch.manual_seed(0)
    layer = nn.Linear(64, 100)  # injective: activations determine the input
    inputs = torch.rand(300, 1, 8, 8)
    with torch.no_grad():
        acts = layer(inputs.flatten(1))
    decode = fit_activation_decoder(acts[:200], inputs[:200], ridge=1e-6)
    assert torch.allclose(decode(acts[200:]), inputs[200:], atol=1e-3)


def test_cluster_accuracy_is_label_permutation_invariant():
    labels = np.array([0, 0, 1, 1, 2, 2])
    assert cluster_accuracy(np.array([2, 2, 0, 0, 1, 1]), labels) == 1.0
    assert cluster_accuracy(np.array([0, 0, 0, 0, 0, 0]), labels) == pytest.approx(1 / 3)


DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
    ),
]


@pytest.mark.parametrize("device", DEVICES)
def test_split_learning_and_its_attacks_follow_the_models_device(device):
    from course_lib.fl.split_learning import cluster_gradients

    full = _model().to(device)
    split = SplitNN(full[:3], full[3:], client_head=None, lr=0.1)
    x, y = _batch()  # CPU batches, as a DataLoader yields them
    losses = split.fit([(x, y)], epochs=1, progress=False)
    assert np.isfinite(losses[0])
    assert split.predict(x).device.type == device
    assert 0.0 <= split.evaluate(x, y) <= 1.0
    acts = full[:3](x.to(device)).detach()
    decode = fit_activation_decoder(acts, x.to(device))
    assert decode(acts).device.type == device
    clusters = cluster_gradients(torch.randn(6, 4, device=device), 2)
    assert cluster_accuracy(clusters, y.to(device)) > 0


@pytest.mark.parametrize("flag", [True, np.bool_(True)])
def test_split_sequential_refuses_a_bool_cut_and_takes_a_numpy_integer(flag):
    full = _model()
    with pytest.raises(TypeError, match="cut"):
        split_sequential(full, flag)  # True == 1 would silently cut after the first layer
    client, server = split_sequential(full, np.int64(2))
    assert len(client) == 2 and len(server) == len(full) - 2
    assert client[0] is full[0] and server[0] is full[2]
