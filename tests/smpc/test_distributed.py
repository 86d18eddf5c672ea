"""SMPC parties as separate processes over torch.distributed (gloo on 127.0.0.1).

Every run starts 4 processes (2 parties, the dealer, the outside owner) forked from this one, so the
runs are shared through module-scoped fixtures to keep the file fast.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from course_lib.models import MLP
from course_lib.randomness import InsecureSeededRandom
from course_lib.smpc import Session, encrypted_predict
from course_lib.smpc.distributed import (
    DistributedSession,
    encrypted_inference_program,
    run_parties,
)

SEED = 7
X = torch.tensor([[1.5, -2.0, 3.25], [0.5, 4.0, -1.0]])
Y = torch.tensor([[4.0, 0.25, -1.0], [2.0, -0.5, 3.0]])
W = torch.tensor([[0.5, -1.0], [2.0, 0.25], [-0.75, 1.5]])


def protocol(session: Session) -> dict[str, torch.Tensor]:
    """The same code in-process and in every process: inputs from an outside owner and from
    party 1, a product, a matmul, ReLU, a comparison; outputs to everyone, party 0, outside."""
    x = session.share(X)
    y = session.share(Y, owner=1)
    w = session.share(W, owner="patient")
    product = x * y
    hidden = (product @ w).relu()
    less = x < y
    return {
        "x_shares": x.shares,
        "hidden_shares": hidden.shares,
        "all": hidden.reveal(),
        "party0": product.reveal(to=0),
        "patient": less.reveal(to="patient"),
    }


def in_process_reference() -> tuple[dict[str, torch.Tensor], Session]:
    session = Session(n_parties=2, rng=InsecureSeededRandom(SEED))
    return protocol(session), session


def distributed_protocol(session: DistributedSession) -> dict[str, torch.Tensor]:
    out = protocol(session)
    out["receives"] = {to: session.receives(to) for to in (None, 0, 1, "patient")}
    return out


@pytest.fixture(scope="module")
def seeded_runs():
    return run_parties(distributed_protocol, seed=SEED, timeout=60)


def test_results_equal_the_in_process_session_bit_for_bit(seeded_runs):
    expected, _ = in_process_reference()
    party0, party1, dealer, owner = seeded_runs
    assert [r.role for r in seeded_runs] == ["party 0", "party 1", "dealer", "outside owner"]
    for party in (party0, party1):
        # each party holds exactly the share the in-process session gives it
        for name in ("x_shares", "hidden_shares"):
            assert torch.equal(party.value[name][party.rank], expected[name][party.rank])
        assert torch.equal(party.value["all"], expected["all"])
    assert torch.equal(party0.value["party0"], expected["party0"])
    assert torch.equal(owner.value["patient"], expected["patient"])
    # and the values are right: relu((x*y) @ w) within fixed-point error, x < y exactly
    assert torch.allclose(expected["all"], torch.relu((X * Y).double() @ W.double()), atol=1e-3)
    assert torch.equal(expected["patient"], (X < Y).double())


def test_outputs_reach_only_their_receivers(seeded_runs):
    party0, party1, dealer, owner = seeded_runs
    zeros = torch.zeros(X.shape, dtype=torch.float64)
    assert torch.equal(party1.value["party0"], zeros)  # party 1 got nothing of party 0's output
    for run in (party0, party1, dealer):
        assert torch.equal(run.value["patient"], zeros)
    for run in (dealer, owner):
        assert torch.equal(run.value["all"], torch.zeros_like(run.value["all"]))
    assert party0.value["receives"] == {None: True, 0: True, 1: False, "patient": False}
    assert owner.value["receives"] == {None: False, 0: False, 1: False, "patient": True}


def test_each_process_holds_only_its_own_share(seeded_runs):
    """The attacker is any one process: what it holds and receives is not enough to unmask."""
    expected, _ = in_process_reference()
    party0, party1, dealer, owner = seeded_runs
    for party in (party0, party1):
        other = 1 - party.rank
        # the other party's share of the input never reached this process
        assert torch.equal(party.value["x_shares"][other], torch.zeros_like(X, dtype=torch.int64))
        assert not torch.equal(party.value["x_shares"][party.rank], expected["x_shares"].sum(0))
    for run in (dealer, owner):  # they run the program on placeholders: no share of the input
        assert not run.value["x_shares"].any()
    # the dealer, who could unmask every opened value with its triples, received nothing online
    assert dealer.wire.online_received == 0 and dealer.wire.offline_received == 0
    # the outside owner received exactly the one output revealed to it: 2 parties × 6 words
    assert owner.wire.online_received == 2 * X.numel() * 8


def test_wire_bytes_and_rounds_equal_the_cost_model(seeded_runs):
    _, reference = in_process_reference()
    model = reference.log.total
    for run in seeded_runs:  # every process keeps the same cost model as the in-process session
        assert run.log.total == model
        assert run.log.by_operation == reference.log.by_operation
        assert run.log.outputs == reference.log.outputs
    sent = sum(r.wire.online_sent for r in seeded_runs)
    received = sum(r.wire.online_received for r in seeded_runs)
    assert sent == received == model.bytes > 0
    offline = sum(r.wire.offline_sent for r in seeded_runs)
    assert offline == sum(r.wire.offline_received for r in seeded_runs) == model.offline_bytes > 0
    # party 0 takes part in every online round (opens, its inputs, its outputs)
    assert seeded_runs[0].wire.rounds == model.rounds


def secure_program(session: DistributedSession) -> torch.Tensor:
    return (session.share(X) * session.share(Y, owner=0)).reveal()


def test_secure_randomness_by_default_gives_correct_results():
    runs = run_parties(secure_program, timeout=60)
    for party in runs[:2]:
        assert torch.allclose(party.value, (X * Y).double(), atol=2**-15)
        assert repr(party.value) == repr(runs[0].value)


@pytest.fixture(scope="module")
def model_and_images():
    torch.manual_seed(0)
    model = MLP(784, (16,), 10).eval()
    images = torch.rand(4, 1, 28, 28)
    return model, images


def test_encrypted_mnist_inference_as_processes_equals_in_process(model_and_images):
    model, images = model_and_images
    session = Session(n_parties=2, rng=InsecureSeededRandom(SEED))
    expected = encrypted_predict(model, images, session, batch_size=len(images), to="patient")
    runs = run_parties(encrypted_inference_program, model, images, "patient", seed=SEED, timeout=90)
    assert [r.value for r in runs[:3]] == [None, None, None]  # only the patient learns them
    assert torch.equal(runs[3].value, expected)
    assert torch.equal(expected, model(images).argmax(dim=-1))
    assert sum(r.wire.online_sent for r in runs) == session.log.total.bytes
    assert sum(r.wire.offline_sent for r in runs) == session.log.total.offline_bytes


def record_pid_then(session: DistributedSession, folder: str, action: str) -> None:
    Path(folder, f"{session.rank}.pid").write_text(str(os.getpid()))
    torch.distributed.barrier()  # every process has written its PID
    if action == "fail" and session.rank == 1:
        raise ArithmeticError("party 1 gave up")
    if action == "hang" and session.rank == 0:
        time.sleep(3600)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0]
    except OSError:
        return "gone"


def test_no_process_is_left_behind(seeded_runs, tmp_path):
    for run in seeded_runs:  # a successful run
        assert not _alive(run.pid)
    # party 1 raises; whichever rank reports first (party 1 itself, or a peer whose connection to
    # it closed) fails the run, and every process is stopped either way
    with pytest.raises(RuntimeError, match=r"rank \d failed"):
        run_parties(record_pid_then, str(tmp_path), "fail", timeout=30)
    pids = [int(p.read_text()) for p in tmp_path.glob("*.pid")]
    assert len(pids) == 4 and not any(_alive(pid) for pid in pids)
    for p in tmp_path.glob("*.pid"):
        p.unlink()
    with pytest.raises(TimeoutError, match="did not finish within 12"):
        run_parties(record_pid_then, str(tmp_path), "hang", timeout=12)
    pids = [int(p.read_text()) for p in tmp_path.glob("*.pid")]
    assert len(pids) == 4 and not any(_alive(pid) for pid in pids)


def test_bad_arguments_are_refused_before_any_process_starts():
    with pytest.raises(ValueError, match="timeout"):
        run_parties(secure_program, timeout=0)
    with pytest.raises(ValueError, match="at least 2 parties"):
        run_parties(secure_program, n_parties=1)
    with pytest.raises(TypeError, match="seed"):
        run_parties(secure_program, seed=1.5)
    with pytest.raises(ValueError, match="start_method"):
        run_parties(secure_program, start_method="teleport")
    with pytest.raises(ValueError, match="run_parties"):
        DistributedSession(rank=0)  # no torch.distributed group in this process
    with pytest.raises(ValueError, match="rank"):
        DistributedSession(rank=9)
