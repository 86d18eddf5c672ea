"""Several "machines" on one Linux machine: network namespaces, to test the parties across hosts.

:class:`EmulatedHosts` creates ``n`` network namespaces, each with one interface ``eth0`` holding
the address ``10.123.0.<i+1>/24`` (the subnet is an argument) and nothing else — no route out, so
nothing they send can leave them — and joins them:

- ``delay_ms=0``: by veth pairs to a Linux bridge in one more namespace (a switch);
- ``delay_ms>0``: through a userspace router (:func:`_route`): each namespace's ``eth0`` is a
  TUN device, and one process forwards every IPv4 packet to its destination's TUN device after
  ``delay_ms`` milliseconds, so a round trip between two hosts takes ``2 × delay_ms`` more. (The
  kernel's ``netem`` queueing discipline would do this, but many kernels — this course's CI's
  among them — are built without it.)

Processes started with :meth:`EmulatedHosts.start` run inside a namespace (``ip netns exec``), in
their own process group. Leaving the ``with`` block stops every process still running in the
namespaces by PID (SIGTERM, then SIGKILL), stops the router and deletes the namespaces — also
after an error. Needs root (``CAP_SYS_ADMIN``) and iproute2: :func:`namespaces_unavailable` says
why not, for a test to skip with that reason.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import heapq
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from course_lib.validation import check_int_in_range, check_nonnegative

__all__ = ["EmulatedHosts", "namespaces_unavailable"]

_CLONE_NEWNET = 0x40000000  # <sched.h>
_TUNSETIFF = 0x400454CA  # <linux/if_tun.h>
_IFF_TUN, _IFF_NO_PI = 0x0001, 0x1000
_MTU = 9000


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def namespaces_unavailable() -> str | None:
    """``None`` if this process can create network namespaces, else the reason it cannot."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces are Linux only (this is {sys.platform})"
    if shutil.which("ip") is None:
        return "iproute2's `ip` command is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    probe = f"smpc-probe-{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` is not permitted here: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


class EmulatedHosts:
    """``n_hosts`` network namespaces joined by a switch (``delay_ms=0``) or a delaying router.

    ``addresses[i]`` is host ``i``'s IPv4 address (``f"{subnet}.{i + 1}"``); ``names[i]`` its
    namespace. ``delay_ms``: one-way delay added to every packet between two hosts (≥ 0).
    """

    def __init__(self, n_hosts: int, delay_ms: float = 0.0, subnet: str = "10.123.0") -> None:
        n_hosts = check_int_in_range(n_hosts, "n_hosts", 2, 250)
        delay_ms = check_nonnegative(delay_ms, "delay_ms")
        tag = f"smpc-{os.getpid()}-{time.monotonic_ns() % 10**6}"
        self.names = [f"{tag}-h{i}" for i in range(n_hosts)]
        self.switch = f"{tag}-sw"
        self.addresses = [f"{subnet}.{i + 1}" for i in range(n_hosts)]
        self.delay_ms = float(delay_ms)
        self.processes: list[subprocess.Popen] = []
        self.leftover_pids: list[int] = []  # processes still in a namespace at exit (then killed)
        self._router: subprocess.Popen | None = None
        self._created: list[str] = []

    def __enter__(self) -> EmulatedHosts:
        try:
            for name in self.names:
                _ip("netns", "add", name)
                self._created.append(name)
                _ip("-n", name, "link", "set", "lo", "up")
            if self.delay_ms:
                self._start_router()
            else:
                self._build_switch()
        except BaseException:
            self._teardown()
            raise
        return self

    def _build_switch(self) -> None:
        _ip("netns", "add", self.switch)
        self._created.append(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for i, (name, address) in enumerate(zip(self.names, self.addresses, strict=True)):
            port = f"p{i}"
            _ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", name)  # fmt: skip
            _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
            _ip("-n", name, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", name, "link", "set", "eth0", "up")

    def _start_router(self) -> None:
        hosts = [f"{n}={a}" for n, a in zip(self.names, self.addresses, strict=True)]
        command = [sys.executable, "-m", "course_lib.smpc.emulated_hosts", str(self.delay_ms)]
        self._router = subprocess.Popen(
            command + hosts, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )  # fmt: skip
        ready = self._router.stdout.readline() if self._router.stdout else ""
        if ready.strip() != "ready":
            self._router.kill()
            _, error = self._router.communicate(timeout=10)
            raise RuntimeError(f"the delaying router did not start: {ready}{error}")

    def start(self, host: int, argv: Sequence[str], **popen: Any) -> subprocess.Popen:
        """Start ``argv`` inside host ``host``'s namespace; ``popen``: keyword arguments of
        :class:`subprocess.Popen` (``stdout``, ``env``, ``cwd``, …)."""
        process = subprocess.Popen(
            ["ip", "netns", "exec", self.names[host], *argv], start_new_session=True, **popen
        )
        self.processes.append(process)
        return process

    def start_on_switch(self, argv: Sequence[str], **popen: Any) -> subprocess.Popen:
        """Start ``argv`` inside the switch's namespace (``delay_ms=0`` only), where host ``i``'s
        cable ends in the interface ``p{i}``: the place of an eavesdropper on the network."""
        if self.delay_ms:
            raise ValueError("with a delay the hosts are joined by a router process, not a switch")
        process = subprocess.Popen(
            ["ip", "netns", "exec", self.switch, *argv], start_new_session=True, **popen
        )
        self.processes.append(process)
        return process

    def pids_inside(self) -> list[int]:
        """The PIDs of every process now running in one of the namespaces."""
        pids: list[int] = []
        for name in [*self.names, self.switch]:
            if name not in self._created:
                continue
            listed = _ip("netns", "pids", name, check=False).stdout.split()
            pids += [int(pid) for pid in listed]
        return pids

    def _teardown(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        self.leftover_pids = self.pids_inside()
        for pid in self.leftover_pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self._router is not None:
            self._router.terminate()
            try:
                self._router.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                self._router.kill()
                self._router.communicate(timeout=5)
        for name in reversed(self._created):
            _ip("netns", "del", name, check=False)
        self._created = []

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._teardown()

    def exist(self) -> list[str]:
        """Which of this object's namespaces exist now (empty once the block has ended)."""
        listed = {line.split()[0] for line in _ip("netns", "list").stdout.splitlines() if line}
        return [n for n in [*self.names, self.switch] if n in listed]


def _tun_in(namespace: str, libc: ctypes.CDLL, home: int) -> int:
    """A TUN device named ``eth0`` created inside ``namespace``; its file descriptor."""
    with open(Path("/run/netns", namespace)) as handle:
        if libc.setns(handle.fileno(), _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {namespace}")
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR)
        fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", b"eth0", _IFF_TUN | _IFF_NO_PI))
    finally:
        if libc.setns(home, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns back home")
    return fd


def _route(delay_ms: float, hosts: Sequence[str]) -> None:
    """The router process: a TUN ``eth0`` in each namespace; forward IPv4 packets after a delay."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    by_address: dict[bytes, int] = {}
    fds = []
    for entry in hosts:
        namespace, address = entry.split("=")
        fd = _tun_in(namespace, libc, home)
        _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "mtu", str(_MTU), "up")
        by_address[bytes(map(int, address.split(".")))] = fd
        fds.append(fd)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)
    delay = delay_ms / 1e3
    queue: list[tuple[float, int, int, bytes]] = []
    sequence = 0
    while True:
        wait = max(0.0, queue[0][0] - time.monotonic()) if queue else None
        readable, _, _ = select.select(fds, [], [], wait)
        now = time.monotonic()
        for fd in readable:
            packet = os.read(fd, 65536)
            target = by_address.get(packet[16:20]) if packet[:1] and packet[0] >> 4 == 4 else None
            if target is not None:  # anything else (IPv6, other addresses) is dropped
                heapq.heappush(queue, (now + delay, sequence, target, packet))
                sequence += 1
        while queue and queue[0][0] <= time.monotonic():
            _, _, target, packet = heapq.heappop(queue)
            os.write(target, packet)


if __name__ == "__main__":  # the router process: python -m … DELAY_MS NAMESPACE=ADDRESS …
    _route(float(sys.argv[1]), sys.argv[2:])
