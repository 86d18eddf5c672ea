"""Benchmark: SMPC parties in one process vs as separate processes over torch.distributed (gloo).

Run from the repository root:  COURSE_OFFLINE=1 .venv/bin/python benchmarks/smpc_distributed.py

Rows: the latency of one round (opening 1 word, and 100,000 words), and encrypted MNIST inference
of lesson 02's MLP (784-128-10, trained one epoch on the offline sample) on a few test images:
protocol time (in one process the dealer's triples are produced during the run; the processes use
``run_parties``' default offline phase, and the slowest process's time — the outside owner's, which
waits for it — is shown; start-up and rendezvous reported separately), rounds, and the online and
dealer bytes — the cost model's (``session.log``) beside the payload bytes that really crossed the
wire (``WireCount``, summed over the processes). One torch thread per process; medians of repeats.

``--across-hosts`` (Linux, root) instead runs the same inference with each role on its own
emulated host (network namespaces, :mod:`course_lib.smpc.emulated_hosts`; a userspace router adds
``--delays`` ms each way) as ``python -m course_lib.smpc.distributed`` commands, once with the
dealer's material streamed during the online phase and once delivered in the offline phase
(``--preprocessing bulk``), and compares party 0's online time with the model
``t(0) + rounds × RTT`` (plus ``dealer messages × RTT`` when streamed), RTT measured between the
hosts (median of 20 TCP ping-pongs).

Measured 2026-12-07 (``--across-hosts --delays 0,10,20``, 8 images, MLP 784-128-10 trained one
epoch, busy 2-core machine; party 0's online seconds; model = its time at RTT 0 + extra × RTT with
extra = 55 rounds, + 142 dealer messages when streamed):

| RTT | dealer material | online | model | | RTT | dealer material | online | model |
|---|---|---|---|---|---|---|---|---|
| 24.0 ms | streamed | 5.37 s | 5.11 s | | 40.6 ms | streamed | 10.20 s | 8.38 s |
| 24.0 ms | offline phase | 1.98 s | 1.49 s | | 40.6 ms | offline phase | 3.09 s | 2.40 s |

The offline phase (party 0 waited 0.41 / 0.49 s for its one bulk message before starting) takes
the dealer's 142 round trips out of the online phase: 2.7× / 3.3× faster. What remained was
``rounds × RTT`` plus about 30 %. The per-exchange breakdown (``WireCount.exchanges``) located it,
measured 2026-12-07 (``--across-hosts --delays 0,20``, RTT 40.7 ms, bulk; seconds beyond one RTT
per exchange): the two largest exchanges — the 784×128 weight share arriving from the owner and
its Beaver opening, 0.8 MB and 1.6 MB moved — took +0.19 s and +0.26 s (about 6 and 7 round trips
instead of one), the seven 16–64 kB exchanges +0.21 s, everything else +0.07 s; online 3.02 s vs
model 2.33 s. With ``--initcwnd 1000`` (initial congestion and receive windows of 1000 segments,
16 MiB socket buffers) the same run gave +0.00 / +0.01 / +0.03 s and online 2.42 s vs model
2.51 s: the excess is TCP growing its windows on fresh connections (slow start and receive-window
autotuning), not the protocol. ``--keep-window`` alone (no slow start after idle) does not remove
it (3.05 s vs 2.35 s at 40.5 ms), because these connections are new, not idle.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
from course_lib.smpc.emulated_hosts import EmulatedHosts
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


_PING = """
import socket, sys, time
if sys.argv[1] == "server":
    server = socket.create_server((sys.argv[2], 7777))
    peer, _ = server.accept()
    while data := peer.recv(64):
        peer.sendall(data)
else:
    for _ in range(100):
        try:
            peer = socket.create_connection((sys.argv[2], 7777), timeout=5)
            break
        except OSError:
            time.sleep(0.1)
    peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    times = []
    for _ in range(20):
        start = time.perf_counter()
        peer.sendall(b"x")
        peer.recv(1)
        times.append(time.perf_counter() - start)
    print(sorted(times)[10])
"""


def measured_rtt(hosts: EmulatedHosts) -> float:
    """Median TCP round trip (seconds) from host 0 to host 1."""
    server = hosts.start(1, [sys.executable, "-c", _PING, "server", hosts.addresses[1]])
    client = hosts.start(
        0, [sys.executable, "-c", _PING, "client", hosts.addresses[1]],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    rtt = float(client.communicate(timeout=120)[0])
    server.wait(10)
    return rtt


def dealer_messages(model: MLP, images: torch.Tensor) -> int:
    """How many messages the dealer sends each party when streaming (one per share call)."""
    session = Session(2, rng=InsecureSeededRandom(0))
    calls = 0
    for name in ("_share", "_share_xor"):
        original = getattr(session.dealer, name)

        def counted(secret: torch.Tensor, original=original) -> torch.Tensor:
            nonlocal calls
            calls += 1
            return original(secret)

        setattr(session.dealer, name, counted)
    encrypted_predict(model, images, session, batch_size=len(images), to="owner")
    return calls


def run_roles(
    hosts: EmulatedHosts, folder: Path, weights: Path, n_images: int, preprocessing: str
) -> list[dict]:
    """The 4 roles on 3 hosts (party 0 | party 1 | dealer + owner); their JSON reports."""
    roles = [("party0", 0), ("party1", 1), ("dealer", 2), ("owner", 2)]
    started = []
    for role, host in roles:
        argv = [sys.executable, "-m", "course_lib.smpc.distributed", "--role", role,
                "--master", f"{hosts.addresses[0]}:29500", "--images", str(n_images),
                "--preprocessing", preprocessing, "--timeout", "600",
                "--report", str(folder / f"{role}.json")]  # fmt: skip
        if role == "owner":
            argv += ["--weights", str(weights)]
        started.append(hosts.start(host, argv, stdout=subprocess.DEVNULL))
    for process in started:
        if process.wait(900) != 0:
            raise RuntimeError(f"a role failed (exit {process.returncode})")
    return [json.loads((folder / f"{role}.json").read_text()) for role, _ in roles]


def open_windows(hosts: EmulatedHosts, segments: int) -> None:
    """Start every new TCP connection in the hosts with ``segments`` segments of congestion and
    receive window (Linux's defaults: 10) and 16 MiB socket buffers from the start (the receive
    window is otherwise grown by autotuning, round trip by round trip), so that a large message
    needs no slow start."""
    for name, address in zip(hosts.names, hosts.addresses, strict=True):
        for key in ("net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"):
            subprocess.run(
                ["ip", "netns", "exec", name, "sysctl", "-qw", f"{key}=4096 16777216 16777216"],
                check=True,
            )
        subprocess.run(
            ["ip", "-n", name, "route", "change", f"{address.rsplit('.', 1)[0]}.0/24", "dev",
             "eth0", "proto", "kernel", "scope", "link", "src", address,
             "initcwnd", str(segments), "initrwnd", str(segments)],
            check=True,
        )  # fmt: skip


def exchange_breakdown(exchanges: list[list[float]], rtt: float) -> list[str]:
    """Table rows: party 0's exchanges grouped by size (powers of 4 bytes), with their time."""
    groups: dict[int, list[float]] = {}
    for moved, seconds in exchanges:
        groups.setdefault(max(0, int(moved).bit_length() - 1) // 2, []).append(seconds)
    return [
        f"| {rtt * 1e3:.1f} | {4**k:,}–{4 ** (k + 1) - 1:,} | {len(times)} | {sum(times):.2f} | "
        f"{sum(times) - len(times) * rtt:+.2f} |"
        for k, times in sorted(groups.items())
    ]


def across_hosts(delays: list[float], n_images: int, keep_window: bool, initcwnd: int) -> None:
    seed_everything(0)
    model = MLP(784, (128,), 10)
    fit(model, make_loader(load_mnist(train=True), 64), epochs=1, lr=0.1, progress=False)
    model.eval()
    images = load_mnist(train=False).images[:n_images]
    messages = dealer_messages(model, images)
    with tempfile.TemporaryDirectory() as folder:
        weights = Path(folder, "mlp.pt")
        torch.save(model.state_dict(), weights)
        rows, breakdown = [], []
        base: dict[str, float] = {}
        for delay in delays:
            with EmulatedHosts(3, delay_ms=delay) as hosts:
                if keep_window:  # Linux shrinks an idle connection's window back (RFC 2861)
                    for name in hosts.names:
                        subprocess.run(
                            ["ip", "netns", "exec", name, "sysctl", "-qw",
                             "net.ipv4.tcp_slow_start_after_idle=0"],
                            check=True,
                        )  # fmt: skip
                if initcwnd:
                    open_windows(hosts, initcwnd)
                rtt = measured_rtt(hosts) if delay else 0.0
                for mode in ("streamed", "bulk"):
                    reports = run_roles(hosts, Path(folder), weights, n_images, mode)
                    party0, owner = reports[0], reports[3]
                    assert owner["value"] == owner["plaintext"], "predictions differ"
                    online = party0["seconds"]
                    rounds = party0["wire"]["rounds"]
                    base.setdefault(mode, online)
                    extra = rounds + (messages if mode == "streamed" else 0)
                    model_s = base[mode] + extra * rtt
                    if mode == "bulk" and delay:
                        breakdown += exchange_breakdown(party0["wire"]["exchanges"], rtt)
                    rows.append(
                        f"| {delay:g} | {rtt * 1e3:.1f} | {mode} | {rounds} | "
                        f"{messages if mode == 'streamed' else 1} | "
                        f"{party0['wire']['offline_seconds']:.2f} | {online:.2f} | "
                        f"{model_s:.2f} | {owner['value'] == owner['plaintext']} |"
                    )
        print(
            f"MLP 784-128-10, {n_images} images, 2 parties, roles on 3 emulated hosts"
            + (", tcp_slow_start_after_idle=0" if keep_window else "")
            + (f", initcwnd = initrwnd = {initcwnd} segments" if initcwnd else "")
        )
        print(
            "| one-way delay (ms) | measured RTT (ms) | dealer material | rounds | dealer "
            "messages per party | party 0 offline wait (s) | party 0 online (s) | model (s) | "
            "predictions = plaintext |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        print("\n".join(rows))
        print(
            "\nParty 0's online exchanges with the dealer's material delivered beforehand, by "
            "bytes moved (sent + received): the time each group took beyond one RTT per exchange"
        )
        print("| RTT (ms) | bytes per exchange | exchanges | seconds | beyond rounds × RTT (s) |")
        print("|---|---|---|---|---|")
        print("\n".join(breakdown))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="test images to classify")
    parser.add_argument("--across-hosts", action="store_true", help="emulated hosts (root)")
    parser.add_argument("--delays", default="0,10,20", help="one-way delays in ms, 0 first")
    parser.add_argument(
        "--keep-window",
        action="store_true",
        help="set net.ipv4.tcp_slow_start_after_idle=0 in the emulated hosts",
    )
    parser.add_argument(
        "--initcwnd",
        type=int,
        default=0,
        help="initial congestion and receive window (segments) of every route in the hosts",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.across_hosts:
        delays = [float(d) for d in args.delays.split(",")]
        if delays[0] != 0:
            raise SystemExit("--delays must start with 0 (the baseline of the model)")
        across_hosts(delays, args.images, args.keep_window, args.initcwnd)
        return

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
