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
- the dealer process draws the triples and masks and sends party ``i`` row ``i`` of each (by
  default all of them in one message before the online phase: see *The offline phase*).

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
TCP/frame headers are not counted (the cost model does not count them either), and the 8-byte
length before each bulk message is counted apart (``header_sent``).

**Threat model.** As :mod:`.session`: semi-honest parties, a trusted dealer that does not collude
with any party, no integrity. The transport is plain TCP without encryption or authentication:
anyone who can read the network sees the shares (both shares of an input, on the owner's links, add
up to it), and ``torch.distributed``'s rendezvous store listens on every interface of rank 0's
machine and accepts whoever connects (PyTorch's security policy says so). gloo has no TLS transport
and opens its connections on ports the OS picks, so it cannot simply be wrapped in TLS: across
machines, run the processes on an isolated network or inside a VPN such as WireGuard (give the
tunnel address as the master address; :func:`interface_towards` then picks the tunnel's interface).

**The offline phase.** By default (``preprocessing="bulk"``) the dealer's process runs the program
first, on placeholders (the shapes are public), and then sends each party all of its triples and
masks in one message; the parties receive it before their online phase starts, so no online step
waits on the dealer. gloo hands a message over only once its receiver has asked for it: streamed
(``preprocessing="streamed"``), each dealer message would cost a network round trip during the
online phase.

**Launching.** :func:`run_parties` starts the ``n + 2`` processes (``fork`` where the platform has
it, else ``spawn``), rendezvous over TCP on ``127.0.0.1`` with a timeout, collects every process's
result and stops every process by PID in a ``finally``; when a process fails it raises with the
*first* failure's own traceback. ``program`` must be a function defined in an importable module
(``spawn`` pickles it; functions defined in a notebook cannot be pickled). Across machines, each
machine runs its rank inside :func:`connect` — or runs ``python -m course_lib.smpc.distributed
--role …`` (:mod:`.launcher`: lesson 17's inference and key–value lookup), alone or under torchrun.
"""

from __future__ import annotations

import copy
import ipaddress
import math
import multiprocessing
import os
import pickle
import queue
import signal
import socket
import struct
import sys
import threading
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
from course_lib.smpc.encoding import FixedPoint
from course_lib.smpc.session import Participant, Session
from course_lib.smpc.sharing import check_party_count, share
from course_lib.smpc.tensor import SharedTensor
from course_lib.validation import as_integer, check_positive, check_positive_int

__all__ = [
    "PREPROCESSING_MODES",
    "DistributedSession",
    "check_preprocessing",
    "connect",
    "interface_towards",
    "rendezvous_in_flight",
    "rendezvous_settings",
    "PartyRun",
    "WireCount",
    "encrypted_inference_program",
    "run_parties",
]

#: How many of the dealer's asynchronous sends may be in flight before it waits for them.
_MAX_PENDING_SENDS = 64


def check_preprocessing(preprocessing: object) -> str:
    """``preprocessing`` if it is one of :data:`PREPROCESSING_MODES`, else ``ValueError``."""
    if not isinstance(preprocessing, str) or preprocessing not in PREPROCESSING_MODES:
        raise ValueError(
            f"preprocessing must be one of {PREPROCESSING_MODES} ('bulk': the dealer's material "
            f"is delivered before the online phase), got {preprocessing!r}"
        )
    return preprocessing


@dataclass
class WireCount:
    """What one process put on and took off the wire (tensor payload bytes; headers not counted).

    ``online_*`` is party↔party and owner↔party traffic (opens, input sharing, outputs);
    ``offline_*`` the dealer's triples and masks. ``rounds`` counts the online exchanges this
    process took part in and ``exchange_seconds`` the wall time it spent in them (waiting included).
    With ``preprocessing="bulk"`` the dealer also sends each party one 8-byte length before its
    bulk message (``header_sent`` / ``header_received``: framing, not in the cost model), and
    ``offline_seconds`` is the time a party spent waiting for and receiving its material.
    ``exchanges`` lists each online exchange in order as ``(bytes sent + received, seconds)``, so
    a slow round can be told apart from a large one.
    """

    online_sent: int = 0
    online_received: int = 0
    offline_sent: int = 0
    offline_received: int = 0
    rounds: int = 0
    exchange_seconds: float = 0.0
    header_sent: int = 0
    header_received: int = 0
    offline_seconds: float = 0.0
    exchanges: list[tuple[int, float]] = field(default_factory=list)


def _isend(tensor: torch.Tensor, dst: int) -> dist.Work:
    """``dist.isend`` that always returns its request (it returns ``None`` only to processes
    outside the group, which a session's processes never are)."""
    request = dist.isend(tensor, dst)
    if request is None:
        raise RuntimeError(f"torch.distributed gave no request for a message to rank {dst}")
    return request


class _Transport:
    """Point-to-point messages of int64 tensors over the default ``torch.distributed`` group."""

    def __init__(self) -> None:
        self.count = WireCount()
        self._pending: list[tuple[dist.Work, torch.Tensor]] = []

    def exchange(
        self, outgoing: dict[int, torch.Tensor], incoming: dict[int, tuple[int, ...]]
    ) -> dict[int, torch.Tensor]:
        """One online round: send ``outgoing[dst]`` to each ``dst``, receive a tensor of shape
        ``incoming[src]`` from each ``src``. Sends are asynchronous, so nobody waits on a peer that
        is itself sending."""
        start = time.perf_counter()
        moved = 0
        requests = []
        for dst, tensor in outgoing.items():
            tensor = tensor.contiguous()
            requests.append((_isend(tensor, dst), tensor))
            self.count.online_sent += tensor.numel() * tensor.element_size()
            moved += tensor.numel() * tensor.element_size()
        received = {}
        for src, shape in incoming.items():
            buffer = torch.empty(shape, dtype=torch.int64)
            dist.recv(buffer, src)
            self.count.online_received += buffer.numel() * buffer.element_size()
            moved += buffer.numel() * buffer.element_size()
            received[src] = buffer
        for request, _ in requests:
            request.wait()
        seconds = time.perf_counter() - start
        self.count.rounds += 1
        self.count.exchange_seconds += seconds
        self.count.exchanges.append((moved, seconds))
        return received

    def send_offline(self, tensor: torch.Tensor, dst: int) -> None:
        """The dealer's message to ``dst`` (asynchronous; waited for in batches and at the end)."""
        tensor = tensor.contiguous()
        self._pending.append((_isend(tensor, dst), tensor))
        self.count.offline_sent += tensor.numel() * tensor.element_size()
        if len(self._pending) >= _MAX_PENDING_SENDS:
            self.flush()

    def receive_offline(self, shape: tuple[int, ...], src: int) -> torch.Tensor:
        buffer = torch.empty(shape, dtype=torch.int64)
        dist.recv(buffer, src)
        self.count.offline_received += buffer.numel() * buffer.element_size()
        return buffer

    def send_header(self, words: int, dst: int) -> None:
        """The length (in int64 words) of the bulk message that follows (8 bytes, framing)."""
        header = torch.tensor([words], dtype=torch.int64)
        self._pending.append((_isend(header, dst), header))
        self.count.header_sent += header.element_size()

    def receive_header(self, src: int) -> int:
        header = torch.empty(1, dtype=torch.int64)
        dist.recv(header, src)
        self.count.header_received += header.element_size()
        words = int(header[0])
        if words < 0:
            raise RuntimeError(f"rank {src} announced a message of {words} words")
        return words

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
    """The dealer process: draws the correlated randomness and sends party ``i`` its share ``i``.

    ``bulk=False``: each share is sent as the program asks for it (streamed). ``bulk=True``: the
    shares are kept, per party, until :meth:`send_material` sends each party all of them in one
    message — the offline phase, before the parties start the online computation.
    """

    def __init__(self, session: DistributedSession, bulk: bool) -> None:
        super().__init__(session.n_parties, session.rng, session.log)
        self.transport = session.transport
        self.bulk = bulk
        self.material: list[list[torch.Tensor]] = [[] for _ in range(self.n_parties)]

    def _send(self, shares: torch.Tensor) -> torch.Tensor:
        for party in range(self.n_parties):
            if self.bulk:
                self.material[party].append(shares[party].reshape(-1))
            else:
                self.transport.send_offline(shares[party], party)
        return shares

    def _share(self, secret: torch.Tensor) -> torch.Tensor:
        return self._send(super()._share(secret))

    def _share_xor(self, secret: torch.Tensor) -> torch.Tensor:
        return self._send(super()._share_xor(secret))

    def send_material(self) -> None:
        """Send each party its 8-byte length, then all its material as one int64 message."""
        for party in range(self.n_parties):
            bulk = torch.cat(self.material[party]) if self.material[party] else torch.zeros(0)
            bulk = bulk.to(torch.int64)
            self.transport.send_header(bulk.numel(), party)
            if bulk.numel():
                self.transport.send_offline(bulk, party)
            self.material[party] = []
        self.transport.flush()


class _ReceivingDealer(Dealer):
    """The dealer as seen by the other processes: the same calls, the shares come over the wire.

    A party receives its own row (streamed: one message per call; bulk: a slice of the material it
    received before the online phase, in program order); the outside owner receives nothing. The
    cost is charged to the log exactly as the in-process dealer charges it.
    """

    def __init__(self, session: DistributedSession, bulk: bool) -> None:
        super().__init__(session.n_parties, _ShapesOnly(session.rng), session.log)
        self.session = session
        self.bulk = bulk
        self.material: torch.Tensor | None = None
        self.used = 0

    def receive_material(self) -> None:
        """A party's offline phase: its length, then its whole material in one message."""
        transport, dealer = self.session.transport, self.session.dealer_rank
        start = time.perf_counter()
        words = transport.receive_header(dealer)
        self.material = transport.receive_offline((words,), dealer) if words else torch.zeros(0)
        self.material = self.material.to(torch.int64)
        self.used = 0
        transport.count.offline_seconds += time.perf_counter() - start

    def check_all_used(self) -> None:
        """Raise if the program used less material than the dealer prepared for it."""
        if self.material is not None and self.used != self.material.numel():
            raise RuntimeError(
                f"{self.session.role} used {self.used:,} of the {self.material.numel():,} words "
                "the dealer prepared: the processes did not run the same program on the same "
                "shapes (secure computation must not branch on secret or per-process data)"
            )

    def _take(self, shape: tuple[int, ...]) -> torch.Tensor:
        if self.material is None:
            raise RuntimeError(
                f"{self.session.role} has not received the dealer's material yet: with "
                "preprocessing='bulk' it is received before the program starts (connect does it)"
            )
        words = math.prod(shape)
        if self.used + words > self.material.numel():
            raise RuntimeError(
                f"{self.session.role} needs more of the dealer's material than the "
                f"{self.material.numel():,} words prepared: the processes did not run the same "
                "program on the same shapes"
            )
        part = self.material[self.used : self.used + words].reshape(shape)
        self.used += words
        return part

    def _receive(self, secret: torch.Tensor) -> torch.Tensor:
        shape = tuple(secret.shape)
        if self.log is not None:
            self.log.record_dealer(math.prod(shape))
        self.rng.int64((self.n_parties, *shape))  # what share()/share_xor() draw (seeded: aligned)
        stacked = torch.zeros((self.n_parties, *shape), dtype=torch.int64)
        if self.session.is_party:
            if self.bulk:
                stacked[self.session.rank] = self._take(shape)
            else:
                stacked[self.session.rank] = self.session.transport.receive_offline(
                    shape, self.session.dealer_rank
                )
        return stacked

    _share = _receive
    _share_xor = _receive


#: How the dealer's material reaches the parties (see :class:`DistributedSession`).
PREPROCESSING_MODES = ("bulk", "streamed")


class DistributedSession(Session):
    """A :class:`~course_lib.smpc.session.Session` of which this process holds one role.

    ``rank`` is this process's rank in the default ``torch.distributed`` group (which must be
    initialised, with ``n_parties + 2`` processes; :func:`run_parties` does it). ``rng`` as in
    ``Session``: ``None`` for a fresh ``SecureRandom`` per process, or the *same*
    ``InsecureSeededRandom(seed)`` in every process (see the module docstring).

    ``preprocessing`` says when the dealer's material crosses the wire:

    - ``"bulk"`` (default): a real **offline phase**. The shapes are public, so the dealer runs the
      whole program first on placeholders, drawing every triple and mask, and
      :meth:`send_preprocessing` then sends each party *one* message holding all of its shares
      (after an 8-byte length); each party calls :meth:`receive_preprocessing` before the online
      phase and takes its shares from that message in program order. The online phase then waits
      on no dealer message: its latency is ``rounds × RTT`` plus computation.
    - ``"streamed"``: the dealer sends each share as the program asks for it. gloo delivers a
      message only once the receiver has posted its receive, so across a network each of these
      messages costs a round trip *during* the online phase.

    :func:`connect` calls the two methods at the right moments. The program must communicate only
    through the session (no ``torch.distributed`` calls of its own) and take the same steps in
    every process — which secure computation does anyway.
    """

    def __init__(
        self,
        rank: int,
        n_parties: int = 2,
        precision_bits: int = 16,
        rng: RandomSource | None = None,
        preprocessing: str = "bulk",
    ) -> None:
        world = check_party_count(n_parties) + 2
        rank = as_integer(rank, "rank")
        if not 0 <= rank < world:
            raise ValueError(
                f"rank must be an int from 0 to {world - 1} ({world - 2} parties, the "
                f"dealer, the outside owner), got {rank!r}"
            )
        super().__init__(n_parties, precision_bits, rng)
        check_preprocessing(preprocessing)
        if not dist.is_initialized() or dist.get_world_size() != world:
            raise ValueError(
                f"a DistributedSession of {self.n_parties} parties needs torch.distributed "
                f"initialised with {world} processes; start it with run_parties() or connect()"
            )
        self.rank = rank
        self.dealer_rank = self.n_parties
        self.owner_rank = self.n_parties + 1
        self.preprocessing = preprocessing
        self.transport = _Transport()
        bulk = preprocessing == "bulk"
        self.dealer: _SendingDealer | _ReceivingDealer
        if rank == self.dealer_rank:
            self.dealer = _SendingDealer(self, bulk)
        else:
            self.dealer = _ReceivingDealer(self, bulk)

    # -- the offline phase (preprocessing="bulk") -------------------------------------------
    def receive_preprocessing(self) -> None:
        """A party receives all of its dealer material in one message (bulk mode; the dealer sends
        it once its run of the program is over). Does nothing in other processes or modes."""
        bulk = self.preprocessing == "bulk"
        if bulk and self.is_party and isinstance(self.dealer, _ReceivingDealer):
            self.dealer.receive_material()

    def send_preprocessing(self) -> None:
        """The dealer sends each party the material its run of the program drew (bulk mode);
        a party checks it used all of what it received. Does nothing elsewhere."""
        if self.preprocessing != "bulk":
            return
        if isinstance(self.dealer, _SendingDealer):
            self.dealer.send_material()
        elif self.is_party and isinstance(self.dealer, _ReceivingDealer):
            self.dealer.check_all_used()

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
        self.participant(who, role)  # validates (NumPy integers count as party indices)
        if who is None and role == "receiver":
            return None
        if isinstance(who, str) or who is None:
            return self.owner_rank
        return as_integer(who, f"the {role}")

    def _sender_rank(self, owner: Participant) -> int:
        """The rank that holds an input: party ``i`` or the outside owner."""
        sender = self._rank_of(owner, "owner")
        return self.owner_rank if sender is None else sender

    def receives(self, to: Participant = None) -> bool:
        """Whether this process learns an output revealed ``to`` (see :meth:`deliver`)."""
        receiver = self._rank_of(to, "receiver")
        return self.is_party if receiver is None else self.rank == receiver

    def _placeholder(self, shape: Sequence[int]) -> torch.Tensor:
        return torch.zeros((self.n_parties, *shape), dtype=torch.int64)

    # -- the four steps that cross the wire -------------------------------------------------
    def _share_from_owner(self, values: Any, owner: Participant, scale_bits: int):
        messages, _ = self.participant(owner, "owner")
        sender = self._sender_rank(owner)
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
    """A process's exception: its traceback, one-line summary and when it was raised (monotonic
    clock, which is shared by all processes of a machine)."""

    rank: int
    role: str
    error: str
    summary: str
    raised_at: float


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


def _resolve_ipv4(address: str) -> str:
    """The IPv4 address ``address`` (a name or dotted quad) resolves to; ``ValueError`` if none."""
    if not isinstance(address, str) or not address.strip():
        raise ValueError(f"the master address must be a host name or IPv4 address, got {address!r}")
    try:
        infos = socket.getaddrinfo(address, None, family=socket.AF_INET, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise ValueError(f"cannot resolve the master address {address!r}: {error}") from error
    return str(infos[0][4][0])


def _ipv4_of(interface: str) -> str | None:
    """The (primary) IPv4 address of a network interface, or ``None`` (no address, or a platform
    without the ``SIOCGIFADDR`` ioctl)."""
    # SIOCGIFADDR: <linux/sockios.h>; macOS <sys/sockio.h> _IOWR('i', 33, struct ifreq)
    request = {"linux": 0x8915, "darwin": 0xC0206921}.get(sys.platform)
    if request is None:
        return None
    import fcntl  # POSIX only

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            ifreq = fcntl.ioctl(
                probe.fileno(), request, struct.pack("256s", interface[:15].encode())
            )
        except OSError:
            return None
    return socket.inet_ntoa(ifreq[20:24])  # struct ifreq: 16-byte name, sockaddr_in (addr at +4)


def interface_towards(address: str) -> str:
    """The name of this machine's network interface whose route leads to ``address`` (IPv4).

    The loopback interface for a loopback address; otherwise the interface holding the source
    address the kernel picks for a packet to ``address`` (a UDP ``connect``, which sends
    nothing). Raises ``ValueError`` if ``address`` does not resolve and ``ConnectionError`` if
    there is no route, or no interface holds the chosen address (then set ``GLOO_SOCKET_IFNAME``).
    """
    ip = _resolve_ipv4(address)
    if ipaddress.ip_address(ip).is_loopback:
        return _loopback_interface()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((ip, 9))  # chooses the route and source address; sends no packet
            local = probe.getsockname()[0]
    except OSError as error:
        raise ConnectionError(
            f"this machine has no route to the master address {address} ({ip}): {error}"
        ) from error
    for _, name in socket.if_nameindex():
        if _ipv4_of(name) == local:
            return name
    raise ConnectionError(
        f"no network interface of this machine could be matched to {local}, the address it uses "
        f"towards {address}; set GLOO_SOCKET_IFNAME to the interface that connects the machines"
    )


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0].rstrip(".") if lines else ""


def _env_int(name: str) -> int | None:
    text = os.environ.get(name)
    if text is None or not text.strip():
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(
            f"the environment variable {name} must be an integer, got {text!r}"
        ) from None


def rendezvous_settings(
    rank: int | None, n_parties: int, address: str | None, port: int | None
) -> tuple[int, int, str, int]:
    """``(rank, world size, address, port)`` from the arguments, else from torchrun's environment
    (``RANK``, ``MASTER_ADDR``, ``MASTER_PORT``; ``WORLD_SIZE``, if set, must be
    ``n_parties + 2``). ``ValueError`` / ``TypeError`` for anything missing or out of range."""
    world = check_party_count(n_parties) + 2
    rank = _env_int("RANK") if rank is None else rank
    if rank is None:
        raise ValueError("give rank= (0 … n_parties + 1) or set RANK, as torchrun does")
    rank = as_integer(rank, "rank")
    if not 0 <= rank < world:
        raise ValueError(
            f"rank must be an int from 0 to {world - 1} ({world - 2} parties, the dealer, the "
            f"outside owner), got {rank!r}"
        )
    world_env = _env_int("WORLD_SIZE")
    if world_env is not None and world_env != world:
        raise ValueError(
            f"WORLD_SIZE is {world_env} but {n_parties} parties need {world} processes "
            "(the parties, the dealer and the outside owner)"
        )
    address = os.environ.get("MASTER_ADDR") if address is None else address
    if address is None:
        raise ValueError("give address= (rank 0's machine) or set MASTER_ADDR")
    _resolve_ipv4(address)
    port = _env_int("MASTER_PORT") if port is None else port
    if port is None:
        raise ValueError("give port= (rank 0 listens on it) or set MASTER_PORT")
    port = as_integer(port, "port")
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be an int from 1 to 65535, got {port!r}")
    return rank, world, address, port


def rendezvous_in_flight() -> bool:
    """Whether a rendezvous that :func:`connect` gave up on is still running in its thread.

    torch's store client retries inside C++ for up to about twice its timeout; a process that
    exits meanwhile is aborted by the C++ runtime ("terminate called"). A command-line program
    that has reported the error should then leave with ``os._exit`` (as :mod:`.launcher` does)."""
    return any(
        thread.name.startswith("smpc-rendezvous-") and thread.is_alive()
        for thread in threading.enumerate()
    )


def _join(rank: int, world: int, address: str, port: int, timeout: float, interface: str) -> None:
    """``init_process_group`` over gloo, bounded: a clear error after ``timeout`` (+5 s), never a
    hang, naming the rank, the rendezvous address and port and the local interface."""
    where = (
        f"rank {rank} of {world} (rendezvous tcp://{address}:{port} on rank 0's machine; this "
        f"machine's interface {interface}, {_ipv4_of(interface) or 'address unknown'})"
    )
    advice = (
        f"Check that rank 0 is running on {address}, that every rank uses the same address, port "
        f"and number of parties, that TCP port {port} and the ports gloo opens between every pair "
        "of machines are reachable (firewall, VPN), and GLOO_SOCKET_IFNAME if set."
    )
    outcome: dict[str, BaseException] = {}
    # Under torchrun its agent already listens on MASTER_PORT: join its store (env://).
    under_torchrun = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    init_method = "env://" if under_torchrun else f"tcp://{address}:{port}"
    if under_torchrun and (address, str(port)) != (
        os.environ.get("MASTER_ADDR"),
        os.environ.get("MASTER_PORT"),
    ):
        raise ValueError(
            f"under torchrun the rendezvous is MASTER_ADDR:MASTER_PORT = "
            f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}, not {address}:{port}"
        )

    def attempt() -> None:
        try:
            dist.init_process_group(
                "gloo",
                init_method=init_method,
                rank=rank,
                world_size=world,
                timeout=timedelta(seconds=timeout),
            )
        except BaseException as error:  # noqa: BLE001 — re-raised below, with the context
            outcome["error"] = error

    previous = os.environ.get("GLOO_SOCKET_IFNAME")
    os.environ["GLOO_SOCKET_IFNAME"] = interface
    try:
        thread = threading.Thread(target=attempt, name=f"smpc-rendezvous-{rank}", daemon=True)
        thread.start()
        thread.join(timeout + 5.0)
    finally:
        if previous is None:
            del os.environ["GLOO_SOCKET_IFNAME"]
        else:
            os.environ["GLOO_SOCKET_IFNAME"] = previous
    if thread.is_alive():
        raise TimeoutError(
            f"{where}: the processes did not all connect within {timeout} s. {advice}"
        )
    if "error" in outcome:
        error = outcome["error"]
        if dist.is_initialized():
            dist.destroy_process_group()
        raise ConnectionError(
            f"{where}: could not connect within {timeout} s: "
            f"{type(error).__name__}: {_first_line(error)}. "
            f"{advice}"
        ) from error


@contextmanager
def connect(
    rank: int | None = None,
    n_parties: int = 2,
    address: str | None = None,
    port: int | None = None,
    timeout: float = 60.0,
    seed: int | None = None,
    precision_bits: int = 16,
    preprocessing: str = "bulk",
) -> Iterator[DistributedSession]:
    """Join the ``n_parties + 2`` processes rendezvousing at ``address:port`` as ``rank``.

    ``with connect(rank, address=..., port=...) as session:`` — what each machine runs when the
    processes are on different machines. ``address`` is the machine of rank 0, which listens on
    ``port``; gloo then opens a TCP connection between every pair of processes on ports the OS
    picks. ``rank``, ``address`` and ``port`` default to torchrun's ``RANK``, ``MASTER_ADDR`` and
    ``MASTER_PORT`` (``WORLD_SIZE``, if set, must be ``n_parties + 2``).

    gloo binds to the interface named by ``GLOO_SOCKET_IFNAME`` if set, else to the interface that
    routes to ``address`` (:func:`interface_towards`; loopback only for a loopback address).
    ``timeout`` (seconds) bounds the rendezvous — ``ConnectionError`` or ``TimeoutError`` naming
    the rank, address, port and interface, never a hang — and every later wait for a message.
    ``preprocessing``: see :class:`DistributedSession` (``"bulk"``: parties receive all of the
    dealer's material before the block's body starts; the dealer sends it when its body ends).
    Arguments are checked before anything is opened; the group is destroyed when the block ends,
    also on errors.
    """
    rank, world, address, port = rendezvous_settings(rank, n_parties, address, port)
    timeout = check_positive(timeout, "timeout (seconds)")
    seed = None if seed is None else as_integer(seed, "seed")
    check_preprocessing(preprocessing)
    FixedPoint(precision_bits)  # refuses a bad precision before anything is opened
    interface = os.environ.get("GLOO_SOCKET_IFNAME") or interface_towards(address)
    _join(rank, world, address, port, float(timeout), interface)
    try:
        rng = None if seed is None else InsecureSeededRandom(seed)
        session = DistributedSession(rank, n_parties, precision_bits, rng, preprocessing)
        session.receive_preprocessing()
        yield session
        session.send_preprocessing()
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
    preprocessing: str,
    threads: int,
    program: Callable[..., Any],
    args: tuple,
    results: Any,
) -> None:
    """Body of every process: rendezvous, run ``program``, report the result, leave.

    A failure is reported with the time it was raised — for the program's own exception, before
    ``connect`` closes this process's connections (which is what makes its peers fail next)."""
    failed_at: float | None = None
    role = f"rank {rank}"
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the launcher's handler is not for its children
    try:
        torch.set_num_threads(threads)
        with connect(
            rank, n_parties, "127.0.0.1", port, timeout, seed, precision_bits, preprocessing
        ) as session:
            role = session.role
            start = time.perf_counter()
            try:
                value = program(session, *args)
            except BaseException:
                failed_at = time.monotonic()
                raise
            seconds = time.perf_counter() - start
        run = PartyRun(
            rank, session.role, value, session.transport.count, session.log, os.getpid(), seconds
        )
        results.put(_pickled(run))
    except BaseException as error:  # noqa: BLE001 — reported to the launcher, which raises it
        raised_at = time.monotonic() if failed_at is None else failed_at
        summary = f"{type(error).__name__}: {_first_line(error)}"
        results.put(_pickled(_Failure(rank, role, traceback.format_exc(), summary, raised_at)))


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """While active, SIGTERM (``kill``, ``timeout``, a job scheduler) raises ``SystemExit(143)`` in
    the main thread instead of ending Python at once, so :func:`run_parties` still stops every
    process it started. Elsewhere than in the main thread (where Python cannot install signal
    handlers) it does nothing. The previous handler comes back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _exit(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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


#: After the first failure, how long the launcher waits for the other processes' reports (seconds),
#: to find the process that failed first.
_FAILURE_GRACE = 5.0


def _first_failure(failures: list[_Failure], silent: dict[int, int]) -> str:
    """The message for a failed run: the process that failed first, with its own traceback, then
    one line per process that failed after it (usually a peer's "connection closed"). A process
    that ended without any report (killed, crashed) is taken as the first: its peers' errors
    are the consequence."""
    ordered = sorted(failures, key=lambda f: f.raised_at)
    if silent:
        rank, code = min(silent.items())
        head = f"rank {rank} ended without a result (exit code {code}): it failed first"
        later = [f"rank {f.rank} ({f.role}): {f.summary}" for f in ordered]
    else:
        first = ordered[0]
        head = f"rank {first.rank} ({first.role}) failed first:\n{first.error.rstrip()}"
        later = [f"rank {f.rank} ({f.role}): {f.summary}" for f in ordered[1:]]
    if later:
        head += "\nthen, as a consequence:\n  " + "\n  ".join(later)
    return head


def run_parties(
    program: Callable[..., Any],
    *args: Any,
    n_parties: int = 2,
    precision_bits: int = 16,
    seed: int | None = None,
    timeout: float = 60.0,
    start_method: str | None = None,
    threads: int = 1,
    preprocessing: str = "bulk",
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
    ``preprocessing``: ``"bulk"`` (an offline phase) or ``"streamed"``, see
    :class:`DistributedSession`; ``program`` must communicate only through its session.

    Raises ``RuntimeError`` if any process fails: the message starts with the process that failed
    *first* and its own traceback (the others' errors — a peer's closed connection — follow, one
    line each); ``TimeoutError`` if they do not all finish within ``timeout``. Every process is
    stopped by PID before this returns or raises — also when the launcher itself receives SIGTERM
    (``kill``, ``timeout``), which then raises ``SystemExit(143)`` after stopping them.
    """
    check_party_count(n_parties)
    if not callable(program):
        raise TypeError(f"program must be a function (session, *args), got {type(program)}")
    timeout = check_positive(timeout, "timeout (seconds)")
    seed = None if seed is None else as_integer(seed, "seed")
    threads = check_positive_int(threads, "threads")
    check_preprocessing(preprocessing)
    FixedPoint(precision_bits)
    methods = multiprocessing.get_all_start_methods()
    if start_method is None:
        start_method = "fork" if "fork" in methods else "spawn"
    if start_method not in methods:
        raise ValueError(f"start_method must be one of {methods}, got {start_method!r}")
    context: Any = multiprocessing.get_context(start_method)  # typeshed's BaseContext lacks Process
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
                preprocessing,
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
    runs: dict[int, PartyRun] = {}
    failures: list[_Failure] = []
    silent: dict[int, int] = {}  # rank -> exit code of a process that ended without a report
    with _sigterm_unwinds():
        _watch(processes, results, world, timeout, runs, failures, silent)
    return [runs[rank] for rank in range(world)]


def _watch(
    processes: list[Any],
    results: Any,
    world: int,
    timeout: float,
    runs: dict[int, PartyRun],
    failures: list[_Failure],
    silent: dict[int, int],
) -> None:
    """Start the processes, collect their reports into ``runs`` / ``failures`` / ``silent`` and
    raise for a failure or the timeout; every process is stopped by PID on the way out."""
    deadline = time.monotonic() + timeout
    first_seen: float | None = None  # when the launcher first saw a failure
    try:
        for process in processes:
            process.start()
        while True:
            done = set(runs) | {f.rank for f in failures} | set(silent)
            pending = [rank for rank in range(world) if rank not in done]
            if not pending:
                break
            now = time.monotonic()
            if first_seen is None and now >= deadline:
                raise TimeoutError(
                    f"the SMPC processes did not finish within {timeout} s (ranks done: "
                    f"{sorted(runs)}); all were stopped"
                )
            if first_seen is not None and now >= min(first_seen + _FAILURE_GRACE, deadline):
                break  # enough waiting for reports: the first failure is known
            try:
                result = pickle.loads(results.get(timeout=0.2))
            except queue.Empty:  # a process that has exited has already flushed its report
                for rank in pending:
                    if processes[rank].exitcode is not None:
                        silent[rank] = processes[rank].exitcode
                        first_seen = time.monotonic() if first_seen is None else first_seen
                continue
            if isinstance(result, _Failure):
                failures.append(result)
                first_seen = time.monotonic() if first_seen is None else first_seen
            else:
                runs[result.rank] = result
        if failures or silent:
            raise RuntimeError(_first_failure(failures, silent))
    finally:
        _stop(processes)
        results.close()
        results.join_thread()


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


if __name__ == "__main__":  # python -m course_lib.smpc.distributed --role … (see .launcher)
    from course_lib.smpc.launcher import main

    sys.exit(main())
