"""Flower's simulation engine runs the same FedAvg as course_lib: same weights, same accuracy."""

import torch
from torch.utils.data import TensorDataset

from course_lib.fl.fedavg import run_fedavg
from course_lib.fl.flower import run_flower_fedavg
from course_lib.models import MLP


def small_model():
    return MLP(in_features=16, hidden=(8,), num_classes=3)


def test_two_clients_one_round_matches_course_lib():
    g = torch.Generator().manual_seed(0)
    means = torch.randn(3, 16, generator=g) * 3
    y = torch.randint(0, 3, (160,), generator=g)
    x = (means[y] + torch.randn(160, 16, generator=g)).reshape(160, 1, 4, 4)
    clients = [TensorDataset(x[:50], y[:50]), TensorDataset(x[50:120], y[50:120])]
    test = TensorDataset(x[120:], y[120:])
    kwargs = dict(rounds=1, local_epochs=2, lr=0.2, batch_size=16, seed=3)

    ours = run_fedavg(small_model, clients, test, progress=False, **kwargs)
    flower = run_flower_fedavg(small_model, clients, test, num_cpus=2, **kwargs)

    assert flower.rounds == ours.rounds == 1
    assert flower.client_sizes == [50, 70]
    assert len(flower.round_seconds) == 1 and flower.round_seconds[0] > 0
    # Flower aggregates in float32 numpy: equal up to rounding
    for name, tensor in ours.model.state_dict().items():
        torch.testing.assert_close(flower.model.state_dict()[name], tensor, atol=1e-5, rtol=1e-5)
    assert abs(flower.test_loss[0] - ours.test_loss[0]) < 1e-4
    assert flower.test_acc == ours.test_acc
    assert abs(flower.train_loss[0] - ours.train_loss[0]) < 1e-5
    assert ours.test_acc[0] > 0.5  # it learned something (chance is 1/3)
