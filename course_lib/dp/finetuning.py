"""Private fine-tuning of a small language model (lesson 24).

A tiny causal **transformer** (Vaswani et al. 2017; GPT-style pre-norm blocks) over the
characters of :data:`course_lib.dp.memorization.ALPHABET` is pretrained on public text and then
fine-tuned on private text with DP-SGD (:class:`course_lib.dp.dpsgd.DPSGD`), training either every
parameter, only the output layer (the "head"), or LoRA adapters (:mod:`course_lib.lora`).

**The unit of privacy is one sequence.** The private text is cut into non-overlapping sequences of
``context + 1`` characters (:func:`sequence_dataset`); one training example is one sequence, its
loss the mean next-character cross-entropy over its ``context`` positions (:func:`sequence_loss`).
DP-SGD clips each sequence's gradient, so ε bounds what the model reveals about any one sequence.
A secret written k times lands in up to k sequences and is protected only at group level (kε).

The model's logits have shape ``(batch, len(ALPHABET), context)`` — classes second, the layout
``F.cross_entropy`` expects for sequences — so that DP-SGD's bookkeeping (which compares
``logits.argmax(1)`` with the targets) works unchanged. :class:`NextCharView` presents the model as
lesson 21's next-character model (a ``context`` attribute, logits ``(batch, len(ALPHABET))`` for the
next character), so :func:`~course_lib.dp.memorization.exposure` and
:func:`~course_lib.dp.memorization.greedy_extract` measure it as they are.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from course_lib.dp.accounting import RDPAccountant
from course_lib.dp.dpsgd import DPSGD, PoissonSampler
from course_lib.dp.memorization import ALPHABET, Canary, encode
from course_lib.lora import count_parameters
from course_lib.randomness import RandomSource, resolve_random_source
from course_lib.training import model_device
from course_lib.validation import (
    check_delta,
    check_nonnegative_int,
    check_positive,
    check_positive_int,
    check_sample_rate,
)

__all__ = [
    "CharTransformer",
    "FineTuneResult",
    "NextCharView",
    "fine_tune",
    "plant_canaries",
    "sequence_dataset",
    "sequence_loss",
    "sequence_losses",
    "sequence_perplexity",
]


# -- the model -------------------------------------------------------------------------------------


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position t only sees positions ≤ t.

    ``query``, ``key``, ``value`` and ``out`` are separate ``nn.Linear`` layers, so LoRA can adapt
    the query and value projections as Hu et al. do. Written out (no fused kernel) so that
    ``torch.func.vmap`` and Opacus see ordinary operations."""

    future: torch.Tensor  # (context, context) boolean mask: True above the diagonal

    def __init__(self, d_model: int, n_heads: int, context: int) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model = {d_model} must be a multiple of n_heads = {n_heads}")
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)
        # device: a buffer, moved with the module by model.to(...)
        mask = torch.triu(torch.ones(context, context, dtype=torch.bool), diagonal=1)
        self.register_buffer("future", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.view(n, t, self.n_heads, self.d_head).transpose(1, 2)  # (n, heads, t, d_head)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.d_head)
        scores = scores.masked_fill(self.future[:t, :t], float("-inf"))
        mixed = torch.softmax(scores, dim=-1) @ v
        return self.out(mixed.transpose(1, 2).reshape(n, t, d))


class Block(nn.Module):
    """Pre-norm transformer block: x + attention(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, d_model: int, n_heads: int, context: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads, context)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class CharTransformer(nn.Module):
    """A tiny GPT: character and position embeddings, ``n_layers`` causal blocks, a final
    LayerNorm and a linear ``head`` to logits over :data:`ALPHABET`.

    Input ``(batch, t)`` character indices with ``t ≤ context``; output logits
    ``(batch, len(ALPHABET), t)``: entry ``[:, :, i]`` predicts the character after position i.
    Only ``nn.Embedding``, ``nn.LayerNorm`` and ``nn.Linear`` hold parameters (no weight tying),
    all layers Opacus computes per-sample gradients for.
    """

    positions: torch.Tensor  # 0, 1, …, context − 1

    def __init__(
        self, context: int = 32, d_model: int = 64, n_heads: int = 4, n_layers: int = 2
    ) -> None:
        super().__init__()
        self.context = check_positive_int(context, "context")
        d_model = check_positive_int(d_model, "d_model")
        n_heads = check_positive_int(n_heads, "n_heads")
        n_layers = check_positive_int(n_layers, "n_layers")
        if d_model % n_heads:
            raise ValueError(f"d_model = {d_model} must be a multiple of n_heads = {n_heads}")
        self.token = nn.Embedding(len(ALPHABET), d_model)
        self.position = nn.Embedding(context, d_model)
        self.blocks = nn.Sequential(*(Block(d_model, n_heads, context) for _ in range(n_layers)))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, len(ALPHABET))
        # device: a buffer, moved with the module by model.to(...)
        self.register_buffer("positions", torch.arange(context), persistent=False)

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        t = chars.shape[1]
        if t > self.context:
            raise ValueError(f"got {t} characters; the model reads at most {self.context}")
        x = self.token(chars) + self.position(self.positions[:t])
        return self.head(self.ln_f(self.blocks(x))).transpose(1, 2)


class NextCharView(nn.Module):
    """``model`` seen as a next-character model: input ``(batch, context)``, output the logits
    ``(batch, len(ALPHABET))`` for the character after the last one. Shares ``model``'s weights;
    use it with :func:`course_lib.dp.memorization.exposure` and ``greedy_extract``."""

    def __init__(self, model: CharTransformer) -> None:
        super().__init__()
        self.model = model
        self.context = model.context

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return self.model(windows)[:, :, -1]


# -- data and loss ---------------------------------------------------------------------------------


def sequence_dataset(text: str, context: int) -> TensorDataset:
    """Cut ``text`` into non-overlapping training sequences: example i is the characters
    ``[i·(context+1), (i+1)·(context+1))``; its input is the first ``context`` of them, its target
    the last ``context`` (each position's next character). A leftover shorter than ``context + 1``
    is dropped. Inputs and targets have shape ``(n, context)``."""
    context = check_positive_int(context, "context")
    codes = encode(text)
    n = len(codes) // (context + 1)
    if n == 0:
        raise ValueError(f"the text has {len(codes)} characters; a sequence needs {context + 1}")
    chunks = codes[: n * (context + 1)].view(n, context + 1)
    return TensorDataset(chunks[:, :-1].clone(), chunks[:, 1:].clone())


def sequence_loss(
    logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """Each sequence's mean next-character cross-entropy (nats), then ``reduction`` over the
    batch: ``"none"`` → shape ``(batch,)``, ``"sum"`` or ``"mean"`` → a scalar.

    One value per *sequence* (not per character) is what makes a sequence the unit of DP-SGD: the
    per-example gradient that gets clipped is the gradient of this value."""
    if reduction not in ("none", "sum", "mean"):
        raise ValueError(f"reduction must be 'none', 'sum' or 'mean', got {reduction!r}")
    per_sequence = F.cross_entropy(logits, targets, reduction="none").mean(dim=-1)
    if reduction == "none":
        return per_sequence
    return per_sequence.sum() if reduction == "sum" else per_sequence.mean()


@torch.no_grad()
def sequence_losses(model: nn.Module, data: TensorDataset, batch_size: int = 512) -> torch.Tensor:
    """:func:`sequence_loss` of every sequence of ``data`` (shape ``(n,)``, on the CPU): the
    score a loss-threshold membership attack thresholds."""
    model.eval()
    device = model_device(model)
    inputs, targets = data.tensors
    out = [
        sequence_loss(model(x.to(device)), y.to(device), reduction="none").cpu()
        for x, y in zip(inputs.split(batch_size), targets.split(batch_size), strict=True)
    ]
    return torch.cat(out)


def sequence_perplexity(model: nn.Module, data: TensorDataset) -> float:
    """Per-character perplexity ``exp(mean cross-entropy)`` over every character of ``data``
    (all sequences have the same length, so this is the mean of the sequence losses)."""
    return math.exp(float(sequence_losses(model, data).mean()))


# -- training --------------------------------------------------------------------------------------


@dataclass
class FineTuneResult:
    """What :func:`fine_tune` reports: the loss of each step's batch (on the *private* data:
    outside the guarantee), the ε spent (∞ without noise), the trainable-parameter count and the
    mean wall-clock seconds per step."""

    losses: list[float] = field(default_factory=list)
    epsilon: float = math.inf
    delta: float = 1e-5
    trainable: int = 0
    seconds_per_step: float = 0.0


def fine_tune(
    model: nn.Module,
    data: TensorDataset,
    *,
    steps: int,
    sample_rate: float,
    lr: float,
    noise_multiplier: float | None,
    max_grad_norm: float = 1.0,
    delta: float = 1e-5,
    rng: RandomSource | None = None,
    method: str = "auto",
) -> FineTuneResult:
    """Train the parameters of ``model`` that have ``requires_grad`` for ``steps`` Adam steps on
    Poisson-sampled batches of ``data`` (each sequence joins with probability ``sample_rate``).

    ``noise_multiplier=None``: ordinary (non-private) training, the baseline. Otherwise DP-SGD
    (:class:`~course_lib.dp.dpsgd.DPSGD`): per-sequence gradients clipped to ``max_grad_norm``,
    Gaussian noise ``σ·C``, divided by the expected batch size; Adam then post-processes the noisy
    gradient (no extra privacy cost). ``rng`` draws the batches and the noise (secure when None).
    Parameters without ``requires_grad`` are never touched.

    Every argument is checked before the model is changed."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    steps = check_positive_int(steps, "steps")
    sample_rate = check_sample_rate(sample_rate)
    lr = check_positive(lr, "lr")
    max_grad_norm = check_positive(max_grad_norm, "max_grad_norm")
    delta = check_delta(delta)
    sigma = (
        None if noise_multiplier is None else check_positive(noise_multiplier, "noise_multiplier")
    )
    inputs, targets = data.tensors
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no trainable parameter (all have requires_grad=False)")
    rng = resolve_random_source(rng)
    device = model_device(model)
    optimizer = torch.optim.Adam(trainable, lr=lr)
    dp = (
        None
        if sigma is None
        else DPSGD(
            model,
            optimizer,
            noise_multiplier=sigma,
            max_grad_norm=max_grad_norm,
            expected_batch_size=sample_rate * len(inputs),
            rng=rng,
            method=method,
        )
    )
    sampler = PoissonSampler(len(inputs), sample_rate, steps=steps, rng=rng)
    accountant = RDPAccountant()
    result = FineTuneResult(delta=delta, trainable=count_parameters(model))
    model.train()
    start = time.perf_counter()
    for batch in sampler:
        x, y = inputs[batch].to(device), targets[batch].to(device)
        if dp is not None and sigma is not None:
            total = dp.step(x, y, sequence_loss)
            accountant.step(noise_multiplier=sigma, sample_rate=sample_rate)
            result.losses.append(total / max(len(batch), 1))
        elif len(batch):
            optimizer.zero_grad(set_to_none=True)
            loss = sequence_loss(model(x), y)
            loss.backward()
            optimizer.step()
            result.losses.append(float(loss.detach()))
    result.seconds_per_step = (time.perf_counter() - start) / steps
    if sigma is not None:
        result.epsilon = accountant.get_epsilon(delta)
    model.eval()
    return result


# -- canaries --------------------------------------------------------------------------------------


def plant_canaries(
    data: TensorDataset, canaries: list[Canary], seed: int = 0
) -> tuple[TensorDataset, dict[Canary, list[int]]]:
    """A copy of the sequence dataset ``data`` in which each canary is written into
    ``insertions`` different sequences (overwriting characters at a random position), and for
    each canary the indices of the sequences that now hold it.

    Every copy lands in its own sequence, so a canary with k copies is in exactly k training
    examples — a group of k for DP-SGD. Sequences keep their length and the other sequences are
    untouched, so members *without* a canary come from the same text as held-out sequences (the
    ones holding a canary do not: leave them out of a membership test, or it measures the canary
    phrase rather than membership). ``ValueError`` when there are fewer sequences than copies or a
    canary does not fit in one sequence."""
    inputs, targets = data.tensors
    context = inputs.shape[1]
    canaries = list(canaries)
    for c in canaries:
        if not isinstance(c, Canary):
            raise TypeError(f"canaries must be Canary objects, got {type(c).__name__}")
        if len(c.text) > context:
            raise ValueError(f"canary {c.text!r} is longer than a sequence's {context} inputs")
    copies = [c for c in canaries for _ in range(c.insertions)]
    if len(copies) > len(inputs):
        raise ValueError(f"{len(copies)} canary copies but only {len(inputs)} sequences")
    generator = torch.Generator().manual_seed(check_nonnegative_int(seed, "seed"))
    # CPU by design: indices drawn with a CPU generator, used as Python ints
    hosts = torch.randperm(len(inputs), generator=generator)[: len(copies)].tolist()
    full = torch.cat([inputs, targets[:, -1:]], dim=1)  # the context + 1 characters
    where: dict[Canary, list[int]] = {c: [] for c in canaries}
    for canary, host in zip(copies, hosts, strict=True):
        codes = encode(canary.text)
        # CPU by design: one position drawn with a CPU generator, used as a Python int
        start = int(torch.randint(0, context + 1 - len(codes) + 1, (1,), generator=generator))
        full[host, start : start + len(codes)] = codes
        where[canary].append(host)
    return TensorDataset(full[:, :-1].clone(), full[:, 1:].clone()), where
