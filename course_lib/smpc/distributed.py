"""Secret-sharing parties as separate operating-system processes talking over ``torch.distributed``.

In :class:`~course_lib.smpc.session.Session` every party lives in one Python process. Here each
party, the dealer and the outside input owner are **separate processes** that exchange messages
through ``torch.distributed`` with the *gloo* backend (TCP sockets; the same engine CrypTen used for
its parties). The protocols are not rewritten: :class:`DistributedSession` is a ``Session`` whose
four communication steps go over the wire —

- :meth:`~DistributedSession.open` / :meth:`~DistributedSession.open_xor`: each party sends its own
  share to every other party (one message per peer per round) and adds up what it receives;
- :meth:`~DistributedSession.share`: the input's owner draws the shares and sends party ``i`` its
  share ``i``;
- :meth:`~DistributedSession.deliver`: the parties send their shares of an output to its receiver;
- the dealer process draws the triples and masks and sends party ``i`` row ``i`` of each.

Everything else — Beaver products, truncation, the comparison circuit, encrypted inference — is the
in-process code of :mod:`.tensor`, :mod:`.comparison` and :mod:`.inference`, run by every process
on the same (public) shapes (SPMD: one program, several processes; secure computation is
data-oblivious, so every process takes the same branches).

**Ranks.** With ``n`` parties: ranks ``0 … n−1`` are the parties, rank ``n`` the dealer and rank
``n + 1`` the *outside owner*, who plays everyone outside the computation: the data owner of
``share(x)`` / ``share(x, owner="patient")`` and the receiver of ``reveal(to="patient")`` (in lesson
17: the model owner and the patient). A real deployment would give each of them its own process.

**What each process holds.** ``shares[rank]`` of a :class:`~course_lib.smpc.tensor.SharedTensor`
is a party's own share, received from the owner or the dealer or computed from them. The other rows
are *placeholders*: zeros when the tensor is created, afterwards only functions of opened (public)
values — never another process's share. The dealer and the outside owner run the program on
placeholders only (so they know which randomness to send and when to share or receive).
``reveal`` returns the value to its receivers and **zeros to every other process**; ask
:meth:`DistributedSession.receives`.

**Randomness.** With ``seed=None`` every process has its own
:class:`~course_lib.randomness.SecureRandom`: only the dealer draws triples and masks, only an
input's owner draws its shares. With ``seed=s`` every process holds
``InsecureSeededRandom(s)`` — the same stream as an in-process ``Session`` with that seed — and
draws (and throws away) every value in program order, so all streams stay aligned and the results
equal the in-process session bit for bit. That mode is INSECURE (every process can recompute every
share), for checking and teaching only.

**Bytes on the wire.** :class:`WireCount` counts the payload bytes of every tensor each process
sends and receives, and the rounds it took part in. Summed over the processes, the online bytes
equal the cost model's ``log.total.bytes`` and the dealer's bytes its ``offline_bytes``; gloo's
TCP/frame headers are not counted (the cost model does not count them either).

**Threat model.** As :mod:`.session`: semi-honest parties, a trusted dealer that does not collude
with any party, no integrity; the transport is plain TCP without encryption or authentication —
across machines put it inside a VPN or TLS tunnel.

**Launching.** :func:`run_parties` starts the ``n + 2`` processes (``fork`` where the platform has
it, else ``spawn``), rendezvous over TCP on ``127.0.0.1`` with a timeout, collects every process's
result and stops every process by PID in a ``finally``. ``program`` must be a function defined in an
importable module (``spawn`` pickles it; functions defined in a notebook cannot be pickled).
Across machines, each machine runs its rank inside :func:`connect` instead.
"""

from __future__ import annotations

import copy
import math
import multiprocessing
import os
import pickle
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

# torch.broadcast_shapes (used by SharedTensor's + and -) imports this module lazily, with sympy:
# seconds of CPU. Importing it here, before run_parties forks, spares every process that cost.
import torch.fx.experimental.symbolic_shapes  # noqa: F401
from torch import nn

from course_lib.randomness import InsecureSeededRandom, RandomSource
from course_lib.smpc.communication import CommunicationLog
from course_lib.smpc.dealer import Dealer
from course_lib.smpc.session import Participant, Session
from course_lib.smpc.sharing import check_party_count, share
from course_lib.smpc.tensor import SharedTensor

__all__ = [
    "DistributedSession",
    "connect",
    "PartyRun",
    "WireCount",
    "encrypted_inference_program",
    "run_parties",
]

#: How many of the dealer's asynchronous sends may be in flight before it waits for them.
_MAX_PENDING_SENDS = 64


@dataclass
class WireCount:
    """What one process put on and took off the wire (tensor payload bytes; headers not counted).

    ``online_*`` is party↔party and owner↔party traffic (opens, input sharing, outputs);
    ``offline_*`` the dealer's triples and masks. ``rounds`` counts the online exchanges this
    process took part in and ``exchange_seconds`` the wall time it spent in them (waiting included).
    """

    online_sent: int = 0
    online_received: int = 0
    offline_sent: int = 0
    offline_received: int = 0
    rounds: int = 0
    exchange_seconds: float = 0.0


class _Transport:
    """Point-to-point messages of int64 tensors over the default ``torch.distributed`` group."""

    def __init__(self) -> None:
        self.count = WireCount()
        self._pending: list[Any] = []

    def exchange(
        self, outgoing: dict[int, torch.Tensor], incoming: dict[int, tuple[int, ...]]
    ) -> dict[int, torch.Tensor]:
        """One online round: send ``outgoing[dst]`` to each ``dst``, receive a tensor of shape
        ``incoming[src]`` from each ``src``. Sends are asynchronous, so nobody waits on a peer that
        is itself sending."""
        start = time.perf_counter()
        requests = []
        for dst, tensor in outgoing.items():
            tensor = tensor.contiguous()
            requests.append((dist.isend(tensor, dst), tensor))
            self.count.online_sent += tensor.numel() * tensor.element_size()
        received = {}
        for src, shape in incoming.items():
            buffer = torch.empty(shape, dtype=torch.int64)
            dist.recv(buffer, src)
            self.count.online_received += buffer.numel() * buffer.element_size()
            received[src] = buffer
        for request, _ in requests:
            request.wait()
        self.count.rounds += 1
        self.count.exchange_seconds += time.perf_counter() - start
        return received

    def send_offline(self, tensor: torch.Tensor, dst: int) -> None:
        """The dealer's message to ``dst`` (asynchronous; waited for in batches and at the end)."""
        tensor = tensor.contiguous()
        self._pending.append((dist.isend(tensor, dst), tensor))
        self.count.offline_sent += tensor.numel() * tensor.element_size()
        if len(self._pending) >= _MAX_PENDING_SENDS:
            self.flush()

    def receive_offline(self, shape: tuple[int, ...], src: int) -> torch.Tensor:
        buffer = torch.empty(shape, dtype=torch.int64)
        dist.recv(buffer, src)
        self.count.offline_received += buffer.numel() * buffer.element_size()
        return buffer

    def flush(self) -> None:
        for request, _ in self._pending:
            request.wait()
        self._pending = []


class _ShapesOnly(RandomSource):
    """Stands in for the dealer's generator in processes that only *receive* its randomness.

    ``int64(shape)`` returns zeros, so the dealer's code can run to find out the shapes of what it
    will be sent. With an insecure seeded source, the real values are drawn and thrown away to keep
    this process's stream aligned with everyone else's. (Zeros rather than ``meta`` tensors: the
    first ``meta`` operation in a process costs seconds of imports.)
    """

    def __init__(self, inner: RandomSource) -> None:
        self.inner = inner
        self.secure = inner.secure

    def bytes(self, n: int) -> bytes:  # never used: the dealer's code only calls int64
        raise RuntimeError("this process does not draw the dealer's randomness")

    def int64(self, shape: Any) -> torch.Tensor:
        if not self.inner.secure:
            self.inner.int64(shape)  # keep the seeded stream in step, discard the values
        return torch.zeros(shape, dtype=torch.int64)


class _SendingDealer(Dealer):
    """The dealer process: draws the correlated randomness and sends party ``i`` its share ``i``."""

    def __init__(self, session: DistributedSession) -> None:
        super().__init__(session.n_parties, session.rng, session.log)
        self.transport = session.transport

    def _send(self, shares: torch.Tensor) -> torch.Tensor:
        for party in range(self.n_parties):
            self.transport.send_offline(shares[party], party)
        return shares

    def _share(self, secret: torch.Tensor) -> torch.Tensor:
        return self._send(super()._share(secret))

    def _share_xor(self, secret: torch.Tensor) -> torch.Tensor:
        return self._send(super()._share_xor(secret))


class _ReceivingDealer(Dealer):
    """The dealer as seen by the other processes: the same calls, the shares come over the wire.

    A party receives its own row; the outside owner receives nothing. The cost is charged to the
    log exactly as the in-process dealer charges it.
    """

    def __init__(self, session: DistributedSession) -> None:
        super().__init__(session.n_parties, _ShapesOnly(session.rng), session.log)
        self.session = session

    def _receive(self, secret: torch.Tensor) -> torch.Tensor:
        shape = tuple(secret.shape)
        self.log.record_dealer(math.prod(shape))
        self.rng.int64((self.n_parties, *shape))  # what share()/share_xor() draw (seeded: aligned)
        stacked = torch.zeros((self.n_parties, *shape), dtype=torch.int64)
        if self.session.is_party:
            stacked[self.session.rank] = self.session.transport.receive_offline(
                shape, self.session.dealer_rank
            )
        return stacked

    _share = _receive
    _share_xor = _receive


class DistributedSession(Session):
    """A :class:`~course_lib.smpc.session.Session` of which this process holds one role.

    ``rank`` is this process's rank in the default ``torch.distributed`` group (which must be
    initialised, with ``n_parties + 2`` processes; :func:`run_parties` does it). ``rng`` as in
    ``Session``: ``None`` for a fresh ``SecureRandom`` per process, or the *same*
    ``InsecureSeededRandom(seed)`` in every process (see the module docstring).
    """

    def __init__(
        self,
        rank: int,
        n_parties: int = 2,
        precision_bits: int = 16,
        rng: RandomSource | None = None,
    ) -> None:
        super().__init__(n_parties, precision_bits, rng)
        world = self.n_parties + 2
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world:
            raise ValueError(
                f"rank must be an int from 0 to {world - 1} ({self.n_parties} parties, the "
                f"dealer, the outside owner), got {rank!r}"
            )
        if not dist.is_initialized() or dist.get_world_size() != world:
            raise ValueError(
                f"a DistributedSession of {self.n_parties} parties needs torch.distributed "
                f"initialised with {world} processes; start it with run_parties() or connect()"
            )
        self.rank = rank
        self.dealer_rank = self.n_parties
        self.owner_rank = self.n_parties + 1
        self.transport = _Transport()
        if rank == self.dealer_rank:
            self.dealer = _SendingDealer(self)
        else:
            self.dealer = _ReceivingDealer(self)

    # -- roles ------------------------------------------------------------------------------
    @property
    def is_party(self) -> bool:
        return self.rank < self.n_parties

    @property
    def role(self) -> str:
        if self.is_party:
            return f"party {self.rank}"
        return "dealer" if self.rank == self.dealer_rank else "outside owner"

    def _rank_of(self, who: Participant, role: str) -> int | None:
        """The rank that sends an input / receives an output (``None``: every party)."""
        self.participant(who, role)  # validates
        if isinstance(who, int):
            return who
        if who is None and role == "receiver":
            return None
        return self.owner_rank

    def receives(self, to: Participant = None) -> bool:
        """Whether this process learns an output revealed ``to`` (see :meth:`deliver`)."""
        receiver = self._rank_of(to, "receiver")
        return self.is_party if receiver is None else self.rank == receiver

    def _placeholder(self, shape: Sequence[int]) -> torch.Tensor:
        return torch.zeros((self.n_parties, *shape), dtype=torch.int64)

    # -- the four steps that cross the wire -------------------------------------------------
    def _share_from_owner(self, values: Any, owner: Participant, scale_bits: int):
        messages, _ = self.participant(owner, "owner")
        sender = self._rank_of(owner, "owner")
        shape = tuple(values.shape) if isinstance(values, torch.Tensor) else ()
        if self.rank == sender:
            encoded = self.encoder.encode(values) if scale_bits else values
            shape = tuple(encoded.shape)
            shares = share(encoded, self.n_parties, self.rng)
            outgoing = {p: shares[p] for p in range(self.n_parties) if p != self.rank}
            self.transport.exchange(outgoing, {})
            stacked = self._placeholder(shape)
            if self.is_party:
                stacked[self.rank] = shares[self.rank]
        else:
            if not self.rng.secure:
                self.rng.int64((self.n_parties, *shape))  # the owner's draw (seeded: aligned)
            stacked = self._placeholder(shape)
            if self.is_party:
                got = self.transport.exchange({}, {sender: shape})
                stacked[self.rank] = got[sender]
        with self.log.operation("share"):
            self.log.record_messages(math.prod(shape), messages)
        return SharedTensor(stacked, self, scale_bits)

    def share(self, values: torch.Tensor | float, owner: Participant = None) -> SharedTensor:
        """Secret-share ``values`` from their owner's process (see ``Session.share``).

        Only the owner's process needs the real values (``owner=None`` or a name: the outside
        owner; ``owner=i``: party ``i``); every other process passes a tensor of the same shape
        (zeros, say), of which only the shape is read, and receives its share.
        """
        if not isinstance(values, torch.Tensor):
            values = torch.as_tensor(values, dtype=torch.float64)
        return self._share_from_owner(values, owner, self.precision_bits)

    def share_integers(self, values: torch.Tensor, owner: Participant = None) -> SharedTensor:
        """Secret-share int64 ``values`` (scale 0) from their owner's process."""
        if not isinstance(values, torch.Tensor):
            raise TypeError(f"the integers to share must be a tensor, got {type(values)}")
        if values.dtype != torch.int64:
            raise TypeError(f"the integers to share must be int64, got {values.dtype}")
        return self._share_from_owner(values, owner, 0)

    def _open_among_parties(self, stacked: Sequence[torch.Tensor], xor: bool) -> list:
        """Every party sends its rows of ``stacked`` (as one flat message) to every other party and
        combines what it receives; the dealer and the owner get zeros. Does not touch the log."""
        if not self.is_party:
            return [torch.zeros(s.shape[1:], dtype=torch.int64) for s in stacked]
        mine = torch.cat([s[self.rank].reshape(-1) for s in stacked])
        peers = [p for p in range(self.n_parties) if p != self.rank]
        got = self.transport.exchange(
            {p: mine for p in peers}, {p: tuple(mine.shape) for p in peers}
        )
        total = mine.clone()
        for p in peers:
            if xor:
                total ^= got[p]
            else:
                total += got[p]
        sizes = [s[0].numel() for s in stacked]
        return [
            part.reshape(s.shape[1:]) for part, s in zip(total.split(sizes), stacked, strict=True)
        ]

    def open(self, *stacked_shares: torch.Tensor) -> list[torch.Tensor]:
        """Open additively shared values among the parties, in one round (zeros elsewhere)."""
        self.log.record_open(sum(s[0].numel() for s in stacked_shares))
        return self._open_among_parties(stacked_shares, xor=False)

    def open_xor(self, *stacked_shares: torch.Tensor) -> list[torch.Tensor]:
        """Open XOR-shared values among the parties, in one round (zeros elsewhere)."""
        self.log.record_open(sum(s[0].numel() for s in stacked_shares))
        return self._open_among_parties(stacked_shares, xor=True)

    def deliver(self, stacked_shares: torch.Tensor, to: Participant = None) -> torch.Tensor:
        """Reconstruct an output at its receivers only, in one round; zeros everywhere else."""
        messages, receiver_name = self.participant(to)
        receiver = self._rank_of(to, "receiver")
        shape = tuple(stacked_shares.shape[1:])
        self.log.record_messages(math.prod(shape), messages)
        self.log.record_output(receiver_name, math.prod(shape))
        if receiver is None:
            return self._open_among_parties([stacked_shares], xor=False)[0]
        value = torch.zeros(shape, dtype=torch.int64)
        if self.rank == receiver:
            senders = [p for p in range(self.n_parties) if p != receiver]
            for part in self.transport.exchange({}, {p: shape for p in senders}).values():
                value += part
            if self.is_party:
                value += stacked_shares[receiver]
        elif self.is_party:
            self.transport.exchange({receiver: stacked_shares[self.rank]}, {})
        return value

    def __repr__(self) -> str:
        return (
            f"DistributedSession(rank={self.rank} [{self.role}], n_parties={self.n_parties}, "
            f"precision_bits={self.precision_bits}, rng={self.rng!r})"
        )


# -- launching the processes ----------------------------------------------------------------------
@dataclass
class PartyRun:
    """What one process returned: its ``rank`` and ``role``, ``program``'s return ``value``, the
    bytes it put on the wire (``wire``), its copy of the cost model (``log``), its ``pid`` and the
    wall-clock ``seconds`` the program took (rendezvous and start-up excluded)."""

    rank: int
    role: str
    value: Any
    wire: WireCount
    log: CommunicationLog
    pid: int
    seconds: float


@dataclass
class _Failure:
    rank: int
    error: str = field(default="")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _pickled(result: object) -> bytes:
    """Results travel as plain pickle bytes: a tensor put on a multiprocessing queue directly may be
    shared through shared memory that must outlive its sender (torch.multiprocessing does that)."""
    return pickle.dumps(result)


def _loopback_interface() -> str:
    return "lo0" if sys.platform == "darwin" else "lo"


@contextmanager
def connect(
    rank: int,
    n_parties: int = 2,
    address: str = "127.0.0.1",
    port: int = 29500,
    timeout: float = 60.0,
    seed: int | None = None,
    precision_bits: int = 16,
) -> Iterator[DistributedSession]:
    """Join the ``n_parties + 2`` processes rendezvousing at ``address:port`` as ``rank``.

    ``with connect(rank, address=..., port=...) as session:`` — what each machine runs when the
    processes are on different machines (``address`` is the machine of rank 0, which listens on
    ``port``; gloo then opens further TCP connections between every pair of processes on ports the
    OS picks, and binds to the interface named by ``GLOO_SOCKET_IFNAME`` — the loopback interface
    here unless already set). ``timeout`` bounds the rendezvous and every wait for a message.
    The group is destroyed when the block ends, also on errors.
    """
    os.environ.setdefault("GLOO_SOCKET_IFNAME", _loopback_interface())
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://{address}:{port}",
        rank=rank,
        world_size=check_party_count(n_parties) + 2,
        timeout=timedelta(seconds=timeout),
    )
    try:
        rng = None if seed is None else InsecureSeededRandom(seed)
        session = DistributedSession(rank, n_parties, precision_bits, rng)
        yield session
        session.transport.flush()
        dist.barrier()  # nobody leaves while a peer may still be reading from it
    finally:
        dist.destroy_process_group()


def _party_process(
    rank: int,
    port: int,
    timeout: float,
    n_parties: int,
    precision_bits: int,
    seed: int | None,
    threads: int,
    program: Callable[..., Any],
    args: tuple,
    results: Any,
) -> None:
    """Body of every process: rendezvous, run ``program``, report the result, leave."""
    try:
        torch.set_num_threads(threads)
        with connect(rank, n_parties, "127.0.0.1", port, timeout, seed, precision_bits) as session:
            start = time.perf_counter()
            value = program(session, *args)
            seconds = time.perf_counter() - start
        run = PartyRun(
            rank, session.role, value, session.transport.count, session.log, os.getpid(), seconds
        )
        results.put(_pickled(run))
    except BaseException:  # noqa: BLE001 — reported to the launcher, which raises it
        results.put(_pickled(_Failure(rank, traceback.format_exc())))


def _stop(processes: Sequence[multiprocessing.process.BaseProcess]) -> None:
    """Stop every process by PID: SIGTERM, then SIGKILL after a second; reap them all."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(1.0)
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, signal.SIGKILL)
            process.join(5.0)


def run_parties(
    program: Callable[..., Any],
    *args: Any,
    n_parties: int = 2,
    precision_bits: int = 16,
    seed: int | None = None,
    timeout: float = 60.0,
    start_method: str | None = None,
    threads: int = 1,
) -> list[PartyRun]:
    """Run ``program(session, *args)`` in ``n_parties + 2`` processes; return their results by rank.

    Each process gets a :class:`DistributedSession` (ranks: parties, then the dealer, then the
    outside owner) connected over gloo/TCP on ``127.0.0.1`` at a free port. ``seed=None`` gives each
    process its own ``SecureRandom``; an int gives every process ``InsecureSeededRandom(seed)``
    (INSECURE; the results then equal an in-process ``Session`` with that seed, bit for bit).
    ``timeout`` (seconds) bounds the rendezvous, every message wait and the whole run.
    ``start_method`` defaults to ``"fork"`` where the platform has it (Linux), else ``"spawn"``
    (macOS, Windows: ``program`` and ``args`` must then be picklable, ``program`` defined in an
    importable module). ``threads`` is torch's intra-op thread count in each process.

    Raises ``RuntimeError`` with the traceback if any process fails, ``TimeoutError`` if they do not
    all finish within ``timeout``; every process is stopped by PID before this returns or raises.
    """
    check_party_count(n_parties)
    if not callable(program):
        raise TypeError(f"program must be a function (session, *args), got {type(program)}")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    methods = multiprocessing.get_all_start_methods()
    if start_method is None:
        start_method = "fork" if "fork" in methods else "spawn"
    if start_method not in methods:
        raise ValueError(f"start_method must be one of {methods}, got {start_method!r}")
    context = multiprocessing.get_context(start_method)
    world = n_parties + 2
    results = context.Queue()
    port = free_port()
    processes = [
        context.Process(
            target=_party_process,
            args=(
                rank,
                port,
                timeout,
                n_parties,
                precision_bits,
                seed,
                threads,
                program,
                args,
                results,
            ),
            name=f"smpc-rank-{rank}",
            daemon=True,
        )
        for rank in range(world)
    ]
    deadline = time.monotonic() + timeout
    runs: dict[int, PartyRun] = {}
    try:
        for process in processes:
            process.start()
        while len(runs) < world:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"the SMPC processes did not finish within {timeout} s (ranks done: "
                    f"{sorted(runs)}); all were stopped"
                )
            try:
                result = pickle.loads(results.get(timeout=min(remaining, 0.5)))
            except Exception:  # queue.Empty: check whether a process died without reporting
                dead = [p.name for p in processes if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"SMPC processes died without a result: {dead}") from None
                continue
            if isinstance(result, _Failure):
                raise RuntimeError(f"rank {result.rank} failed:\n{result.error}")
            runs[result.rank] = result
    finally:
        _stop(processes)
        results.close()
        results.join_thread()
    return [runs[rank] for rank in range(world)]


# -- lesson 17's program --------------------------------------------------------------------------
def encrypted_inference_program(
    session: DistributedSession, model: nn.Module, images: torch.Tensor, to: Participant = None
) -> torch.Tensor | None:
    """Encrypted inference as every process runs it: the predicted classes at the receiver(s) of
    ``to`` (as :func:`~course_lib.smpc.inference.encrypted_predict`), ``None`` elsewhere.

    The outside owner (rank ``n + 1``) plays the model owner and the data owner and uses the real
    weights and images; every other process replaces them by zeros of the same shapes (the shapes
    are public). (Forked processes inherit the launcher's memory; the program does not read it.)
    """
    from course_lib.smpc.inference import encrypted_predict

    if session.rank != session.owner_rank:
        model = copy.deepcopy(model)
        with torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                tensor.zero_()
        images = torch.zeros_like(images)
    predictions = encrypted_predict(model, images, session, batch_size=len(images), to=to)
    return predictions if session.receives(to) else None
