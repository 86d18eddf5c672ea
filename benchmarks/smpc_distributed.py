"""Benchmark: SMPC parties in one process vs as separate processes over torch.distributed (gloo).

Run from the repository root:  COURSE_OFFLINE=1 .venv/bin/python benchmarks/smpc_distributed.py

Rows: the latency of one round (opening 1 word, and 100,000 words), and encrypted MNIST inference
of lesson 02's MLP (784-128-10, trained one epoch on the offline sample) on a few test images:
online time (the dealer's triples are produced during the run in both engines: "online" here means
the protocol run, process start-up and rendezvous reported separately), rounds, and the online and
dealer bytes — the cost model's (``session.log``) beside the payload bytes that really crossed the
wire (``WireCount``, summed over the processes). One torch thread per process; medians of repeats.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from course_lib.data import load_mnist
from course_lib.models import MLP
from course_lib.randomness import InsecureSeededRandom
from course_lib.smpc import Session, encrypted_predict
from course_lib.smpc.distributed import (
    DistributedSession,
    encrypted_inference_program,
    run_parties,
)
from course_lib.training import fit, make_loader, seed_everything


def open_seconds(session: Session, words: int, repeats: int) -> float:
    """Median seconds of one ``session.open`` of ``words`` words (one round)."""
    shares = torch.zeros((session.n_parties, words), dtype=torch.int64)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.open(shares)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def open_program(session: DistributedSession, words: int, repeats: int) -> float:
    return open_seconds(session, words, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="test images to classify")
    args = parser.parse_args()
    torch.set_num_threads(1)

    print("| what | in-process | 4 processes (gloo, 127.0.0.1) |")
    print("|---|---|---|")
    for words, repeats in ((1, 200), (100_000, 20)):
        local = open_seconds(Session(2, rng=InsecureSeededRandom(0)), words, repeats)
        runs = run_parties(open_program, words, repeats, seed=0, timeout=120)
        remote = max(r.value for r in runs[:2])
        print(
            f"| one round, {words:,} words (median) | {local * 1e3:.3f} ms "
            f"| {remote * 1e3:.3f} ms |"
        )

    seed_everything(0)
    model = MLP(784, (128,), 10)
    fit(model, make_loader(load_mnist(train=True), 64), epochs=1, lr=0.1, progress=False)
    model.eval()
    images = load_mnist(train=False).images[: args.images]

    session = Session(2, rng=InsecureSeededRandom(0))
    start = time.perf_counter()
    expected = encrypted_predict(model, images, session, batch_size=len(images), to="patient")
    local_seconds = time.perf_counter() - start
    cost = session.log.total

    start = time.perf_counter()
    runs = run_parties(encrypted_inference_program, model, images, "patient", seed=0, timeout=300)
    launcher_seconds = time.perf_counter() - start
    remote_seconds = max(r.seconds for r in runs)
    party0 = runs[0].wire
    online = sum(r.wire.online_sent for r in runs)
    offline = sum(r.wire.offline_sent for r in runs)
    same = torch.equal(runs[-1].value, expected)
    n = len(images)
    print(
        f"| MLP inference, {n} images: protocol time | {local_seconds:.2f} s | "
        f"{remote_seconds:.2f} s (+{launcher_seconds - remote_seconds:.2f} s start-up) |"
    )
    print(f"| rounds (cost model / party 0 on the wire) | {cost.rounds} | {party0.rounds} |")
    print(
        f"| time in exchanges, party 0 (per round) | — | {party0.exchange_seconds:.2f} s "
        f"({party0.exchange_seconds / party0.rounds * 1e3:.2f} ms) |"
    )
    print(f"| online bytes (cost model / on the wire) | {cost.bytes:,} | {online:,} |")
    print(f"| dealer bytes (cost model / on the wire) | {cost.offline_bytes:,} | {offline:,} |")
    print(f"| predictions equal in-process | — | {same} |")


if __name__ == "__main__":
    main()
