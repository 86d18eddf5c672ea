"""The SMPC parties on different hosts: network namespaces joined by veth pairs and a bridge.

Three emulated hosts (10.123.0.1–3, nothing else reachable): party 0 on the first (it hosts the
rendezvous), party 1 on the second, the dealer and the outside owner on the third — each started
with the command a learner types on that machine, ``python -m course_lib.smpc.distributed``
(or torchrun), without ``GLOO_SOCKET_IFNAME``. Needs root; skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from course_lib.data import load_mnist
from course_lib.models import MLP
from course_lib.smpc import Session, encrypted_predict
from course_lib.smpc.database import SharedKeyValueStore
from course_lib.smpc.emulated_hosts import EmulatedHosts, namespaces_unavailable
from course_lib.smpc.encoding import FixedPoint

UNAVAILABLE = namespaces_unavailable()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"no namespaces: {UNAVAILABLE}")

LAYERS = (784, 16, 10)
N_IMAGES = 4
ROLES = [("party0", 0), ("party1", 1), ("dealer", 2), ("owner", 2)]  # role, host
TABLE = {11: 5, 22: -7, 33: 9, 44: 0}
QUERY = [22, 55, 44]


#: An eavesdropper on one cable: every frame through interface argv[1], appended to argv[2]. It
#: listens for every protocol (ETH_P_ALL): on a bridge port the bridge takes each frame before
#: protocol-specific listeners (ETH_P_IP) would see it.
SNIFFER = """
import signal, socket, struct, sys
capture = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
# a receive buffer that holds the whole run: on a loaded machine this loop falls behind the
# parties, and with the default buffer the kernel drops frames (counted below)
capture.setsockopt(socket.SOL_SOCKET, 33, 1 << 28)  # SO_RCVBUFFORCE, 256 MiB (root)
capture.bind((sys.argv[1], 0))
def stop(*_):
    received, dropped = struct.unpack("II", capture.getsockopt(263, 6, 8))  # PACKET_STATISTICS
    print(dropped, flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
with open(sys.argv[2], "wb") as out:
    print("listening", flush=True)
    while True:
        frame = capture.recv(262144)
        out.write(struct.pack("<I", len(frame)) + frame)
"""


def tcp_streams(capture: bytes) -> dict[tuple[str, str], list[bytes]]:
    """The TCP payload streams in a capture, reassembled by sequence number, keyed by
    (source address, destination address); several connections between two hosts are listed."""
    segments: dict[tuple, dict[int, bytes]] = defaultdict(dict)
    first_seq: dict[tuple, int] = {}
    at = 0
    while at < len(capture):
        (size,) = struct.unpack_from("<I", capture, at)
        ethertype = capture[at + 16 : at + 18]
        ip = capture[at + 18 : at + 4 + size]  # after the length and the 14-byte Ethernet header
        at += 4 + size
        if ethertype != b"\x08\x00" or ip[0] >> 4 != 4 or ip[9] != 6:  # IPv4 carrying TCP
            continue
        header = (ip[0] & 15) * 4
        tcp = ip[header : struct.unpack("!H", ip[2:4])[0]]
        source_port, destination_port, seq = struct.unpack("!HHI", tcp[:8])
        payload = tcp[(tcp[12] >> 4) * 4 :]
        key = (bytes(ip[12:16]), source_port, bytes(ip[16:20]), destination_port)
        first_seq.setdefault(key, seq)
        if payload:
            # signed distance from the first segment seen (which may be a late retransmission)
            segments[key][(seq - first_seq[key] + 2**31) % 2**32 - 2**31] = payload
    streams: dict[tuple[str, str], list[bytes]] = defaultdict(list)
    for key, parts in segments.items():
        # each payload at its own offset: a retransmission overlaps, it does not shift the rest
        start = min(parts)
        data = bytearray(max(offset + len(part) for offset, part in parts.items()) - start)
        for offset, part in parts.items():
            data[offset - start : offset - start + len(part)] = part
        streams[(".".join(map(str, key[0])), ".".join(map(str, key[2])))].append(bytes(data))
    return streams


def find_words(stream: np.ndarray, target: np.ndarray) -> bool:
    """Whether ``target`` (int64 words) occurs as a contiguous run in ``stream``."""
    pivot = int(np.flatnonzero(target)[0])  # a non-zero word, rarer than the zeros
    for start in np.flatnonzero(stream == target[pivot]) - pivot:
        if 0 <= start <= len(stream) - len(target) and np.array_equal(
            stream[start : start + len(target)], target
        ):
            return True
    return False


def sum_of_shares(a: bytes, b: bytes) -> list[np.ndarray]:
    """Two streams of the same framing added word by word (mod 2^64), at each of the 8 byte
    alignments: where they carry the two shares of a value, the sum is the value."""
    sums = []
    for shift in range(8):
        words = (min(len(a), len(b)) - shift) // 8
        x = np.frombuffer(a, dtype="<i8", count=words, offset=shift)
        y = np.frombuffer(b, dtype="<i8", count=words, offset=shift)
        sums.append(x + y)  # numpy int64 arithmetic wraps around, as the ring does
    return sums


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GLOO_SOCKET_IFNAME", "RANK")}
    env.update(COURSE_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def _wait(processes: list[subprocess.Popen], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    for process in processes:
        process.wait(max(0.1, deadline - time.monotonic()))
    return [process.returncode for process in processes]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> tuple[Path, MLP, torch.Tensor]:
    torch.manual_seed(12)  # varied predictions, none near a tie
    model = MLP(LAYERS[0], LAYERS[1:-1], LAYERS[-1]).eval()
    images = load_mnist(train=False).images[:N_IMAGES]
    with torch.no_grad():
        top2 = model(images).topk(2, dim=-1).values
    # the argmax is far from a tie, so fixed-point error cannot flip it: the check is exact
    assert (top2[:, 0] - top2[:, 1]).min() > 1e-3
    path = tmp_path_factory.mktemp("owner") / "mlp.pt"
    torch.save(model.state_dict(), path)
    return path, model, images


def test_inference_and_lookup_across_three_hosts(model_file, tmp_path):
    weights, model, images = model_file
    python = [sys.executable, "-m"]
    master = "10.123.0.1:29500"
    with EmulatedHosts(3) as hosts:
        # an eavesdropper on host 2's cable (the dealer's and the owner's machine)
        sniffer = hosts.start_on_switch(
            [sys.executable, "-c", SNIFFER, "p2", str(tmp_path / "wire.bin")],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert sniffer.stdout is not None and sniffer.stdout.readline().strip() == "listening"
        # 1. inference, each role started by its --role command, secure randomness
        started = []
        for role, host in ROLES:
            argv = [*python, "course_lib.smpc.distributed", "--role", role, "--master", master,
                    "--layers", ",".join(map(str, LAYERS)), "--images", str(N_IMAGES),
                    "--timeout", "120", "--report", str(tmp_path / f"{role}.json")]  # fmt: skip
            if role == "owner":
                argv += ["--weights", str(weights)]
            log = open(tmp_path / f"{role}.log", "w")  # noqa: SIM115 — closed with the process
            started.append(hosts.start(host, argv, env=_env(), stdout=log, stderr=log))
        codes = _wait(started, 300)
        logs = {r: (tmp_path / f"{r}.log").read_text() for r, _ in ROLES}
        assert codes == [0, 0, 0, 0], logs
        sniffer.terminate()
        dropped, _ = sniffer.communicate(timeout=10)
        assert dropped.strip() == "0", f"the capture dropped {dropped.strip()} frames"
        # 2. the key-value lookup under torchrun: one agent per host, RANK etc. from torchrun
        table = tmp_path / "table.csv"
        table.write_text("".join(f"{k},{v}\n" for k, v in TABLE.items()))
        agents = []
        for rank, (_, host) in enumerate(ROLES):
            argv = [*python, "torch.distributed.run", "--nnodes", "4", "--node-rank", str(rank),
                    "--nproc-per-node", "1", "--master-addr", "10.123.0.1",
                    "--master-port", "29501", "-m", "course_lib.smpc.distributed",
                    "--program", "lookup", "--rows", str(len(TABLE)), "--queries",
                    str(len(QUERY)), "--report", str(tmp_path / f"lookup{rank}.json")]  # fmt: skip
            if rank == 3:
                argv += ["--table", str(table), "--query", *map(str, QUERY)]
            log = open(tmp_path / f"lookup{rank}.log", "w")  # noqa: SIM115
            agents.append(hosts.start(host, argv, env=_env(), stdout=log, stderr=log))
        codes = _wait(agents, 300)
        logs = {r: (tmp_path / f"lookup{r}.log").read_text() for r in range(4)}
        assert codes == [0, 0, 0, 0], logs
    # nothing left running in the namespaces, and the namespaces are gone
    assert hosts.leftover_pids == []
    assert all(p.returncode is not None for p in hosts.processes)
    assert hosts.exist() == []

    reports = [json.loads((tmp_path / f"{role}.json").read_text()) for role, _ in ROLES]
    # the predictions reached the owner only and equal the plaintext model's
    assert [r["value"] for r in reports[:3]] == [None, None, None]
    assert reports[3]["value"] == model(images).argmax(dim=-1).tolist()
    # bytes on the wire = the cost model of the same program run in one process
    reference = Session(2)
    encrypted_predict(model, images, reference, batch_size=N_IMAGES, to="owner")
    cost = reference.log.total
    assert sum(r["wire"]["online_sent"] for r in reports) == cost.bytes
    assert sum(r["wire"]["online_received"] for r in reports) == cost.bytes
    assert sum(r["wire"]["offline_sent"] for r in reports) == cost.offline_bytes
    assert reports[0]["wire"]["rounds"] == cost.rounds
    for party in reports[:2]:  # the offline phase: one message (and its 8-byte length) per party
        assert party["wire"]["offline_received"] == cost.offline_bytes // 2
        assert party["wire"]["header_received"] == 8
    assert reports[2]["wire"]["online_sent"] == reports[2]["wire"]["online_received"] == 0

    # the eavesdropper: shares cross the wire in plaintext. Adding the owner's stream to party 0
    # to its stream to party 1 recovers every image and the first layer's weights exactly; either
    # stream alone (one share) does not contain them.
    streams = tcp_streams((tmp_path / "wire.bin").read_bytes())
    encoder = FixedPoint(16)
    secrets = [encoder.encode(image).reshape(-1).numpy() for image in images]
    # the first layer's weights, shared transposed (W^T, as encrypted inference multiplies)
    secrets.append(encoder.encode(model.net[1].weight.detach().T).reshape(-1).numpy())
    pairs = [
        (a, b) for a in streams[("10.123.0.3", "10.123.0.1")]
        for b in streams[("10.123.0.3", "10.123.0.2")]
    ]  # fmt: skip
    recovered = [
        any(find_words(s, secret) for a, b in pairs for s in sum_of_shares(a, b))
        for secret in secrets
    ]
    assert recovered == [True] * (N_IMAGES + 1)
    for a, _ in pairs:
        alone = [np.frombuffer(a, "<i8", (len(a) - k) // 8, k) for k in range(8)]
        assert not any(find_words(s, secret) for s in alone for secret in secrets)

    lookups = [json.loads((tmp_path / f"lookup{rank}.json").read_text()) for rank in range(4)]
    assert [r["value"] for r in lookups[:3]] == [None, None, None]
    assert lookups[3]["value"] == [[TABLE.get(k, 0) for k in QUERY], [k in TABLE for k in QUERY]]
    reference = Session(2)
    SharedKeyValueStore(list(TABLE), list(TABLE.values()), reference, owner="owner").get(
        QUERY, client="owner"
    )
    assert sum(r["wire"]["online_sent"] for r in lookups) == reference.log.total.bytes
    assert sum(r["wire"]["offline_sent"] for r in lookups) == reference.log.total.offline_bytes


def test_unreachable_peers_give_a_clear_error_not_a_hang(model_file, tmp_path):
    """Every rank bound to loopback (what connect() used to force when GLOO_SOCKET_IFNAME was
    unset): they reach the rendezvous but not each other. And a rank whose rendezvous has nobody
    listening. Each fails within its timeout with a message naming the rank, the rendezvous
    address and port and the interface."""
    python = [sys.executable, "-m", "course_lib.smpc.distributed"]
    with EmulatedHosts(3) as hosts:
        started = []
        for role, host in ROLES:
            env = {**_env(), "GLOO_SOCKET_IFNAME": "lo"}
            argv = [*python, "--role", role, "--master", "10.123.0.1:29502", "--timeout", "8",
                    "--layers", ",".join(map(str, LAYERS)), "--images", "1"]  # fmt: skip
            if role == "owner":
                argv += ["--weights", str(model_file[0])]
            log = open(tmp_path / f"{role}.log", "w")  # noqa: SIM115
            started.append(hosts.start(host, argv, env=env, stdout=log, stderr=log))
        alone = hosts.start(
            1, [*python, "--role", "party1", "--master", "10.123.0.3:29503", "--timeout", "5"],
            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        _, alone_error = alone.communicate(timeout=60)
        codes = _wait(started, 120)  # 8 s timeouts: nobody may hang
    assert hosts.exist() == [] and hosts.leftover_pids == []
    logs = {r: (tmp_path / f"{r}.log").read_text() for r, _ in ROLES}
    assert codes == [1, 1, 1, 1], logs
    for rank, role in enumerate(["party0", "party1", "dealer", "owner"]):
        assert f"rank {rank} of 4 (rendezvous tcp://10.123.0.1:29502" in logs[role], logs[role]
        assert "interface lo, 127.0.0.1" in logs[role]
    assert alone.returncode == 1
    assert "rank 1 of 4 (rendezvous tcp://10.123.0.3:29503" in alone_error
    assert "interface eth0, 10.123.0.2" in alone_error  # found without GLOO_SOCKET_IFNAME
