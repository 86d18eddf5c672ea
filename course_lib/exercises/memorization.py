"""Checkers for lesson 21: memorisation in language models (canaries, exposure, extraction).

The checkers run the learner's function on their own inputs — a rank the lesson did not use, and
a small "planted" language model whose secret the learner has not seen — and name them in every ✗
message.
"""

from __future__ import annotations

import torch
from torch import nn

from course_lib.dp.memorization import ALPHABET, exposure_from_rank
from course_lib.exercises._registry import exercise, expect, expect_callable, expect_close


@exercise(
    "21.exposure",
    task="write exposure(rank, n_candidates): log₂ of the number of candidates minus log₂ rank",
    nudge="rank 1 (the most likely candidate) gives the largest exposure; the last rank gives 0",
    hint="math.log2(n_candidates) - math.log2(rank)",
)
def _(exposure) -> None:
    expect_callable(exposure, "exposure", "21.exposure")
    for rank, n in [(1, 10_000), (10_000, 10_000), (37, 10_000), (1, 1_000_000), (5, 8)]:
        expect_close(
            float(exposure(rank, n)),
            exposure_from_rank(rank, n),
            rtol=1e-9,
            atol=1e-9,
            what=f"exposure(rank={rank}, n_candidates={n})",
        )


class _PlantedLM(nn.Module):
    """A stand-in language model that has 'memorised' ``secret`` after any prefix: after ``d``
    digits it puts almost all probability on ``secret[d]``, and on a space once it is complete."""

    def __init__(self, secret: str, context: int = 12) -> None:
        super().__init__()
        self.secret, self.context = secret, context

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(windows), len(ALPHABET))
        for row, window in enumerate(windows):
            text = "".join(ALPHABET[int(i)] for i in window)
            done = len(text) - len(text.rstrip("0123456789"))
            nxt = self.secret[done] if done < len(self.secret) else " "
            logits[row, ALPHABET.index(nxt)] = 8.0
        return logits


@exercise(
    "21.find_secret",
    task="write find_secret(model, prefix, length): the digit string of `length` digits the "
    "model finds most likely after `prefix`",
    nudge="score every candidate with log_perplexities and keep the one with the lowest score",
    hint="candidates = candidate_secrets(length); "
    "scores = log_perplexities(model, prefix, candidates); "
    "return candidates[int(scores.argmin())]",
)
def _(find_secret) -> None:
    expect_callable(find_secret, "find_secret", "21.find_secret")
    for secret, prefix in [("2718", "the pin of mallory is "), ("905", "my door code is ")]:
        model = _PlantedLM(secret)
        answer = find_secret(model, prefix, len(secret))
        expect(
            answer == secret,
            f"find_secret(model, {prefix!r}, {len(secret)}) returned {answer!r} on the checker's "
            f"model, which has memorised a {len(secret)}-digit secret (expected a string of "
            f"digits such as {'0' * len(secret)!r}, the most likely one)",
        )
