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
from torch import nn
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


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=generator, dtype=torch.float64).item()


def _integer(generator: torch.Generator, low: int, high: int) -> int:
    return int(torch.randint(low, high, (1,), generator=generator))


def _numbers(what: str, draw: Callable[[torch.Generator], tuple[Any, ...]]) -> Case:
    """A case for a function of numbers returning a number: ``draw`` gives its arguments; the
    learner's result must be within the checkers' tolerance of the reference's."""

    def case(learner, reference, generator) -> None:
        for _ in range(TRIALS):
            args = draw(generator)
            shown = (
                f"{what}({', '.join(f'{a:.6g}' if isinstance(a, float) else str(a) for a in args)})"
            )
            got = float(learner(*args))
            expect(math.isfinite(got), f"{shown} is {got}")
            expect_close(got, float(reference(*args)), rtol=1e-6, what=shown)

    return case


def _tensors(
    what: str, draw: Callable[[torch.Generator], tuple[Any, ...]], *, exact: bool = False
) -> Case:
    """A case for a function of tensors: ``draw`` gives its arguments (fresh copies are passed to
    each side); results compared exactly (``exact``) or within the checkers' tolerance."""

    def case(learner, reference, generator) -> None:
        for _ in range(TRIALS):
            args = draw(generator)
            copy = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
            shapes = ", ".join(
                f"a {tuple(a.shape)} tensor" if isinstance(a, torch.Tensor) else repr(a)
                for a in args
            )
            shown = f"{what} on random inputs ({shapes})"
            want = reference(*copy)
            got = learner(*args)
            if exact:
                expect_equal(got, want, shown)
            else:
                expect_close(got, want, rtol=1e-5, atol=1e-6, what=shown)

    return case


def _bits(generator: torch.Generator) -> tuple[torch.Tensor]:
    return (torch.randint(0, 2, (_integer(generator, 2, 15),), generator=generator),)


def _parallel_databases(learner, reference, generator) -> None:
    for _ in range(TRIALS):
        (db,) = _bits(generator)
        got, want = list(learner(db.clone())), reference(db.clone())
        shown = f"get_parallel_dbs on the database {db.tolist()}"
        expect(len(got) == len(want), f"{shown} gave {len(got)} databases, not {len(want)}")
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            expect_equal(torch.as_tensor(g), w, f"{shown}: database {i}")


def _sensitivity(learner, reference, generator) -> None:
    for _ in range(TRIALS):
        db = torch.randint(0, 10, (_integer(generator, 2, 12),), generator=generator)
        for query in (torch.sum, torch.amax):
            shown = f"sensitivity(torch.{query.__name__}, {db.tolist()})"
            expect_close(float(learner(query, db.clone())), float(reference(query, db)), what=shown)


def _reveal(learner, reference, generator) -> None:
    for _ in range(TRIALS):
        (db,) = _bits(generator)
        index = _integer(generator, 0, len(db))
        shown = f"reveal({db.tolist()}, {index})"
        expect_close(float(learner(db.clone(), index)), float(reference(db, index)), what=shown)


def _user_ids(generator: torch.Generator) -> tuple[torch.Tensor]:
    return (torch.randint(0, 8, (_integer(generator, 1, 30),), generator=generator),)


def _vote_inputs(generator: torch.Generator) -> tuple[torch.Tensor, int]:
    classes = _integer(generator, 2, 6)
    teachers, queries = _integer(generator, 1, 12), _integer(generator, 1, 8)
    return torch.randint(0, classes, (teachers, queries), generator=generator), classes


def _gradients(generator: torch.Generator) -> tuple[torch.Tensor, float]:
    rows, columns = _integer(generator, 1, 20), _integer(generator, 1, 12)
    scale = _uniform(generator, 0.1, 10.0)
    return torch.randn(rows, columns, generator=generator) * scale, _uniform(generator, 0.1, 5.0)


def _psnr_inputs(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (_integer(generator, 1, 4), _integer(generator, 2, 9), _integer(generator, 2, 9))
    original = torch.rand(shape, generator=generator)
    noise = _uniform(generator, 0.01, 0.3)
    return (original + noise * torch.randn(shape, generator=generator)).clamp(0, 1), original


def _shamir(learner, reference, generator) -> None:
    prime = 2_147_483_647
    for _ in range(TRIALS):
        degree = _integer(generator, 1, 5)
        coefficients = torch.randint(0, 2**31 - 1, (degree + 1,), generator=generator).tolist()
        xs = sorted(set(torch.randint(1, 1000, (degree + 3,), generator=generator).tolist()))
        points = [(x, sum(c * x**k for k, c in enumerate(coefficients)) % prime) for x in xs]
        points = points[: degree + 1]
        shown = f"reconstruct({points}, {prime})"
        expect_equal(int(learner(points, prime)), int(reference(points, prime)), shown)


def _encode_inputs(generator: torch.Generator) -> tuple[torch.Tensor, int]:
    values = (torch.rand(_integer(generator, 1, 10), generator=generator) - 0.5) * 200
    return values.double(), _integer(generator, 4, 20)


def _decode_inputs(generator: torch.Generator) -> tuple[torch.Tensor, int]:
    bits = _integer(generator, 4, 20)
    return torch.randint(-(2**30), 2**30, (_integer(generator, 1, 10),), generator=generator), bits


def _masked_uploads(generator: torch.Generator) -> tuple[list[torch.Tensor], int]:
    clients, size = _integer(generator, 2, 6), _integer(generator, 1, 8)
    uploads = torch.randint(-(2**40), 2**40, (clients, size), generator=generator)
    return list(uploads.unbind()), _integer(generator, 8, 24)


def _pairwise(learner, reference, generator) -> None:
    for _ in range(TRIALS):
        n, size = _integer(generator, 2, 6), _integer(generator, 1, 6)
        masks = torch.randn(n, n, size, generator=generator, dtype=torch.float64)
        i = _integer(generator, 0, n)
        x = torch.randn(size, generator=generator, dtype=torch.float64)
        shown = f"mask_update({i}, x, pair_masks, {n}) with random x ({size},) and masks"
        expect_close(learner(i, x.clone(), masks.clone(), n), reference(i, x, masks, n), what=shown)


def _freeze_features(learner, reference, generator) -> None:
    """A network of a random shape with ``features`` and ``head`` (not the lesson's SmallCNN):
    afterwards exactly the features' parameters are frozen, as the instructor's solution does."""
    for _ in range(TRIALS):
        width, depth = _integer(generator, 2, 9), _integer(generator, 1, 4)
        features = torch.nn.Sequential(
            *(torch.nn.Linear(width, width) for _ in range(depth)), torch.nn.ReLU()
        )
        model = torch.nn.Module()
        model.features = features
        model.head = torch.nn.Linear(width, _integer(generator, 1, 5))
        shown = f"freeze_features on a model with {depth} feature layer(s) of width {width}"
        result = learner(model)
        model = result if isinstance(result, torch.nn.Module) else model
        frozen = [not p.requires_grad for p in model.get_submodule("features").parameters()]
        trainable = [p.requires_grad for p in model.get_submodule("head").parameters()]
        expect(all(frozen), f"{shown}: some feature weights still train")
        expect(all(trainable), f"{shown}: the head must stay trainable")


_SAFE_LINES = (
    "import torch",
    "x = data.mean()",
    "result = model(x).argmax()",
    "print(len(data))",
    "total = sum(row['age'] for row in rows)",
)
_RED_FLAGS = ("import requests", "import socket", "urllib.request.urlopen(url)",
              "subprocess.run(['ls'])", "os.system('ls')", "shutil.copy(a, b)")  # fmt: skip


def _review_job(learner, reference, generator) -> None:
    for _ in range(2 * TRIALS):
        count = _integer(generator, 1, 6)
        picks = torch.randint(0, len(_SAFE_LINES), (count,), generator=generator).tolist()
        lines = [_SAFE_LINES[i] for i in picks]
        if _integer(generator, 0, 2):
            flag = _RED_FLAGS[_integer(generator, 0, len(_RED_FLAGS))]
            lines.insert(_integer(generator, 0, len(lines) + 1), flag)
        code = "\n".join(lines)
        expect_equal(bool(learner(code)), bool(reference(code)), f"should_approve({code!r})")


def _states(generator: torch.Generator, count: int) -> list[dict[str, torch.Tensor]]:
    rows, columns = _integer(generator, 1, 5), _integer(generator, 1, 5)
    return [
        {
            "layer.weight": torch.randn(rows, columns, generator=generator),
            "layer.bias": torch.randn(rows, generator=generator),
        }
        for _ in range(count)
    ]


def _fedavg(learner, reference, generator) -> None:
    for _ in range(TRIALS):
        count = _integer(generator, 1, 6)
        states = _states(generator, count)
        weights = torch.randint(1, 500, (count,), generator=generator).tolist()
        shown = f"my_fedavg on {count} random state dicts with weights {weights}"
        got, want = learner(states, weights), reference(states, weights)
        expect(isinstance(got, dict), f"{shown} should return a dict, got {type(got).__name__}")
        expect_equal(sorted(got), sorted(want), f"the keys of {shown}")
        for name in want:
            expect_close(got[name], want[name], rtol=1e-5, atol=1e-6, what=f"{shown}[{name!r}]")


def _iid_split(learner, reference, generator) -> None:
    for _ in range(TRIALS):
        n, seed = _integer(generator, 1, 300), _integer(generator, 0, 10_000)
        clients = _integer(generator, 1, n + 1)
        call = f"my_iid_split({n}, {clients}, seed={seed})"
        parts = learner(n, clients, seed=seed)
        expect(len(parts) == clients, f"{call} gave {len(parts)} parts, not {clients}")
        merged = sorted(int(i) for part in parts for i in part)
        expect(merged == list(range(n)), f"{call}: every index 0..{n - 1} must appear once")
        sizes = [len(part) for part in parts]
        expect(max(sizes) - min(sizes) <= 1, f"{call}: sizes {sizes} differ by more than one")
        again = learner(n, clients, seed=seed)
        expect(
            all(
                sorted(map(int, a)) == sorted(map(int, b))
                for a, b in zip(parts, again, strict=True)
            ),
            f"{call} twice gave different splits: the seed must fix the split",
        )


def _proximal_term(learner, reference, generator) -> None:
    for _ in range(TRIALS):
        width, out = _integer(generator, 1, 6), _integer(generator, 1, 4)
        torch.manual_seed(_integer(generator, 0, 2**31))
        model = torch.nn.Sequential(torch.nn.Linear(width, out), torch.nn.Tanh())
        start = {
            name: p.detach() + 0.3 * torch.randn(p.shape, generator=generator)
            for name, p in model.named_parameters()
        }
        mu = _uniform(generator, 0.001, 2.0)
        shown = f"proximal_term on a random Linear({width}, {out}) model, mu = {mu:.4f}"
        got = learner(model, {k: v.clone() for k, v in start.items()}, mu)
        want = float(reference(model, start, mu).detach())
        expect_close(float(torch.as_tensor(got).detach()), want, rtol=1e-5, what=shown)


def _same_code(learner, reference, generator) -> None:
    for _ in range(2 * TRIALS):
        count = _integer(generator, 1, 5)
        picks = torch.randint(0, len(_SAFE_LINES), (count,), generator=generator).tolist()
        a = "\n".join(_SAFE_LINES[i] for i in picks)
        b_lines = [_SAFE_LINES[i] for i in picks]
        change = _integer(generator, 0, 3)
        if change == 1:  # blank lines added: still the same code
            b_lines.insert(_integer(generator, 0, count + 1), "   ")
        elif change == 2:  # one line changed: different code
            index = _integer(generator, 0, count)
            b_lines[index] = b_lines[index] + "  # edited" if index % 2 else "x = 1"
        b = "\n".join(b_lines)
        expect_equal(bool(learner(a, b)), bool(reference(a, b)), f"same_code({a!r}, {b!r})")


def _idlg_label(learner, reference, generator) -> None:
    for _ in range(TRIALS):
        classes, features = _integer(generator, 2, 12), _integer(generator, 1, 20)
        label = _integer(generator, 0, classes)
        grad = torch.rand(classes, features, generator=generator)
        grad[label] = -torch.rand(features, generator=generator)
        shown = f"label_from_gradient on a random ({classes}, {features}) gradient"
        expect_equal(int(learner(grad.clone())), int(reference(grad)), shown)


def _bias_trick(learner, reference, generator) -> None:
    for _ in range(TRIALS):
        units, pixels = _integer(generator, 2, 16), _integer(generator, 4, 50)
        x = torch.rand(pixels, generator=generator)
        bias_grad = torch.randn(units, generator=generator) * (
            torch.rand(units, generator=generator) > 0.3
        )
        bias_grad[_integer(generator, 0, units)] += 1.0
        weight_grad = bias_grad[:, None] * x[None, :]
        shown = f"reconstruct_from_first_layer on random ({units}, {pixels}) gradients"
        got = learner(weight_grad.clone(), bias_grad.clone())
        expect_close(got, reference(weight_grad, bias_grad), rtol=1e-5, atol=1e-6, what=shown)


def _server_step(learner, reference, generator) -> None:
    for _ in range(TRIALS):
        batch, width, classes = (
            _integer(generator, 1, 10),
            _integer(generator, 1, 12),
            _integer(generator, 2, 6),
        )
        torch.manual_seed(_integer(generator, 0, 2**31))
        model = torch.nn.Sequential(torch.nn.Linear(width, classes))
        activations = torch.randn(batch, width, generator=generator)
        labels = torch.randint(0, classes, (batch,), generator=generator)
        shown = f"server_step on random activations ({batch}, {width}) and {classes} classes"
        want = reference(model, activations.clone(), labels.clone())
        model.zero_grad()
        got = learner(model, activations.clone(), labels.clone())
        expect_close(got, want, rtol=1e-5, atol=1e-7, what=shown)


def _labels_from_gradients(learner, reference, generator) -> None:
    for _ in range(TRIALS):
        batch, classes = _integer(generator, 1, 12), _integer(generator, 2, 10)
        probabilities = torch.softmax(torch.randn(batch, classes, generator=generator), dim=1)
        labels = torch.randint(0, classes, (batch,), generator=generator)
        grads = probabilities - torch.nn.functional.one_hot(labels, classes)
        shown = f"labels_from_gradients on random ({batch}, {classes}) logit gradients"
        expect_equal(torch.as_tensor(learner(grads.clone())), reference(grads), shown)


def _share_secret(learner, reference, generator) -> None:
    from course_lib.randomness import InsecureSeededRandom

    for _ in range(TRIALS):
        n, size = _integer(generator, 2, 7), _integer(generator, 1, 9)
        secret = torch.randint(-(2**62), 2**62, (size,), generator=generator)
        seed = _integer(generator, 0, 10_000)
        call = f"share_secret(secret, {n}, rng) for a random secret of {size} int64 values"
        shares = learner(secret.clone(), n, InsecureSeededRandom(seed))
        expect(
            isinstance(shares, torch.Tensor) and shares.dtype == torch.int64,
            f"{call} should return one int64 tensor",
        )
        expect(tuple(shares.shape) == (n, size), f"{call} has shape {tuple(shares.shape)}")
        expect_equal(shares.sum(dim=0), secret, f"the sum of the shares of {call}")
        again = learner(secret.clone(), n, InsecureSeededRandom(seed))
        expect(torch.equal(again, shares), f"{call}: the same seed must give the same shares")


def _beaver(learner, reference, generator) -> None:
    from course_lib.randomness import InsecureSeededRandom
    from course_lib.smpc.session import Session
    from course_lib.smpc.sharing import reconstruct

    for _ in range(TRIALS):
        n, size = _integer(generator, 2, 5), _integer(generator, 1, 9)
        rng = InsecureSeededRandom(_integer(generator, 0, 10_000))
        x, y = rng.int64((size,)) >> 40, rng.int64((size,)) >> 40
        a, b = rng.int64((size,)), rng.int64((size,))
        split = Session(n, rng=rng).share_integers
        shares = [split(v).shares for v in (x, y, a, b, a * b)]
        shown = f"beaver_multiply for {n} parties and {size} random int64 values"
        got = learner(*(s.clone() for s in shares))
        expect(
            isinstance(got, torch.Tensor) and tuple(got.shape) == (n, size),
            f"{shown} should return the stacked shares, shape ({n}, {size})",
        )
        expect_equal(reconstruct(got), x * y, f"the reconstructed product of {shown}")
        # each party's share from its own shares; exactly one party adds the opened ε·δ
        want = reference(*(s.clone() for s in shares))
        xs, ys, a_s, b_s, _ = shares
        opened = (xs - a_s).sum(dim=0) * (ys - b_s).sum(dim=0)
        want[0] -= opened
        extra = [bool(torch.equal(got[i] - want[i], opened)) for i in range(n)]
        rest = [bool(torch.equal(got[i], want[i])) for i in range(n)]
        expect(
            any(extra[i] and all(rest[j] for j in range(n) if j != i) for i in range(n)),
            f"{shown}: each party's share must come from its own shares of a, b, c and the two "
            "opened values, with one party adding ε·δ",
        )


def _hard_sigmoid(learner, reference, generator) -> None:
    for _ in range(TRIALS):
        z = torch.randn(_integer(generator, 1, 30), generator=generator, dtype=torch.float64) * 6
        shown = f"my_hard_sigmoid on {z.numel()} random values"
        expect_close(learner(z.clone()), reference(z), rtol=1e-6, atol=1e-9, what=shown)


_PRIMES = (1_000_003, 1_000_033, 1_000_037, 1_000_039, 2_147_483_647, 998_244_353, 65_537)


def _modulus(generator: torch.Generator) -> int:
    p = _PRIMES[_integer(generator, 0, len(_PRIMES))]
    q = _PRIMES[_integer(generator, 0, len(_PRIMES))]
    return p * q if p != q else p * 1_000_081


def _paillier_encrypt(learner, reference, generator) -> None:
    for _ in range(TRIALS):
        n = _modulus(generator)
        m, r = _integer(generator, 0, 2**31) % n, _integer(generator, 2, 2**31) % n
        shown = f"paillier_encrypt({m}, {r}, {n})"
        expect_equal(int(learner(m, r, n)), int(reference(m, r, n)), shown)


def _paillier_add(learner, reference, generator) -> None:
    for _ in range(TRIALS):
        n = _modulus(generator)
        c1, c2 = (_integer(generator, 1, 2**62) % (n * n) for _ in range(2))
        shown = f"add_encrypted({c1}, {c2}, {n})"
        expect_equal(int(learner(c1, c2, n)), int(reference(c1, c2, n)), shown)


def _blind(learner, reference, generator) -> None:
    p = 2_147_483_647
    for _ in range(TRIALS):
        values = torch.randint(2, p, (_integer(generator, 1, 8),), generator=generator).tolist()
        key = _integer(generator, 2, 2**31 - 1)
        shown = f"blind({values}, {key}, {p})"
        expect_equal(
            [int(v) for v in learner(list(values), key, p)], reference(values, key, p), shown
        )


def _intersect(learner, reference, generator) -> None:
    for _ in range(TRIALS):
        count = _integer(generator, 1, 10)
        mine = [f"id{int(v)}" for v in torch.randperm(50, generator=generator)[:count]]
        doubles = [_integer(generator, 0, 2**40) for _ in mine]
        keep = (torch.rand(count, generator=generator) < 0.5).tolist()
        theirs = [d for d, k in zip(doubles, keep, strict=True) if k]
        theirs += [_integer(generator, 0, 2**40) for _ in range(_integer(generator, 0, 4))]
        shown = f"intersect({mine}, <{count} random numbers>, <{len(theirs)} random numbers>)"
        got = learner(list(mine), list(doubles), list(theirs))
        expect_equal(set(got), reference(mine, doubles, theirs), shown)


def _on_curve(learner, reference, generator) -> None:
    for _ in range(4 * TRIALS):
        u = int.from_bytes(
            torch.randint(0, 256, (32,), generator=generator, dtype=torch.uint8).numpy().tobytes(),
            "little",
        ) % (2**255 - 19)
        expect_equal(bool(learner(u)), bool(reference(u)), f"on_curve({u})")


def _rounds_within_budget(learner, reference, generator) -> None:
    from course_lib.fl.secure_syft import PrivacyPolicy

    for _ in range(3):
        policy = PrivacyPolicy(
            _uniform(generator, 1.0, 8.0),
            10 ** -_uniform(generator, 4, 7),
            _uniform(generator, 0.8, 2.0),
            1.0,
            _uniform(generator, 0.05, 0.3),
        )
        epochs = _integer(generator, 1, 4)
        shown = f"rounds_within_budget({policy}, {epochs})"
        expect_equal(int(learner(policy, epochs)), int(reference(policy, epochs)), shown)


def _exposure(learner, reference, generator) -> None:
    for _ in range(TRIALS):
        n = _integer(generator, 2, 10**6)
        rank = _integer(generator, 1, n + 1)
        shown = f"exposure_bits({rank}, {n})"
        expect_close(float(learner(rank, n)), float(reference(rank, n)), rtol=1e-9, what=shown)


def _find_leaks(learner, reference, generator) -> None:
    """Random files in two temporary folders (nested, some copied across under other names):
    the learner must find exactly the scientist's files whose bytes are private."""
    import tempfile
    from pathlib import Path

    for _ in range(3):
        with tempfile.TemporaryDirectory() as tmp:
            scientist, private = Path(tmp, "scientist"), Path(tmp, "private")
            (scientist / "sub").mkdir(parents=True)
            private.mkdir()
            secrets = []
            for i in range(_integer(generator, 1, 5)):
                data = bytes(
                    torch.randint(
                        0,
                        256,
                        (_integer(generator, 1, 64),),
                        generator=generator,
                        dtype=torch.uint8,
                    ).tolist()
                )
                (private / f"record{i}.bin").write_bytes(data)
                secrets.append(data)
            for i in range(_integer(generator, 1, 6)):
                folder = scientist / "sub" if _integer(generator, 0, 2) else scientist
                if _integer(generator, 0, 2):
                    data = secrets[_integer(generator, 0, len(secrets))]
                else:
                    data = bytes(
                        torch.randint(
                            0,
                            256,
                            (_integer(generator, 1, 64),),
                            generator=generator,
                            dtype=torch.uint8,
                        ).tolist()
                    )
                (folder / f"file{i}.dat").write_bytes(data)
            shown = "find_leaks on random scientist and private folders"
            got = {Path(p).resolve() for p in learner(scientist, private)}
            want = {Path(p).resolve() for p in reference(scientist, private)}
            expect_equal(sorted(map(str, got)), sorted(map(str, want)), shown)


def _aggregate_outputs(learner, reference, generator) -> None:
    import json
    import tempfile
    from pathlib import Path

    from course_lib.fl.syft_bridge.training import encode_state

    for _ in range(3):
        count = _integer(generator, 1, 5)
        states = _states(generator, count)
        samples = torch.randint(1, 1000, (count,), generator=generator).tolist()
        shown = f"aggregate_outputs for {count} hospitals with {samples} samples and random weights"
        with tempfile.TemporaryDirectory() as tmp:
            outputs = {}
            for k, (state, number) in enumerate(zip(states, samples, strict=True)):
                folder = Path(tmp, f"owner{k}")
                folder.mkdir()
                (folder / "model.b64").write_text(encode_state(state))
                (folder / "num_samples.json").write_text(json.dumps(number))
                outputs[f"hospital{k}@example.org"] = {
                    "model.b64": folder / "model.b64",
                    "num_samples.json": folder / "num_samples.json",
                }
            got, want = learner(outputs), reference(outputs)
        expect(isinstance(got, dict), f"{shown} should return a state dict")
        for name in want:
            expect(name in got, f"{shown}: the result is missing {name!r}")
            expect_close(got[name], want[name], rtol=1e-5, atol=1e-6, what=f"{shown}[{name!r}]")


def _smpc_call(
    learner: Callable[..., Any],
    reference: Callable[..., Any],
    make: Callable[[Any], tuple[Any, ...]],
    parties: int,
    seed: int,
    on: str,
) -> Any:
    """Call the learner on secret-shared inputs (``make(session)``) of a fresh seeded session and
    check that it opened exactly what the instructor's solution opens on the same inputs, revealed
    nothing and read no shares; its result (to be revealed by the caller)."""
    from course_lib.exercises._smpc_audit import (
        expect_only_protocol_openings,
        protocol_opened_elements,
    )
    from course_lib.randomness import InsecureSeededRandom
    from course_lib.smpc import Session

    twin = Session(parties, rng=InsecureSeededRandom(seed))
    protocol = protocol_opened_elements(twin, reference, *make(twin))
    session = Session(parties, rng=InsecureSeededRandom(seed))
    inputs = make(session)
    session.log.reset()
    result = learner(*inputs)
    expect(result is not None, f"{on} is None — did you forget `return`?")
    expect_only_protocol_openings(session, protocol, on)
    return result


def _revealed(value: Any, on: str) -> torch.Tensor:
    from course_lib.smpc import SharedTensor

    expect(isinstance(value, SharedTensor), f"{on} should be a SharedTensor (do not reveal it)")
    return value.reveal()


def _secure_equal(learner, reference, generator) -> None:
    for _ in range(TRIALS):
        parties, size = _integer(generator, 2, 4), _integer(generator, 1, 9)
        a = torch.randint(-5, 6, (size,), generator=generator)
        b = torch.where(
            torch.rand(size, generator=generator) < 0.5, a, a + _integer(generator, 1, 4)
        )
        on = (
            f"secure_equal(x, y) for {parties} parties' shares of x = {a.tolist()}, "
            f"y = {b.tolist()}"
        )

        def make(s: Any, a: torch.Tensor = a, b: torch.Tensor = b) -> tuple[Any, ...]:
            return s.share_integers(a), s.share_integers(b)

        out = _smpc_call(
            learner,
            reference,
            make,
            parties,
            _integer(generator, 0, 10_000),
            on,
        )
        expect_equal(_revealed(out, on), (a == b).double(), f"the revealed bits of {on}")


def _secure_relu(learner, reference, generator) -> None:
    for _ in range(TRIALS):
        parties = _integer(generator, 2, 4)
        values = (torch.randn(_integer(generator, 1, 9), generator=generator) * 50).double()
        on = f"secure_relu(x) for {parties} parties' shares of {values.numel()} random values"

        def make(s: Any, v: torch.Tensor = values) -> tuple[Any, ...]:
            return (s.share(v),)

        out = _smpc_call(
            learner,
            reference,
            make,
            parties,
            _integer(generator, 0, 10_000),
            on,
        )
        got = _revealed(out, on)
        expect_close(got, values.clamp(min=0), rtol=0, atol=1e-3, what=f"{on}, revealed")


def _one_hot_select(learner, reference, generator) -> None:
    for _ in range(TRIALS):
        parties, rows = _integer(generator, 2, 4), _integer(generator, 1, 8)
        bits = torch.zeros(rows, dtype=torch.int64)
        if _integer(generator, 0, 3):
            bits[_integer(generator, 0, rows)] = 1
        values = torch.randint(-(2**20), 2**20, (rows,), generator=generator)
        on = (
            f"one_hot_select(match, values) for {parties} parties' shares of match = "
            f"{bits.tolist()} and {rows} random values"
        )

        def make(s: Any, b: torch.Tensor = bits, v: torch.Tensor = values) -> tuple[Any, ...]:
            return s.share_integers(b), s.share_integers(v)

        out = _smpc_call(
            learner,
            reference,
            make,
            parties,
            _integer(generator, 0, 10_000),
            on,
        )
        expect(isinstance(out, tuple | list) and len(out) == 2, f"{on} should be (value, found)")
        for got, want, what in (
            (out[0], (bits * values).sum(), "the value"),
            (out[1], bits.sum(), "found"),
        ):
            revealed = _revealed(got, f"{what} of {on}")
            expect(revealed.numel() == 1, f"{what} of {on} should be one number")
            expect_equal(round(float(revealed.reshape(()))), int(want), f"{what} of {on}")


def _hidden_backward(learner, reference, generator) -> None:
    from course_lib.smpc import less_than_zero

    for _ in range(TRIALS):
        parties = _integer(generator, 2, 4)
        batch, inputs, units = (_integer(generator, 1, 7) for _ in range(3))
        x = torch.rand(batch, inputs, generator=generator, dtype=torch.float64)
        hidden = torch.randn(batch, units, generator=generator, dtype=torch.float64)
        grad_a = torch.randn(batch, units, generator=generator, dtype=torch.float64)
        on = (
            f"hidden_backward(x, grad_a, active) for {parties} parties' shares of random x "
            f"({batch}, {inputs}), grad_a ({batch}, {units}) and ReLU bits"
        )

        def make(s: Any, x=x, hidden=hidden, grad_a=grad_a) -> tuple[Any, ...]:
            return s.share(x), s.share(grad_a), 1 - less_than_zero(s.share(hidden))

        out = _smpc_call(learner, reference, make, parties, _integer(generator, 0, 10_000), on)
        expect(isinstance(out, tuple | list) and len(out) == 2, f"{on} should be two gradients")
        grad_h = grad_a * (hidden >= 0)
        for got, want, what in zip(
            out, (grad_h.T @ x, grad_h.sum(0)), ("grad_weight", "grad_bias"), strict=True
        ):
            expect_close(_revealed(got, f"{what} of {on}"), want, rtol=0, atol=1e-3,
                         what=f"{what} of {on}")  # fmt: skip


def _find_secret(learner, reference, generator) -> None:
    """The course check's planted model with a random secret of 2–3 digits after a random
    prefix (a function that knows the check's two secrets fails)."""
    from course_lib.exercises.memorization import _PlantedLM

    for _ in range(2):
        length = _integer(generator, 2, 4)
        secret = "".join(str(_integer(generator, 0, 10)) for _ in range(length))
        prefix = ("the code of ", "my pin is ", "door ")[_integer(generator, 0, 3)]
        shown = f"find_secret(model, {prefix!r}, {length}) on a model that memorised {secret!r}"
        expect_equal(str(learner(_PlantedLM(secret), prefix, length)), secret, shown)


def _clopper_pearson(learner, reference, generator) -> None:
    """Random counts (zero and all successes included) and confidence levels."""
    for trial in range(TRIALS):
        n = _integer(generator, 1, 3000)
        k = (0, n)[trial] if trial < 2 else _integer(generator, 0, n + 1)
        alpha = _uniform(generator, 0.005, 0.3)
        shown = f"cp_interval({k}, {n}, {alpha:.6g})"
        got = learner(k, n, alpha)
        expect(isinstance(got, tuple | list) and len(got) == 2, f"{shown} should be (low, high)")
        want = reference(k, n, alpha)
        for end, g, w in zip(("low", "high"), got, want, strict=True):
            expect_close(float(g), float(w), rtol=1e-6, atol=1e-9, what=f"the {end} end of {shown}")


def _rates(generator: torch.Generator) -> tuple[float, float, float]:
    """(tpr, fpr, delta) with both rates inside (0, 1), so every bound is finite."""
    delta = 0.0 if _integer(generator, 0, 2) else 10 ** -_uniform(generator, 2, 8)
    return _uniform(generator, 0.001, 0.999), _uniform(generator, 0.001, 0.999), delta


def _partition_threshold(learner, reference, generator) -> None:
    """Random budgets, δ from 1e-12 to 0.1 and user bounds up to 20."""
    for _ in range(TRIALS):
        epsilon = _uniform(generator, 0.05, 8.0)
        delta = 10 ** -_uniform(generator, 1, 12)
        max_rows = _integer(generator, 1, 21)
        shown = f"threshold({epsilon:.6g}, {delta:.6g}, {max_rows})"
        got, want = learner(epsilon, delta, max_rows), reference(epsilon, delta, max_rows)
        expect(got is not None and float(got) == float(want), f"{shown} should be {want}")


def _quantile_scores(learner, reference, generator) -> None:
    """Random data with ties, candidates on and between the values, α = 0, 1 and in between."""
    for trial in range(TRIALS):
        n = _integer(generator, 1, 60)
        values = (torch.randint(0, 20, (n,), generator=generator) / 2).tolist()
        count = _integer(generator, 1, 12)
        drawn = (torch.randint(0, 41, (count,), generator=generator) / 4).tolist()
        candidates = sorted(set(drawn))
        alpha = (0.0, 1.0)[trial] if trial < 2 else _uniform(generator, 0.0, 1.0)
        shown = f"scores({values}, {candidates}, {alpha:.6g})"
        got = torch.as_tensor(learner(list(values), list(candidates), alpha), dtype=torch.float64)
        want = torch.as_tensor(reference(values, candidates, alpha), dtype=torch.float64)
        expect(got.shape == want.shape, f"{shown} should give one score per candidate")
        expect_close(got, want, rtol=0.0, atol=1e-9, what=shown)


def _total_variation(learner, reference, generator) -> None:
    """Random tables of counts (zeros included) of random shapes."""
    for _ in range(TRIALS):
        shape = (_integer(generator, 1, 6), _integer(generator, 1, 6))
        p = torch.randint(0, 30, shape, generator=generator).double()
        q = torch.randint(0, 30, shape, generator=generator).double()
        p[0, 0] += 1  # a positive total
        q[-1, -1] += 1
        shown = f"tv({p.tolist()}, {q.tolist()})"
        got = learner(p.numpy().copy(), q.numpy().copy())
        want = reference(p.numpy().copy(), q.numpy().copy())
        expect_close(float(got), float(want), rtol=1e-9, atol=1e-12, what=shown)


def _lora_forward(learner, reference, generator) -> None:
    """Random shapes, ranks and α (float64): the learner's layer output equals the reference's."""
    for _ in range(TRIALS):
        n, d_in, d_out = (
            _integer(generator, 1, 6),
            _integer(generator, 2, 12),
            _integer(generator, 2, 12),
        )
        rank, alpha = _integer(generator, 1, min(d_in, d_out) + 1), _uniform(generator, 0.5, 32.0)
        args = [
            torch.randn(shape, generator=generator, dtype=torch.float64)
            for shape in ((n, d_in), (d_out, d_in), (d_out,), (rank, d_in), (d_out, rank))
        ]
        shown = f"lora_forward with x {n}×{d_in}, W {d_out}×{d_in}, rank {rank}, alpha {alpha:.4g}"
        got = learner(*(a.clone() for a in args), alpha)
        expect(got is not None, f"{shown} returned None")
        expect_close(got, reference(*args, alpha), rtol=1e-9, atol=1e-9, what=shown)


def _random_model(generator: torch.Generator) -> tuple[nn.Module, str]:
    """A model with a ``head`` among other parts, some parameters randomly frozen beforehand."""
    width, depth = _integer(generator, 2, 9), _integer(generator, 1, 4)
    model = nn.Module()
    model.embed = nn.Embedding(_integer(generator, 3, 20), width)
    model.blocks = nn.Sequential(*(nn.Linear(width, width) for _ in range(depth)))
    model.norm = nn.LayerNorm(width)
    model.head = nn.Linear(width, _integer(generator, 1, 6))
    for p in model.parameters():
        p.requires_grad_(bool(torch.rand((), generator=generator) < 0.5))
    return model, f"a model with {depth} block(s) of width {width} (some parameters frozen before)"


def _freeze_all_but_head(learner, reference, generator) -> None:
    for _ in range(TRIALS):
        model, shown = _random_model(generator)
        result = learner(model)
        model = result if isinstance(result, nn.Module) else model
        wrong = [n for n, p in model.named_parameters() if p.requires_grad != n.startswith("head.")]
        expect(not wrong, f"freeze_all_but_head on {shown}: wrong requires_grad for {wrong}")


def _count_trainable(learner, reference, generator) -> None:
    for _ in range(TRIALS):
        model, shown = _random_model(generator)
        got, want = learner(model), reference(model)
        expect(got is not None and int(got) == int(want),
               f"count_trainable on {shown}: got {got}, expected {want}")  # fmt: skip


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
    "04.parallel_databases": _parallel_databases,
    "04.sensitivity": _sensitivity,
    "04.differencing_attack": _reveal,
    "04.user_sensitivity": _tensors("user_sensitivity", _user_ids),
    "06.laplace_scale": _numbers(
        "laplace_scale", lambda g: (_uniform(g, 0.1, 20.0), _uniform(g, 0.01, 5.0))
    ),
    "06.bounded_sum": _tensors(
        "bounded_sum",
        lambda g: (
            (torch.randn(_integer(g, 1, 20), generator=g) * 50).double(),
            _uniform(g, 1, 40),
        ),
    ),
    "06.gaussian_sigma": _numbers(
        "gaussian_sigma",
        lambda g: (_uniform(g, 0.1, 10.0), _uniform(g, 0.05, 0.99), 10 ** -_uniform(g, 2, 9)),
    ),
    "06.advanced_composition": _numbers(
        "advanced_epsilon",
        lambda g: (_uniform(g, 0.01, 1.0), _integer(g, 1, 500), 10 ** -_uniform(g, 2, 9)),
    ),
    "07.vote_counts": _tensors("vote_counts", _vote_inputs, exact=True),
    "07.gnmax_data_independent": _numbers(
        "data_independent_epsilon",
        lambda g: (_integer(g, 1, 2000), _uniform(g, 5.0, 150.0), 10 ** -_uniform(g, 4, 8)),
    ),
    "08.clip_per_sample": _tensors("clip_per_sample", _gradients),
    "12.psnr": _tensors("my_psnr", _psnr_inputs),
    "13.pairwise_mask": _pairwise,
    "13.shamir_reconstruct": _shamir,
    "13.dp_noise_std": _numbers(
        "noise_std",
        lambda g: (
            _uniform(g, 0.1, 3),
            _uniform(g, 0.1, 5),
            _uniform(g, 0.01, 1),
            _integer(g, 1, 500),
        ),
    ),
    "15.encode": _tensors("encode", _encode_inputs, exact=True),
    "15.decode": _tensors("decode", _decode_inputs),
    "20.average_of_masked": _tensors("average_of_masked", _masked_uploads),
    "03.freeze_features": _freeze_features,
    "09.review_job": _review_job,
    "10.fedavg": _fedavg,
    "10.iid_split": _iid_split,
    "10.proximal_term": _proximal_term,
    "11.same_code": _same_code,
    "12.idlg_label": _idlg_label,
    "12.bias_trick": _bias_trick,
    "14.server_step": _server_step,
    "14.wire_bytes": _numbers(
        "wire_bytes", lambda g: (_integer(g, 1, 512), (_integer(g, 1, 64), _integer(g, 1, 9)))
    ),
    "14.labels_from_gradients": _labels_from_gradients,
    "15.share_secret": _share_secret,
    "16.beaver_multiply": _beaver,
    "16.matmul_bytes": _numbers(
        "matmul_bytes", lambda g: tuple(_integer(g, 1, 64) for _ in range(4))
    ),
    "17.hard_sigmoid": _hard_sigmoid,
    "18.paillier_encrypt": _paillier_encrypt,
    "18.paillier_add": _paillier_add,
    "19.blind": _blind,
    "19.intersect": _intersect,
    "19.on_curve": _on_curve,
    "20.rounds_within_budget": _rounds_within_budget,
    "21.exposure": _exposure,
    "09.find_leaks": _find_leaks,
    "11.aggregate_outputs": _aggregate_outputs,
    "16.secure_equal": _secure_equal,
    "16.one_hot_select": _one_hot_select,
    "17.secure_relu": _secure_relu,
    "17.hidden_backward": _hidden_backward,
    "21.find_secret": _find_secret,
    "22.max_posterior": _numbers(
        "largest_posterior", lambda g: (_uniform(g, 1e-4, 0.999), _uniform(g, 0.01, 12.0))
    ),
    "22.clopper_pearson": _clopper_pearson,
    "22.epsilon_lower_bound": _numbers("lower_bound", _rates),
    "23.partition_threshold": _partition_threshold,
    "23.quantile_scores": _quantile_scores,
    "23.total_variation": _total_variation,
    "24.lora_forward": _lora_forward,
    "24.freeze_all_but_head": _freeze_all_but_head,
    "24.count_trainable": _count_trainable,
}
