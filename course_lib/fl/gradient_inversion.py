"""Gradient inversion: rebuilding a client's training images from the gradient it shared.

In federated SGD a client sends the gradient of the loss on its batch. Zhu, Liu and Han, *Deep
Leakage from Gradients* (NeurIPS 2019, "DLG"), showed that this gradient is often enough to
reconstruct the batch pixel by pixel: start from random "dummy" images (and dummy soft labels),
compute the gradient *they* would produce on the same model, and optimise the dummies until the two
gradients match. Zhao, Mopuri and Bilen, *iDLG* (2020), noticed that the label of a single image can
be read off directly: with cross-entropy and non-negative features feeding the last layer, the row
of the last layer's weight gradient belonging to the true class is the only one with negative
entries. Knowing the label makes the optimisation easier and more reliable.

The attack needs the model's weights (the server has them: it sent them) and the gradient — nothing
else. Defences that blunt it (lesson 12): bigger batches and averaging over clients (the gradient is
a sum of many), several local steps before sharing, and noise (differential privacy, lesson 13).

Reconstruction quality is measured against the original with :func:`psnr` (peak signal-to-noise
ratio, in dB; above ~30 dB the images look identical) and :func:`ssim` (structural similarity, 1 is
perfect).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torch.nn import functional as F

from course_lib.validation import (
    as_integer,
    check_nonnegative,
    check_nonnegative_int,
    check_positive,
    check_positive_int,
)

__all__ = [
    "LeNetSigmoid",
    "client_gradient",
    "output_layer",
    "infer_label_idlg",
    "idlg_label_from_gradient",
    "InversionResult",
    "invert_gradient",
    "psnr",
    "ssim",
    "match_reconstructions",
]


class LeNetSigmoid(nn.Module):
    """The victim network of the DLG paper, sized for 1×28×28 MNIST (≈13k parameters).

    Three 5×5 convolutions with 12 channels and sigmoid activations, then one linear layer. Smooth
    activations (twice differentiable) are what gradient matching needs; the weights are drawn
    uniformly from [−0.5, 0.5] as in the paper, seeded by ``seed``.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, seed: int = 0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 12, 5, padding=2, stride=2), nn.Sigmoid(),
            nn.Conv2d(12, 12, 5, padding=2, stride=2), nn.Sigmoid(),
            nn.Conv2d(12, 12, 5, padding=2, stride=1), nn.Sigmoid(),
            nn.Flatten(),
        )  # fmt: skip
        self.fc = nn.Linear(12 * 7 * 7, num_classes)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                # device: the CPU draw is copied into the parameter, wherever it lives
                p.copy_(torch.rand(p.shape, generator=generator) - 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[-2:] != (28, 28):
            raise ValueError(f"LeNetSigmoid expects images of shape (N, C, 28, 28), got {x.shape}")
        return self.fc(self.body(x))


def client_gradient(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor
) -> list[torch.Tensor]:
    """The gradient a client shares in federated SGD: ∇_θ of the mean cross-entropy on its batch."""
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    if images.shape[0] == 0:
        raise ValueError("the batch is empty")
    loss = F.cross_entropy(model(images), labels)
    return [g.detach() for g in torch.autograd.grad(loss, list(model.parameters()))]


def output_layer(model: nn.Module) -> tuple[nn.Linear, int]:
    """The model's output layer for iDLG — its last ``nn.Linear`` module — and the position of that
    layer's weight in ``list(model.parameters())`` (where the shared gradient list holds its
    gradient). Found by module, not by position in the gradient list, so a last layer without a
    bias (or parameters registered in an unusual order) cannot shift it.

    Raises:
        ValueError: if the model has no ``nn.Linear`` layer.
    """
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(
            f"{type(model).__name__} has no nn.Linear layer: iDLG reads the label off the output "
            "layer's weight gradient, so it does not apply (use idlg=False, or pass labels=)"
        )
    layer = linears[-1]
    index = next(i for i, p in enumerate(model.parameters()) if p is layer.weight)
    return layer, index


def infer_label_idlg(last_layer_weight_grad: torch.Tensor) -> int:
    """iDLG: the true label of a single image, from the gradient of the last linear layer's weight.

    For cross-entropy, row ``c`` of that gradient is ``(p_c − y_c) · h`` where ``h`` is the layer's
    input. With ``h ≥ 0`` (sigmoid or ReLU features) only the true class has ``p_c − 1 < 0``, so its
    row is the one whose entries are negative: the label is the row with the smallest sum.

    Raises:
        ValueError: if the gradient is not 2-D, or lacks iDLG's sign pattern — exactly one row with
            no positive entry and some negative one, every other row with no negative entry. That
            pattern fails when the features can be negative, the batch holds several images, the
            layer does not feed the loss directly, noise was added to the gradient (DP), or the
            model is so sure of the label that ``p_c`` rounds to 1; the label would then be a
            guess, so none is returned.
    """
    if last_layer_weight_grad.dim() != 2:
        raise ValueError(
            "pass the gradient of the last layer's weight matrix (classes × features), got shape "
            f"{tuple(last_layer_weight_grad.shape)}"
        )
    grad = last_layer_weight_grad.detach()
    negative_rows = (grad < 0).any(dim=1)
    positive_rows = (grad > 0).any(dim=1)
    candidates = torch.nonzero(negative_rows & ~positive_rows).flatten()
    if len(candidates) != 1 or int((negative_rows & positive_rows).sum()) > 0:
        raise ValueError(
            "this gradient does not have iDLG's sign pattern (one all-negative row, all other rows "
            "non-negative): the layer's inputs are not all ≥ 0, the batch has more than one image, "
            "the layer is not the output layer, noise was added, or the model is certain of the "
            "label. The label "
            "cannot be read off; use idlg=False (DLG) or pass labels="
        )
    return int(candidates[0])


def idlg_label_from_gradient(model: nn.Module, gradient: Sequence[torch.Tensor]) -> int:
    """iDLG on a whole shared gradient: locate the output layer by module
    (:func:`output_layer`) and read the label off its weight's gradient
    (:func:`infer_label_idlg`). Raises ``ValueError`` where the trick does not apply."""
    params = list(model.parameters())
    if len(gradient) != len(params):
        raise ValueError(
            f"the gradient has {len(gradient)} tensors but the model {len(params)} parameters"
        )
    layer, index = output_layer(model)
    if gradient[index].shape != layer.weight.shape:
        raise ValueError("the gradient's tensors do not line up with the model's parameters")
    return infer_label_idlg(gradient[index])


@dataclass
class InversionResult:
    """Reconstructed images, (inferred or optimised) labels, and the optimisation trace."""

    images: torch.Tensor
    labels: torch.Tensor
    losses: list[float] = field(default_factory=list)
    #: ``(iteration, images)`` pairs recorded every ``record_every`` iterations (and at the
    #: step where the attack stopped early, if that is not a multiple)
    snapshots: list[tuple[int, torch.Tensor]] = field(default_factory=list)


def _gradient_distance(
    dummy: Sequence[torch.Tensor], target: Sequence[torch.Tensor]
) -> torch.Tensor:
    distances = [((d - t) ** 2).sum() for d, t in zip(dummy, target, strict=True)]
    if not distances:
        raise ValueError("there are no gradient tensors to compare")
    total = distances[0]
    for distance in distances[1:]:  # added in order, as the built-in sum() would
        total = total + distance
    return total


def invert_gradient(
    model: nn.Module,
    target_gradient: Sequence[torch.Tensor],
    *,
    num_images: int = 1,
    image_shape: tuple[int, int, int] = (1, 28, 28),
    labels: torch.Tensor | None = None,
    idlg: bool = True,
    iterations: int = 50,
    tolerance: float = 1e-4,
    optimizer: str = "lbfgs",
    lr: float | None = None,
    seed: int = 0,
    record_every: int = 0,
) -> InversionResult:
    """Reconstruct a batch from its gradient by gradient matching (DLG / iDLG).

    Args:
        model: the model the gradient was computed on, with the same weights.
        target_gradient: the shared gradient, one tensor per parameter (as
            :func:`client_gradient` returns).
        num_images: the batch size to reconstruct.
        labels: known labels. ``None`` means DLG: soft labels are optimised along with the images —
            except for a single image with ``idlg=True``, where the label is read off the
            gradient first (iDLG, :func:`idlg_label_from_gradient`; a ``ValueError`` says so if
            the trick does not apply to this model or gradient).
        idlg: read a single image's label off the gradient (set False for the original DLG).
        iterations: the attack's budget in optimiser steps (one L-BFGS step runs up to 20
            iterations).
        tolerance: stop before the budget is spent once a whole step lowers the gradient
            distance by less than this fraction of it (or it reaches 0): the attack has
            converged — to the images, or to a point it cannot leave — and further steps change
            nothing visible. ``0`` spends the whole budget. ``InversionResult.losses`` has one
            entry per step taken.
        optimizer: ``"lbfgs"`` (the papers' choice) or ``"adam"``.
        lr: step size (default 1.0 for L-BFGS, 0.1 for Adam).
        seed: seeds the random dummy images.
        record_every: keep a snapshot of the dummies every this many iterations (0: never).

    Everything is created on the device of the model's parameters (the dummies are drawn on the
    CPU from ``seed``, so every device starts from the same images).
    """
    params = list(model.parameters())
    target = [t.detach() for t in target_gradient]
    if len(target) != len(params) or any(
        t.shape != p.shape for t, p in zip(target, params, strict=True)
    ):
        raise ValueError("target_gradient must hold one tensor per model parameter, same shapes")
    num_images = check_positive_int(num_images, "num_images")
    iterations = check_positive_int(iterations, "iterations")
    record_every = check_nonnegative_int(record_every, "record_every")
    seed = as_integer(seed, "seed")
    lr = None if lr is None else check_positive(lr, "lr")
    if optimizer not in ("lbfgs", "adam"):
        raise ValueError(f"optimizer must be 'lbfgs' or 'adam', got {optimizer!r}")
    tolerance = check_nonnegative(tolerance, "tolerance")
    device = params[0].device if params else torch.device("cpu")
    target = [t.to(device) for t in target]
    if labels is None and idlg and num_images == 1:
        # device: moved to the model's device just below
        labels = torch.tensor([idlg_label_from_gradient(model, target)])
    if labels is not None:
        labels = torch.as_tensor(labels, dtype=torch.int64).to(device)
        if labels.shape != (num_images,):
            raise ValueError(f"labels must have shape ({num_images},), got {tuple(labels.shape)}")

    generator = torch.Generator().manual_seed(seed)
    dummy = torch.rand((num_images, *image_shape), generator=generator).to(device)
    dummy.requires_grad_(True)
    variables = [dummy]
    dummy_logits: torch.Tensor | None = None  # soft labels, optimised when no labels are known
    if labels is None:
        with torch.no_grad():  # the number of classes, from the model itself
            num_classes = model(dummy).shape[-1]
        dummy_logits = torch.randn((num_images, num_classes), generator=generator).to(device)
        dummy_logits.requires_grad_(True)
        variables.append(dummy_logits)

    opt: torch.optim.Optimizer
    if optimizer == "lbfgs":
        opt = torch.optim.LBFGS(variables, lr=lr or 1.0, line_search_fn="strong_wolfe")
    else:
        opt = torch.optim.Adam(variables, lr=lr or 0.1)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = model(dummy)
        if dummy_logits is None:
            assert labels is not None  # dummy_logits is None exactly when the labels are known
            loss = F.cross_entropy(logits, labels)
        else:
            soft = F.softmax(dummy_logits, dim=-1)
            loss = torch.mean(torch.sum(-soft * F.log_softmax(logits, dim=-1), dim=-1))
        grads = torch.autograd.grad(loss, params, create_graph=True)
        distance = _gradient_distance(grads, target)
        distance.backward()
        return distance

    # device: a placeholder; the final images and labels on the model's device replace it
    result = InversionResult(images=dummy.detach(), labels=torch.empty(0))
    for it in range(1, iterations + 1):
        loss = float(opt.step(closure).detach())
        result.losses.append(loss)
        if record_every and it % record_every == 0:
            result.snapshots.append((it, dummy.detach().clamp(0, 1).clone()))
        previous = result.losses[-2] if it > 1 else math.inf
        if loss == 0 or previous - loss < tolerance * previous:
            if record_every and it % record_every:
                result.snapshots.append((it, dummy.detach().clamp(0, 1).clone()))
            break
    result.images = dummy.detach().clamp(0, 1)
    if labels is not None:
        result.labels = labels
    else:
        assert dummy_logits is not None  # created above whenever labels is None
        result.labels = dummy_logits.detach().argmax(dim=-1)
    return result


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")


def psnr(
    reconstruction: torch.Tensor, original: torch.Tensor, data_range: float = 1.0
) -> float | torch.Tensor:
    """Peak signal-to-noise ratio in dB, per image: ``10 · log10(range² / MSE)``.

    Inputs of shape ``(C, H, W)`` give a float; ``(N, C, H, W)`` a tensor of N values.
    """
    _check_pair(reconstruction, original)
    batched = reconstruction.dim() == 4
    a = reconstruction.detach().double().reshape(reconstruction.shape[0] if batched else 1, -1)
    b = original.detach().double().reshape(a.shape)
    mse = ((a - b) ** 2).mean(dim=1).clamp_min(1e-12)
    values = 10 * torch.log10(data_range**2 / mse)
    return values if batched else float(values[0])


def ssim(
    reconstruction: torch.Tensor, original: torch.Tensor, data_range: float = 1.0
) -> float | torch.Tensor:
    """Structural similarity (Wang et al. 2004) with an 11×11 Gaussian window (σ = 1.5).

    Compares local means, contrasts and correlations; 1 means identical. Shapes as :func:`psnr`.
    """
    _check_pair(reconstruction, original)
    batched = reconstruction.dim() == 4
    a = reconstruction.detach().double()
    b = original.detach().double()
    if not batched:
        a, b = a.unsqueeze(0), b.unsqueeze(0)
    channels = a.shape[1]
    coords = torch.arange(11, dtype=torch.float64, device=a.device) - 5
    g = torch.exp(-(coords**2) / (2 * 1.5**2))
    g = g / g.sum()
    window = (g[:, None] * g[None, :]).expand(channels, 1, 11, 11).contiguous()

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, window, padding=5, groups=channels)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    values = index.flatten(1).mean(dim=1)
    return values if batched else float(values[0])


def match_reconstructions(reconstructions: torch.Tensor, originals: torch.Tensor) -> torch.Tensor:
    """Reorder a reconstructed batch to line up with the originals (a gradient does not say which
    image came first): the assignment that minimises the total mean squared error.

    Returns ``reconstructions`` permuted so that row ``k`` is the best match of ``originals[k]``.
    """
    _check_pair(reconstructions, originals)
    a = reconstructions.detach().flatten(1).double()
    b = originals.detach().flatten(1).double()
    cost = torch.cdist(b, a) ** 2
    _, columns = linear_sum_assignment(cost.cpu().numpy())
    return reconstructions[torch.as_tensor(columns, device=reconstructions.device)]
