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

Noise comes from a cryptographically secure source by default
(:class:`~course_lib.randomness.SecureRandom`), turned into Gaussians with the Box–Muller
transform; pass an :class:`~course_lib.randomness.InsecureSeededRandom` for reproducible lessons.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.utils.data import Dataset, TensorDataset
from tqdm.auto import tqdm

from course_lib.dp.accounting import RDPAccountant
from course_lib.randomness import RandomSource, resolve_random_source
from course_lib.training import History, evaluate
from course_lib.validation import check_positive

__all__ = [
    "per_sample_gradients",
    "clip_gradients",
    "gaussian_noise",
    "PoissonSampler",
    "DPSGD",
    "DPHistory",
    "train_private",
]

LossFn = Callable[..., torch.Tensor]


# -- 1. per-sample gradients, the textbook way -----------------------------------------------------


def per_sample_gradients(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss_fn: LossFn = F.cross_entropy
) -> dict[str, torch.Tensor]:
    """Every example's gradient: ``{parameter name: tensor of shape (batch, *parameter.shape)}``.

    ``torch.func.grad`` differentiates the loss of *one* example as a function of the parameters;
    ``vmap`` runs that function over the batch dimension in one vectorised call.
    """
    _check_batch(inputs, targets)
    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    buffers = {name: b.detach() for name, b in model.named_buffers()}

    def loss_of_one(params, x, y):
        logits = functional_call(model, (params, buffers), (x.unsqueeze(0),))
        return loss_fn(logits, y.unsqueeze(0))

    return vmap(grad(loss_of_one), in_dims=(None, 0, 0), randomness="different")(
        params, inputs, targets
    )


def clip_gradients(
    grads: dict[str, torch.Tensor], max_grad_norm: float
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Scale each example's gradient (across all parameters) to L2 norm at most ``max_grad_norm``.

    Returns the clipped per-sample gradients and the per-sample norms *before* clipping.
    """
    check_positive(max_grad_norm, "max_grad_norm")
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads.values()], dim=1).norm(dim=1)
    factors = _clip_factors(norms, max_grad_norm)
    clipped = {name: g * factors.view(-1, *[1] * (g.dim() - 1)) for name, g in grads.items()}
    return clipped, norms


def _clip_factors(norms: torch.Tensor, max_grad_norm: float) -> torch.Tensor:
    """c_i = min(1, C / ‖g_i‖): examples already inside the ball are left alone."""
    return (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)


# -- 2. per-sample norms and the clipped sum from activations and backprops ------------------------


def _supports_taps(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    return (
        isinstance(module, nn.Conv2d)
        and module.groups == 1
        and module.padding_mode == "zeros"
        and not isinstance(module.padding, str)
    )


def _tapped_layers(model: nn.Module) -> list[nn.Module] | None:
    """The Linear/Conv2d layers holding every trainable parameter, or None if some are elsewhere."""
    layers, covered = [], set()
    for module in model.modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        if not _supports_taps(module):
            return None
        layers.append(module)
        covered.update(id(p) for p in own)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    return layers if covered == trainable else None


def _patches(layer: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The input patches a convolution's kernel sees: shape (batch, in_channels·kh·kw, positions).

    Same result as ``F.unfold``, built as a strided *view* of the padded input and copied once
    (faster than ``unfold`` on CPU).
    """
    (ph, pw), (sh, sw), (dh, dw) = layer.padding, layer.stride, layer.dilation
    (kh, kw), (batch, channels) = layer.kernel_size, x.shape[:2]
    x = F.pad(x, (pw, pw, ph, ph))
    out_h = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1
    out_w = (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
    s_batch, s_channel, s_row, s_col = x.stride()
    view = x.as_strided(
        (batch, channels, kh, kw, out_h, out_w),
        (s_batch, s_channel, s_row * dh, s_col * dw, s_row * sh, s_col * sw),
    )
    return view.reshape(batch, channels * kh * kw, out_h * out_w)


def _squared_norms(layer: nn.Module, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """‖per-sample gradient of the layer's weight‖² for every example, from input x and backprop g.

    Example i's weight gradient is ``Σ_t g_it a_itᵀ`` over positions t (one for a Linear layer on
    flat inputs, one per output pixel for a convolution, whose a_it are input patches).
    """
    if isinstance(layer, nn.Linear) and x.dim() == 2:  # ghost norm: ‖g aᵀ‖ = ‖g‖·‖a‖
        return x.square().sum(1) * g.square().sum(1)
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


def _weight_gradient(layer: nn.Module, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The layer's ordinary (summed over the batch) weight gradient for input x and backprop g."""
    if isinstance(layer, nn.Conv2d):
        return torch.nn.grad.conv2d_weight(
            x, layer.weight.shape, g, layer.stride, layer.padding, layer.dilation
        )
    return g.reshape(-1, g.shape[-1]).T @ x.reshape(-1, x.shape[-1])


def _bias_gradients(layer: nn.Module, g: torch.Tensor) -> torch.Tensor:
    """Per-sample bias gradients: the backprop summed over positions, shape (batch, d_out)."""
    if isinstance(layer, nn.Conv2d):
        return g.sum((2, 3))
    return g.reshape(len(g), -1, g.shape[-1]).sum(1)


class _Taps:
    """Forward hooks recording each tapped layer's input and output during one forward pass."""

    def __init__(self, layers: list[nn.Module]) -> None:
        self.layers = layers
        self.records: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []

    def _record(self, layer: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        self.records.append((layer, inputs[0].detach(), output))

    def __enter__(self) -> _Taps:
        self._handles = [layer.register_forward_hook(self._record) for layer in self.layers]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()


def _clipped_sum_taps(
    model: nn.Module,
    layers: list[nn.Module],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: LossFn,
    max_grad_norm: float,
) -> tuple[list[torch.Tensor], list[nn.Parameter], torch.Tensor, float]:
    with _Taps(layers) as taps:
        logits = model(inputs)
    if len({id(layer) for layer, _, _ in taps.records}) != len(taps.records):
        raise ValueError(
            "a layer was called twice in one forward pass (shared weights); use method='vmap'"
        )
    loss = loss_fn(logits, targets, reduction="sum")  # example i's loss only depends on its row
    outputs = [out for _, _, out in taps.records]
    backprops = torch.autograd.grad(loss, outputs)  # no weight gradients computed here

    squared_norms = torch.zeros(len(inputs), dtype=logits.dtype)
    for (layer, x, _), g in zip(taps.records, backprops, strict=True):
        if layer.weight.requires_grad:
            squared_norms += _squared_norms(layer, x, g)
        if layer.bias is not None and layer.bias.requires_grad:
            squared_norms += _bias_gradients(layer, g).square().sum(1)
    norms = squared_norms.sqrt()
    factors = _clip_factors(norms, max_grad_norm)

    # Σ_i c_i ∇_i is the ordinary gradient computed from backprops scaled by c_i
    sums, params = [], []
    for (layer, x, _), g in zip(taps.records, backprops, strict=True):
        scaled = g * factors.view(-1, *[1] * (g.dim() - 1))
        if layer.weight.requires_grad:
            sums.append(_weight_gradient(layer, x, scaled))
            params.append(layer.weight)
        if layer.bias is not None and layer.bias.requires_grad:
            sums.append(_bias_gradients(layer, scaled).sum(0))
            params.append(layer.bias)
    return sums, params, norms, loss.item()


# -- 3. Gaussian noise from a secure source --------------------------------------------------------


def _random_bytes(rng: RandomSource, count: int) -> bytes:
    """``count`` random bytes: a 256-bit key from ``rng``, stretched by the ChaCha20 cipher.

    ChaCha20 is a cryptographically secure generator (the one behind Linux's ``/dev/urandom``):
    without the key its output cannot be told apart from random bytes, so this is as secure as
    ``rng.bytes(count)`` — and ~15× faster for the 10⁵-coordinate noise vectors of DP-SGD, where
    reading the OS generator would dominate the step. With an ``InsecureSeededRandom`` the key,
    and so everything, is reproducible. Without the ``cryptography`` package it falls back to
    ``rng.bytes``.
    """
    try:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
    except ImportError:
        return rng.bytes(count)
    key_and_nonce = rng.bytes(48)
    cipher = Cipher(algorithms.ChaCha20(key_and_nonce[:32], key_and_nonce[32:]), mode=None)
    return cipher.encryptor().update(bytes(count))


def gaussian_noise(
    shape: torch.Size | tuple[int, ...], std: float, rng: RandomSource | None = None
) -> torch.Tensor:
    """Gaussian noise N(0, std²) of the given shape, float32, from ``rng`` (secure by default).

    Box–Muller: for independent uniforms u ∈ (0, 1] and v ∈ [0, 1), ``√(-2 ln u)·cos(2π v)`` and
    ``√(-2 ln u)·sin(2π v)`` are two independent standard normals. ``u`` gets 53 random bits, so
    the tails are exact out to ≈ 8.6 standard deviations (a truncated tail would leak: values
    beyond it would be impossible for one dataset and possible for its neighbour); the angle ``v``
    only needs 32. Twelve random bytes make two normals.
    """
    if (
        isinstance(std, bool)
        or not isinstance(std, int | float)
        or not math.isfinite(std)
        or std < 0
    ):
        raise ValueError(f"the noise standard deviation must be a finite number ≥ 0, got {std!r}")
    count = math.prod(shape)
    pairs = (count + 1) // 2
    raw = _random_bytes(resolve_random_source(rng), 12 * pairs)
    u_bits = np.frombuffer(raw, dtype=np.uint64, count=pairs)
    v_bits = np.frombuffer(raw, dtype=np.uint32, offset=8 * pairs)
    u = torch.from_numpy(((u_bits >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53)
    angle = torch.from_numpy(v_bits.astype(np.float32) * np.float32(2 * math.pi * 2.0**-32))
    radius = torch.sqrt(-2.0 * torch.log(u)).to(torch.float32)
    normals = torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)])[:count]
    return (std * normals).reshape(shape)


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
        if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples <= 0:
            raise ValueError(f"num_examples must be a positive integer, got {num_examples!r}")
        if not isinstance(sample_rate, int | float) or not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample_rate must lie in (0, 1], got {sample_rate!r}")
        self.num_examples, self.sample_rate = num_examples, float(sample_rate)
        self.steps = round(1 / self.sample_rate) if steps is None else steps
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps <= 0:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
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
        noise_multiplier: σ; the noise standard deviation is ``σ · max_grad_norm``.
        max_grad_norm: C, the clipping bound on each example's gradient norm.
        expected_batch_size: ``q · N``; the noisy sum is divided by it (not by the actual batch
            size, which is itself private information under Poisson sampling).
        rng: source of the noise; :class:`SecureRandom` when None.
        method: ``"taps"``, ``"vmap"`` or ``"auto"`` (taps when every parameter lives in a Linear
            or Conv2d layer).
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
        if not math.isfinite(noise_multiplier) or noise_multiplier < 0:
            raise ValueError(
                f"noise_multiplier must be a finite number ≥ 0, got {noise_multiplier}"
            )
        check_positive(max_grad_norm, "max_grad_norm")
        check_positive(expected_batch_size, "expected_batch_size")
        if method not in ("auto", "taps", "vmap"):
            raise ValueError(f"method must be 'auto', 'taps' or 'vmap', got {method!r}")
        _reject_batchnorm(model)
        layers = _tapped_layers(model)
        if method == "taps" and layers is None:
            raise ValueError(
                "method='taps' needs every trainable parameter in an nn.Linear or nn.Conv2d "
                "layer; use method='vmap'"
            )
        self.model, self.optimizer = model, optimizer
        self.noise_multiplier, self.max_grad_norm = float(noise_multiplier), float(max_grad_norm)
        self.expected_batch_size = float(expected_batch_size)
        self.rng = resolve_random_source(rng)
        self._layers = None if method == "vmap" else layers
        self.method = "vmap" if self._layers is None else "taps"

    def clipped_sum(
        self, inputs: torch.Tensor, targets: torch.Tensor, loss_fn: LossFn = F.cross_entropy
    ) -> tuple[list[torch.Tensor], list[nn.Parameter], torch.Tensor, float]:
        """Sum of clipped per-sample gradients.

        Returns (sums, their parameters, per-sample norms before clipping, summed loss).
        """
        if self._layers is not None:
            return _clipped_sum_taps(
                self.model, self._layers, inputs, targets, loss_fn, self.max_grad_norm
            )
        grads = per_sample_gradients(self.model, inputs, targets, loss_fn)
        clipped, norms = clip_gradients(grads, self.max_grad_norm)
        named = dict(self.model.named_parameters())
        with torch.no_grad():
            loss = loss_fn(self.model(inputs), targets, reduction="sum").item()
        return [g.sum(0) for g in clipped.values()], [named[n] for n in clipped], norms, loss

    def step(
        self, inputs: torch.Tensor, targets: torch.Tensor, loss_fn: LossFn = F.cross_entropy
    ) -> float:
        """One DP-SGD step on a (Poisson-sampled) batch; returns the batch's summed loss.

        ``loss_fn(logits, targets, reduction="sum")`` must give the sum of per-example losses.
        An empty batch still takes a (pure-noise) step, as the privacy analysis assumes.
        """
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        if len(inputs) == 0:
            sums, params, loss = [torch.zeros_like(p) for p in trainable], trainable, 0.0
        else:
            _check_batch(inputs, targets)
            sums, params, _, loss = self.clipped_sum(inputs, targets, loss_fn)
        std = self.noise_multiplier * self.max_grad_norm
        noise = gaussian_noise((sum(p.numel() for p in params),), std, self.rng)
        for param, total, chunk in zip(
            params, sums, noise.split([p.numel() for p in params]), strict=True
        ):
            param.grad = (total + chunk.view_as(total)) / self.expected_batch_size
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss


# -- 6. a trainer that reports ε -------------------------------------------------------------------


@dataclass
class DPHistory(History):
    """:class:`~course_lib.training.History` plus the ε spent after each epoch."""

    epsilon: list[float] = field(default_factory=list)
    delta: float = 1e-5


def train_private(
    model: nn.Module,
    train_data: TensorDataset,
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
    ``rng`` draws the batches and the noise (secure when None).
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs <= 0:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    check_positive(lr, "lr")
    rng = resolve_random_source(rng)
    if not isinstance(train_data, TensorDataset):
        raise TypeError("train_data must be a TensorDataset of (inputs, labels), e.g. load_mnist()")
    inputs, labels = train_data.tensors[:2]
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
        total_loss, seen = 0.0, 0
        for batch in sampler:
            total_loss += dp.step(inputs[batch], labels[batch])
            seen += len(batch)
            accountant.step(noise_multiplier=noise_multiplier, sample_rate=sample_rate)
            bar.update()
        epsilon = accountant.get_epsilon(delta)
        history.epsilon.append(epsilon)
        history.train_loss.append(total_loss / max(seen, 1))
        _, train_acc = evaluate(model, [(inputs, labels)])
        history.train_acc.append(train_acc)
        postfix = {"loss": f"{history.train_loss[-1]:.3f}", "ε": f"{epsilon:.2f}"}
        if test_data is not None:
            test_loss, test_acc = evaluate(model, [test_data.tensors[:2]])
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
