"""Memorisation in a language model: canaries, exposure and extraction (lesson 21).

Carlini et al. (2019), "The Secret Sharer: Evaluating and Testing Unintended Memorization in
Neural Networks" (USENIX Security), measure how much a model remembers of one rare training
sequence by planting **canaries** — fake secrets in a fixed format such as
``"the pin of alice is 4719"`` — and asking how the model ranks the true secret among *every*
candidate of that format:

* the **log-perplexity** of a candidate ``s`` after the prefix is ``−Σ_i log₂ p(s_i | prefix,
  s_<i)`` (bits; lower = the model finds it more likely);
* its **rank** is 1 + the number of candidates with a strictly lower log-perplexity;
* its **exposure** is ``log₂ |R| − log₂ rank`` (paper, Definition 4): 0 when the secret is the
  least likely candidate, ``log₂ |R|`` when it is the most likely. For 4-digit PINs
  ``|R| = 10⁴`` and the maximum is ``log₂ 10⁴ ≈ 13.3`` bits. Here the candidate space is small,
  so we rank all of it exactly (the paper's distributional estimate is for spaces too large to
  enumerate). A secret the model never saw has a uniformly random rank, so
  ``P(exposure ≥ x) ≈ 2⁻ˣ`` — the *chance band* every measurement is compared with.

**Extraction** is the attack the exposure predicts: complete the prefix greedily (the most
likely next character, again and again) and see whether the secret comes out.

The corpus is real English that ships with Python — the docstrings of a fixed list of
standard-library modules — lower-cased onto a small alphabet, so nothing is downloaded. The text
depends on the Python version (docstrings are edited between releases), not on anything else.

The language model is a character-level MLP over a fixed window of previous characters (Bengio et
al. 2003, with one-hot inputs): every trainable parameter is in an ``nn.Linear``, so DP-SGD's fast
per-example path (:mod:`course_lib.dp.dpsgd`) trains it in seconds. Every function here runs on the
model's device: the text's windows are built on the CPU and moved to it.
"""

from __future__ import annotations

import importlib
import inspect
import math
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from course_lib.training import model_device
from course_lib.validation import as_integer, check_nonnegative_int, check_positive_int

__all__ = [
    "ALPHABET",
    "STDLIB_MODULES",
    "Canary",
    "CharMLP",
    "Exposure",
    "candidate_secrets",
    "decode",
    "encode",
    "exposure",
    "exposure_from_rank",
    "greedy_extract",
    "insert_canaries",
    "log_perplexities",
    "next_char_dataset",
    "normalise_text",
    "perplexity",
    "rank_of",
    "secret_log_perplexities",
    "stdlib_corpus",
    "train_lm",
]

#: The characters the model knows: everything else becomes a space.
ALPHABET = " abcdefghijklmnopqrstuvwxyz0123456789.,'"
_INDEX = {c: i for i, c in enumerate(ALPHABET)}
DIGITS = "0123456789"

#: Standard-library modules whose docstrings make the corpus, in this order.
STDLIB_MODULES = (
    "argparse",
    "textwrap",
    "json",
    "csv",
    "random",
    "heapq",
    "bisect",
    "fractions",
    "statistics",
    "string",
    "collections",
    "functools",
    "itertools",
    "pathlib",
    "shutil",
    "subprocess",
    "threading",
    "logging",
    "datetime",
    "decimal",
)


def normalise_text(text: str) -> str:
    """Lower-case ``text``, turn every character outside :data:`ALPHABET` into a space and
    collapse runs of whitespace into one space."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    lowered = "".join(c if c in _INDEX else " " for c in text.lower())
    return re.sub(r" +", " ", lowered).strip()


def stdlib_corpus(n_chars: int = 40_000, modules: tuple[str, ...] = STDLIB_MODULES) -> str:
    """Real English from the Python installation: the docstrings of ``modules`` and of their
    public classes and functions (sorted by name), normalised and cut to ``n_chars`` characters.

    Deterministic for a given Python version. ``ValueError`` if the docstrings hold fewer than
    ``n_chars`` characters.
    """
    n_chars = check_positive_int(n_chars, "n_chars")
    pieces: list[str] = []
    for name in modules:
        module = importlib.import_module(name)
        docs = [inspect.getdoc(module)]
        for attr in sorted(getattr(module, "__all__", None) or dir(module)):
            obj = getattr(module, attr, None)
            if attr.startswith("_") or not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            if getattr(obj, "__module__", None) == module.__name__:
                docs.append(inspect.getdoc(obj))
        pieces.extend(normalise_text(d) for d in docs if d)
        text = " ".join(p for p in pieces if p)
        if len(text) >= n_chars:
            return text[:n_chars]
    raise ValueError(
        f"the docstrings of {len(modules)} modules hold only {len(text)} characters, "
        f"fewer than n_chars = {n_chars}; ask for fewer or add modules"
    )


def encode(text: str) -> torch.Tensor:
    """Character indices into :data:`ALPHABET` (shape ``(len(text),)``, int64).

    ``ValueError`` naming the first character the alphabet lacks (normalise the text first)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    bad = next((c for c in text if c not in _INDEX), None)
    if bad is not None:
        raise ValueError(f"character {bad!r} is not in the alphabet; use normalise_text first")
    # device: text is encoded on the CPU; the functions below move it to the model's device
    return torch.tensor([_INDEX[c] for c in text], dtype=torch.long)


def decode(indices: torch.Tensor) -> str:
    """The text of a 1-d tensor of character indices (inverse of :func:`encode`)."""
    return "".join(ALPHABET[int(i)] for i in indices)


@dataclass(frozen=True)
class Canary:
    """A fake secret planted ``insertions`` times: the text is ``prefix + secret``.

    ``secret`` is a string of digits (its length fixes the candidate space, ``10**len(secret)``);
    ``prefix`` must be in :data:`ALPHABET`. ``insertions = 0`` gives a *control*: a secret of the
    same format the model never sees.
    """

    prefix: str
    secret: str
    insertions: int

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str) or not self.prefix:
            raise ValueError("a canary needs a non-empty prefix such as 'the pin of alice is '")
        encode(self.prefix)
        if not isinstance(self.secret, str) or not self.secret or not self.secret.isdigit():
            raise ValueError(
                f"the secret must be a non-empty string of digits, got {self.secret!r}"
            )
        if not self.secret.isascii():
            raise ValueError(f"the secret must use the digits 0-9, got {self.secret!r}")
        object.__setattr__(self, "insertions", check_nonnegative_int(self.insertions, "insertions"))

    @property
    def text(self) -> str:
        return self.prefix + self.secret


def insert_canaries(text: str, canaries: list[Canary], seed: int = 0) -> str:
    """``text`` with each canary's text inserted ``insertions`` times at random word boundaries.

    Positions are drawn (with a NumPy generator seeded by ``seed``) among the spaces of ``text``;
    each copy becomes ``" " + canary.text + " "`` there. ``ValueError`` for a text that is not in
    the alphabet or has no space, ``TypeError`` for something that is not a :class:`Canary`.
    """
    encode(text)
    canaries = list(canaries)
    for c in canaries:
        if not isinstance(c, Canary):
            raise TypeError(f"canaries must be Canary objects, got {type(c).__name__}")
    spaces = [i for i, ch in enumerate(text) if ch == " "]
    if not spaces:
        raise ValueError("the text has no space to insert a canary at")
    copies = [c.text for c in canaries for _ in range(c.insertions)]
    rng = np.random.default_rng(seed)
    where = rng.choice(spaces, size=len(copies), replace=True)
    order = np.argsort(where, kind="stable")
    out, last = [], 0
    for k in order:
        cut = int(where[k])
        out.append(text[last:cut])
        out.append(" " + copies[k])
        last = cut
    out.append(text[last:])
    return "".join(out)


def next_char_dataset(text: str, context: int) -> TensorDataset:
    """Every (window of ``context`` characters, next character) pair of ``text``.

    Inputs have shape ``(len(text) − context, context)``, labels ``(len(text) − context,)``, both
    character indices."""
    context = check_positive_int(context, "context")
    codes = encode(text)
    if len(codes) <= context:
        raise ValueError(f"the text has {len(codes)} characters; it needs more than {context}")
    windows = codes.unfold(0, context, 1)[:-1]
    return TensorDataset(windows.clone(), codes[context:].clone())


class CharMLP(nn.Module):
    """Next-character model: one-hot window of ``context`` characters → tanh hidden layer →
    logits over :data:`ALPHABET`. Input ``(N, context)`` indices, output ``(N, len(ALPHABET))``."""

    def __init__(self, context: int = 16, hidden: int = 128) -> None:
        super().__init__()
        self.context = check_positive_int(context, "context")
        self.hidden = nn.Linear(self.context * len(ALPHABET), check_positive_int(hidden, "hidden"))
        self.out = nn.Linear(hidden, len(ALPHABET))

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        one_hot = F.one_hot(windows, len(ALPHABET)).float().flatten(1)
        return self.out(torch.tanh(self.hidden(one_hot)))


def _windows(model: CharMLP, text: str) -> torch.Tensor:
    """The model's input window ending at the end of ``text`` (left-padded with spaces)."""
    padded = " " * max(0, model.context - len(text)) + text
    return encode(padded[-model.context :]).to(model_device(model))


def candidate_secrets(length: int) -> list[str]:
    """All ``10**length`` digit strings of ``length`` digits, in order ("00…0" first)."""
    length = check_positive_int(length, "length")
    if length > 6:
        raise ValueError(f"10**{length} candidates is too many to enumerate here; use ≤ 6 digits")
    return [f"{i:0{length}d}" for i in range(10**length)]


@torch.no_grad()
def log_perplexities(model: CharMLP, prefix: str, candidates: list[str]) -> torch.Tensor:
    """``−Σ_i log₂ p(c_i | prefix, c_<i)`` in bits per candidate (shape ``(len(candidates),)``).

    All candidates must have the same length (one format)."""
    if not candidates:
        raise ValueError("give at least one candidate")
    length = len(candidates[0])
    if any(len(c) != length for c in candidates):
        raise ValueError("all candidates must have the same length")
    model.eval()
    head = _windows(model, prefix).expand(len(candidates), -1)
    codes = torch.stack([encode(c) for c in candidates]).to(head.device)  # (R, L)
    full = torch.cat([head, codes], dim=1)  # (R, context + L)
    windows = full.unfold(1, model.context, 1)[:, :length]  # (R, L, context)
    logp = F.log_softmax(model(windows.reshape(-1, model.context)), dim=1)
    picked = logp.gather(1, codes.reshape(-1, 1)).reshape(len(candidates), length)
    return -picked.sum(dim=1) / math.log(2)


def rank_of(scores: torch.Tensor, index: int) -> int:
    """The rank of candidate ``index`` by log-perplexity: how many entries of ``scores`` (1-D, lower
    is likelier) are ``≤ scores[index]``, the candidate itself included.

    Ties count **against** the secret, as Carlini et al. define it ("The Secret Sharer", USENIX
    Security 2019, Definition 3: rank = |{r′ ∈ R : Px(s[r′]) ≤ Px(s[r])}|): a model indifferent
    between candidates gives every one of them the last rank ``len(scores)``, so exposure 0, never
    the first. ``ValueError`` for an index outside the scores or a NaN score (a NaN compares
    unequal to everything and would rank 0 or 1 at random)."""
    index = as_integer(index, "index")
    if scores.dim() != 1:
        raise ValueError(f"scores must be 1-D (one per candidate), got shape {tuple(scores.shape)}")
    if not 0 <= index < len(scores):
        raise ValueError(f"index {index} is outside the {len(scores)} scores")
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN: a rank needs every candidate's log-perplexity")
    return int((scores <= scores[index]).sum())


def exposure_from_rank(rank: int, n_candidates: int) -> float:
    """Carlini et al.'s exposure ``log₂ n_candidates − log₂ rank`` in bits.

    ``ValueError`` unless ``1 ≤ rank ≤ n_candidates``."""
    n_candidates = check_positive_int(n_candidates, "n_candidates")
    rank = check_positive_int(rank, "rank")
    if rank > n_candidates:
        raise ValueError(f"rank {rank} cannot exceed the number of candidates {n_candidates}")
    return math.log2(n_candidates) - math.log2(rank)


@dataclass(frozen=True)
class Exposure:
    """One canary's measurement: its rank among ``n_candidates`` and the exposure in bits."""

    canary: Canary
    rank: int
    n_candidates: int
    exposure: float


@torch.no_grad()
def secret_log_perplexities(model: CharMLP, prefix: str, length: int) -> torch.Tensor:
    """:func:`log_perplexities` of all ``10**length`` digit strings after ``prefix`` at once
    (shape ``(10**length,)``, entry ``i`` for the string of ``i``).

    Walks the tree of digit prefixes: 1 + 10 + … + 10**(length−1) model calls instead of
    ``length · 10**length``; the sums are the same."""
    candidate_secrets(length)  # validates length
    model.eval()
    digit_columns = encode(DIGITS)
    scores = torch.zeros(1, device=model_device(model))
    for depth in range(length):
        stems = candidate_secrets(depth) if depth else [""]
        windows = torch.stack([_windows(model, prefix + stem) for stem in stems])
        logp = F.log_softmax(model(windows), dim=1)[:, digit_columns]  # (10**depth, 10)
        scores = (scores[:, None] - logp / math.log(2)).reshape(-1)
    return scores


def exposure(model: CharMLP, canary: Canary) -> Exposure:
    """Rank ``canary.secret`` among every digit string of its length after ``canary.prefix``."""
    if not isinstance(canary, Canary):
        raise TypeError(f"canary must be a Canary, got {type(canary).__name__}")
    scores = secret_log_perplexities(model, canary.prefix, len(canary.secret))
    rank = rank_of(scores, int(canary.secret))
    return Exposure(canary, rank, len(scores), exposure_from_rank(rank, len(scores)))


@torch.no_grad()
def greedy_extract(model: CharMLP, prefix: str, length: int) -> str:
    """Complete ``prefix`` with ``length`` characters, each the model's most likely next one."""
    length = check_positive_int(length, "length")
    model.eval()
    text = prefix
    for _ in range(length):
        logits = model(_windows(model, text).unsqueeze(0))
        text += ALPHABET[int(logits.argmax())]
    return text[len(prefix) :]


@torch.no_grad()
def perplexity(model: nn.Module, data: TensorDataset) -> float:
    """Per-character perplexity ``exp(mean cross-entropy in nats)`` of ``model`` on ``data``."""
    model.eval()
    inputs, labels = (t.to(model_device(model)) for t in data.tensors)
    return math.exp(float(F.cross_entropy(model(inputs), labels)))


def train_lm(
    model: nn.Module,
    data: TensorDataset,
    *,
    epochs: int,
    batch_size: int = 256,
    lr: float = 3e-3,
    seed: int = 0,
) -> list[float]:
    """Non-private training with Adam on shuffled mini-batches; returns each epoch's mean loss
    (nats per character, on the training data). The shuffle order is fixed by ``seed``."""
    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    inputs, labels = (t.to(model_device(model)) for t in data.tensors)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    for _ in range(epochs):
        total = 0.0
        # CPU by design: a seeded CPU shuffle (the same order on every device) indexes the data
        for batch in torch.randperm(len(labels), generator=generator).split(batch_size):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(inputs[batch]), labels[batch])
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        losses.append(total / len(labels))
    return losses
