"""DP-SGD (Abadi et al. 2016): differentially private training of a neural network.

One private step, for a batch drawn by **Poisson sampling** (each example joins independently with
probability ``q``):

1. compute every example's own gradient (*per-sample gradients*);
2. **clip** each to L2 norm at most ``C``, so no single example can move the model much;
3. sum the clipped gradients and add **Gaussian noise** of standard deviation ``σ·C`` to every
   coordinate;
4. divide by the expected batch size ``q·N`` and let the optimiser take its step.

The accountant (:mod:`course_lib.dp.accounting`) turns ``(σ, q, steps)`` into the ε spent.

Two ways to get the clipped sum, giving the same numbers:

* ``method="vmap"`` — the textbook way: :func:`per_sample_gradients` materialises a gradient per
  example with ``torch.func`` (``vmap(grad(loss))``); works for any model without batch-mixing
  layers.
* ``method="taps"`` — the fast way for models made of ``nn.Linear`` and ``nn.Conv2d`` layers (the
  course's MLP and SmallCNN). A layer's weight gradient for example *i* is a sum of outer products
  ``Σ_t g_it a_itᵀ`` of what flowed *into* the layer (activations ``a``) and what flowed *back*
  out of it (backprops ``g``). Forward hooks "tap" the activations; one backward pass to the layer
  outputs gives the backprops. From these we get each example's gradient **norm** without building
  its gradient (for a Linear layer ``‖g_i a_iᵀ‖ = ‖g_i‖·‖a_i‖``, the "ghost norm" trick), and the
  **clipped sum** ``Σ_i c_i g_i a_iᵀ`` as one ordinary weight gradient computed with the backprops
  scaled by the clip factors ``c_i``. ``"auto"`` (the default) uses it whenever the model allows.
  With secure noise (no run is meant to repeat bit for bit) convolutions and Linear layers on
  sequences take a faster route instead: each example's weight gradient is *materialised* (one
  batched matrix product of backprops and channels-last patches, or a grouped convolution for a
  single input channel), giving its norm and — one matrix–vector product with the clip factors —
  the clipped sum, so the layer's gradient is not computed twice. Same numbers up to float
  rounding; seeded runs keep the route above, so the lessons' seeded numbers do not change.

* ``method="loop"`` — one ordinary backward pass per example: exact for every model, slow.
  ``"auto"`` picks it for recurrent layers (``nn.RNN``, ``nn.GRU``, ``nn.LSTM``), whose hidden state
  ``vmap`` cannot batch.

``"auto"`` only takes the fast path when it provably computes the same gradients: every trainable
parameter is the ``weight``/``bias`` of a plain ``nn.Linear``/``nn.Conv2d`` (a subclass that
overrides ``forward`` — LoRA-style — or has extra parameters, a parametrized weight such as
``weight_norm``, a module with its own hooks, or a weight shared by two modules all fall back to
``vmap``), and on the first batch the fast gradients are checked against autograd's ordinary
gradient, which catches a weight also used *outside* its layer (tied weights). The reason for a
fallback is kept in :attr:`DPSGD.fallback_reason`.

**Non-finite gradients.** An example whose gradient contains NaN or ±∞ (or whose norm overflows)
has no meaningful clip factor: ``min(1, C/NaN)`` would let it through unscaled. Such an example is
*zeroed* (it contributes nothing, which is within the bound ``C``) and *counted*
(:attr:`DPSGD.nonfinite_examples`, the history's ``nonfinite_examples``). We zero rather than
raise: an exception in the middle of private training would itself be a data-dependent signal,
and the count is reported as a training metric outside the guarantee.

**Devices.** Every tensor created here follows the device and dtype of the model or its inputs;
the noise is drawn on the CPU from the secure source and then moved to the parameters' device.

Noise comes from a cryptographically secure source by default
(:class:`~course_lib.randomness.SecureRandom`), turned into Gaussians with the Box–Muller
transform; pass an :class:`~course_lib.randomness.InsecureSeededRandom` for reproducible lessons.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
import torch.nn.grad  # conv2d_weight; a submodule that ``import torch`` does not bind for mypy
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn.utils import parametrize
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from course_lib.dp.accounting import RDPAccountant
from course_lib.randomness import RandomSource, resolve_random_source
from course_lib.training import History, evaluate, model_device
from course_lib.validation import (
    check_delta,
    check_noise_multiplier,
    check_nonnegative,
    check_positive,
    check_positive_int,
    check_sample_rate,
    dataset_tensors,
)

__all__ = [
    "per_sample_gradients",
    "clip_gradients",
    "example_losses",
    "gaussian_noise",
    "PoissonSampler",
    "DPSGD",
    "DPHistory",
    "PRIVATE_METRICS",
    "train_private",
]

LossFn = Callable[..., torch.Tensor]
#: The layers the fast ("taps") path computes per-sample gradients for.
TappedLayer = nn.Linear | nn.Conv2d


# -- 1. per-sample gradients, the textbook way -----------------------------------------------------


def per_sample_gradients(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: LossFn = F.cross_entropy,
    *,
    method: str = "vmap",
) -> dict[str, torch.Tensor]:
    """Every example's gradient: ``{parameter name: tensor of shape (batch, *parameter.shape)}``.

    ``method="vmap"``: ``torch.func.grad`` differentiates the loss of *one* example as a function of
    the parameters; ``vmap`` runs that function over the batch dimension in one vectorised call.
    ``method="loop"``: one ordinary backward pass per example (for layers ``vmap`` cannot batch,
    such as ``nn.GRU``).

    ``loss_fn(logits, targets, reduction=...)`` takes ``reduction`` like ``F.cross_entropy``; an
    example's loss is :func:`example_losses`: the mean of its ``reduction="none"`` values, so a
    sequence's per-position losses are averaged — the same in every path of :class:`DPSGD`.
    """
    _check_batch(inputs, targets)
    if method == "loop":
        return _per_sample_gradients_loop(model, inputs, targets, loss_fn)
    if method != "vmap":
        raise ValueError(f"method must be 'vmap' or 'loop', got {method!r}")
    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    buffers = {name: b.detach() for name, b in model.named_buffers()}

    def loss_of_one(params, x, y):
        logits = functional_call(model, (params, buffers), (x.unsqueeze(0),))
        return example_losses(loss_fn, logits, y.unsqueeze(0))[0]

    return vmap(grad(loss_of_one), in_dims=(None, 0, 0), randomness="different")(
        params, inputs, targets
    )


def _per_sample_gradients_loop(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss_fn: LossFn
) -> dict[str, torch.Tensor]:
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    rows: dict[str, list[torch.Tensor]] = {name: [] for name in params}
    for i in range(len(inputs)):
        loss = example_losses(loss_fn, model(inputs[i : i + 1]), targets[i : i + 1])[0]
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        for (name, p), g in zip(params.items(), grads, strict=True):
            rows[name].append(torch.zeros_like(p) if g is None else g)
    return {name: torch.stack(r) for name, r in rows.items()}


def clip_gradients(
    grads: dict[str, torch.Tensor], max_grad_norm: float
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Scale each example's gradient (across all parameters) to L2 norm at most ``max_grad_norm``.

    Returns the clipped per-sample gradients and the per-sample norms *before* clipping. An example
    whose gradient is not finite (NaN or ±∞ anywhere, or a norm that overflows) is set to zero:
    its norm is NaN or ∞ in the returned norms, so callers can count it.
    """
    max_grad_norm = check_positive(max_grad_norm, "max_grad_norm")
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads.values()], dim=1).norm(dim=1)
    finite = torch.isfinite(norms)
    all_finite = bool(finite.all())  # one check; the per-example guards run only when it fails
    factors = _clip_factors(norms, max_grad_norm, None if all_finite else finite)
    clipped = {name: g * _rows(factors, g) for name, g in grads.items()}
    if not all_finite:  # factor 0 is not enough: 0 · NaN is still NaN
        clipped = {name: torch.where(_rows(finite, g), g, 0.0) for name, g in clipped.items()}
    return clipped, norms


def example_losses(loss_fn: LossFn, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each example's loss, shape ``(batch,)``: ``loss_fn(logits, targets, reduction="none")``,
    averaged over any further dimensions (the positions of a sequence), as ``loss_fn``'s default
    ``"mean"`` averages them for one example — the loss :func:`per_sample_gradients`
    differentiates. ``ValueError`` if the result has no batch dimension."""
    losses = loss_fn(logits, targets, reduction="none")
    if losses.dim() == 0 or losses.shape[0] != len(targets):
        raise ValueError(
            "loss_fn(logits, targets, reduction='none') must return one loss per example (or "
            f"per example and position), got shape {tuple(losses.shape)} for {len(targets)} "
            "examples"
        )
    return losses.flatten(1).mean(1) if losses.dim() > 1 else losses


def _correct_predictions(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """How many examples the logits classify correctly; for a sequence (a target per position),
    each example counts its fraction of correct positions. Classes are the last dimension when
    the logits are ``(*targets.shape, classes)``, else dimension 1 (as ``F.cross_entropy``); when
    a sequence is as long as there are classes both readings fit, and the first is taken. Only the
    reported accuracy depends on this, never the gradients or the privacy accounting."""
    per_position = logits.dim() == targets.dim() + 1 and logits.shape[:-1] == targets.shape
    hits = logits.argmax(-1 if per_position else 1) == targets
    return float(hits.flatten(1).float().mean(1).sum() if hits.dim() > 1 else hits.sum())


def _rows(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-example vector shaped to broadcast over ``like``'s trailing dimensions."""
    return values.view(-1, *[1] * (like.dim() - 1))


def _clip_factors(
    norms: torch.Tensor, max_grad_norm: float, finite: torch.Tensor | None = None
) -> torch.Tensor:
    """c_i = min(1, C / ‖g_i‖): examples already inside the ball are left alone; c_i = 0 when the
    norm is NaN or ∞ (``min(1, C/NaN)`` would otherwise be 1 and let the example through).

    ``finite`` is ``torch.isfinite(norms)``, or None when the caller has checked that every norm
    is finite (then there is nothing to zero)."""
    factors = (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
    if finite is None:
        return factors
    return torch.where(finite, factors, torch.zeros_like(factors))


# -- 2. per-sample norms and the clipped sum from activations and backprops ------------------------


def _taps_refusal(module: nn.Module) -> str | None:
    """Why the fast path cannot compute this layer's per-sample gradients, or None if it can."""
    name = type(module).__name__
    if parametrize.is_parametrized(module):
        return f"{name} has a parametrized weight (e.g. weight_norm)"
    if module._forward_hooks or module._forward_pre_hooks:
        return f"{name} has forward hooks that may change what it computes"
    own = {n for n, p in module.named_parameters(recurse=False) if p.requires_grad}
    if isinstance(module, nn.Linear | nn.Conv2d) and own <= {"weight", "bias"}:
        if not isinstance(module.weight, nn.Parameter):
            return f"{name}.weight is computed, not a parameter"
        overrides = f"{name} overrides forward (e.g. a LoRA-style extra term)"
        if isinstance(module, nn.Linear):
            return overrides if type(module).forward is not nn.Linear.forward else None
        if (
            type(module).forward is not nn.Conv2d.forward
            or type(module)._conv_forward is not nn.Conv2d._conv_forward
        ):
            return overrides
        if module.groups == 1 and module.padding_mode == "zeros":
            return None if not isinstance(module.padding, str) else f"{name} uses string padding"
        return f"{name} uses groups or non-zero padding"
    if isinstance(module, nn.RNNBase):
        return f"{name} is recurrent"
    return f"{name} is not an nn.Linear or nn.Conv2d layer (or has extra parameters {own})"


def _tapped_layers(model: nn.Module) -> tuple[list[TappedLayer] | None, str | None]:
    """The Linear/Conv2d layers holding every trainable parameter, or (None, why not)."""
    owners = Counter(
        id(p)
        for _, module in model.named_modules(remove_duplicate=False)
        for p in module.parameters(recurse=False)
    )
    if any(count > 1 for count in owners.values()):
        return None, "a parameter is shared by two modules (tied weights)"
    layers: list[TappedLayer] = []
    covered: set[int] = set()
    for module in model.modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        reason = _taps_refusal(module)
        if reason is not None:
            return None, reason
        assert isinstance(module, TappedLayer)  # _taps_refusal accepts no other layer
        layers.append(module)
        covered.update(id(p) for p in own)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    if covered != trainable:
        return None, "some trainable parameters are not in a tapped layer"
    return layers, None


def _vmap_refusal(model: nn.Module) -> str | None:
    """Why ``vmap`` cannot batch this model's per-sample gradients, or None."""
    for module in model.modules():
        if isinstance(module, nn.RNNBase):
            return f"vmap cannot batch {type(module).__name__}'s hidden state"
    return None


def _patches(layer: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The input patches a convolution's kernel sees: shape (batch, in_channels·kh·kw, positions).

    Same result as ``F.unfold``, built as a strided *view* of the padded input and copied once
    (faster than ``unfold`` on CPU; numpy's strided copy is faster still for small kernels).
    """
    if isinstance(layer.padding, str):  # _taps_refusal turns such layers away
        raise ValueError(f"cannot take patches with string padding {layer.padding!r}")
    (ph, pw), (sh, sw), (dh, dw) = layer.padding, layer.stride, layer.dilation
    (kh, kw), (batch, channels) = layer.kernel_size, x.shape[:2]
    if ph or pw:
        x = F.pad(x, (pw, pw, ph, ph))
    out_h = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1
    out_w = (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
    shape = (batch, channels, kh, kw, out_h, out_w)
    s_batch, s_channel, s_row, s_col = x.stride()
    strides = (s_batch, s_channel, s_row * dh, s_col * dw, s_row * sh, s_col * sw)
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and not x.requires_grad:
        array = x.numpy()
        view = np.lib.stride_tricks.as_strided(
            array, shape, tuple(s * array.itemsize for s in strides), writeable=False
        )
        patches = torch.from_numpy(np.ascontiguousarray(view))
    else:
        patches = x.as_strided(shape, strides)
    return patches.reshape(batch, channels * kh * kw, out_h * out_w)


def _squared_norms(
    layer: TappedLayer, x: torch.Tensor, g: torch.Tensor, *, reproducible: bool = True
) -> torch.Tensor:
    """‖per-sample gradient of the layer's weight‖² for every example, from input x and backprop g.

    Example i's weight gradient is ``Σ_t g_it a_itᵀ`` over positions t (one for a Linear layer on
    flat inputs, one per output pixel for a convolution, whose a_it are input patches).
    ``reproducible=False`` allows a faster route whose float rounding differs (seeded runs keep
    the arithmetic their lessons' numbers were made with).
    """
    if isinstance(layer, nn.Linear) and x.dim() == 2:  # ghost norm: ‖g aᵀ‖ = ‖g‖·‖a‖
        return x.square().sum(1) * g.square().sum(1)
    if (
        not reproducible
        and isinstance(layer, nn.Conv2d)
        and layer.in_channels == 1
        and x.device.type == "cpu"
    ):
        return _single_channel_conv_squared_norms(layer, x, g)
    if isinstance(layer, nn.Conv2d):
        a, g = (
            _patches(layer, x),
            g.flatten(2),
        )  # (batch, d_in, positions), (batch, d_out, positions)
    else:  # Linear on sequences (batch, ..., features)
        a, g = x.flatten(1, -2).transpose(1, 2), g.flatten(1, -2).transpose(1, 2)
    (d_in, positions), d_out = a.shape[1:], g.shape[1]
    if positions * (d_in + d_out) < d_in * d_out:
        # ghost norm with Gram matrices over positions: ‖Σ_t g_t a_tᵀ‖² = Σ_tt' (a_t·a_t')(g_t·g_t')
        return ((a.transpose(1, 2) @ a) * (g.transpose(1, 2) @ g)).sum((1, 2))
    return torch.bmm(g, a.transpose(1, 2)).square().sum((1, 2))  # materialise the (small) gradients


def _single_channel_conv_squared_norms(
    layer: nn.Conv2d, x: torch.Tensor, g: torch.Tensor
) -> torch.Tensor:
    """Per-sample weight-gradient norms² of a convolution on one input channel, without patches
    (see :func:`_single_channel_conv_gradients`)."""
    return _single_channel_conv_gradients(layer, x, g).square().sum((1, 2))


def _single_channel_conv_gradients(
    layer: nn.Conv2d, x: torch.Tensor, g: torch.Tensor
) -> torch.Tensor:
    """Per-sample weight gradients of a convolution on one input channel, without patches:
    shape (batch, out_channels, kh·kw), each row in the order of ``layer.weight[o].flatten()``.

    Example i's gradient ``G_i[o, r, c] = Σ_pq g_i[o, p, q] · x_i[s·p + d·r, s·q + d·c]`` (stride
    s, dilation d, after padding) is itself a convolution of x_i with g_i as the kernel: one
    grouped convolution (a group per example, stride d, dilation s) makes all of them at once —
    on the CPU about 1.5× faster than copying the patches and multiplying, for a first layer on
    grayscale images.
    """
    batch, out_channels = g.shape[:2]
    kh, kw = layer.kernel_size
    grads = F.conv2d(
        x.reshape(1, batch, *x.shape[2:]),
        g.reshape(batch * out_channels, 1, *g.shape[2:]),
        stride=layer.dilation,
        padding=layer.padding,
        dilation=layer.stride,
        groups=batch,
    )  # (1, batch·out_channels, ≥ kh, ≥ kw): rows past the kernel are positions the layer skips
    return grads[0, :, :kh, :kw].reshape(batch, out_channels, kh * kw)


#: The most numbers (batch × weight size) the fast path materialises per-sample weight gradients
#: for (2²⁴ float32 numbers: 64 MiB); a bigger layer takes the ghost-norm routes instead.
_PER_SAMPLE_LIMIT = 1 << 24


@dataclass
class _PerSample:
    """One layer's materialised per-sample gradients: ``weight`` (batch, out, k) with k in the
    order ``to_weight`` expects, and ``bias`` (batch, out) or None."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    to_weight: Callable[[torch.Tensor], torch.Tensor]


def _cpu_float(x: torch.Tensor) -> bool:
    """Whether x is a float32/float64 CPU tensor (numpy can copy it; the grouped-convolution
    route is the faster one there)."""
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)


def _per_sample_weight_gradients(
    layer: TappedLayer, x: torch.Tensor, g: torch.Tensor
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]] | None:
    """Every example's weight gradient, materialised, for the fast (non-reproducible) route:
    ``(grads, to_weight)`` with ``grads`` of shape (batch, out, k) and ``to_weight`` turning a
    (out, k) combination of them into a tensor shaped like ``layer.weight``; None when they would
    take more than :data:`_PER_SAMPLE_LIMIT` numbers (or the layer is a Linear on flat inputs,
    whose ghost norm is cheaper).

    Once materialised, the per-sample gradients give the norms *and* the clipped sum (one
    matrix–vector product with the clip factors), so the layer's weight gradient is not computed a
    second time from scaled backprops: fewer operations than the Gram-matrix ghost norm plus that
    second gradient, for the small layers of the course's models. A convolution's patches are
    copied from the input in channels-last order (each kernel row's channels are contiguous runs):
    2–4× faster than gathering them channel by channel (measured on SmallCNN's second layer).
    """
    batch, weight = len(x), layer.weight
    if batch * weight.numel() > _PER_SAMPLE_LIMIT:
        return None
    if isinstance(layer, nn.Linear):
        if x.dim() == 2:
            return None
        a = x.reshape(batch, -1, x.shape[-1])  # (batch, positions, in)
        b = g.reshape(batch, -1, g.shape[-1])  # (batch, positions, out)
        return torch.bmm(b.transpose(1, 2), a), lambda total: total.view_as(weight)
    if isinstance(layer.padding, str):  # _taps_refusal turns such layers away
        raise ValueError(f"cannot take patches with string padding {layer.padding!r}")
    out_channels, channels, kh, kw = weight.shape
    if channels == 1 and _cpu_float(x):
        grads = _single_channel_conv_gradients(layer, x, g)
        return grads, lambda total: total.view_as(weight)
    (ph, pw), (sh, sw), (dh, dw) = layer.padding, layer.stride, layer.dilation
    if ph or pw:
        x = F.pad(x, (pw, pw, ph, ph))
    rows, cols = x.shape[2:]
    out_h, out_w = g.shape[2:]
    # patch (i, p, q) holds nhwc[i, sh·p + dh·r, sw·q + dw·c, :] for kernel offsets (r, c)
    shape = (batch, out_h, out_w, kh, kw, channels)
    strides = (
        rows * cols * channels,
        sh * cols * channels,
        sw * channels,
        dh * cols * channels,
        dw * channels,
        1,
    )
    nhwc = x.permute(0, 2, 3, 1)  # no copy needed when x is already channels_last
    backprops = g.reshape(batch, out_channels, out_h * out_w)
    if _cpu_float(x) and backprops.dtype == x.dtype:
        # numpy's strided copy and its stacked matrix product (OpenBLAS) are both faster than
        # torch's for these shapes (≈1.5× for the product's small inner dimension, CPU time)
        array = np.ascontiguousarray(nhwc.detach().numpy())
        view = np.lib.stride_tricks.as_strided(
            array, shape, tuple(s * array.itemsize for s in strides), writeable=False
        )
        patches_array = np.ascontiguousarray(view).reshape(batch, out_h * out_w, -1)
        grads = torch.from_numpy(np.matmul(backprops.detach().numpy(), patches_array))
    else:
        patches = nhwc.contiguous().as_strided(shape, strides)
        patches = patches.reshape(batch, out_h * out_w, kh * kw * channels)
        grads = torch.bmm(backprops, patches)

    def to_weight(total: torch.Tensor) -> torch.Tensor:
        return total.view(out_channels, kh, kw, channels).permute(0, 3, 1, 2).contiguous()

    return grads, to_weight


def _weight_gradient(layer: TappedLayer, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The layer's ordinary (summed over the batch) weight gradient for input x and backprop g."""
    if isinstance(layer, nn.Conv2d):
        return torch.nn.grad.conv2d_weight(
            x, layer.weight.shape, g, layer.stride, layer.padding, layer.dilation
        )
    return g.reshape(-1, g.shape[-1]).T @ x.reshape(-1, x.shape[-1])


def _bias_gradients(layer: TappedLayer, g: torch.Tensor) -> torch.Tensor:
    """Per-sample bias gradients: the backprop summed over positions, shape (batch, d_out)."""
    if isinstance(layer, nn.Conv2d):
        return g.sum((2, 3))
    return g.reshape(len(g), -1, g.shape[-1]).sum(1)


class _Taps:
    """Forward hooks recording each tapped layer's input and output during one forward pass."""

    def __init__(self, layers: list[TappedLayer]) -> None:
        self.layers = layers
        self.records: list[tuple[TappedLayer, torch.Tensor, torch.Tensor]] = []

    def _record(self, layer: TappedLayer, inputs: tuple, output: torch.Tensor) -> None:
        self.records.append((layer, inputs[0].detach(), output))

    def __enter__(self) -> _Taps:
        self._handles = [layer.register_forward_hook(self._record) for layer in self.layers]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()


class _TapsDoNotApply(Exception):
    """The fast path's gradients differ from autograd's: a weight is used outside its layer."""


def _clipped_sum_taps(
    model: nn.Module,
    layers: list[TappedLayer],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: LossFn,
    max_grad_norm: float,
    *,
    verify: bool = False,
    reproducible: bool = True,
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, float, float, int]:
    """The clipped sum from taps: (sums, parameters, norms, summed loss of the finite examples,
    correct predictions, number of examples with a non-finite gradient). ``reproducible=False``
    (secure noise: no run is meant to repeat bit for bit) lets the norms and sums take faster
    routes (materialised per-sample gradients, :func:`_per_sample_weight_gradients`)."""
    with _Taps(layers) as taps:
        logits = model(inputs)
    if len({id(layer) for layer, _, _ in taps.records}) != len(taps.records):
        raise ValueError(
            "a layer was called twice in one forward pass (shared weights); use method='vmap'"
        )
    losses = example_losses(loss_fn, logits, targets)  # example i's loss depends on its row only
    outputs = [out for _, _, out in taps.records]
    params = [
        p
        for layer, _, _ in taps.records
        for p in (layer.weight, layer.bias)
        if p is not None and p.requires_grad
    ]
    if verify:  # the ordinary summed gradients too, to compare with what the taps reconstruct
        grads = torch.autograd.grad(losses.sum(), outputs + params, allow_unused=True)
        backprops, reference = list(grads[: len(outputs)]), grads[len(outputs) :]
    else:
        backprops = list(torch.autograd.grad(losses.sum(), outputs))  # no weight gradients here

    squared_norms = torch.zeros(len(inputs), dtype=logits.dtype, device=logits.device)
    # per layer: its materialised per-sample gradients (fast route), or None (made from the
    # backprops scaled by the clip factors below)
    per_sample: list[_PerSample | None] = []
    for (layer, x, _), g in zip(taps.records, backprops, strict=True):
        has_bias = layer.bias is not None and layer.bias.requires_grad
        if _flat_linear(layer, g):  # ‖g_i‖² serves the ghost norm and the bias gradient alike
            g_squared = g.square().sum(1)
            if layer.weight.requires_grad:
                squared_norms += x.square().sum(1) * g_squared
            if has_bias:
                squared_norms += g_squared
            per_sample.append(None)
            continue
        materialised = (
            _per_sample_weight_gradients(layer, x, g)
            if layer.weight.requires_grad and not reproducible
            else None
        )
        bias_grads = _bias_gradients(layer, g) if has_bias else None
        # weight first, then bias: the order of these float additions is the seeded route's, so
        # seeded runs repeat bit for bit
        if materialised is not None:
            weight_grads, to_weight = materialised
            squared_norms += torch.linalg.vector_norm(weight_grads.flatten(1), dim=1).square()
        elif layer.weight.requires_grad:
            squared_norms += _squared_norms(layer, x, g, reproducible=reproducible)
        if bias_grads is not None:
            squared_norms += bias_grads.square().sum(1)
        per_sample.append(
            None
            if materialised is None
            else _PerSample(materialised[0], bias_grads, materialised[1])
        )
    norms = squared_norms.sqrt()
    # One check for the whole batch; the per-example guards run only when it fails (they change
    # nothing when every norm is finite: where(True, value, 0) is value).
    all_finite = bool(torch.isfinite(norms).all())
    finite = None if all_finite else torch.isfinite(norms)
    factors = _clip_factors(norms, max_grad_norm, finite)

    if verify and all_finite:
        ones = torch.ones_like(factors)
        unclipped = _summed_layer_gradients(taps.records, backprops, ones, None, per_sample)
        for p, ours, theirs in zip(params, unclipped, reference, strict=True):
            theirs = torch.zeros_like(p) if theirs is None else theirs
            scale = theirs.abs().max().item() + 1e-12
            if not torch.allclose(ours, theirs, rtol=1e-3, atol=1e-4 * scale):
                raise _TapsDoNotApply(
                    "the fast per-sample gradients differ from autograd's (a weight is used "
                    "outside its layer, e.g. tied weights)"
                )

    # Σ_i c_i ∇_i is the ordinary gradient computed from backprops scaled by c_i
    sums = _summed_layer_gradients(taps.records, backprops, factors, finite, per_sample)
    correct = _correct_predictions(logits.detach(), targets)
    losses = losses.detach()
    loss = (losses if finite is None else losses[finite]).sum().item()
    nonfinite = 0 if finite is None else len(finite) - int(finite.sum())
    return sums, params, norms, loss, correct, nonfinite


def _summed_layer_gradients(
    records: list[tuple[TappedLayer, torch.Tensor, torch.Tensor]],
    backprops: list[torch.Tensor],
    factors: torch.Tensor,
    finite: torch.Tensor | None,
    per_sample: list[_PerSample | None],
) -> list[torch.Tensor]:
    """Σ_i c_i ∇_i for every tapped weight and bias. ``finite`` is None when every example is
    finite; otherwise the rows of the other examples are zeroed in both the activations and the
    backprops, or in the materialised per-sample gradients (0 · NaN would still be NaN)."""
    sums = []
    for (layer, x, _), g, materialised in zip(records, backprops, per_sample, strict=True):
        if materialised is not None:  # Σ_i c_i G_i: one matrix–vector product per tensor
            for grads, shape in (
                (materialised.weight, materialised.to_weight),
                (materialised.bias, None),
            ):
                if grads is None:
                    continue
                if finite is not None:
                    grads = torch.where(_rows(finite, grads), grads, 0.0)
                total = factors @ grads.flatten(1)
                sums.append(total if shape is None else shape(total))
            continue
        scaled = g * _rows(factors, g)
        if finite is not None:
            scaled = torch.where(_rows(finite, g), scaled, 0.0)
        if layer.weight.requires_grad:
            if finite is not None:
                x = torch.where(_rows(finite, x), x, 0.0)
            sums.append(_weight_gradient(layer, x, scaled))
        if layer.bias is not None and layer.bias.requires_grad:
            bias = scaled if _flat_linear(layer, scaled) else _bias_gradients(layer, scaled)
            sums.append(bias.sum(0))
    return sums


def _flat_linear(layer: TappedLayer, g: torch.Tensor) -> bool:
    """A Linear layer on flat (batch, features) inputs with a contiguous backprop ``g``: its
    per-sample bias gradients are the rows of ``g`` itself."""
    return isinstance(layer, nn.Linear) and g.dim() == 2 and g.is_contiguous()


# -- 3. Gaussian noise from a secure source --------------------------------------------------------


def _random_bytes(rng: RandomSource, count: int) -> bytes:
    """``count`` random bytes: a 256-bit key from ``rng``, stretched by the ChaCha20 cipher.

    ChaCha20 is a cryptographically secure generator (the one behind Linux's ``/dev/urandom``):
    without the key its output cannot be told apart from random bytes, so this is as secure as
    ``rng.bytes(count)`` — and ~15× faster for the 10⁵-coordinate noise vectors of DP-SGD, where
    reading the OS generator would dominate the step. With an ``InsecureSeededRandom`` the key,
    and so everything, is reproducible.
    """
    return _keystream(rng).update(bytes(count))


def _keystream(rng: RandomSource) -> CipherContext:
    """A ChaCha20 keystream (RFC 8439, OpenSSL through ``cryptography``) keyed by 48 bytes of
    ``rng``: a 256-bit key and a 128-bit counter-and-nonce."""
    key_and_nonce = rng.bytes(48)
    cipher = Cipher(algorithms.ChaCha20(key_and_nonce[:32], key_and_nonce[32:]), mode=None)
    return cipher.encryptor()


#: The angle's 32 random bits, as a signed integer in [-2³¹, 2³¹), times this is in [-π, π).
_ANGLE_PER_INT32 = 2 * math.pi * 2.0**-32
_LOW_53_BITS = np.int64((1 << 53) - 1)


def _secure_normals(rng: RandomSource, count: int, std: float) -> np.ndarray:
    """``count`` independent N(0, std²) values (float32) under a key from ``rng``: the fast path.

    The same Box–Muller transform and the same 12 keystream bytes per pair as the seeded path,
    written into one buffer in place and transformed with numpy's vectorised float32 functions,
    in place (≈ 3 ns per value on one core, the keystream included: as fast as
    ``torch.randn``). ``u = (k + 1)·2⁻⁵³`` for 53 random bits ``k``: rounding ``k`` to float32 is
    exact for the small ``k`` that make the tails, so the radius ``√(-2 ln u)`` still reaches
    ≈ 8.6 standard deviations (2⁻⁵³ is a normal float32); only the resolution near ``u = 1``
    (radii below ≈ 3.5·10⁻⁴) is float32's, as is the noise itself. The angle has 32 random bits,
    rounded to float32's 24.
    """
    pairs = (count + 1) // 2
    raw = np.zeros(3 * pairs, dtype=np.int32)  # per pair: 8 bytes for u, then 4 for the angle
    buffer = raw.data.cast("B")
    _keystream(rng).update_into(buffer, buffer)  # in place: the keystream is ChaCha20(zeros)
    # Few and small temporaries (the step's own data stays in cache): the output holds the angle
    # and the radius while they are made, and the spent angle bits hold the sines.
    words = raw[: 2 * pairs].view(np.int64)
    np.bitwise_and(words, _LOW_53_BITS, out=words)
    normals = np.empty((2, pairs), dtype=np.float32)
    angle, radius = normals[0], normals[1]
    np.copyto(radius, words, casting="unsafe")  # k, rounded to float32
    np.add(radius, 1.0, out=radius)
    np.multiply(radius, 2.0**-53, out=radius)  # u ∈ (0, 1]
    np.log(radius, out=radius)
    np.multiply(radius, -2.0, out=radius)
    np.sqrt(radius, out=radius)
    if std != 1.0:
        np.multiply(radius, std, out=radius)
    angle_bits = raw[2 * pairs :]
    np.copyto(angle, angle_bits, casting="unsafe")
    np.multiply(angle, _ANGLE_PER_INT32, out=angle)  # uniform in [-π, π)
    sine = angle_bits.view(np.float32)
    np.sin(angle, out=sine)
    np.cos(angle, out=angle)
    np.multiply(angle, radius, out=angle)  # r·cos θ
    np.multiply(sine, radius, out=radius)  # r·sin θ
    return normals.reshape(-1)[:count]


def _normals64(rng: RandomSource, count: int, std: float) -> np.ndarray:
    """``count`` independent N(0, std²) values in float64: Box–Muller on 53-bit uniforms
    ``u = (k + 1)·2⁻⁵³ ∈ (0, 1]`` and ``v = k′·2⁻⁵³ ∈ [0, 1)`` from 16 keystream bytes per pair."""
    pairs = (count + 1) // 2
    words = np.frombuffer(_random_bytes(rng, 16 * pairs), dtype="<u8").reshape(2, pairs)
    u = ((words[0] >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53
    angle = (words[1] >> np.uint64(11)).astype(np.float64) * (2 * math.pi * 2.0**-53)
    radius = np.sqrt(-2.0 * np.log(u)) * std
    return np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:count]


def gaussian_noise(
    shape: torch.Size | tuple[int, ...],
    std: float,
    rng: RandomSource | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Gaussian noise N(0, std²) of the given shape from ``rng`` (secure by default).

    Box–Muller: for independent uniforms u ∈ (0, 1] and v ∈ [0, 1), ``√(-2 ln u)·cos(2π v)`` and
    ``√(-2 ln u)·sin(2π v)`` are two independent standard normals. ``u`` gets 53 random bits, so
    the tails are exact out to ≈ 8.6 standard deviations (a truncated tail would leak: values
    beyond it would be impossible for one dataset and possible for its neighbour); the angle ``v``
    only needs 32. Twelve random bytes make two normals: a ChaCha20 keystream under a key drawn
    from ``rng``.

    With a secure ``rng`` (the default) the transform runs in float32, in place (about 3 ns per
    value on one core, ChaCha20 included); with a seeded one it runs as it always has (the
    logarithm in float64), so that lessons' seeded numbers stay exactly what they were.

    ``dtype=torch.float64`` makes the noise in float64 throughout (53 random bits for ``u`` and
    for the angle, 16 bytes per pair), for releases kept in float64: float32 noise cast to float64
    stays on float32's grid, and a release ``sum + noise`` then tells the true sum apart from a
    neighbour's (``release − candidate`` is a float32 number only for the true one).

    The bytes come from the CPU's secure generator (a GPU's own generator is a seeded PRNG), so
    the noise is made on the CPU and then moved to ``device`` (default: CPU) as ``dtype``
    (default float32).
    """
    std = check_nonnegative(std, "std (the noise standard deviation)")
    count = math.prod(shape)
    rng = resolve_random_source(rng)
    if dtype == torch.float64:
        return torch.from_numpy(_normals64(rng, count, std)).reshape(shape).to(device=device)
    if rng.secure:
        noise = torch.from_numpy(_secure_normals(rng, count, std))
        return noise.reshape(shape).to(device=device, dtype=dtype)
    pairs = (count + 1) // 2
    raw = _random_bytes(rng, 12 * pairs)
    u_bits = np.frombuffer(raw, dtype=np.uint64, count=pairs)
    v_bits = np.frombuffer(raw, dtype=np.uint32, offset=8 * pairs)
    u = torch.from_numpy(((u_bits >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53)
    angle = torch.from_numpy(v_bits.astype(np.float32) * np.float32(2 * math.pi * 2.0**-32))
    radius = torch.sqrt(-2.0 * torch.log(u)).to(torch.float32)
    normals = torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)])[:count]
    return (std * normals).reshape(shape).to(device=device, dtype=dtype)


# -- 4. Poisson sampling ---------------------------------------------------------------------------


class PoissonSampler:
    """Batches in which every example is included independently with probability ``sample_rate``.

    Batch sizes vary (about ``sample_rate · N``, sometimes even 0); this is the sampling the RDP
    accountant's "sampled Gaussian mechanism" assumes. One "epoch" is ``round(1 / sample_rate)``
    batches. Yields tensors of indices; usable as a ``DataLoader``'s ``batch_sampler``.
    """

    def __init__(
        self,
        num_examples: int,
        sample_rate: float,
        *,
        steps: int | None = None,
        rng: RandomSource | None = None,
    ) -> None:
        self.num_examples = check_positive_int(num_examples, "num_examples")
        self.sample_rate = check_sample_rate(sample_rate)
        self.steps = (
            round(1 / self.sample_rate) if steps is None else check_positive_int(steps, "steps")
        )
        self.rng = resolve_random_source(rng)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[torch.Tensor]:
        for _ in range(self.steps):
            yield self.rng.bernoulli(self.sample_rate, self.num_examples).nonzero().flatten()


# -- 5. the private step ---------------------------------------------------------------------------


class DPSGD:
    """Wrap a model and any torch optimiser so that :meth:`step` is a DP-SGD step.

    Args:
        model: the network (no BatchNorm: it mixes examples).
        optimizer: e.g. ``torch.optim.SGD(model.parameters(), lr=...)``; it receives the noisy
            gradients.
        noise_multiplier: σ ≥ 0; the noise standard deviation is ``σ · max_grad_norm``. (σ = 0 is
            accepted here to show clipping alone; :func:`train_private` refuses it.)
        max_grad_norm: C, the clipping bound on each example's gradient norm.
        expected_batch_size: ``q · N``; the noisy sum is divided by it (not by the actual batch
            size, which is itself private information under Poisson sampling).
        rng: source of the noise; :class:`SecureRandom` when None.
        method: ``"taps"``, ``"vmap"``, ``"loop"`` or ``"auto"`` (see the module docstring).

    Raises ``ValueError`` for a bad setting, BatchNorm, ``method="taps"`` on a model the fast path
    cannot handle, or ``method="vmap"`` on recurrent layers — all before anything is changed.

    Attributes:
        method: the path in use; ``"auto"`` may switch from ``"taps"`` to ``"vmap"`` on the first
            batch if the fast gradients disagree with autograd's.
        fallback_reason: why the fast path is not used (None when it is).
        nonfinite_examples: how many examples so far had a non-finite gradient and were zeroed.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        noise_multiplier: float,
        max_grad_norm: float,
        expected_batch_size: float,
        rng: RandomSource | None = None,
        method: str = "auto",
    ) -> None:
        noise_multiplier = check_noise_multiplier(noise_multiplier, allow_zero=True)
        max_grad_norm = check_positive(max_grad_norm, "max_grad_norm")
        expected_batch_size = check_positive(expected_batch_size, "expected_batch_size")
        if method not in ("auto", "taps", "vmap", "loop"):
            raise ValueError(f"method must be 'auto', 'taps', 'vmap' or 'loop', got {method!r}")
        _reject_batchnorm(model)
        layers, reason = _tapped_layers(model)
        if method == "taps" and layers is None:
            raise ValueError(
                f"method='taps' needs every trainable parameter in a plain nn.Linear or "
                f"nn.Conv2d layer, but {reason}; use method='vmap' or 'auto'"
            )
        vmap_reason = _vmap_refusal(model)
        if method == "vmap" and vmap_reason is not None:
            raise ValueError(f"method='vmap' does not work here: {vmap_reason}; use method='loop'")
        self.model, self.optimizer = model, optimizer
        self.noise_multiplier, self.max_grad_norm = noise_multiplier, max_grad_norm
        self.expected_batch_size = expected_batch_size
        self.rng = resolve_random_source(rng)
        self._explicit = method != "auto"
        self._layers: list[TappedLayer] | None  # not None exactly when self.method == "taps"
        if method in ("auto", "taps") and layers is not None:
            self.method, self._layers, self.fallback_reason = "taps", layers, None
        else:
            self._layers = None
            self.fallback_reason = reason if method == "auto" else f"method={method!r} was asked"
            self.method = method if method != "auto" else ("loop" if vmap_reason else "vmap")
        self._verified = False
        self.nonfinite_examples = 0
        self._batch_correct = 0.0  # the last batch's correct predictions (before its step)
        self._batch_nonfinite = 0  # the last batch's examples with a non-finite gradient

    def clipped_sum(
        self, inputs: torch.Tensor, targets: torch.Tensor, loss_fn: LossFn = F.cross_entropy
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, float]:
        """Sum of clipped per-sample gradients.

        Returns (sums, their parameters, per-sample norms before clipping, summed loss of the
        examples with a finite gradient). ``loss_fn(logits, targets, reduction=...)`` must accept
        ``"none"`` and ``"sum"`` like ``F.cross_entropy``.
        """
        if self.method == "taps":
            assert self._layers is not None  # set together with method "taps" in __init__
            try:
                sums, params, norms, loss, self._batch_correct, nonfinite = _clipped_sum_taps(
                    self.model,
                    self._layers,
                    inputs,
                    targets,
                    loss_fn,
                    self.max_grad_norm,
                    verify=not self._verified,
                    reproducible=not self.rng.secure,
                )
                self._verified = self._verified or nonfinite == 0
                self._batch_nonfinite = nonfinite
                return sums, params, norms, loss
            except _TapsDoNotApply as error:
                if self._explicit:
                    raise ValueError(
                        f"method='taps' does not apply to this model: {error}"
                    ) from None
                warnings.warn(f"DP-SGD falls back to vmap: {error}", stacklevel=2)
                self.method, self._layers, self.fallback_reason = "vmap", None, str(error)
        grads = per_sample_gradients(self.model, inputs, targets, loss_fn, method=self.method)
        clipped, norms = clip_gradients(grads, self.max_grad_norm)
        named = dict(self.model.named_parameters())
        with torch.no_grad():
            logits = self.model(inputs)
        losses = example_losses(loss_fn, logits, targets)
        finite = torch.isfinite(norms)
        self._batch_nonfinite = len(finite) - int(finite.sum())
        loss = (losses if self._batch_nonfinite == 0 else losses[finite]).sum().item()
        self._batch_correct = _correct_predictions(logits, targets)
        return [g.sum(0) for g in clipped.values()], [named[n] for n in clipped], norms, loss

    def step(
        self, inputs: torch.Tensor, targets: torch.Tensor, loss_fn: LossFn = F.cross_entropy
    ) -> float:
        """One DP-SGD step on a (Poisson-sampled) batch; returns the batch's summed loss.

        An empty batch still takes a (pure-noise) step, as the privacy analysis assumes. Examples
        with a non-finite gradient contribute zero and are added to :attr:`nonfinite_examples`.
        """
        if len(inputs) == 0:
            trainable: list[torch.Tensor] = [p for p in self.model.parameters() if p.requires_grad]
            sums, params, loss = [torch.zeros_like(p) for p in trainable], trainable, 0.0
            self._batch_correct = 0
        else:
            _check_batch(inputs, targets)
            sums, params, _, loss = self.clipped_sum(inputs, targets, loss_fn)
            self.nonfinite_examples += self._batch_nonfinite
        std = self.noise_multiplier * self.max_grad_norm
        sizes = [p.numel() for p in params]
        # float64 parameters get float64 noise (float32 noise would stay on float32's grid)
        wide = any(p.dtype == torch.float64 for p in params)
        noise = gaussian_noise(
            (sum(sizes),), std, self.rng, dtype=torch.float64 if wide else torch.float32
        )
        for param, total, chunk in zip(params, sums, noise.split(sizes), strict=True):
            chunk = chunk.to(device=total.device, dtype=total.dtype).view_as(total)
            # in place on the fresh sum: the same arithmetic as (total + chunk) / batch size
            param.grad = total.add_(chunk).div_(self.expected_batch_size)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss


# -- 6. a trainer that reports ε -------------------------------------------------------------------

#: History entries computed on the private training data: the ε of DP-SGD does not cover them.
PRIVATE_METRICS: tuple[str, ...] = ("train_loss", "train_acc", "nonfinite_examples")


@dataclass
class DPHistory(History):
    """:class:`~course_lib.training.History` plus the ε spent after each epoch.

    ``train_loss``, ``train_acc`` (over the epoch's batches, each scored just before its step, as
    :func:`course_lib.training.fit` does) and ``nonfinite_examples`` (examples zeroed for a
    non-finite gradient, per epoch) are computed on the **private** training data without noise:
    they are *outside* the (ε, δ) guarantee (listed in ``outside_guarantee``) and must not be
    published as they are. ``val_loss``/``val_acc`` are computed on ``test_data`` (not protected
    either — they are only harmless when the test data is not private). ``print(history)`` marks
    them.
    """

    epsilon: list[float] = field(default_factory=list)
    delta: float = 1e-5
    nonfinite_examples: list[int] = field(default_factory=list)
    outside_guarantee: tuple[str, ...] = PRIVATE_METRICS

    def __str__(self) -> str:
        rows = ["epoch  train_loss*  train_acc*  val_loss  val_acc  epsilon"]
        for i in range(self.epochs):
            val = (
                f"{self.val_loss[i]:8.4f}  {self.val_acc[i]:7.2%}"
                if i < len(self.val_loss)
                else "       -        -"
            )
            rows.append(
                f"{i + 1:5d}  {self.train_loss[i]:11.4f}  {self.train_acc[i]:10.2%}  {val}  "
                f"{self.epsilon[i]:7.2f}"
            )
        rows.append(
            f"* computed on the private training data: outside the (ε, δ = {self.delta:g}) "
            "guarantee, not for publication"
        )
        return "\n".join(rows)


def train_private(
    model: nn.Module,
    train_data: Dataset,
    test_data: Dataset | None = None,
    *,
    epochs: int,
    sample_rate: float,
    lr: float,
    noise_multiplier: float,
    max_grad_norm: float = 1.0,
    delta: float = 1e-5,
    momentum: float = 0.0,
    rng: RandomSource | None = None,
    method: str = "auto",
    progress: bool = True,
) -> DPHistory:
    """Train ``model`` with DP-SGD on ``train_data`` and return the history with ε per epoch.

    Each epoch is ``round(1 / sample_rate)`` Poisson-sampled steps of SGD (with ``momentum``).
    The progress bar shows the loss and the ε spent so far (RDP accountant, at ``delta``).
    ``rng`` draws the batches and the noise (secure when None). ``train_data`` and ``test_data``
    are any map-style datasets of ``(input, label)`` pairs (``TensorDataset``, ``Subset``,
    torchvision …). Batches are moved to the model's device.

    Every argument is checked before the model is touched: ``TypeError``/``ValueError`` for a bad
    value (σ must be > 0 here: σ = 0 has no finite ε), a dataset that is not map-style, BatchNorm,
    or a ``method`` the model does not allow.

    The history's ``train_loss``/``train_acc`` are computed on the private data and are *outside*
    the guarantee (see :class:`DPHistory`).

    >>> from torch.utils.data import TensorDataset
    >>> from course_lib.randomness import InsecureSeededRandom
    >>> data = TensorDataset(torch.randn(64, 4), torch.randint(0, 2, (64,)))
    >>> history = train_private(nn.Linear(4, 2), data, epochs=2, sample_rate=0.25, lr=0.5,
    ...                         noise_multiplier=1.0, rng=InsecureSeededRandom(0), progress=False)
    >>> round(history.epsilon[-1], 2), history.outside_guarantee[:2]
    (6.25, ('train_loss', 'train_acc'))
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module, got {type(model).__name__}")
    epochs = check_positive_int(epochs, "epochs")
    sample_rate = check_sample_rate(sample_rate)
    lr = check_positive(lr, "lr")
    noise_multiplier = check_noise_multiplier(noise_multiplier)
    max_grad_norm = check_positive(max_grad_norm, "max_grad_norm")
    delta = check_delta(delta)
    momentum = check_nonnegative(momentum, "momentum")
    rng = resolve_random_source(rng)
    inputs, labels = dataset_tensors(train_data, "train_data")
    test = None if test_data is None else dataset_tensors(test_data, "test_data")
    device = model_device(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    dp = DPSGD(
        model,
        optimizer,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        expected_batch_size=sample_rate * len(inputs),
        rng=rng,
        method=method,
    )
    accountant, history = RDPAccountant(), DPHistory(delta=delta)
    sampler = PoissonSampler(len(inputs), sample_rate, rng=rng)
    bar = tqdm(total=epochs * len(sampler), desc="DP-SGD", disable=not progress)
    for _ in range(epochs):
        model.train()
        total_loss, seen, correct, zeroed = 0.0, 0, 0.0, dp.nonfinite_examples
        for batch in sampler:
            total_loss += dp.step(inputs[batch].to(device), labels[batch].to(device))
            seen += len(batch)
            correct += dp._batch_correct
            accountant.step(noise_multiplier=noise_multiplier, sample_rate=sample_rate)
            bar.update()
        epsilon = accountant.get_epsilon(delta)
        history.epsilon.append(epsilon)
        history.nonfinite_examples.append(dp.nonfinite_examples - zeroed)
        history.train_loss.append(total_loss / max(seen - history.nonfinite_examples[-1], 1))
        history.train_acc.append(correct / max(seen, 1))
        postfix = {"loss (private)": f"{history.train_loss[-1]:.3f}", "ε": f"{epsilon:.2f}"}
        if test is not None:
            test_loss, test_acc = evaluate(model, [test])
            history.val_loss.append(test_loss)
            history.val_acc.append(test_acc)
            postfix["test_acc"] = f"{test_acc:.1%}"
        bar.set_postfix(postfix)
    bar.close()
    return history


# -- validation helpers ----------------------------------------------------------------------------


def _check_batch(inputs: torch.Tensor, targets: torch.Tensor) -> None:
    if len(inputs) != len(targets):
        raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")


def _reject_batchnorm(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            raise ValueError(
                "BatchNorm mixes the examples of a batch, so per-sample gradients (and DP-SGD) "
                "are undefined; use GroupNorm or no normalisation"
            )
