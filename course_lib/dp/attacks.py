"""Membership inference: *measuring* what a trained model leaks about its training set.

The attacker gets a model and a list of candidate examples and must guess which ones were in the
training set ("members"). Each attack gives every candidate a **score** (higher = "member");
sweeping a threshold over the scores traces a ROC curve. Two numbers summarise it:

* **ROC AUC** — 0.5 is a coin flip, 1.0 a perfect attack;
* **TPR at low FPR** (e.g. 1%) — how many members the attacker identifies *confidently*, while
  wrongly accusing only 1% of non-members. This is what matters for privacy (Carlini et al. 2022):
  an attack can have an AUC near 0.5 and still expose a few examples with certainty.

Attacks:

* :func:`loss_threshold_attack` (Yeom et al. 2018): members tend to have lower loss.
* :func:`lira_offline` — the offline Likelihood Ratio Attack (Carlini et al. 2022). Some examples
  are just hard (high loss whether or not they were trained on), so a global loss threshold is
  crude. LiRA trains *shadow* models on data that excludes the candidates, learns how confident a
  model is on each candidate when it has **not** seen it, and flags candidates on which the target
  is unusually confident — a per-example test.

Differential privacy bounds every such attack: with (ε, δ)-DP, TPR ≤ e^ε · FPR + δ.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score, roc_curve
from torch import nn
from torch.utils.data import TensorDataset

from course_lib.training import fit, make_loader

__all__ = [
    "AttackResult",
    "evaluate_attack",
    "per_example_losses",
    "loss_threshold_attack",
    "train_shadow_models",
    "lira_offline",
    "dp_tpr_bound",
]


@dataclass
class AttackResult:
    """How well membership scores separate members from non-members."""

    name: str
    auc: float
    tpr_at_low_fpr: float
    low_fpr: float
    fpr: np.ndarray
    tpr: np.ndarray

    def __str__(self) -> str:
        return (
            f"{self.name}: AUC {self.auc:.3f}, TPR at {self.low_fpr:.0%} FPR "
            f"{self.tpr_at_low_fpr:.1%}"
        )


def evaluate_attack(
    scores: torch.Tensor | np.ndarray,
    is_member: torch.Tensor | np.ndarray,
    *,
    name: str = "attack",
    low_fpr: float = 0.01,
) -> AttackResult:
    """ROC curve, AUC and TPR at ``low_fpr`` of membership ``scores`` (higher = member)."""
    scores = np.asarray(torch.as_tensor(scores, dtype=torch.float64))
    is_member = np.asarray(torch.as_tensor(is_member)).astype(bool)
    if scores.shape != is_member.shape or scores.ndim != 1:
        raise ValueError(f"{scores.shape} scores but {is_member.shape} membership labels")
    if is_member.all() or not is_member.any():
        raise ValueError("need both members and non-members to evaluate an attack")
    if not np.all(np.isfinite(scores)):
        raise ValueError("membership scores must be finite")
    if not 0 < low_fpr < 1:
        raise ValueError(f"low_fpr must lie in (0, 1), got {low_fpr}")
    fpr, tpr, _ = roc_curve(is_member, scores)
    tpr_low = float(tpr[np.searchsorted(fpr, low_fpr, side="right") - 1])
    return AttackResult(name, float(roc_auc_score(is_member, scores)), tpr_low, low_fpr, fpr, tpr)


@torch.no_grad()
def per_example_losses(
    model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy loss of every example (eval mode)."""
    if len(inputs) != len(labels):
        raise ValueError(f"{len(inputs)} inputs but {len(labels)} labels")
    model.eval()
    return F.cross_entropy(model(inputs), labels, reduction="none")


def loss_threshold_attack(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    is_member: torch.Tensor,
    *,
    low_fpr: float = 0.01,
) -> AttackResult:
    """Score = minus the loss: the model fits its training examples better than unseen ones."""
    scores = -per_example_losses(model, inputs, labels)
    return evaluate_attack(scores, is_member, name="loss threshold", low_fpr=low_fpr)


@torch.no_grad()
def _logit_confidence(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """φ = log(p / (1 - p)) for the true label's probability p: roughly Gaussian across models."""
    model.eval()
    log_p = F.log_softmax(model(inputs).double(), dim=1)
    log_p_true = log_p.gather(1, labels.view(-1, 1)).squeeze(1)
    log_p_rest = torch.logsumexp(log_p.scatter(1, labels.view(-1, 1), -math.inf), dim=1)
    return log_p_true - log_p_rest


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
    """Train ``num_shadows`` models like the target, each on a random ``size``-subset of
    ``population``.

    ``population`` must not contain the candidates (that makes this the *offline* attack).
    """
    if isinstance(num_shadows, bool) or not isinstance(num_shadows, int) or num_shadows <= 0:
        raise ValueError(f"num_shadows must be a positive integer, got {num_shadows!r}")
    inputs, labels = population.tensors[:2]
    if not 0 < size <= len(labels):
        raise ValueError(f"size must lie in [1, {len(labels)}], got {size}")
    shadows = []
    for k in range(num_shadows):
        generator = torch.Generator().manual_seed(seed + k)
        chosen = torch.randperm(len(labels), generator=generator)[:size]
        torch.manual_seed(seed + k)
        shadow = model_fn()
        loader = make_loader(
            TensorDataset(inputs[chosen], labels[chosen]), batch_size, seed=seed + k
        )
        fit(shadow, loader, epochs=epochs, lr=lr, progress=False)
        shadows.append(shadow.eval())
    return shadows


def lira_offline(
    target: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    is_member: torch.Tensor,
    shadows: Sequence[nn.Module],
    *,
    low_fpr: float = 0.01,
) -> AttackResult:
    """Offline LiRA: how unusually confident is the target on each candidate?

    For each candidate, the shadow models (which never saw it) give the "out" distribution of the
    confidence φ, modelled as a Gaussian with a per-example mean and, with few shadows, one shared
    standard deviation. The score is the one-sided z-score of the target's φ: members sit high.
    """
    if len(shadows) < 2:
        raise ValueError("LiRA needs at least two shadow models to estimate a spread")
    out = torch.stack([_logit_confidence(s, inputs, labels) for s in shadows])  # (shadows, n)
    mean = out.mean(0)
    std = (out - mean).std().clamp_min(1e-6)  # one global spread: stable with few shadows
    scores = (_logit_confidence(target, inputs, labels) - mean) / std
    return evaluate_attack(scores, is_member, name="LiRA (offline)", low_fpr=low_fpr)


def dp_tpr_bound(fpr: np.ndarray | float, epsilon: float, delta: float) -> np.ndarray:
    """The most any attack can achieve against an (ε, δ)-DP model: TPR ≤ min(1, e^ε·FPR + δ)."""
    if not math.isfinite(epsilon) or epsilon < 0:
        raise ValueError(f"epsilon must be a finite number ≥ 0, got {epsilon}")
    if not 0 <= delta < 1:
        raise ValueError(f"delta must lie in [0, 1), got {delta}")
    return np.minimum(1.0, math.exp(epsilon) * np.asarray(fpr) + delta)
