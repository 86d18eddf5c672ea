"""Cost of a federated round: course_lib in process vs Flower's two runtimes vs syft jobs.

    COURSE_OFFLINE=1 .venv/bin/python benchmarks/federated.py [--rounds 5] [--syft-repeats 3]

- FedAvg, 10 IID clients on the offline MNIST sample (4,000 training images, 400 per client),
  ``MLP`` 784-128-10, 1 local epoch, batch 32: median seconds per round of ``run_fedavg``.
- The repository's Flower App (``flower_app/``) with 2 nodes: median seconds per round as its
  ServerApp measured them, and the whole ``flwr run`` end to end, on the simulation runtime (Ray)
  and on the Deployment Engine (a SuperLink and 2 SuperNodes as OS processes on localhost), beside
  ``reference_fedavg``, the course's FedAvg on the app's own partitions.
- syft: one data owner, one remote training job per round (submit → review → approve → run →
  share → collect) on a 400-image shard: seconds per job round trip, and the same for a 3-owner
  round. Most of a job is the fresh Python process importing torch.

Wall-clock times on a shared machine are noisy; the ratios are what matter.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from course_lib.data import load_mnist
from course_lib.fl import syft_bridge as sb
from course_lib.fl.deployment import stop_on_sigterm
from course_lib.fl.fedavg import run_fedavg
from course_lib.fl.flower import AppConfig, reference_fedavg, run_flower_app
from course_lib.fl.partition import client_subsets, partition_iid
from course_lib.models import MLP

NUM_CLIENTS = 10


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_fedavg(train, test, rounds: int) -> dict[str, float]:
    """Median seconds per round (from the runs' own clocks) and Flower's end-to-end times."""
    clients = client_subsets(train, partition_iid(train.labels, NUM_CLIENTS, seed=0))
    ours = run_fedavg(MLP, clients, test, rounds=rounds, progress=False)
    reference = reference_fedavg(AppConfig(num_server_rounds=rounds, num_nodes=2), 2)
    row = {
        "ours": statistics.median(ours.round_seconds),
        "reference": statistics.median(reference.round_seconds),
    }
    for runtime in ("simulation", "deployment"):
        result = run_flower_app(runtime, num_nodes=2, num_server_rounds=rounds, echo=None)
        row[f"{runtime}_round"] = statistics.median(result.round_seconds)
        row[f"{runtime}_total"] = result.wall_seconds
    return row


def bench_syft(train, repeats: int, owners: int) -> float:
    """Median seconds of one FedAvg round through syft with ``owners`` data owners."""
    parts = [torch.arange(400 * k, 400 * (k + 1)) for k in range(owners)]
    times = []
    with sb.create_federation(owners) as federation:
        sb.publish_shards(federation, "shard", train.images, train.labels, parts)
        model = MLP()
        for r in range(1, repeats + 1):
            times.append(
                seconds(
                    lambda r=r: sb.fedavg_round(federation, model, dataset="shard", round_index=r)
                )
            )
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--syft-repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads in this process")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, test = load_mnist(train=True), load_mnist(train=False)
    torch.manual_seed(0)

    with stop_on_sigterm():  # `kill` / `timeout`: stop every Flower process, remove temp folders
        fed = bench_fedavg(train, test, args.rounds)
    syft_one = bench_syft(train, args.syft_repeats, owners=1)
    syft_three = bench_syft(train, args.syft_repeats, owners=3)

    print(
        f"\nFedAvg, {NUM_CLIENTS} clients x 400 MNIST images, MLP, 1 local epoch "
        f"({torch.get_num_threads()} torch threads)\n"
    )
    print("| what | seconds |")
    print("|---|---|")
    print(f"| course_lib `run_fedavg`, per round (in process) | {fed['ours']:.2f} |")
    print(f"| course_lib `reference_fedavg`, 2 clients, per round | {fed['reference']:.2f} |")
    for runtime in ("simulation", "deployment"):
        name = "Flower simulation (Ray)" if runtime == "simulation" else "Flower Deployment Engine"
        print(f"| {name}, 2 nodes, per round | {fed[f'{runtime}_round']:.2f} |")
        print(f"| {name}, {args.rounds} rounds end to end | {fed[f'{runtime}_total']:.1f} |")
    print(f"| syft, one job round trip (1 owner, 400 images) | {syft_one:.1f} |")
    print(f"| syft, one FedAvg round with 3 owners (3 jobs) | {syft_three:.1f} |")


if __name__ == "__main__":
    main()
