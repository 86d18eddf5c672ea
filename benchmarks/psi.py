"""Benchmark of course_lib.psi's Diffie–Hellman PSI on lesson 19's sets.

Run from the repository root:  COURSE_OFFLINE=1 .venv/bin/python benchmarks/psi.py [--repeats 5]

Two hospitals with 1,000 patient identifiers each, 150 shared (the sets of lesson 19). Reports the
bytes each way, the median wall and CPU time of a whole run (both parties, one process), and the
CPU time of the two group operations it is made of: hashing an identifier into the group and one
re-blinding (validation and scalar multiplication). Key generation is included in the whole run
(two scalars); nothing is cached.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from course_lib.psi import PSIServer, hash_to_point, private_set_intersection
from course_lib.randomness import SecureRandom

N_PATIENTS, N_SHARED = 1_000, 150


def lesson_sets() -> tuple[list[str], list[str]]:
    """Lesson 19's two hospitals: NHS-style identifiers drawn without replacement (seed 0)."""
    ids = np.random.default_rng(0).choice(10**8, size=2 * N_PATIENTS - N_SHARED, replace=False)
    patients = [f"NHS-{i:08d}" for i in ids]
    return patients[:N_PATIENTS], patients[N_PATIENTS - N_SHARED :]


def median_seconds(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall-clock and median CPU seconds (this process) of ``repeats`` calls of ``fn``.

    CPU time is shown too because on a shared machine the wall clock also counts other jobs."""
    wall, cpu = [], []
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    hospital_a, hospital_b = lesson_sets()
    result = private_set_intersection(hospital_a, hospital_b)
    assert len(result.intersection) == N_SHARED
    wall, cpu = median_seconds(
        lambda: private_set_intersection(hospital_a, hospital_b), args.repeats
    )

    names = [f"id-{i}" for i in range(2000)]
    _, t_hash = median_seconds(lambda: [hash_to_point(x) for x in names], args.repeats)
    server = PSIServer([], rng=SecureRandom())  # no own items: its reply re-blinds the request
    _, t_mult = median_seconds(lambda: server.respond(result.request), args.repeats)
    n_points = len(result.request.points)

    rows = [
        ("sets", f"{len(hospital_a):,} × {len(hospital_b):,} identifiers, {N_SHARED} shared"),
        ("A → B", f"{result.bytes_to_server:,} bytes"),
        ("B → A", f"{result.bytes_to_client:,} bytes"),
        (
            "whole PSI (both parties)",
            f"{wall:.3f} s wall, {cpu:.3f} s CPU (medians of {args.repeats})",
        ),
        ("hash to the group", f"{t_hash / len(names) * 1e6:.0f} µs CPU per identifier"),
        ("re-blind (validate + multiply)", f"{t_mult / n_points * 1e6:.0f} µs CPU per point"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
