"""Speed of DP-SGD: course_lib vs non-private SGD vs Opacus, and the secure noise, from one run.

    COURSE_OFFLINE=1 .venv/bin/python benchmarks/dp_sgd.py [--rounds 7] [--steps 10]

Every method trains the same model on the same in-memory MNIST batches (data loading is not timed).
By default: 1 torch thread and process CPU time, so other jobs on a shared machine slow every
method alike instead of adding their time to one of them. Each *round* times every method once,
in turns (paired, interleaved), and a ratio is computed within the round; the table gives the
median [min–max] of each ratio over the rounds. Absolute speeds are noisy on a shared machine; the
ratios are what the goals (issue #26) are about.

course_lib draws its noise from the secure source (a ChaCha20 keystream keyed from the operating
system) by default; "seeded" swaps in InsecureSeededRandom (the lessons' reproducible mode).
Opacus uses torch.normal (its default, non-secure mode); its best mode (hooks or ghost clipping)
is taken per round.

Memory layouts (SmallCNN). The goal columns compare every method in PyTorch's default (NCHW
contiguous) layout, the only one in which Opacus' per-sample gradients are right
(tests/dp/test_opacus_layout.py, lesson 08). SmallCNN rows add course_lib and non-private SGD
in the channels_last layout (CPU max-pooling is several times faster there, and course_lib is
correct in both layouts): "channels_last" columns give course_lib there against non-private SGD
in channels_last (same layout), and against Opacus in the default layout (each library in the
layout where it is correct and fastest, as lesson 08 runs them).

    --models cnn       only the SmallCNN rows (mlp: only the MLP rows)
    --no-noise-rows    skip the Gaussian-noise table
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import course_lib
from course_lib.data import load_mnist
from course_lib.dp.dpsgd import DPSGD, gaussian_noise
from course_lib.models import MLP, SmallCNN
from course_lib.randomness import InsecureSeededRandom, SecureRandom

SIGMA, CLIP, LR = 1.0, 1.0, 0.1
Batches = list[tuple[torch.Tensor, torch.Tensor]]
Run = Callable[[], None]

#: (model, batch size) → the least course_lib / non-private speed ratio the issue asks for.
GOALS_VS_NON_PRIVATE = {
    ("MLP 784-128-10", 64): 0.45,
    ("MLP 784-128-10", 256): 0.6,
    ("SmallCNN", 256): 0.7,
}
#: course_lib / Opacus' best mode, on every configuration.
GOAL_VS_OPACUS = 1.5
#: Secure noise, nanoseconds per parameter.
GOAL_NOISE_NS = 5.0


def non_private(model: nn.Module, batches: Batches) -> Run:
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)

    def run() -> None:
        for x, y in batches:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()

    return run


def channels_last(make: Callable[[nn.Module, Batches], Run]) -> Callable[[nn.Module, Batches], Run]:
    """The same method on the model (and batches) in the channels_last memory layout."""

    def make_in_layout(model: nn.Module, batches: Batches) -> Run:
        cl = torch.channels_last
        return make(
            model.to(memory_format=cl), [(x.contiguous(memory_format=cl), y) for x, y in batches]
        )

    return make_in_layout


def course_lib_dpsgd(model: nn.Module, batches: Batches, seeded: bool = False) -> Run:
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    dp = DPSGD(
        model,
        optimizer,
        noise_multiplier=SIGMA,
        max_grad_norm=CLIP,
        expected_batch_size=len(batches[0][0]),
        rng=InsecureSeededRandom(0) if seeded else None,
    )

    def run() -> None:
        for x, y in batches:
            dp.step(x, y)

    return run


def opacus(model: nn.Module, batches: Batches, mode: str) -> Run:
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    loader = DataLoader(TensorDataset(*batches[0]), batch_size=len(batches[0][0]))
    engine = PrivacyEngine()
    made = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=SIGMA,
        max_grad_norm=CLIP,
        poisson_sampling=False,
        grad_sample_mode=mode,
        **({"criterion": torch.nn.CrossEntropyLoss()} if mode == "ghost" else {}),
    )
    private_model, private_optimizer = made[0], made[1]
    criterion = made[2] if mode == "ghost" else torch.nn.CrossEntropyLoss()

    def run() -> None:
        for x, y in batches:
            private_optimizer.zero_grad()
            criterion(private_model(x), y).backward()
            private_optimizer.step()

    return run


METHODS: dict[str, Callable[[nn.Module, Batches], Run]] = {
    "non-private": non_private,
    "course_lib": course_lib_dpsgd,
    "course_lib seeded": lambda m, b: course_lib_dpsgd(m, b, seeded=True),
    "Opacus hooks": lambda m, b: opacus(m, b, "hooks"),
    "Opacus ghost": lambda m, b: opacus(m, b, "ghost"),
}
#: Extra methods for 4-D (image) models: course_lib and non-private SGD in channels_last.
LAYOUT_METHODS: dict[str, Callable[[nn.Module, Batches], Run]] = {
    "non-private channels_last": channels_last(non_private),
    "course_lib channels_last": channels_last(course_lib_dpsgd),
}


def paired_times(
    runs: dict[str, Run], rounds: int, clock: Callable[[], float]
) -> dict[str, list[float]]:
    """Warm every run up, then time them in turns, ``rounds`` times: one time per run per round."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = clock()
            run()
            times[name].append(clock() - start)
    return times


def spread(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    """median [min–max]"""
    return (
        f"{fmt.format(statistics.median(values))} "
        f"[{fmt.format(min(values))}–{fmt.format(max(values))}]"
    )


def verdict(values: Sequence[float], goal: float, at_most: bool = False) -> str:
    median = statistics.median(values)
    met = median <= goal if at_most else median >= goal
    return f"{'≤' if at_most else '≥'} {goal:g}: {'met' if met else 'NOT met'}"


def noise_rows(rounds: int, clock: Callable[[], float], count: int = 101_770) -> None:
    """Secure noise per parameter (the MLP's count) vs torch.normal, paired rounds."""
    rng, repeats = SecureRandom(), 50

    def repeated(draw: Callable[[], torch.Tensor]) -> Run:
        def run() -> None:
            for _ in range(repeats):
                draw()

        return run

    runs = {
        "secure": repeated(lambda: gaussian_noise((count,), 1.0, rng)),
        "seeded": repeated(lambda: gaussian_noise((count,), 1.0, InsecureSeededRandom(0))),
        "torch.normal": repeated(lambda: torch.normal(0.0, 1.0, (count,))),
    }
    times = paired_times(runs, rounds, clock)
    ns = {name: [t / repeats / count * 1e9 for t in ts] for name, ts in times.items()}
    over_torch = [s / t for s, t in zip(ns["secure"], ns["torch.normal"], strict=True)]
    print(
        f"\nGaussian noise, {count:,} values (ns per value; median [min–max] over {rounds} rounds)"
    )
    print("| source | ns per value | goal |")
    print("|---|---|---|")
    print(
        f"| course_lib secure (ChaCha20 + Box–Muller) | {spread(ns['secure'])} | "
        f"{verdict(ns['secure'], GOAL_NOISE_NS, at_most=True)} |"
    )
    print(f"| course_lib seeded (InsecureSeededRandom) | {spread(ns['seeded'])} | — |")
    print(f"| torch.normal (not secure) | {spread(ns['torch.normal'])} | — |")
    print(f"secure / torch.normal: {spread(over_torch)}×", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="paired rounds (ratios per round)")
    parser.add_argument("--steps", type=int, default=10, help="batches per method per round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="cpu",
        help="cpu: process CPU time, robust to other jobs on a busy machine (with --threads 1)",
    )
    parser.add_argument("--no-opacus", action="store_true", help="skip the Opacus columns")
    parser.add_argument(
        "--models", choices=["all", "mlp", "cnn"], default="all", help="which rows to run"
    )
    parser.add_argument("--no-noise-rows", action="store_true", help="skip the noise table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")  # Opacus' notices about secure mode and the RNG
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    print(
        f"course_lib from {course_lib.__file__}; "
        f"{args.threads} torch thread(s), {args.clock} time, {args.rounds} paired rounds of "
        f"{args.steps} steps per method"
    )
    if not args.no_noise_rows:
        noise_rows(args.rounds, clock)

    data = load_mnist(train=True)
    methods = {
        name: make for name, make in METHODS.items() if not (args.no_opacus and "Opacus" in name)
    }
    configs = [
        ("MLP 784-128-10", MLP, 64),
        ("MLP 784-128-10", MLP, 256),
        ("SmallCNN", SmallCNN, 64),
        ("SmallCNN", SmallCNN, 256),
    ]
    if args.models != "all":
        configs = [c for c in configs if (c[1] is SmallCNN) == (args.models == "cnn")]
    print(
        "\nSteps per second relative to non-private SGD (median [min–max] over rounds); every "
        "method in the default memory layout"
    )
    print(
        "| model, batch | non-private ms/step | course_lib / non-private | goal | "
        "seeded / non-private | course_lib / best Opacus | goal |"
    )
    print("|---|---|---|---|---|---|---|")
    layout_rows = []
    for name, model_fn, batch in configs:
        batches = [
            (data.images[i * batch : (i + 1) * batch], data.labels[i * batch : (i + 1) * batch])
            for i in range(args.steps)
        ]
        runs = {}
        image_model = model_fn is SmallCNN
        for method, make_run in (methods | (LAYOUT_METHODS if image_model else {})).items():
            torch.manual_seed(0)
            runs[method] = make_run(model_fn(), batches)
        times = paired_times(runs, args.rounds, clock)
        base = times["non-private"]
        vs_base = [b / c for b, c in zip(base, times["course_lib"], strict=True)]
        seeded = [b / c for b, c in zip(base, times["course_lib seeded"], strict=True)]
        goal = GOALS_VS_NON_PRIVATE.get((name, batch))
        cells = [
            f"{name}, {batch}",
            f"{statistics.median(base) / args.steps * 1e3:.2f}",
            f"{spread(vs_base)}×",
            verdict(vs_base, goal) if goal else "—",
            f"{spread(seeded)}×",
        ]
        if args.no_opacus:
            cells += ["—", "—"]
        else:
            best = [
                min(h, g) / c
                for h, g, c in zip(
                    times["Opacus hooks"], times["Opacus ghost"], times["course_lib"], strict=True
                )
            ]
            cells += [f"{spread(best)}×", verdict(best, GOAL_VS_OPACUS)]
        print("| " + " | ".join(cells) + " |", flush=True)
        if image_model:
            layout_rows.append(layout_cells(f"{name}, {batch}", times, args))
    if layout_rows:
        print(
            "\nSmallCNN with course_lib in channels_last: against non-private SGD in channels_last "
            "(same layout) and against Opacus in the default layout (where it is correct)"
        )
        print(
            "| model, batch | non-private channels_last ms/step | course_lib channels_last / "
            "non-private channels_last | course_lib channels_last / course_lib default | "
            "course_lib channels_last / best Opacus (default layout) |"
        )
        print("|---|---|---|---|---|")
        for cells in layout_rows:
            print("| " + " | ".join(cells) + " |", flush=True)


def layout_cells(row: str, times: dict[str, list[float]], args: argparse.Namespace) -> list[str]:
    """One row of the channels_last table, from a configuration's paired times."""
    course, base = times["course_lib channels_last"], times["non-private channels_last"]
    cells = [
        row,
        f"{statistics.median(base) / args.steps * 1e3:.2f}",
        f"{spread([b / c for b, c in zip(base, course, strict=True)])}×",
        f"{spread([d / c for d, c in zip(times['course_lib'], course, strict=True)])}×",
    ]
    if args.no_opacus:
        return [*cells, "—"]
    best = [
        min(h, g) / c
        for h, g, c in zip(times["Opacus hooks"], times["Opacus ghost"], course, strict=True)
    ]
    return [*cells, f"{spread(best)}× ({verdict(best, GOAL_VS_OPACUS)})"]


if __name__ == "__main__":
    main()
