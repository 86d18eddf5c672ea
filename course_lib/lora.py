"""LoRA: low-rank adapters for fine-tuning (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large
Language Models", arXiv:2106.09685).

A pretrained ``nn.Linear`` computes ``y = W x + b``. LoRA **freezes** ``W`` and ``b`` and learns a
low-rank change of ``W`` instead:

    y = W x + b + (α / r) · B A x,    A: (r, d_in),  B: (d_out, r),  r ≪ min(d_in, d_out).

``A`` starts random (Kaiming-uniform, as ``nn.Linear`` initialises its weights) and ``B`` starts
at **zero**, so before the first step the adapted model computes exactly what the pretrained one
did (paper, §4.1). Only ``r·(d_in + d_out)`` numbers train per layer instead of ``d_in·d_out``;
after training, ``W + (α/r)·B A`` can be **merged** into one ordinary weight, so the adapter costs
nothing at inference time.

``A`` and ``B`` are two bias-free ``nn.Linear`` layers (``lora_A``, ``lora_B``), as in Hugging
Face's ``peft``: then Opacus' per-sample-gradient hooks and the course's fast DP-SGD path
(:mod:`course_lib.dp.dpsgd`, ``method="taps"``) both handle them as ordinary linear layers.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from course_lib.validation import as_integer, check_positive

__all__ = [
    "LoRALinear",
    "add_lora",
    "count_parameters",
    "freeze_all_but",
    "merge_lora",
]


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update ``(alpha / rank) · B A``.

    ``base`` is used as it is (its parameters are set to ``requires_grad=False``, not copied).
    ``rank`` must lie in ``1 … min(d_in, d_out)`` and ``alpha`` must be positive; ``generator``
    seeds ``A``'s initialisation. ``B`` starts at zero, so a fresh adapter changes nothing.
    """

    def __init__(
        self,
        base: nn.Linear,
        rank: int,
        alpha: float = 1.0,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRA adapts an nn.Linear layer, got {type(base).__name__}")
        rank = _check_rank(rank, base)
        alpha = check_positive(alpha, "alpha")
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Linear(base.in_features, rank, bias=False, **factory)
        self.lora_B = nn.Linear(rank, base.out_features, bias=False, **factory)
        with torch.no_grad():
            # nn.Linear's own initialisation (Kaiming-uniform with a = √5: bound 1/√d_in), drawn
            # from ``generator`` so that an adapter is reproducible without the global seed
            bound = 1.0 / math.sqrt(base.in_features)
            # CPU by design: drawn with a CPU generator; copy_ moves it to the weight's device
            draw = torch.rand(self.lora_A.weight.shape, generator=generator, dtype=torch.float64)
            self.lora_A.weight.copy_((2 * draw - 1) * bound)
            self.lora_B.weight.zero_()

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.lora_B(self.lora_A(x)) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        """The update the adapter adds to the frozen weight: ``(alpha / rank) · B A``."""
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` with weight ``W + (alpha/rank)·B A`` (and the same bias): the
        same function as this adapter, at the cost of one layer."""
        layer = nn.Linear(
            self.in_features,
            self.out_features,
            bias=self.base.bias is not None,
            device=self.base.weight.device,
            dtype=self.base.weight.dtype,
        )
        with torch.no_grad():
            layer.weight.copy_(self.base.weight + self.delta_weight())
            if self.base.bias is not None:
                layer.bias.copy_(self.base.bias)
        return layer

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}"


def _check_rank(rank: object, base: nn.Linear) -> int:
    rank = as_integer(rank, "rank")
    largest = min(base.in_features, base.out_features)
    if not 1 <= rank <= largest:
        raise ValueError(
            f"rank must lie in 1 … min(d_in, d_out) = {largest} for a "
            f"{base.in_features}→{base.out_features} layer, got {rank}"
        )
    return rank


def add_lora(
    model: nn.Module,
    targets: list[str] | tuple[str, ...],
    rank: int,
    alpha: float = 1.0,
    seed: int = 0,
) -> list[str]:
    """Replace every ``nn.Linear`` whose qualified name ends with one of ``targets`` (e.g.
    ``("attn.query", "attn.value")``, the layers Hu et al. adapt) by a :class:`LoRALinear`, and
    **freeze every other parameter** of ``model``. Returns the adapted layers' names, in order.

    Everything is checked before the model is touched: ``ValueError`` when no layer matches, a
    match is not an ``nn.Linear``, or the rank does not fit a matched layer.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(targets, str) or not targets:
        raise ValueError("targets must be a non-empty list of layer names (or name endings)")
    alpha = check_positive(alpha, "alpha")
    chosen = [
        (name, module)
        for name, module in model.named_modules()
        if name and any(name == t or name.endswith("." + t) for t in targets)
    ]
    if not chosen:
        raise ValueError(f"no layer of the model is named (or ends with) any of {list(targets)}")
    for name, module in chosen:
        if not isinstance(module, nn.Linear):
            raise ValueError(f"{name} is a {type(module).__name__}, not an nn.Linear")
        _check_rank(rank, module)
    generator = torch.Generator().manual_seed(as_integer(seed, "seed"))
    for p in model.parameters():
        p.requires_grad_(False)
    for name, module in chosen:
        assert isinstance(module, nn.Linear)  # checked above
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(module, rank, alpha, generator=generator))
    return [name for name, _ in chosen]


def merge_lora(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with every :class:`LoRALinear` replaced by its merged
    ``nn.Linear`` (the original model is left as it is)."""
    merged = copy.deepcopy(model)
    for name, module in list(merged.named_modules()):
        if isinstance(module, LoRALinear):
            parent_name, _, child = name.rpartition(".")
            parent = merged.get_submodule(parent_name) if parent_name else merged
            setattr(parent, child, module.merged())
    return merged


def freeze_all_but(model: nn.Module, prefixes: list[str] | tuple[str, ...]) -> list[str]:
    """Set ``requires_grad`` so that exactly the parameters whose names start with one of
    ``prefixes`` (e.g. ``("head.",)``) train; returns their names. ``ValueError`` (before any
    change) when no parameter matches."""
    if isinstance(prefixes, str) or not prefixes:
        raise ValueError("prefixes must be a non-empty list of parameter-name prefixes")
    keep = [name for name, _ in model.named_parameters() if name.startswith(tuple(prefixes))]
    if not keep:
        raise ValueError(f"no parameter name starts with any of {list(prefixes)}")
    for name, p in model.named_parameters():
        p.requires_grad_(name in keep)
    return keep


def count_parameters(model: nn.Module, *, trainable_only: bool = True) -> int:
    """How many numbers the model holds (``trainable_only``: only those with
    ``requires_grad``); a parameter shared by two modules is counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
