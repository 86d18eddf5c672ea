"""Hidden cases: inputs a learner never saw, drawn afresh for each grading run.

The course's checkers test a function on the inputs their ✗ messages name, so a learner can
reproduce a failure — and a function could be written to fit just those inputs. The grader adds,
for each function exercise listed here, cases drawn from a ``torch.Generator`` seeded per run
(``--seed``; printed in every feedback file) and compares the learner's function with the
instructor's solution (:func:`tools.grading.lesson.reference_solutions`) on them.

A hidden case is ``case(learner, reference, generator)``; it raises
:class:`course_lib.exercises.Incorrect` naming the input that failed. Value exercises (``answer =
...``) have no inputs to hide: the task fixes the value, and the course checker judges it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

from course_lib.exercises import expect, expect_close, expect_equal

Case = Callable[[Callable[..., Any], Callable[..., Any], torch.Generator], None]
#: How many random inputs each hidden case tries.
TRIALS = 5


def _records(generator: torch.Generator) -> list[dict[str, Any]]:
    count = int(torch.randint(1, 12, (1,), generator=generator))
    ages = torch.randint(18, 90, (count,), generator=generator).tolist()
    flags = torch.randint(0, 2, (count,), generator=generator).bool().tolist()
    return [
        {"name": f"p{i}", "age": a, "diabetes": f}
        for i, (a, f) in enumerate(zip(ages, flags, strict=True))
    ]


def _count_where(learner, reference, generator) -> None:
    for _ in range(TRIALS):
        records = _records(generator)
        age = records[0]["age"]
        for key, value in (("diabetes", True), ("diabetes", False), ("age", age)):
            want = reference(records, key, value)
            expect_equal(learner(records, key, value), want, f"count_where on {records}")


def _mean_age(learner, reference, generator) -> None:
    for _ in range(TRIALS):
        records = _records(generator)
        expect_close(learner(records), reference(records), what=f"mean_age({records})")


def _independent_copy(learner, reference, generator) -> None:
    for _ in range(TRIALS):
        rows, columns = torch.randint(1, 6, (2,), generator=generator).tolist()
        original = torch.randint(-50, 50, (rows, columns), generator=generator).T  # not contiguous
        kept = original.clone()
        shown = f"the {columns}×{rows} integer tensor {original.tolist()}"
        copy = learner(original)
        expect_equal(copy, reference(original), f"independent_copy of {shown}")
        expect(isinstance(copy, torch.Tensor), f"independent_copy of {shown} is not a tensor")
        copy.fill_(999)
        expect(torch.equal(original, kept), f"independent_copy of {shown} shares its memory")


def _neuron(learner, reference, generator) -> None:
    for _ in range(TRIALS):
        n, d = torch.randint(1, 8, (2,), generator=generator).tolist()
        x, w = torch.randn(n, d, generator=generator), torch.randn(d, generator=generator)
        b = torch.randn((), generator=generator)
        shown = f"neuron on a random x ({n}, {d}), w ({d},), b = {b.item():.3f}"
        expect_close(learner(x, w, b), reference(x, w, b), what=shown)


def _accuracy(learner, reference, generator) -> None:
    for _ in range(TRIALS):
        n, classes = int(torch.randint(1, 20, (1,), generator=generator)), 3
        logits = torch.randn(n, classes, generator=generator)
        labels = torch.randint(0, classes, (n,), generator=generator)
        shown = f"accuracy on random logits ({n}, {classes}) and labels {labels.tolist()}"
        expect_close(learner(logits, labels), reference(logits, labels), what=shown)


def _train_loop(learner, reference, generator) -> None:
    """Both loops train copies of one random network on the same random batches for a random number
    of epochs; the weights and the per-epoch mean losses must agree (a loop that ignores
    ``epochs``, or fits the checker's 5 epochs of 4 batches, does not)."""
    for _ in range(TRIALS):
        n, d, hidden, batch, epochs = (
            int(torch.randint(low, high, (1,), generator=generator))
            for low, high in ((8, 40), (1, 5), (2, 9), (3, 12), (1, 5))
        )
        lr = 0.05 + 0.5 * torch.rand((), generator=generator).item()
        x = torch.randn(n, d, generator=generator)
        y = torch.randint(0, 3, (n,), generator=generator)
        seed = int(torch.randint(0, 2**31, (1,), generator=generator))
        shown = (
            f"training_loop on {n} random {d}-d points in 3 classes, batches of {batch}, "
            f"SGD lr {lr:.3f}, {epochs} epoch(s)"
        )
        results = []
        for loop in (learner, reference):
            torch.manual_seed(seed)
            model = torch.nn.Sequential(
                torch.nn.Linear(d, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 3)
            )
            loader = DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=False)
            losses = loop(model, loader, torch.optim.SGD(model.parameters(), lr=lr), epochs)
            results.append((torch.cat([p.detach().flatten() for p in model.parameters()]), losses))
        (weights, losses), (want_weights, want_losses) = results
        expect_close(weights, want_weights, what=f"the weights after {shown}")
        expect(
            isinstance(losses, list | tuple) and len(losses) == epochs,
            f"{shown} should return {epochs} losses (one per epoch), got {losses!r}"[:300],
        )
        expect_close([float(v) for v in losses], want_losses, what=f"the losses of {shown}")


def _coin_flip(learner, reference, generator) -> None:
    for _ in range(TRIALS):
        n = int(torch.randint(1, 30, (1,), generator=generator))
        truth, first, second = (torch.rand(3, n, generator=generator) < 0.5).unbind()
        shown = f"coin_flip_response on {n} random people (truth {truth.int().tolist()})"
        expect_equal(learner(truth, first, second), reference(truth, first, second), shown)


def _of_probability(what: str) -> Case:
    def case(learner, reference, generator) -> None:
        for p in 0.05 + 0.9 * torch.rand(TRIALS, generator=generator, dtype=torch.float64):
            p = p.item()
            expect_close(float(learner(p)), reference(p), what=f"{what}({p:.4f})")

    return case


def _debias(learner, reference, generator) -> None:
    for _ in range(TRIALS):
        n = int(torch.randint(10, 200, (1,), generator=generator))
        answers = torch.rand(n, generator=generator) < torch.rand((), generator=generator)
        p = 0.1 + 0.8 * torch.rand((), generator=generator).item()
        expect_close(
            float(learner(answers, p)),
            reference(answers, p),
            what=f"debias on {n} random answers with p_truth = {p:.4f}",
        )


def _group_privacy(learner, reference, generator) -> None:
    for _ in range(TRIALS):
        p = 0.05 + 0.9 * torch.rand((), generator=generator).item()
        k = int(torch.randint(1, 10, (1,), generator=generator))
        got = float(learner(p, k))
        expect(math.isfinite(got), f"group_epsilon({p:.4f}, {k}) is {got}")
        expect_close(got, reference(p, k), what=f"group_epsilon({p:.4f}, {k})")


#: Hidden cases by exercise name.
HIDDEN: dict[str, Case] = {
    "00.count_where": _count_where,
    "00.mean_age": _mean_age,
    "01.independent_copy": _independent_copy,
    "02.neuron": _neuron,
    "02.accuracy": _accuracy,
    "02.train_loop": _train_loop,
    "05.coin_flip": _coin_flip,
    "05.rr_epsilon": _of_probability("rr_epsilon"),
    "05.debias": _debias,
    "05.group_privacy": _group_privacy,
}
