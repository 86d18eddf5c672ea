"""FedAvg: equals centralised SGD where theory says so, averages correctly, rejects bad input."""

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from course_lib.fl.fedavg import (
    FedHistory,
    apply_delta,
    fedavg,
    local_train,
    run_fedavg,
    state_delta,
)
from course_lib.fl.partition import client_subsets, partition_iid
from course_lib.models import MLP


def toy_data(n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 4, 4, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return TensorDataset(x, y)


def toy_model(seed=0):
    torch.manual_seed(seed)
    return MLP(in_features=16, hidden=(8,), num_classes=3)


def centralised_step(model, dataset, lr):
    """One full-batch gradient-descent step on all the data."""
    x, y = dataset.tensors
    model = copy.deepcopy(model)
    loss = nn.functional.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    with torch.no_grad():
        for p, g in zip(model.parameters(), grads, strict=True):
            p -= lr * g
    return model.state_dict()


def assert_states_close(a, b, atol=1e-6):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0)


def test_one_client_one_full_batch_step_is_centralised_sgd():
    data, model = toy_data(), toy_model()
    expected = centralised_step(model, data, lr=0.3)
    history = run_fedavg(
        lambda: copy.deepcopy(model),
        [data],
        data,
        rounds=1,
        lr=0.3,
        batch_size=len(data),
        progress=False,
    )
    assert_states_close(history.model.state_dict(), expected)


def test_fedavg_of_one_step_clients_is_one_centralised_step_on_the_union():
    # unequal client sizes: the average must be weighted by sample count to match
    data, model = toy_data(90), toy_model(1)
    parts = [torch.arange(0, 20), torch.arange(20, 50), torch.arange(50, 90)]
    states, weights = [], []
    for part in parts:
        client = TensorDataset(*(t[part] for t in data.tensors))
        states.append(
            local_train(copy.deepcopy(model), DataLoader(client, batch_size=len(part)), lr=0.5)
        )
        weights.append(len(part))
    assert_states_close(fedavg(states, weights), centralised_step(model, data, lr=0.5))
    # ... and an unweighted mean would not match
    unweighted = fedavg(states, [1, 1, 1])
    diff = max((unweighted[k] - fedavg(states, weights)[k]).abs().max() for k in unweighted)
    assert diff > 1e-4


def test_fedavg_weighted_average_by_hand():
    a = {"w": torch.tensor([1.0, 2.0]), "steps": torch.tensor(3)}
    b = {"w": torch.tensor([4.0, 8.0]), "steps": torch.tensor(6)}
    out = fedavg([a, b], [1, 2])
    torch.testing.assert_close(out["w"], torch.tensor([3.0, 6.0]))
    assert out["steps"].dtype == torch.int64 and out["steps"].item() == 5
    assert out["w"].dtype == torch.float32
    # a zero-weight client does not count
    torch.testing.assert_close(fedavg([a, b], [0, 5])["w"], b["w"])


def test_local_train_returns_a_detached_copy_and_trains_in_place():
    data, model = toy_data(), toy_model()
    before = copy.deepcopy(model.state_dict())
    state = local_train(model, DataLoader(data, batch_size=16), epochs=2, lr=0.1)
    assert not torch.equal(state["net.1.weight"], before["net.1.weight"])
    assert torch.equal(state["net.1.weight"], model.state_dict()["net.1.weight"])
    with torch.no_grad():
        model.net[1].weight.add_(1.0)
    assert not torch.equal(state["net.1.weight"], model.state_dict()["net.1.weight"])


def test_fedprox_term_keeps_weights_near_the_start():
    data = toy_data()

    def drift(mu):
        model = toy_model()
        start = copy.deepcopy(model.state_dict())
        new = local_train(model, DataLoader(data, batch_size=8), epochs=5, lr=0.1, mu=mu)
        return sum((new[k] - start[k]).pow(2).sum() for k in new).sqrt().item()

    assert drift(mu=5.0) < 0.5 * drift(mu=0.0)


def test_deltas_round_trip():
    a, b = toy_model(0).state_dict(), toy_model(1).state_dict()
    assert_states_close(apply_delta(a, state_delta(b, a)), b)


def test_run_fedavg_learns_separable_data_and_records_each_round():
    torch.manual_seed(0)
    # a linearly separable 3-class problem: class means far apart
    means = torch.randn(3, 16) * 3
    y = torch.randint(0, 3, (600,))
    x = (means[y] + torch.randn(600, 16)).reshape(600, 1, 4, 4)
    train, test = TensorDataset(x[:500], y[:500]), TensorDataset(x[500:], y[500:])
    clients = client_subsets(train, partition_iid(y[:500], 5))
    calls = []

    def counting_fedavg(global_state, states, weights):
        calls.append(len(states))
        return fedavg(states, weights)

    history = run_fedavg(
        lambda: MLP(16, (8,), 3),
        clients,
        test,
        rounds=3,
        lr=0.3,
        local_epochs=2,
        clients_per_round=3,
        aggregate=counting_fedavg,
        progress=False,
    )
    assert isinstance(history, FedHistory)
    assert history.rounds == 3 and len(history.test_acc) == 3 and len(history.train_loss) == 3
    assert calls == [3, 3, 3]
    assert len(history.round_seconds) == 3 and min(history.round_seconds) > 0
    assert history.test_acc[-1] > 0.9  # chance is 1/3
    assert history.test_loss[-1] < history.test_loss[0]
    again = run_fedavg(
        lambda: MLP(16, (8,), 3),
        clients,
        test,
        rounds=3,
        lr=0.3,
        local_epochs=2,
        clients_per_round=3,
        progress=False,
    )
    assert again.test_acc == history.test_acc  # deterministic given the seed


def test_mismatched_models_are_rejected():
    small = MLP(16, (8,), 3).state_dict()
    wide = MLP(16, (9,), 3).state_dict()
    deep = MLP(16, (8, 8), 3).state_dict()
    with pytest.raises(ValueError, match="shape"):
        fedavg([small, wide], [1, 1])
    with pytest.raises(ValueError, match="different parameters"):
        fedavg([small, deep], [1, 1])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: fedavg([], []), "zero models"),
        (lambda: fedavg([{"w": torch.ones(2)}], [1, 2]), "1 client states but 2 weights"),
        (lambda: fedavg([{"w": torch.ones(2)}], [-1]), "non-negative"),
        (lambda: fedavg([{"w": torch.ones(2)}], [0]), "sum to zero"),
        (lambda: local_train(toy_model(), [], lr=0.1), "no batches"),
        (lambda: local_train(toy_model(), [], lr=0.0), "learning rate"),
        (lambda: local_train(toy_model(), [], mu=-1.0), "mu"),
        (lambda: local_train(toy_model(), [], epochs=0), "epochs"),
        (lambda: run_fedavg(toy_model, [], toy_data(), rounds=1), "at least one client"),
        (
            lambda: run_fedavg(
                toy_model,
                [toy_data(), TensorDataset(torch.ones(0, 16), torch.ones(0).long())],
                toy_data(),
                rounds=1,
            ),
            "client dataset 1 is empty",
        ),
        (lambda: run_fedavg(toy_model, [toy_data()], toy_data(), rounds=0), "rounds"),
        (
            lambda: run_fedavg(toy_model, [toy_data()], toy_data(), rounds=1, clients_per_round=2),
            "clients_per_round",
        ),
    ],
)
def test_bad_input_gives_a_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
    ),
]


@pytest.mark.parametrize(
    "bad",
    [
        torch.tensor([float("nan"), 1.0]),
        torch.tensor([float("inf"), 1.0]),
        torch.tensor([1.0, -float("inf")]),
        torch.full((2,), float("nan")),
        torch.full((2,), float("inf")),
    ],
)
def test_a_non_finite_client_is_refused_by_name_not_averaged(bad):
    good = {"w": torch.ones(2), "b": torch.zeros(1)}
    with pytest.raises(ValueError, match=r"client 2's model has NaN or ±inf in parameter 'w'"):
        fedavg([good, good, {"w": bad, "b": torch.zeros(1)}], [1, 1, 1])
    with pytest.raises(ValueError, match="the update has NaN or ±inf"):
        apply_delta(good, {"w": bad, "b": torch.zeros(1)})


def test_run_fedavg_stops_when_a_client_diverges_instead_of_poisoning_the_model():
    data = toy_data()
    x, y = data.tensors
    broken = TensorDataset(torch.full_like(x, float("nan")), y)
    with pytest.raises(ValueError, match="client 1's model has NaN"):
        run_fedavg(toy_model, [data, broken], data, rounds=1, progress=False)


def test_a_custom_aggregator_returning_nan_is_caught():
    def poisoned(global_state, states, weights):
        return {k: torch.full_like(v, float("nan")) for k, v in global_state.items()}

    with pytest.raises(ValueError, match="the aggregate of round 0 has NaN"):
        run_fedavg(
            toy_model, [toy_data()], toy_data(), rounds=1, aggregate=poisoned, progress=False
        )


def test_any_map_style_dataset_works_and_others_are_refused_up_front():
    data = toy_data()
    history = run_fedavg(
        toy_model,
        [torch.utils.data.Subset(data, range(30)), torch.utils.data.Subset(data, range(30, 60))],
        torch.utils.data.Subset(data, range(8)),
        rounds=1,
        progress=False,
    )
    assert len(history.test_acc) == 1
    with pytest.raises(TypeError, match="test_dataset must be a map-style torch Dataset"):
        run_fedavg(toy_model, [data], torch.zeros(4, 16), rounds=1, progress=False)
    with pytest.raises(TypeError, match="client dataset 0 must be a map-style torch Dataset"):
        run_fedavg(toy_model, [iter([(torch.zeros(16), 0)])], data, rounds=1, progress=False)


@pytest.mark.parametrize("device", DEVICES)
def test_local_training_and_averaging_follow_the_models_device(device):
    model = toy_model().to(device)
    state = local_train(model, DataLoader(toy_data(), batch_size=20), lr=0.1)
    assert all(t.device.type == device for t in state.values())
    averaged = fedavg([state, state], [1, 3])
    assert all(averaged[k].device.type == device for k in state)
    assert_states_close(averaged, state)
    moved = apply_delta(state, state_delta(state, state))
    assert all(t.device.type == device for t in moved.values())


@pytest.mark.parametrize("bad", [True, np.bool_(False), "0.1", None])
def test_a_bool_is_not_a_learning_rate_on_any_path(bad):
    """Issue 23 §5: FedAvg accepted ``lr=True`` (a step of 1.0). One rule, every entry point."""
    loader = DataLoader(toy_data(8), batch_size=4)
    with pytest.raises(TypeError, match="lr"):
        local_train(toy_model(), loader, lr=bad)
    with pytest.raises(TypeError, match="lr"):
        run_fedavg(toy_model, [toy_data()], toy_data(), rounds=1, lr=bad, progress=False)


def test_numpy_integers_are_integers_for_fedavg():
    """Issue 23 §5: NumPy integers pass wherever Python ints do (course_lib.validation)."""
    clients = client_subsets(toy_data(), partition_iid(toy_data().tensors[1], np.int64(2)))
    a = run_fedavg(
        toy_model, clients, toy_data(), rounds=np.int64(1), clients_per_round=np.int32(2),
        local_epochs=np.int64(1), progress=False,
    )  # fmt: skip
    b = run_fedavg(toy_model, clients, toy_data(), rounds=1, clients_per_round=2, progress=False)
    assert_states_close(a.model.state_dict(), b.model.state_dict(), atol=0)
    with pytest.raises(TypeError, match="rounds"):
        run_fedavg(toy_model, clients, toy_data(), rounds=True, progress=False)
