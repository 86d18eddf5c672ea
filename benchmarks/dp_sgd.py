"""Throughput of DP-SGD: course_lib vs Opacus vs non-private SGD (samples per second).

    COURSE_OFFLINE=1 .venv/bin/python benchmarks/dp_sgd.py [--repeats 5] [--steps 20]

Every method trains the same model on the same in-memory MNIST batches (data loading is not timed),
2 threads, a warm-up, then the median over repeats. course_lib draws its noise from the secure
source (os.urandom + Box–Muller) by default; "seeded noise" swaps in InsecureSeededRandom to show
what the secure bytes cost. Opacus uses torch.normal (its default, non-secure mode).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from opacus import PrivacyEngine
from torch.utils.data import DataLoader, TensorDataset

from course_lib.data import load_mnist
from course_lib.dp.dpsgd import DPSGD
from course_lib.models import MLP, SmallCNN
from course_lib.randomness import InsecureSeededRandom

SIGMA, CLIP, LR = 1.0, 1.0, 0.1


def non_private(model, batches) -> Callable[[], None]:
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)

    def run():
        for x, y in batches:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()

    return run


def course_lib_dpsgd(model, batches, rng=None) -> Callable[[], None]:
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    dp = DPSGD(
        model,
        optimizer,
        noise_multiplier=SIGMA,
        max_grad_norm=CLIP,
        expected_batch_size=len(batches[0][0]),
        rng=rng,
    )

    def run():
        for x, y in batches:
            dp.step(x, y)

    return run


def opacus(model, batches, mode: str) -> Callable[[], None]:
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

    def run():
        for x, y in batches:
            private_optimizer.zero_grad()
            criterion(private_model(x), y).backward()
            private_optimizer.step()

    return run


def samples_per_second(
    methods: dict, model_fn, batches, repeats: int, clock: Callable[[], float]
) -> dict[str, float]:
    """Warm every method up, then time them in turns (so contention hits all alike); medians."""
    runs = {}
    for name, make_run in methods.items():
        torch.manual_seed(0)
        runs[name] = make_run(model_fn(), batches)
        runs[name]()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, run in runs.items():
            start = clock()
            run()
            times[name].append(clock() - start)
    samples = sum(len(x) for x, _ in batches)
    return {name: samples / statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="batches per timed repeat")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="cpu: process CPU time, robust to other jobs on a busy machine (with --threads 1)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")  # Opacus' notices about secure mode and the RNG
    data = load_mnist(train=True)
    methods = {
        "non-private": non_private,
        "course_lib": course_lib_dpsgd,
        "course_lib (seeded noise)": lambda m, b: course_lib_dpsgd(m, b, InsecureSeededRandom(0)),
        "Opacus hooks": lambda m, b: opacus(m, b, "hooks"),
        "Opacus ghost": lambda m, b: opacus(m, b, "ghost"),
    }
    rows = [("SmallCNN", SmallCNN, 64), ("SmallCNN", SmallCNN, 256), ("MLP 784-128-10", MLP, 256)]
    header = (
        "| model, batch | "
        + " | ".join(methods)
        + " | course_lib / non-private | course_lib / best Opacus |"
    )
    print(header)
    print("|" + "---|" * (len(methods) + 3))
    for name, model_fn, batch in rows:
        batches = [
            (data.images[i * batch : (i + 1) * batch], data.labels[i * batch : (i + 1) * batch])
            for i in range(args.steps)
        ]
        clock = time.process_time if args.clock == "cpu" else time.perf_counter
        speed = samples_per_second(methods, model_fn, batches, args.repeats, clock)
        best_opacus = max(speed["Opacus hooks"], speed["Opacus ghost"])
        cells = " | ".join(f"{speed[m]:,.0f}" for m in methods)
        print(
            f"| {name}, {batch} | {cells} | {speed['course_lib'] / speed['non-private']:.2f}× | "
            f"{speed['course_lib'] / best_opacus:.2f}× |",
            flush=True,
        )


if __name__ == "__main__":
    main()
