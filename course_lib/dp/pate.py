"""PATE: Private Aggregation of Teacher Ensembles (Papernot et al. 2017, 2018).

The private data is split into disjoint partitions and one *teacher* model is trained on each.
A *student* never sees the private data: it labels public, unlabelled examples by asking the
teachers to vote, and only a **noisy** winner of the vote is released. Changing one private
example changes one teacher, which moves at most two vote counts by one — that is what the noise
has to hide.

Two aggregators:

* **LNMax** (2017): add Laplace noise of scale 1/γ to each count and release the arg-max.
  Each answer is 2γ-DP; the moments accountant of the 2017 paper composes them.
* **GNMax** (2018): add Gaussian noise N(0, σ²) to each count. Each answer is (α, α/σ²)-RDP;
  RDP composes by addition.

Both have a **data-dependent** analysis: when the teachers agree strongly, the noisy answer is
almost certainly the plurality label q ≈ 1 and the true privacy cost is far below the worst case.
Caveat (as in the papers): the data-dependent ε depends on the private votes, so publishing it
exactly is itself a leak; the 2018 paper releases it through smooth sensitivity (not done here).

Only the arg-max of the noisy counts is released, never the noisy counts, so continuous noise
(drawn from a secure source) is fine here: the floating-point attack on the Laplace mechanism reads
the low-order bits of a released noisy *value*.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy import stats
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from course_lib.dp.accounting import rdp_to_epsilon
from course_lib.dp.dpsgd import gaussian_noise
from course_lib.randomness import RandomSource, resolve_random_source
from course_lib.training import fit, make_loader
from course_lib.validation import (
    as_integer,
    check_delta,
    check_positive,
    check_positive_int,
    dataset_tensors,
)

__all__ = [
    "PATE_ORDERS",
    "partition_indices",
    "train_teachers",
    "teacher_votes",
    "laplace_noise",
    "laplace_noisy_max",
    "gaussian_noisy_max",
    "lnmax_q",
    "lnmax_epsilon",
    "gnmax_log_q",
    "gnmax_rdp",
    "gnmax_epsilon",
]

#: RDP orders searched for GNMax (fine near 1, sparse far out where strong agreement helps).
PATE_ORDERS: tuple[float, ...] = tuple(
    np.concatenate(
        [np.arange(1.25, 20, 0.25), np.arange(20, 100, 2.0), np.geomspace(100, 2000, 30)]
    )
)


# -- teachers --------------------------------------------------------------------------------------


def partition_indices(num_examples: int, num_parts: int, *, seed: int = 0) -> list[torch.Tensor]:
    """Split ``range(num_examples)`` into ``num_parts`` disjoint, shuffled, near-equal parts."""
    num_examples = check_positive_int(num_examples, "num_examples")
    num_parts = check_positive_int(num_parts, "num_parts")
    seed = as_integer(seed, "seed")
    if num_parts > num_examples:
        raise ValueError(f"cannot split {num_examples} examples into {num_parts} non-empty parts")
    # CPU by design: indices from a seeded CPU generator (datasets live on the CPU)
    order = torch.randperm(num_examples, generator=torch.Generator().manual_seed(seed))
    return list(order.tensor_split(num_parts))


def train_teachers(
    dataset: Dataset,
    num_teachers: int,
    model_fn: Callable[[], nn.Module],
    *,
    epochs: int = 10,
    lr: float = 0.1,
    batch_size: int = 32,
    seed: int = 0,
) -> list[nn.Module]:
    """Train one ``model_fn()`` per disjoint partition of ``dataset`` (teachers are not private).

    ``dataset`` is any map-style dataset of ``(input, label)`` pairs.
    """
    images, labels = dataset_tensors(dataset)
    num_teachers = check_positive_int(num_teachers, "num_teachers")
    teachers = []
    for i, part in enumerate(partition_indices(len(labels), num_teachers, seed=seed)):
        torch.manual_seed(seed + i)
        teacher = model_fn()
        loader = make_loader(TensorDataset(images[part], labels[part]), batch_size, seed=seed + i)
        fit(teacher, loader, epochs=epochs, lr=lr, progress=False)
        teachers.append(teacher.eval())
    return teachers


@torch.no_grad()
def teacher_votes(
    teachers: Sequence[nn.Module], inputs: torch.Tensor, num_classes: int = 10
) -> torch.Tensor:
    """Vote counts, shape (queries, classes): how many teachers predict each class."""
    if not teachers:
        raise ValueError("need at least one teacher")
    votes = torch.zeros(len(inputs), num_classes, dtype=torch.int64, device=inputs.device)
    rows = torch.arange(len(inputs), device=inputs.device)
    for teacher in teachers:
        teacher.eval()
        predictions = teacher(inputs).argmax(1)
        votes[rows, predictions.to(inputs.device)] += 1
    return votes


# -- noisy aggregation -----------------------------------------------------------------------------


def _as_votes(votes: torch.Tensor | np.ndarray | Sequence) -> torch.Tensor:
    """Vote counts as a CPU int64 tensor (the analysis is NumPy, and the noise CPU-drawn)."""
    if isinstance(votes, torch.Tensor):
        votes = votes.detach().cpu()
    votes = torch.as_tensor(np.asarray(votes))
    if votes.dim() == 1:
        votes = votes.unsqueeze(0)
    if votes.dim() != 2 or votes.shape[1] < 2:
        raise ValueError(f"votes must have shape (queries, classes ≥ 2), got {tuple(votes.shape)}")
    if votes.is_floating_point() or torch.any(votes < 0):
        raise ValueError("vote counts must be non-negative integers")
    return votes.to(torch.int64)


def laplace_noise(
    shape: tuple[int, ...], scale: float, rng: RandomSource | None = None
) -> torch.Tensor:
    """Continuous Laplace noise of the given scale (inverse CDF of a secure uniform), float64."""
    scale = check_positive(scale, "scale")
    u = resolve_random_source(rng).uniform(shape) - 0.5  # in [-1/2, 1/2)
    return -scale * torch.sign(u) * torch.log1p(-2 * u.abs())


def laplace_noisy_max(votes, gamma: float, rng: RandomSource | None = None) -> torch.Tensor:
    """LNMax: arg-max of the counts plus Laplace(1/γ) noise — one label per query."""
    votes = _as_votes(votes)
    gamma = check_positive(gamma, "gamma")
    return (votes + laplace_noise(tuple(votes.shape), 1 / gamma, rng)).argmax(1)


def gaussian_noisy_max(votes, sigma: float, rng: RandomSource | None = None) -> torch.Tensor:
    """GNMax: arg-max of the counts plus N(0, σ²) noise — one label per query."""
    votes = _as_votes(votes)
    sigma = check_positive(sigma, "sigma")
    return (votes + gaussian_noise(tuple(votes.shape), sigma, rng)).argmax(1)


# -- analysis of LNMax (Papernot et al. 2017, moments accountant) ----------------------------------


def lnmax_q(votes, gamma: float) -> np.ndarray:
    """Upper bound on P[noisy answer ≠ plurality label] per query for Laplace(1/γ) noise.

    For each other class j with gap Δ_j = n_max - n_j:
    P[j beats the winner] ≤ (2 + γΔ_j) / (4 e^{γΔ_j}).
    """
    votes = _as_votes(votes).numpy().astype(np.float64)
    gamma = check_positive(gamma, "gamma")
    gaps = gamma * (votes.max(1, keepdims=True) - votes)
    winner = votes.argmax(1)
    terms = (2 + gaps) / 4 * np.exp(-gaps)  # exp(-gap) underflows to 0 harmlessly, exp(gap) not
    terms[np.arange(len(votes)), winner] = 0.0
    return np.minimum(terms.sum(1), 1 - 1 / votes.shape[1])


def _lnmax_log_moment(q: float, gamma: float, moment: int, data_dependent: bool) -> float:
    """Bound on the log moment α(λ) of one LNMax answer (2017 paper, Theorem 3 and its fallback).

    Computed in log space: for strongly agreeing teachers q underflows to 0 and e^{ελ} overflows,
    yet the bound itself is small and finite.
    """
    eps = 2 * gamma  # each answer is 2γ-DP
    bound = min(0.5 * eps**2 * moment * (moment + 1), eps * moment)  # data-independent
    log_q = math.log(q) if q > 0 else -math.inf
    # Theorem 3 needs q < (e^ε - 1) / (e^{2ε} - 1) = 1 / (e^ε + 1)
    if data_dependent and log_q < -float(np.logaddexp(0.0, eps)):
        # log[(1-q)·((1-q)/(1 - e^ε q))^λ + q·e^{ελ}]
        log_1mq = math.log1p(-q)
        log_1m_eq = math.log1p(-math.exp(eps + log_q))
        tight = np.logaddexp(log_1mq + moment * (log_1mq - log_1m_eq), log_q + eps * moment)
        bound = min(bound, float(tight))
    return bound


def lnmax_epsilon(
    votes,
    gamma: float,
    delta: float,
    *,
    data_dependent: bool = True,
    moments: Sequence[int] = tuple(range(1, 33)),
) -> float:
    """ε spent by answering every query in ``votes`` with LNMax (moments accountant, 2017).

    ε = min over λ of (Σ_queries α(λ) + log(1/δ)) / λ.
    """
    delta = check_delta(delta)
    qs = lnmax_q(votes, gamma)
    gamma = check_positive(gamma, "gamma")
    moments = [check_positive_int(m, "moment") for m in moments]
    best = math.inf
    for moment in moments:
        total = sum(_lnmax_log_moment(float(q), gamma, moment, data_dependent) for q in qs)
        best = min(best, (total + math.log(1 / delta)) / moment)
    return best


# -- analysis of GNMax (Papernot et al. 2018, Rényi DP) --------------------------------------------


def gnmax_log_q(votes, sigma: float) -> np.ndarray:
    """log of an upper bound on P[noisy answer ≠ plurality label] per query, for N(0, σ²) noise.

    Union bound: class j beats the winner when the difference of two noises, N(0, 2σ²), exceeds
    the gap, so q ≤ Σ_j P[N(0, 2σ²) ≥ n_max - n_j].
    """
    votes = _as_votes(votes).numpy().astype(np.float64)
    sigma = check_positive(sigma, "sigma")
    gaps = votes.max(1, keepdims=True) - votes
    log_tails = stats.norm.logsf(gaps, scale=math.sqrt(2) * sigma)
    log_tails[np.arange(len(votes)), votes.argmax(1)] = -np.inf
    log_q = np.logaddexp.reduce(log_tails, axis=1)
    return np.minimum(log_q, math.log(1 - 1 / votes.shape[1]))


def _log1mexp(x: float) -> float:
    """log(1 - e^x) for x ≤ 0."""
    return math.log1p(-math.exp(x)) if x < -1 else math.log(-math.expm1(x))


def gnmax_rdp(
    log_q: float, sigma: float, orders: Sequence[float] | np.ndarray = PATE_ORDERS
) -> np.ndarray:
    """RDP of one GNMax answer at each order: the data-dependent bound of the 2018 paper
    (Theorem 6 with Proposition 10).

    The data-independent bound is α/σ² (two counts move by one: L2 sensitivity √2). When the
    answer is very likely the plurality label (small q), a tighter bound holds for orders below
    μ₁ = σ√(-log q) + 1; where it does not apply or is worse, the data-independent one is kept.
    """
    sigma = check_positive(sigma, "sigma")
    grid = np.asarray(orders, dtype=np.float64)
    if log_q > 0:
        raise ValueError(f"log_q is the log of a probability, so ≤ 0; got {log_q}")
    variance = sigma**2
    rdp = grid / variance
    if log_q == -math.inf:
        return np.zeros_like(grid)
    mu2 = math.sqrt(variance * -log_q)
    mu1 = mu2 + 1
    applies = grid < mu1
    eps1, eps2 = mu1 / variance, mu2 / variance
    if mu2 <= 1 or not applies.any() or -log_q <= eps2:
        return rdp
    # the bound needs q small enough: q ≤ e^{(μ₂-1)ε₂} / ((μ₁/(μ₁-1))·(μ₂/(μ₂-1)))^{μ₂}
    if log_q > (mu2 - 1) * eps2 - mu2 * (math.log1p(1 / (mu1 - 1)) + math.log1p(1 / (mu2 - 1))):
        return rdp
    log_1mq = _log1mexp(log_q)
    log_a = (grid - 1) * (log_1mq - _log1mexp((log_q + eps2) * (1 - 1 / mu2)))
    log_b = (grid - 1) * (eps1 - log_q / (mu1 - 1))
    bound = np.logaddexp(log_1mq + log_a, log_q + log_b) / (grid - 1)
    return np.where(applies, np.minimum(rdp, bound), rdp)


def gnmax_epsilon(
    votes,
    sigma: float,
    delta: float,
    *,
    data_dependent: bool = True,
    orders: Sequence[float] = PATE_ORDERS,
) -> float:
    """ε spent by answering every query in ``votes`` with GNMax (RDP summed, then converted)."""
    votes = _as_votes(votes)
    sigma = check_positive(sigma, "sigma")
    delta = check_delta(delta)
    grid = np.asarray(orders, dtype=np.float64)
    total = np.zeros_like(grid)
    if data_dependent:
        for lq in gnmax_log_q(votes, sigma):
            total = total + gnmax_rdp(float(lq), sigma, grid)
    else:
        total = len(votes) * grid / sigma**2
    return rdp_to_epsilon(total, delta, grid)[0]
