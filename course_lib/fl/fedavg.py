"""Federated averaging (McMahan et al., 2017) and FedProx (Li et al., 2020) in plain PyTorch.

One *round* of FedAvg:

1. the server sends the current global weights to the clients;
2. each client trains a copy on its own data for a few local epochs (:func:`local_train`);
3. each client sends back only its new weights — never its data;
4. the server averages them, weighting client ``k`` by its number of samples ``n_k``
   (:func:`fedavg`): ``w ← Σ_k (n_k / n) · w_k``.

With one client and one full-batch step this is exactly centralised gradient descent; with many
clients and many local steps the clients drift apart on non-IID data, which FedProx counters by
adding ``mu/2 · ||w − w_global||²`` to every client's loss.

:func:`run_fedavg` simulates a whole federation in one process, so lessons and benchmarks can
compare partitions, local epochs and ``mu`` in seconds.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from course_lib.fl.seeding import client_round_seed
from course_lib.training import History, evaluate, make_loader, model_device
from course_lib.validation import (
    check_dataset,
    check_int_in_range,
    check_nonnegative,
    check_positive,
    check_positive_int,
    dataset_size,
)

__all__ = [
    "FedHistory",
    "local_train",
    "local_train_with_metrics",
    "fedavg",
    "state_delta",
    "apply_delta",
    "run_fedavg",
]

State = dict[str, torch.Tensor]
#: ``aggregate(global_state, client_states, weights) -> new global state``
Aggregator = Callable[[State, Sequence[State], Sequence[float]], State]


def _check_training_args(epochs: int, lr: float, mu: float) -> tuple[int, float, float]:
    return (
        check_positive_int(epochs, "local epochs"),
        check_positive(lr, "the learning rate lr"),
        check_nonnegative(mu, "the FedProx coefficient mu (0 means plain FedAvg)"),
    )


def local_train_with_metrics(
    model: nn.Module, loader: Iterable, *, epochs: int, lr: float, mu: float
) -> tuple[State, float, float]:
    """:func:`local_train` that also returns the mean loss and accuracy of the last local epoch
    (what a client reports besides its weights). Batches are moved to ``model``'s device."""
    epochs, lr, mu = _check_training_args(epochs, lr, mu)
    anchor = [p.detach().clone() for p in model.parameters()] if mu > 0 else []
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    device = model_device(model)
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    for _ in range(epochs):
        loss_sum, correct, seen = 0.0, 0, 0
        for inputs, labels in loader:
            inputs, labels = inputs.to(device), labels.to(device)
            optimizer.zero_grad()
            logits = model(inputs)
            loss = nn.functional.cross_entropy(logits, labels)
            objective = loss
            if mu > 0:  # FedProx: pull the local weights towards the round's starting point
                drift = sum(
                    (p - a).pow(2).sum() for p, a in zip(model.parameters(), anchor, strict=True)
                )
                objective = loss + 0.5 * mu * drift
            objective.backward()
            optimizer.step()
            loss_sum += loss.item() * len(labels)
            correct += (logits.argmax(1) == labels).sum().item()
            seen += len(labels)
        if seen == 0:
            raise ValueError("a client's data loader yielded no batches (empty client dataset?)")
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return state, loss_sum / seen, correct / seen


def local_train(
    model: nn.Module, loader: Iterable, *, epochs: int = 1, lr: float = 0.05, mu: float = 0.0
) -> State:
    """A client's work in one round: SGD on its own data, starting from the weights in ``model``.

    ``model`` is trained in place (give each client its own copy); the returned state dict is a
    detached copy, safe to keep after ``model`` changes again. ``mu > 0`` adds FedProx's proximal
    term ``mu/2 · ||w − w_start||²`` towards the weights the model had when the call began.
    """
    state, _, _ = local_train_with_metrics(model, loader, epochs=epochs, lr=lr, mu=mu)
    return state


def _check_states(states: Sequence[Mapping[str, torch.Tensor]]) -> None:
    if len(states) == 0:
        raise ValueError("cannot average zero models: no client sent an update")
    reference = states[0]
    for i, state in enumerate(states[1:], start=1):
        if set(state) != set(reference):
            missing = sorted(set(reference) - set(state))
            extra = sorted(set(state) - set(reference))
            raise ValueError(
                f"client {i}'s model has different parameters from client 0's "
                f"(missing {missing}, unexpected {extra}): all clients must train the same model"
            )
        for name, tensor in state.items():
            if tensor.shape != reference[name].shape:
                raise ValueError(
                    f"parameter {name!r} has shape {tuple(tensor.shape)} on client {i} but "
                    f"{tuple(reference[name].shape)} on client 0: all clients must train the "
                    "same model"
                )


def _check_finite(state: Mapping[str, torch.Tensor], who: str) -> None:
    for name, tensor in state.items():
        if tensor.dtype.is_floating_point and not bool(torch.isfinite(tensor).all()):
            raise ValueError(
                f"{who} has NaN or ±inf in parameter {name!r}: averaging it would make the global "
                "model NaN. Its local training diverged (learning rate too large?) or its update "
                "is corrupt; leave that client out of the round"
            )


def fedavg(states: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]) -> State:
    """Weighted average of client state dicts: ``Σ_k weights[k] · states[k] / Σ_k weights[k]``.

    ``weights`` are usually the clients' sample counts. Every state must have the same keys and
    shapes. Sums are taken in float64 on the first state's device; integer buffers (e.g. a
    BatchNorm batch counter) are averaged and rounded to the nearest integer.

    Raises:
        ValueError: if a client's state holds a NaN or ±inf (the message names the client by its
            position): plain FedAvg has no clipping, so one such client would silently turn the
            whole global model into NaN. Plain FedAvg refuses rather than drops, because a
            diverged client usually means a setting to fix (compare :func:`course_lib.fl.
            dp_fedavg.dp_aggregate`, which drops and counts).
    """
    states = list(states)
    weights = [float(w) for w in weights]
    _check_states(states)
    for i, state in enumerate(states):
        _check_finite(state, f"client {i}'s model")
    if len(weights) != len(states):
        raise ValueError(f"{len(states)} client states but {len(weights)} weights")
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError(f"weights must be finite and non-negative, got {weights}")
    total = sum(weights)
    if total <= 0:
        raise ValueError("the weights sum to zero: at least one client must have data")
    averaged: State = {}
    for name, first in states[0].items():
        acc = torch.zeros(first.shape, dtype=torch.float64, device=first.device)
        for state, w in zip(states, weights, strict=True):
            acc += state[name].detach().to(device=first.device, dtype=torch.float64) * (w / total)
        if not (first.dtype.is_floating_point or first.dtype.is_complex):
            acc = acc.round()
        averaged[name] = acc.to(first.dtype)
    return averaged


def state_delta(new: Mapping[str, torch.Tensor], old: Mapping[str, torch.Tensor]) -> State:
    """A client's *update* ``new − old`` (what DP-FedAvg clips and secure aggregation masks)."""
    _check_states([old, new])
    return {k: new[k].detach() - old[k].detach() for k in old}


def apply_delta(state: Mapping[str, torch.Tensor], delta: Mapping[str, torch.Tensor]) -> State:
    """``state + delta``, parameter by parameter (keeps each parameter's dtype and device).

    Raises ``ValueError`` if ``delta`` holds a NaN or ±inf (it would make the model NaN).
    """
    _check_states([state, delta])
    _check_finite(delta, "the update")
    return {
        k: (state[k].detach() + delta[k].detach().to(state[k].device)).to(state[k].dtype)
        for k in state
    }


def _average_aggregate(
    global_state: State, states: Sequence[State], weights: Sequence[float]
) -> State:
    return fedavg(states, weights)


@dataclass
class FedHistory(History):
    """Per-round metrics of :func:`run_fedavg` (one entry per round).

    ``val_loss`` / ``val_acc`` are the *global* model's loss and accuracy on the test set after
    each round (also available as ``test_loss`` / ``test_acc``); ``train_loss`` / ``train_acc`` are
    the clients' last-local-epoch metrics, averaged by sample count — computed on the clients'
    private data and reported to the server, so they reveal something about that data too. It is a
    :class:`~course_lib.training.History`, so :func:`course_lib.plots.plot_history` draws it
    (its x axis then counts rounds).
    """

    client_sizes: list[int] = field(default_factory=list)
    #: wall-clock seconds of each round (local training, aggregation, evaluation)
    round_seconds: list[float] = field(default_factory=list)
    #: the final global model
    model: nn.Module | None = field(default=None, repr=False)

    @property
    def rounds(self) -> int:
        return self.epochs

    @property
    def test_loss(self) -> list[float]:
        return self.val_loss

    @property
    def test_acc(self) -> list[float]:
        return self.val_acc

    def __str__(self) -> str:
        return super().__str__().replace("epoch", "round", 1).replace("val_", "test_")


def run_fedavg(
    model_fn: Callable[[], nn.Module],
    client_datasets: Sequence[Dataset],
    test_dataset: Dataset,
    *,
    rounds: int,
    local_epochs: int = 1,
    lr: float = 0.05,
    batch_size: int = 32,
    mu: float = 0.0,
    seed: int = 0,
    progress: bool = True,
    clients_per_round: int | None = None,
    aggregate: Aggregator | None = None,
    model: nn.Module | None = None,
) -> FedHistory:
    """Simulate ``rounds`` rounds of FedAvg (FedProx if ``mu > 0``) over in-memory clients.

    Args:
        model_fn: builds the (untrained) global model; called once, after seeding with ``seed``.
        client_datasets: one dataset per client (e.g. from
            :func:`~course_lib.fl.partition.client_subsets`).
        test_dataset: where the global model is evaluated after every round.
        rounds, local_epochs, lr, batch_size, mu: the usual FedAvg/FedProx hyper-parameters.
        seed: fixes the initial weights, client sampling and every client's shuffle order.
        clients_per_round: sample this many clients uniformly each round (default: all of them).
        aggregate: ``aggregate(global_state, client_states, sample_counts) -> new global state``;
            default :func:`fedavg`. Part III's secure-aggregation and DP lessons plug in here.
            A non-finite result stops the run with a ``ValueError`` naming the round.
        model: continue training this model instead of building one with ``model_fn``; it is
            updated in place to the final global weights either way when given.
    Returns:
        A :class:`FedHistory` with the test loss/accuracy after every round.
    Raises:
        TypeError: if a dataset is not map-style (before any training).
        ValueError: if a client's model turns NaN/±inf (see :func:`fedavg`).
    """
    rounds = check_positive_int(rounds, "rounds")
    local_epochs, lr, mu = _check_training_args(local_epochs, lr, mu)
    if len(client_datasets) == 0:
        raise ValueError("a federation needs at least one client dataset")
    # map-style, non-empty, (input, label) pairs
    sizes = [dataset_size(ds, f"client dataset {i}") for i, ds in enumerate(client_datasets)]
    check_dataset(test_dataset, "test_dataset")
    k = len(client_datasets) if clients_per_round is None else clients_per_round
    k = check_int_in_range(k, "clients_per_round", 1, len(client_datasets))
    aggregate = aggregate or _average_aggregate

    torch.manual_seed(seed)
    global_model = model if model is not None else model_fn()
    rng = np.random.default_rng(seed)
    test_loader = DataLoader(test_dataset, batch_size=1000, shuffle=False)
    history = FedHistory(client_sizes=sizes)
    bar = tqdm(range(rounds), desc="FedAvg rounds", disable=not progress)
    for r in bar:
        started = time.perf_counter()
        chosen = sorted(rng.choice(len(client_datasets), size=k, replace=False).tolist())
        global_state = {n: t.detach().clone() for n, t in global_model.state_dict().items()}
        states, weights, losses, accs = [], [], [], []
        for c in chosen:
            client_model = copy.deepcopy(global_model)
            loader = make_loader(
                client_datasets[c], batch_size, shuffle=True, seed=client_round_seed(seed, r, c)
            )
            state, loss, acc = local_train_with_metrics(
                client_model, loader, epochs=local_epochs, lr=lr, mu=mu
            )
            states.append(state)
            weights.append(float(sizes[c]))
            losses.append(loss)
            accs.append(acc)
        new_state = aggregate(global_state, states, weights)
        _check_finite(new_state, f"the aggregate of round {r}")  # a custom aggregator, too
        global_model.load_state_dict(new_state)
        total = sum(weights)
        history.train_loss.append(sum(w * x for w, x in zip(weights, losses, strict=True)) / total)
        history.train_acc.append(sum(w * x for w, x in zip(weights, accs, strict=True)) / total)
        test_loss, test_acc = evaluate(global_model, test_loader)
        history.val_loss.append(test_loss)
        history.val_acc.append(test_acc)
        history.round_seconds.append(time.perf_counter() - started)
        bar.set_postfix(test_acc=f"{test_acc:.1%}")
    history.model = global_model
    return history
