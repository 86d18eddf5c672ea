"""Membership inference: *measuring* what a trained model leaks about its training set.

Threat model: the attacker holds the trained model (black-box access to its outputs is enough), a
list of candidate examples with their labels, and data from the same distribution that is not among
the candidates; they know how the model was trained (architecture, recipe, training-set size) but
not which candidates were trained on. They must guess which candidates were in the training set
("members"). Each attack gives every candidate a **score** (higher = "member"); sweeping a threshold
over the scores traces a ROC curve. Two numbers summarise it:

* **ROC AUC** — 0.5 is a coin flip, 1.0 a perfect attack;
* **TPR at low FPR** (e.g. 1%) — how many members the attacker identifies *confidently*, while
  wrongly accusing only 1% of non-members. This is what matters for privacy (Carlini et al. 2022):
  an attack can have an AUC near 0.5 and still expose a few examples with certainty.

Both come with bootstrap confidence intervals (candidates resampled with replacement, members and
non-members separately): a measured attack is an estimate from a finite sample, and a difference
smaller than its interval is not a difference.

Attacks:

* :func:`loss_threshold_attack` (Yeom et al. 2018): members tend to have lower loss.
* :func:`lira_offline` — the offline Likelihood Ratio Attack (Carlini et al. 2022, "Membership
  Inference Attacks From First Principles"). Some examples are just hard (high loss whether or not
  they were trained on), so a global loss threshold is crude. LiRA trains *shadow* models
  (:func:`train_shadows`) on data that excludes the candidates, **with the target's own training
  recipe**, learns how confident a model is on each candidate when it has **not** seen it, and flags
  candidates on which the target is unusually confident — a per-example test.

Differential privacy bounds every such attack: with (ε, δ)-DP, TPR ≤ e^ε · FPR + δ
(Kairouz, Oh & Viswanath 2015; :func:`dp_tpr_bound`).

Every attack runs the models on their own device (the candidates are moved there) and returns its
scores on the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from sklearn.metrics import roc_curve
from torch import nn
from torch.utils.data import TensorDataset

from course_lib.training import fit, make_loader
from course_lib.validation import (
    as_integer,
    as_number,
    check_delta,
    check_nonnegative,
    check_positive_int,
    dataset_tensors,
)

__all__ = [
    "AttackResult",
    "evaluate_attack",
    "per_example_losses",
    "loss_threshold_attack",
    "train_shadows",
    "train_shadow_models",
    "lira_offline",
    "dp_tpr_bound",
]

#: A training recipe: ``recipe(training_data, seed) -> trained model``. The target and its shadow
#: models must come from the same recipe, or LiRA compares the target with the wrong "out" models.
Recipe = Callable[[TensorDataset, int], nn.Module]


@dataclass
class AttackResult:
    """How well membership scores separate members from non-members.

    ``auc_ci`` and ``tpr_ci`` are percentile-bootstrap confidence intervals at ``confidence``;
    ``fpr`` and ``tpr`` trace the ROC curve; ``scores`` and ``is_member`` are the attack's input.
    """

    name: str
    auc: float
    tpr_at_low_fpr: float
    low_fpr: float
    auc_ci: tuple[float, float]
    tpr_ci: tuple[float, float]
    confidence: float
    fpr: np.ndarray
    tpr: np.ndarray
    scores: np.ndarray
    is_member: np.ndarray

    def __str__(self) -> str:
        return (
            f"{self.name}: AUC {self.auc:.3f} [{self.auc_ci[0]:.3f}, {self.auc_ci[1]:.3f}], "
            f"TPR at {self.low_fpr:.0%} FPR {self.tpr_at_low_fpr:.1%} "
            f"[{self.tpr_ci[0]:.1%}, {self.tpr_ci[1]:.1%}]"
        )


def _as_numpy(values: torch.Tensor | np.ndarray | Sequence[float], what: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional, got shape {array.shape}")
    return array


def _check_fraction(value: float, name: str) -> float:
    number = as_number(value, name)
    if not 0 < number < 1:
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {number}")
    return number


def _auc(member_scores: np.ndarray, non_member_scores: np.ndarray) -> np.ndarray:
    """ROC AUC = P(member score > non-member score) + ½ P(tie) (Mann–Whitney U / (m·n)), along the
    last axis, so one call evaluates a whole stack of bootstrap resamples."""
    m, n = member_scores.shape[-1], non_member_scores.shape[-1]
    ranks = rankdata(np.concatenate([member_scores, non_member_scores], axis=-1), axis=-1)
    return (ranks[..., :m].sum(-1) - m * (m + 1) / 2) / (m * n)


def _tpr_at_fpr(
    member_scores: np.ndarray, non_member_scores: np.ndarray, low_fpr: float
) -> np.ndarray:
    """The highest TPR of any threshold that flags at most ``low_fpr`` of the non-members.

    Flagging "score > the (k+1)-th highest non-member score", k = ⌊low_fpr · n⌋, accuses at most k
    non-members, and no lower threshold does. Along the last axis, like :func:`_auc`.
    """
    n = non_member_scores.shape[-1]
    k = math.floor(low_fpr * n + 1e-9)
    threshold = np.sort(non_member_scores, axis=-1)[..., n - 1 - k]
    return (member_scores > threshold[..., None]).mean(-1)


def evaluate_attack(
    scores: torch.Tensor | np.ndarray | Sequence[float],
    is_member: torch.Tensor | np.ndarray | Sequence[bool],
    *,
    name: str = "attack",
    low_fpr: float = 0.01,
    confidence: float = 0.95,
    num_resamples: int = 1000,
    seed: int = 0,
) -> AttackResult:
    """ROC curve, AUC and TPR at ``low_fpr`` of membership ``scores`` (higher = member), each with
    a percentile-bootstrap confidence interval.

    Args:
        scores: shape ``(n,)``, finite; any device.
        is_member: shape ``(n,)``, booleans or 0/1; both members and non-members present.
        low_fpr: the false-positive rate at which the TPR is read, in (0, 1).
        confidence: the intervals' level, in (0, 1).
        num_resamples: bootstrap resamples (members and non-members resampled separately, so each
            resample keeps their numbers; Efron & Tibshirani 1993, ch. 13).
        seed: seed of the resampling (the intervals are reproducible).

    Raises:
        ValueError: mismatched shapes, non-finite scores, labels other than 0/1, only one class,
            a fraction outside (0, 1) or ``num_resamples`` < 1.
        TypeError: ``low_fpr``, ``confidence``, ``num_resamples`` or ``seed`` is not a number of
            the right kind (see :mod:`course_lib.validation`).
    """
    scores = _as_numpy(scores, "scores")
    is_member = _as_numpy(is_member, "is_member")
    if scores.shape != is_member.shape:
        raise ValueError(f"{scores.shape[0]} scores but {is_member.shape[0]} membership labels")
    if scores.dtype.kind not in "iuf" or not np.all(np.isfinite(scores)):
        raise ValueError("membership scores must be finite numbers")
    if is_member.dtype != bool:
        if is_member.dtype.kind not in "iuf" or not np.isin(is_member, (0, 1)).all():
            raise ValueError("is_member must hold booleans or 0/1 values")
        is_member = is_member.astype(bool)
    if is_member.all() or not is_member.any():
        raise ValueError("need both members and non-members to evaluate an attack")
    low_fpr = _check_fraction(low_fpr, "low_fpr")
    confidence = _check_fraction(confidence, "confidence")
    num_resamples = check_positive_int(num_resamples, "num_resamples")
    seed = as_integer(seed, "seed")

    scores = scores.astype(np.float64)
    members, non_members = scores[is_member], scores[~is_member]
    rng = np.random.default_rng(seed)
    boot_members = members[rng.integers(0, len(members), (num_resamples, len(members)))]
    boot_non = non_members[rng.integers(0, len(non_members), (num_resamples, len(non_members)))]
    tail = (1 - confidence) / 2

    def interval(samples: np.ndarray) -> tuple[float, float]:
        low, high = np.quantile(samples, [tail, 1 - tail])
        return float(low), float(high)

    fpr, tpr, _ = roc_curve(is_member, scores)
    return AttackResult(
        name=name,
        auc=float(_auc(members, non_members)),
        tpr_at_low_fpr=float(_tpr_at_fpr(members, non_members, low_fpr)),
        low_fpr=low_fpr,
        auc_ci=interval(_auc(boot_members, boot_non)),
        tpr_ci=interval(_tpr_at_fpr(boot_members, boot_non, low_fpr)),
        confidence=confidence,
        fpr=fpr,
        tpr=tpr,
        scores=scores,
        is_member=is_member,
    )


def _device_of(model: nn.Module) -> torch.device:
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    for tensor in model.parameters():
        return tensor.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")  # no tensors at all: it computes wherever its inputs are


def _check_candidates(inputs: torch.Tensor, labels: torch.Tensor) -> None:
    if not isinstance(inputs, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise TypeError("inputs and labels must be torch tensors")
    if labels.ndim != 1 or labels.dtype not in (torch.int64, torch.int32, torch.uint8):
        raise ValueError(
            f"labels must be a 1-D tensor of class indices, got {labels.dtype} "
            f"of shape {tuple(labels.shape)}"
        )
    if len(inputs) != len(labels):
        raise ValueError(f"{len(inputs)} inputs but {len(labels)} labels")
    if len(labels) == 0:
        raise ValueError("no candidates to attack")


@contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode and no gradients for the attack, the model's own mode restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _logits(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The model's logits for the candidates, on the model's device, labels checked against them."""
    _check_candidates(inputs, labels)
    device = _device_of(model)
    with _evaluating(model):
        logits = model(inputs.to(device))
    if logits.ndim != 2 or len(logits) != len(labels):
        raise ValueError(f"the model must return (n, classes) logits, got {tuple(logits.shape)}")
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise ValueError(f"labels must lie in 0..{logits.shape[1] - 1} for this model")
    return logits


def per_example_losses(
    model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy loss of every example, shape ``(n,)``, on the CPU (eval mode; the model's own
    mode is restored)."""
    logits = _logits(model, inputs, labels)
    return F.cross_entropy(logits, labels.to(logits.device).long(), reduction="none").cpu()


def loss_threshold_attack(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    is_member: torch.Tensor,
    *,
    low_fpr: float = 0.01,
) -> AttackResult:
    """Score = minus the loss: the model fits its training examples better than unseen ones
    (Yeom et al. 2018)."""
    scores = -per_example_losses(model, inputs, labels)
    return evaluate_attack(scores, is_member, name="loss threshold", low_fpr=low_fpr)


def _logit_confidence(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """φ = log(p / (1 - p)) for the true label's probability p, shape ``(n,)`` on the CPU: roughly
    Gaussian across models (Carlini et al. 2022, §IV-B), computed stably from log-softmax."""
    logits = _logits(model, inputs, labels)
    log_p = F.log_softmax(logits.double(), dim=1)
    index = labels.to(logits.device).long().view(-1, 1)
    log_p_true = log_p.gather(1, index).squeeze(1)
    log_p_rest = torch.logsumexp(log_p.scatter(1, index, -math.inf), dim=1)
    return (log_p_true - log_p_rest).cpu()


def train_shadows(
    recipe: Recipe,
    population: TensorDataset,
    num_shadows: int,
    *,
    size: int,
    seed: int = 0,
) -> list[nn.Module]:
    """Train ``num_shadows`` models with ``recipe``, each on its own random ``size``-subset of
    ``population``.

    Pass the recipe that trained the target (the same function, so the same model, optimiser,
    epochs — and DP-SGD with the same σ, q and C for a DP target) and ``size`` = the target's
    training-set size: LiRA's "out" distribution is only right for models trained like the target.
    ``population`` must not contain the candidates (that makes this the *offline* attack). Shadow
    ``k`` trains on a subset drawn with seed ``seed + k`` and is given ``recipe(subset, seed + k)``.

    Raises:
        TypeError: ``recipe`` is not callable, ``population`` is not a dataset of (input, label)
            pairs, a count is not an integer, or the recipe returns something other than a module.
        ValueError: ``num_shadows`` < 1, or ``size`` outside [1, len(population)].
    """
    if not callable(recipe):
        raise TypeError("recipe must be a function (training data, seed) -> trained model")
    inputs, labels = dataset_tensors(population, "population")
    num_shadows = check_positive_int(num_shadows, "num_shadows")
    size = check_positive_int(size, "size")
    seed = as_integer(seed, "seed")
    if size > len(labels):
        raise ValueError(
            f"size must be at most the population's {len(labels)} examples, got {size}"
        )
    shadows = []
    for k in range(num_shadows):
        generator = torch.Generator().manual_seed(seed + k)
        # CPU by design: indices from a seeded CPU generator (datasets live on the CPU)
        chosen = torch.randperm(len(labels), generator=generator)[:size]
        shadow = recipe(TensorDataset(inputs[chosen], labels[chosen]), seed + k)
        if not isinstance(shadow, nn.Module):
            raise TypeError(f"recipe must return the trained model, got {type(shadow).__name__}")
        shadows.append(shadow.eval())
    return shadows


def train_shadow_models(
    population: TensorDataset,
    num_shadows: int,
    model_fn: Callable[[], nn.Module],
    *,
    size: int,
    epochs: int,
    lr: float,
    batch_size: int = 64,
    seed: int = 0,
) -> list[nn.Module]:
    """:func:`train_shadows` with the ordinary recipe: ``model_fn()`` trained by
    :func:`course_lib.training.fit` (SGD, ``epochs``, ``lr``, ``batch_size``), seeded per shadow.

    Use it when the target was trained exactly so; otherwise pass the target's recipe to
    :func:`train_shadows`.
    """

    def ordinary(data: TensorDataset, shadow_seed: int) -> nn.Module:
        torch.manual_seed(shadow_seed)
        model = model_fn()
        loader = make_loader(data, batch_size, seed=shadow_seed)
        fit(model, loader, epochs=epochs, lr=lr, progress=False)
        return model

    return train_shadows(ordinary, population, num_shadows, size=size, seed=seed)


def lira_offline(
    target: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    is_member: torch.Tensor,
    shadows: Sequence[nn.Module],
    *,
    low_fpr: float = 0.01,
) -> AttackResult:
    """Offline LiRA (Carlini et al. 2022, Algorithm 1, offline variant): how unusually confident
    is the target on each candidate?

    For each candidate, the shadow models (which never saw it) give the "out" distribution of the
    confidence φ, modelled as a Gaussian with a per-example mean and one shared standard deviation
    (the paper's choice with few shadows). The score is the one-sided z-score of the target's φ:
    members sit high. ``shadows`` must be trained like the target (:func:`train_shadows`).

    Raises:
        TypeError: the target or a shadow is not a module.
        ValueError: fewer than two shadows, or bad candidates (see :func:`evaluate_attack`).
    """
    if isinstance(shadows, nn.Module) or not isinstance(shadows, Sequence):
        raise TypeError("shadows must be a list of trained models")
    if len(shadows) < 2:
        raise ValueError("LiRA needs at least two shadow models to estimate a spread")
    target_phi = _logit_confidence(target, inputs, labels)
    out = torch.stack([_logit_confidence(s, inputs, labels) for s in shadows])  # (shadows, n)
    mean = out.mean(0)
    std = (out - mean).std().clamp_min(1e-6)  # one global spread: stable with few shadows
    scores = (target_phi - mean) / std
    return evaluate_attack(scores, is_member, name="LiRA (offline)", low_fpr=low_fpr)


def dp_tpr_bound(fpr: np.ndarray | float, epsilon: float, delta: float) -> np.ndarray:
    """The most any attack can achieve against an (ε, δ)-DP model: TPR ≤ min(1, e^ε·FPR + δ)
    (Kairouz, Oh & Viswanath 2015, hypothesis-testing view of DP).

    ``fpr`` must lie in [0, 1]; ``epsilon`` ≥ 0 and ``delta`` in [0, 1) are numbers as
    :mod:`course_lib.validation` defines them (numpy and one-element tensor scalars included).
    """
    epsilon = check_nonnegative(epsilon, "epsilon")
    delta = check_delta(delta, allow_zero=True)
    fpr = np.asarray(fpr, dtype=np.float64)
    if not np.all((fpr >= 0) & (fpr <= 1)):
        raise ValueError("false-positive rates must lie in [0, 1]")
    return np.minimum(1.0, math.exp(epsilon) * fpr + delta)
