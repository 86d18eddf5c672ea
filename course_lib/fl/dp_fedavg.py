"""Client-level differential privacy for federated averaging: DP-FedAvg.

McMahan, Ramage, Talwar and Zhang, *Learning Differentially Private Recurrent Language Models*
(ICLR 2018), protect *whole clients* rather than single examples: whatever one client's data, the
distribution of the models the server produces barely changes. Each round:

1. every client joins independently with probability ``q`` (Poisson sampling — it is what the
   privacy accountant assumes);
2. each sampled client trains locally and sends its update ``Δ_k = θ_k − θ``, **clipped** to L2 norm
   at most ``C`` — now one client moves the sum by at most ``C``;
3. the server adds Gaussian noise of standard deviation ``σ · C`` to the sum of clipped updates and
   divides by the *expected* number of clients ``q · K`` (a fixed denominator, so the number of
   participants is not revealed by the scale of the result);
4. the global model moves by that noisy average (times a server learning rate).

That is the sampled Gaussian mechanism applied once per round, so the privacy loss over ``T``
rounds is what :func:`course_lib.dp.accounting.rdp_epsilon` computes for noise multiplier ``σ``,
sample rate ``q`` and ``T`` steps: (ε, δ)-DP with respect to adding or removing one client.
Combine it with secure aggregation (``course_lib.fl.secure_aggregation``) so that the server sees
only the sum; here the server adds the noise itself, which is "central" DP with a trusted server.

Sampling and noise draw from a :class:`~course_lib.randomness.RandomSource`: secure by default;
an ``InsecureSeededRandom`` makes a lesson reproducible (and the noise removable: never for real).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from course_lib.dp.accounting import rdp_epsilon
from course_lib.dp.dpsgd import gaussian_noise
from course_lib.fl.fedavg import local_train
from course_lib.fl.seeding import client_round_seed
from course_lib.randomness import RandomSource, resolve_random_source
from course_lib.training import evaluate, make_loader
from course_lib.validation import (
    check_dataset,
    check_noise_multiplier,
    check_positive,
    check_positive_int,
    check_sample_rate,
)

__all__ = [
    "update_norm",
    "clip_update",
    "dp_aggregate",
    "dp_fedavg_epsilon",
    "DPFedHistory",
    "run_dp_fedavg",
]

Update = dict[str, torch.Tensor]


def _nonfinite_parameter(update: Mapping[str, torch.Tensor]) -> str | None:
    """The name of the first parameter of ``update`` holding a NaN or ±inf, or ``None``."""
    return next((k for k, t in update.items() if not bool(torch.isfinite(t).all())), None)


def update_norm(update: Mapping[str, torch.Tensor]) -> float:
    """The L2 norm of an update, all parameters taken together as one long vector.

    Computed in float64 after dividing by the largest entry, so huge finite entries do not
    overflow to ``inf``. A NaN anywhere gives ``nan``; an infinite entry gives ``inf``.
    """
    tensors = [t.detach().double().flatten() for t in update.values()]
    if not tensors or sum(t.numel() for t in tensors) == 0:
        return 0.0
    flat = torch.cat([t.cpu() for t in tensors])  # one scalar comes out: the device is irrelevant
    if not bool(torch.isfinite(flat).all()):
        return math.nan if bool(torch.isnan(flat).any()) else math.inf
    scale = float(flat.abs().max())
    return 0.0 if scale == 0 else scale * float(torch.linalg.vector_norm(flat / scale))


def clip_update(
    update: Mapping[str, torch.Tensor], clip_norm: float, *, name: str = "the update"
) -> tuple[Update, float]:
    """Scale ``update`` down to L2 norm at most ``clip_norm`` (unchanged if already within).

    Returns the clipped update and the norm it had before clipping.

    Raises:
        ValueError: if ``update`` holds a NaN or ±inf (``name`` says whose update it is in the
            message). Such an update has no norm, so no scale factor can bound it: ``min(1, C/nan)``
            would let it through unscaled, and ``0 · inf`` is NaN. The server's
            :func:`dp_aggregate` drops such updates instead (and counts them).
    """
    check_positive(clip_norm, "clip_norm")
    bad = _nonfinite_parameter(update)
    if bad is not None:
        raise ValueError(
            f"{name} contains NaN or ±inf (in parameter {bad!r}): clipping cannot bound it. "
            "Drop it, or find out why local training diverged (learning rate too large?)"
        )
    norm = update_norm(update)
    factor = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    return {k: v.detach() * factor for k, v in update.items()}, norm


def dp_aggregate(
    updates: Sequence[Mapping[str, torch.Tensor]],
    *,
    template: Mapping[str, torch.Tensor],
    clip_norm: float,
    noise_multiplier: float,
    expected_clients: float,
    rng: RandomSource | None = None,
) -> tuple[Update, list[float]]:
    """The server's DP step: ``(Σ_k clip(Δ_k) + N(0, (σC)² I)) / expected_clients``.

    ``template`` (e.g. the global state dict) gives the parameter names, shapes, dtypes and device
    — needed when no client was sampled, since the noise is added anyway. Returns the noisy
    average update (on ``template``'s device and dtypes) and the clients' norms before clipping.

    A client whose update holds a NaN or ±inf is **dropped**: it contributes zero (a norm of 0 ≤ C,
    so the guarantee is untouched and the release stays finite) and its entry in the returned
    norms is ``nan``, so callers can count it (``math.isnan``). Dropping rather than raising keeps
    one broken or malicious client from stopping the round for everyone. Whatever one client
    sends, it moves the sum by at most ``C`` (the release by at most ``C / expected_clients``).

    Noise: Gaussian from ``rng`` (CSPRNG by default) in the template's precision (float64 for a
    float64 parameter, else float32), drawn on the CPU and moved to the template's device.
    """
    clip_norm = check_positive(clip_norm, "clip_norm")
    expected_clients = check_positive(expected_clients, "expected_clients")
    noise_multiplier = check_noise_multiplier(noise_multiplier, allow_zero=True)
    if any(not v.is_floating_point() for v in template.values()):
        raise ValueError("DP-FedAvg needs a model whose state is all floating-point parameters")
    rng = resolve_random_source(rng)
    total = {
        k: torch.zeros(v.shape, dtype=torch.float64, device=v.device) for k, v in template.items()
    }
    for i, update in enumerate(updates):
        if set(update) != set(total) or any(update[k].shape != total[k].shape for k in total):
            raise ValueError(f"update {i} does not match the model's parameters and shapes")
    norms = []
    for i, update in enumerate(updates):
        if _nonfinite_parameter(update) is not None:
            norms.append(math.nan)  # dropped: contributes nothing
            continue
        clipped, norm = clip_update(update, clip_norm, name=f"client update {i}")
        norms.append(norm)
        for k in total:
            total[k] += clipped[k].to(device=total[k].device, dtype=torch.float64)
    std = noise_multiplier * clip_norm
    released = {}
    for k, v in total.items():
        # noise as precise as the release: float32 noise added in float64 and kept in float64
        # would stay on float32's grid and tell the true sum from a neighbour's
        wide = template[k].dtype == torch.float64
        noise = gaussian_noise(v.shape, std, rng, dtype=torch.float64 if wide else torch.float32)
        noise = noise.to(device=v.device, dtype=torch.float64)
        released[k] = ((v + noise) / expected_clients).to(template[k].dtype)
    return released, norms


def dp_fedavg_epsilon(
    noise_multiplier: float, sample_rate: float, rounds: int, delta: float
) -> float:
    """ε after ``rounds`` rounds of DP-FedAvg: the RDP accountant of the sampled Gaussian
    mechanism (client-level (ε, δ)-DP)."""
    return rdp_epsilon(noise_multiplier, sample_rate, rounds, delta)


@dataclass
class DPFedHistory:
    """Per-round record of :func:`run_dp_fedavg`.

    Two kinds of numbers live here. ``test_loss``, ``test_acc`` and ``epsilon`` are computed from
    the released (noisy) models and public settings: post-processing, covered by ε as long as the
    test set is not private. ``participants``, ``clipped_fraction`` and ``dropped`` are
    **outside ε**: the server computes them from the clients' raw updates and the secret sample,
    with no noise, so they are diagnostics for the simulation's operator and must not be
    published (:attr:`OUTSIDE_EPSILON` names them; ``str(history)`` marks them).
    """

    #: the fields computed from private data without noise: not covered by the DP guarantee
    OUTSIDE_EPSILON = ("participants", "clipped_fraction", "dropped")

    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    #: ε spent after each round (for the given δ)
    epsilon: list[float] = field(default_factory=list)
    #: how many clients took part in each round (random under Poisson sampling) — outside ε
    participants: list[int] = field(default_factory=list)
    #: fraction of the participants' updates that clipping shrank, per round; a dropped
    #: (non-finite) update counts as shrunk — outside ε
    clipped_fraction: list[float] = field(default_factory=list)
    #: how many participants' updates held NaN/±inf and were dropped, per round — outside ε
    dropped: list[int] = field(default_factory=list)
    delta: float = 0.0
    model: nn.Module | None = field(default=None, repr=False)

    def __str__(self) -> str:
        rows = ["round  test_acc  epsilon | clients*  clipped*  dropped*"]
        for r, (acc, eps, n, clipped, dropped) in enumerate(
            zip(
                self.test_acc,
                self.epsilon,
                self.participants,
                self.clipped_fraction,
                self.dropped,
                strict=True,
            ),
            1,
        ):
            rows.append(f"{r:5d}  {acc:8.2%}  {eps:7.2f} | {n:8d}  {clipped:8.0%}  {dropped:8d}")
        rows.append("* computed from the clients' private updates without noise: outside ε")
        return "\n".join(rows)


def run_dp_fedavg(
    model_fn: Callable[[], nn.Module],
    client_datasets: Sequence[Dataset],
    test_dataset: Dataset,
    *,
    rounds: int,
    sample_rate: float,
    noise_multiplier: float,
    clip_norm: float,
    delta: float,
    local_epochs: int = 1,
    lr: float = 0.05,
    batch_size: int = 32,
    server_lr: float = 1.0,
    seed: int = 0,
    rng: RandomSource | None = None,
    progress: bool = True,
) -> DPFedHistory:
    """Simulate DP-FedAvg (see the module docstring) and track accuracy and ε every round.

    ``seed`` fixes the initial model and the clients' shuffles; ``rng`` draws the client sample and
    the noise (secure by default — pass ``InsecureSeededRandom`` for a reproducible lesson).
    ``noise_multiplier=0`` turns the noise off (clipping only; ε is then infinite).
    """
    rounds = check_positive_int(rounds, "rounds")
    sample_rate = check_sample_rate(sample_rate)
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    check_positive(server_lr, "server_lr")
    if len(client_datasets) == 0:
        raise ValueError("a federation needs at least one client dataset")
    for i, dataset in enumerate(client_datasets):
        check_dataset(dataset, f"client dataset {i}")  # map-style, non-empty, (input, label)
    check_dataset(test_dataset, "test_dataset")
    rng = resolve_random_source(rng)
    num_clients = len(client_datasets)
    expected = sample_rate * num_clients

    torch.manual_seed(seed)
    global_model = model_fn()
    test_loader = DataLoader(test_dataset, batch_size=1000, shuffle=False)
    history = DPFedHistory(delta=delta)
    bar = tqdm(range(rounds), desc="DP-FedAvg rounds", disable=not progress)
    for r in bar:
        chosen = torch.nonzero(rng.bernoulli(sample_rate, num_clients)).flatten().tolist()
        global_state = {k: v.detach().clone() for k, v in global_model.state_dict().items()}
        updates = []
        for c in chosen:
            client_model = copy.deepcopy(global_model)
            loader = make_loader(
                client_datasets[c], batch_size, shuffle=True, seed=client_round_seed(seed, r, c)
            )
            state = local_train(client_model, loader, epochs=local_epochs, lr=lr)
            updates.append({k: state[k] - global_state[k] for k in global_state})
        noisy, norms = dp_aggregate(
            updates,
            template=global_state,
            clip_norm=clip_norm,
            noise_multiplier=noise_multiplier,
            expected_clients=expected,
            rng=rng,
        )
        global_model.load_state_dict({k: global_state[k] + server_lr * noisy[k] for k in noisy})
        test_loss, test_acc = evaluate(global_model, test_loader)
        history.test_loss.append(test_loss)
        history.test_acc.append(test_acc)
        history.participants.append(len(chosen))
        dropped = sum(math.isnan(n) for n in norms)
        shrunk = sum(n > clip_norm for n in norms) + dropped
        history.dropped.append(dropped)
        history.clipped_fraction.append(shrunk / len(norms) if norms else 0.0)
        history.epsilon.append(
            dp_fedavg_epsilon(noise_multiplier, sample_rate, r + 1, delta)
            if noise_multiplier > 0
            else math.inf
        )
        bar.set_postfix(test_acc=f"{test_acc:.1%}", eps=f"{history.epsilon[-1]:.2f}")
    history.model = global_model
    return history
