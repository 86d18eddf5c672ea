"""One SMPC role per machine: the command-line entry point of :mod:`course_lib.smpc.distributed`.

Every process of a secure computation runs the same program; this module runs lesson 17's two
programs — encrypted MNIST inference and the encrypted key–value lookup — as *one* of the
``n + 2`` roles, so that each role can live on its own machine::

    python -m course_lib.smpc.distributed --role party0 --master 10.0.0.1:29500 \\
        --program inference --layers 784,128,10 --images 8

Roles and ranks (``n`` parties): ``party0`` … ``party{n-1}`` are ranks ``0 … n−1``, ``dealer`` is
rank ``n`` and ``owner`` (the outside owner: model owner, hospital, client) rank ``n + 1``.
``--master`` is rank 0's machine (party 0 listens there). Without ``--role``/``--rank`` and
``--master`` the process takes torchrun's ``RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``
(``WORLD_SIZE``, if set, must be ``n + 2``), so ``torchrun --nnodes 4 --node-rank i
--nproc-per-node 1 --master-addr … --master-port … -m course_lib.smpc.distributed …`` works too.

**The shapes are public.** Every role passes the same public description — the layer sizes and
the number of images, or the number of table rows and of query keys — and only the owner passes
the private data: the model's weights (a ``state_dict`` of :class:`course_lib.models.MLP` saved
with ``torch.save``), the images (the first ``--images`` test images of the offline MNIST sample,
or a tensor file), the table (a CSV file of ``key,value`` lines) and the query keys. The other
roles run the program on zeros of those shapes (:func:`~course_lib.smpc.distributed.
encrypted_inference_program`). A role that disagrees on the shapes is stopped with an error
(the dealer's material does not fit, or a message has the wrong size).

Each role prints what it learnt — the predictions or the looked-up values at the owner, ``None``
elsewhere — its bytes on the wire beside the cost model, and writes the same as JSON with
``--report FILE``. Exit status 0 on success, 1 on a protocol or connection error, 2 on bad
arguments (before anything is opened).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from course_lib.models import MLP
from course_lib.smpc.distributed import (
    PREPROCESSING_MODES,
    DistributedSession,
    connect,
    encrypted_inference_program,
    rendezvous_in_flight,
    rendezvous_settings,
)

__all__ = ["kv_lookup_program", "load_table", "main", "mlp_from_state_dict", "parse_args"]

#: Who receives the outputs: the outside owner's name in the cost model.
RECEIVER = "owner"


def _role_rank(role: str, n_parties: int) -> int:
    if role == "dealer":
        return n_parties
    if role == "owner":
        return n_parties + 1
    if role.startswith("party") and role[5:].isdigit() and int(role[5:]) < n_parties:
        return int(role[5:])
    raise ValueError(f"--role must be party0 … party{n_parties - 1}, dealer or owner, got {role!r}")


def _master(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"--master must be HOST:PORT (rank 0's machine), got {text!r}")
    return host, int(port)


def _layers(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        message = f"--layers must be comma-separated sizes such as 784,128,10, got {text!r}"
        raise ValueError(message) from None
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"--layers needs at least an input and an output size ≥ 1, got {text!r}")
    return sizes


def mlp_from_state_dict(state: dict[str, torch.Tensor], layers: Sequence[int]) -> MLP:
    """The :class:`~course_lib.models.MLP` of sizes ``layers`` holding the weights ``state``.

    ``ValueError`` if the weights do not fit those public sizes (names or shapes)."""
    model = MLP(layers[0], tuple(layers[1:-1]), layers[-1])
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    given = {name: tuple(t.shape) for name, t in state.items()}
    if expected != given:
        raise ValueError(
            f"the weights do not fit --layers {','.join(map(str, layers))}: expected "
            f"{expected}, the file holds {given}"
        )
    model.load_state_dict(state)
    return model.eval()


def load_table(path: Path) -> tuple[list[int], list[int]]:
    """Keys and values from a CSV file of ``key,value`` lines (integers; no header)."""
    keys, values = [], []
    with open(path, newline="") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if len(row) != 2:
                raise ValueError(f"{path}, line {number}: expected 'key,value', got {row}")
            try:
                keys.append(int(row[0]))
                values.append(int(row[1]))
            except ValueError:
                raise ValueError(f"{path}, line {number}: keys and values are integers") from None
    return keys, values


def kv_lookup_program(
    session: DistributedSession, keys: Any, values: Any, query: Any, client: str = RECEIVER
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Lesson 16's encrypted key–value lookup as every process runs it: the outside owner shares
    the table and the query keys and alone receives ``(values, found)``; ``None`` elsewhere.

    Other processes pass placeholders of the same public sizes (only the shapes are read:
    distinct keys ``0 … rows−1``, zero values and queries)."""
    from course_lib.smpc.database import SharedKeyValueStore

    store = SharedKeyValueStore(keys, values, session, owner=client)
    answer = store.get(query, client=client)
    return answer if session.receives(client) else None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring); ``--help`` lists every option."""
    parser = argparse.ArgumentParser(
        prog="python -m course_lib.smpc.distributed",
        description="Run one role of lesson 17's secure computation (one process per machine).",
    )
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--role", help="party0, party1, …, dealer or owner (default: RANK)")
    who.add_argument("--rank", type=int, help="the rank itself (default: RANK)")
    parser.add_argument("--parties", type=int, default=2, help="number of parties (default 2)")
    parser.add_argument(
        "--master", help="HOST:PORT of rank 0's machine (default: MASTER_ADDR:MASTER_PORT)"
    )
    parser.add_argument("--program", choices=("inference", "lookup"), default="inference")
    parser.add_argument("--layers", default="784,128,10", help="public MLP sizes (inference)")
    parser.add_argument("--images", type=int, default=8, help="public number of images")
    parser.add_argument("--weights", type=Path, help="owner only: the MLP's state_dict file")
    parser.add_argument(
        "--images-file",
        type=Path,
        help="owner only: a tensor (N, 1, 28, 28) file (default: "
        "the first --images test images of the offline MNIST sample)",
    )
    parser.add_argument("--rows", type=int, default=4, help="public number of table rows")
    parser.add_argument("--table", type=Path, help="owner only: CSV of key,value lines")
    parser.add_argument("--query", type=int, nargs="+", help="owner only: the keys to look up")
    parser.add_argument("--queries", type=int, default=1, help="public number of query keys")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds (default 120)")
    parser.add_argument(
        "--preprocessing",
        choices=PREPROCESSING_MODES,
        default="bulk",
        help="bulk: the dealer's material arrives before the online phase (default)",
    )
    parser.add_argument("--seed", type=int, help="INSECURE shared seed, for tests only")
    parser.add_argument("--report", type=Path, help="write what this role learnt as JSON here")
    return parser.parse_args(argv)


def _settings(args: argparse.Namespace) -> tuple[int, str, int]:
    rank = args.rank if args.role is None else _role_rank(args.role, args.parties)
    address, port = (None, None) if args.master is None else _master(args.master)
    rank, _, address, port = rendezvous_settings(rank, args.parties, address, port)
    return rank, address, port


def _inputs(args: argparse.Namespace, owner: bool) -> tuple[Any, tuple]:
    """The program and its arguments for this role: real data at the owner, zeros elsewhere."""
    if args.program == "inference":
        layers = _layers(args.layers)
        if args.images < 1:
            raise ValueError(f"--images must be ≥ 1, got {args.images}")
        if layers[0] != 784:
            raise ValueError("MNIST images have 784 pixels: --layers must start with 784")
        if not owner:
            return encrypted_inference_program, (
                MLP(layers[0], tuple(layers[1:-1]), layers[-1]).eval(),
                torch.zeros(args.images, 1, 28, 28),
                RECEIVER,
            )
        if args.weights is None:
            raise ValueError("the owner needs --weights (the model's state_dict)")
        model = mlp_from_state_dict(torch.load(args.weights, weights_only=True), layers)
        if args.images_file is not None:
            images = torch.load(args.images_file, weights_only=True)
        else:
            from course_lib.data import load_mnist

            images = load_mnist(train=False).images[: args.images]
        if not isinstance(images, torch.Tensor) or tuple(images.shape) != (args.images, 1, 28, 28):
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
            raise ValueError(f"the images must have shape ({args.images}, 1, 28, 28), got {shape}")
        return encrypted_inference_program, (model, images.float(), RECEIVER)
    if args.rows < 1 or args.queries < 1:
        raise ValueError("--rows and --queries must be ≥ 1")
    if not owner:
        return kv_lookup_program, (
            list(range(args.rows)),
            [0] * args.rows,
            [0] * args.queries,
            RECEIVER,
        )
    if args.table is None or args.query is None:
        raise ValueError("the owner needs --table (CSV of key,value) and --query KEY …")
    keys, values = load_table(args.table)
    if len(keys) != args.rows or len(args.query) != args.queries:
        raise ValueError(
            f"the public sizes say {args.rows} rows and {args.queries} query keys; the owner has "
            f"{len(keys)} rows and {len(args.query)} keys — every role must pass the same sizes"
        )
    return kv_lookup_program, (keys, values, args.query, RECEIVER)


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run one role; print and (``--report``) save what it learnt. Returns the exit status."""
    args = parse_args(argv)
    try:
        rank, address, port = _settings(args)
        owner = rank == args.parties + 1
        program, program_args = _inputs(args, owner)
    except (ValueError, TypeError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    try:
        with connect(
            rank,
            args.parties,
            address,
            port,
            args.timeout,
            args.seed,
            preprocessing=args.preprocessing,
        ) as session:
            start = time.perf_counter()
            value = program(session, *program_args)
            seconds = time.perf_counter() - start
    except (ConnectionError, TimeoutError, RuntimeError) as error:
        print(f"error ({type(error).__name__}): {error}", file=sys.stderr)
        if rendezvous_in_flight():  # torch's store is still retrying in C++: leave without it
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)
        return 1
    cost = session.log.total
    report = {
        "rank": rank,
        "role": session.role,
        "program": args.program,
        "value": _plain(value),
        "seconds": seconds,
        "wire": asdict(session.transport.count),
        "cost_model": {
            "rounds": cost.rounds,
            "bytes": cost.bytes,
            "offline_bytes": cost.offline_bytes,
        },
    }
    if owner and args.program == "inference":
        with torch.no_grad():
            report["plaintext"] = program_args[0](program_args[1]).argmax(dim=-1).tolist()
    print(f"{session.role} (rank {rank}) learnt: {report['value']}")
    if "plaintext" in report:
        print(f"the plaintext model on the same images: {report['plaintext']}")
    wire = session.transport.count
    print(
        f"online: {seconds:.2f} s, {wire.rounds} rounds; sent {wire.online_sent:,} B online, "
        f"{wire.offline_sent:,} B of dealer material; cost model (all processes): "
        f"{cost.rounds} rounds, {cost.bytes:,} B online, {cost.offline_bytes:,} B from the dealer"
    )
    if args.report is not None:
        args.report.write_text(json.dumps(report, indent=1))
    return 0
