"""SMPC parties as separate processes over torch.distributed (gloo on 127.0.0.1).

Every run starts 4 processes (2 parties, the dealer, the outside owner) forked from this one, so the
runs are shared through module-scoped fixtures to keep the file fast.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from course_lib.models import MLP
from course_lib.randomness import InsecureSeededRandom
from course_lib.smpc import Session, encrypted_predict, launcher
from course_lib.smpc.distributed import (
    DistributedSession,
    connect,
    encrypted_inference_program,
    free_port,
    interface_towards,
    rendezvous_settings,
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
    for run in seeded_runs:  # each exchange's record adds up to the totals
        wire = run.wire
        assert len(wire.exchanges) == wire.rounds
        assert sum(moved for moved, _ in wire.exchanges) == wire.online_sent + wire.online_received
        assert sum(s for _, s in wire.exchanges) == pytest.approx(wire.exchange_seconds)
        assert all(s >= 0 for _, s in wire.exchanges)


def secure_program(session: DistributedSession) -> torch.Tensor:
    return (session.share(X) * session.share(Y, owner=0)).reveal()


def test_secure_randomness_by_default_gives_correct_results():
    runs = run_parties(secure_program, timeout=60)
    for party in runs[:2]:
        assert torch.allclose(party.value, (X * Y).double(), atol=2**-15)
        assert repr(party.value) == repr(runs[0].value)


def numpy_owner_program(session: DistributedSession) -> torch.Tensor:
    return (session.share(X) * session.share(Y, owner=np.int64(0))).reveal()


def test_a_numpy_integer_owner_is_that_party_not_the_outside_owner():
    """Session accepts NumPy integers as party indices; the processes must agree on who sends."""
    runs = run_parties(numpy_owner_program, timeout=60)
    assert torch.allclose(runs[0].value, (X * Y).double(), atol=2**-15)
    # X comes from the outside owner (2 shares), Y from party 0 (1 share to party 1)
    assert runs[3].wire.online_sent == 2 * X.numel() * 8
    assert runs[0].log.total.bytes == sum(r.wire.online_sent for r in runs)


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
    """Write this process's PID, then play ``action``. The party that acts first waits until all
    4 PIDs are written (through the file system: a program talks only through its session, and
    with the bulk offline phase the parties start only once the dealer's run is over)."""
    Path(folder, f"{session.rank}.pid").write_text(str(os.getpid()))
    acting = {"fail": 1, "crash": 1, "hang": 0}.get(action)
    deadline = time.monotonic() + 30
    while session.rank == acting and len(list(Path(folder).glob("*.pid"))) < 4:
        assert time.monotonic() < deadline, "the other processes did not start"
        time.sleep(0.05)
    if action == "fail" and session.rank == 1:
        raise ArithmeticError("party 1 gave up")
    if action == "crash" and session.rank == 1:
        os._exit(3)  # dies without a word: no exception, no report
    if action == "dealer fails" and session.rank == session.dealer_rank:
        raise LookupError("the dealer ran out of triples")
    if action == "hang" and session.rank == 0:
        time.sleep(3600)
    session.open(torch.zeros(2, 3, dtype=torch.int64))  # the parties talk once


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


def _pids(folder: Path) -> list[int]:
    pids = [int(p.read_text()) for p in folder.glob("*.pid")]
    for p in folder.glob("*.pid"):
        p.unlink()
    return pids


def test_no_process_is_left_behind(seeded_runs, tmp_path):
    for run in seeded_runs:  # a successful run
        assert not _alive(run.pid)
    with pytest.raises(RuntimeError, match=r"rank 1 \(party 1\) failed first"):
        run_parties(record_pid_then, str(tmp_path), "fail", timeout=30)
    pids = _pids(tmp_path)
    assert len(pids) == 4 and not any(_alive(pid) for pid in pids)
    with pytest.raises(TimeoutError, match="did not finish within 12"):
        run_parties(record_pid_then, str(tmp_path), "hang", timeout=12)
    pids = _pids(tmp_path)
    assert len(pids) == 4 and not any(_alive(pid) for pid in pids)


@pytest.mark.parametrize("preprocessing", ["bulk", "streamed"])
def test_the_first_failure_is_reported_with_its_own_traceback_every_time(tmp_path, preprocessing):
    """#23 §4: party 1 raises; its peers then fail on closed connections. Whichever report reaches
    the launcher first, the error names party 1 and carries its own traceback — every time."""
    for attempt in range(4):
        with pytest.raises(RuntimeError) as caught:
            run_parties(
                record_pid_then, str(tmp_path), "fail", timeout=30, preprocessing=preprocessing
            )
        message = str(caught.value)
        head, _, consequences = message.partition("then, as a consequence:")
        assert head.startswith("rank 1 (party 1) failed first:\n"), (attempt, message)
        assert "ArithmeticError: party 1 gave up" in head
        assert 'raise ArithmeticError("party 1 gave up")' in head  # its own traceback
        assert "rank 1 " not in consequences  # the others follow, one line each
        _pids(tmp_path)


def test_a_failing_dealer_and_a_crashing_party_are_named(tmp_path):
    with pytest.raises(RuntimeError) as caught:  # bulk: the parties wait for its material
        run_parties(record_pid_then, str(tmp_path), "dealer fails", timeout=30)
    assert str(caught.value).startswith("rank 2 (dealer) failed first:\n")
    assert "LookupError: the dealer ran out of triples" in str(caught.value)
    _pids(tmp_path)
    with pytest.raises(RuntimeError, match=r"^rank 1 ended without a result \(exit code 3\)"):
        run_parties(record_pid_then, str(tmp_path), "crash", timeout=30)
    assert not any(_alive(pid) for pid in _pids(tmp_path))


LAUNCHER_KILLED = """
import sys
from course_lib.smpc.distributed import run_parties
from tests.smpc.test_distributed import record_pid_then
run_parties(record_pid_then, sys.argv[1], "hang", timeout=120)
"""


def test_sigterm_to_the_launcher_stops_every_process(tmp_path):
    """`kill` / `timeout` on a program inside run_parties: the 4 processes are stopped, not left
    to time out on their own, and the launcher exits with 143 (128 + SIGTERM)."""
    launcher_process = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER_KILLED, str(tmp_path)],
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "COURSE_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("*.pid"))) < 4:  # every process is running the program
        assert launcher_process.poll() is None, launcher_process.communicate()[1]
        assert time.monotonic() < deadline, "the processes did not start"
        time.sleep(0.1)
    pids = _pids(tmp_path)
    assert all(_alive(pid) for pid in pids)
    start = time.monotonic()
    launcher_process.send_signal(signal.SIGTERM)
    assert launcher_process.wait(30) == 143
    assert time.monotonic() - start < 10  # stopped at once, not after their 120 s timeout
    assert not any(_alive(pid) for pid in pids)


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


# -- the offline phase --------------------------------------------------------------------------
def material_program(session: DistributedSession) -> dict[str, object]:
    """The protocol, noting how much dealer material this process had when its program started."""
    before = session.transport.count.offline_received
    out = protocol(session)
    out["material_before"] = before
    out["material_after"] = session.transport.count.offline_received
    return out


@pytest.fixture(scope="module")
def streamed_and_bulk():
    return {
        mode: run_parties(material_program, seed=SEED, timeout=60, preprocessing=mode)
        for mode in ("streamed", "bulk")
    }


def test_bulk_preprocessing_delivers_everything_before_the_online_phase(streamed_and_bulk):
    _, reference = in_process_reference()
    offline = reference.log.total.offline_bytes
    bulk, streamed = streamed_and_bulk["bulk"], streamed_and_bulk["streamed"]
    for party in bulk[:2]:
        # all of its material had arrived, in one message after one 8-byte length, before the
        # program's first step; the online phase received none
        assert party.value["material_before"] == party.value["material_after"] == offline // 2
        assert party.wire.header_received == 8
    assert bulk[2].wire.header_sent == 16 and bulk[2].wire.offline_sent == offline
    for party in streamed[:2]:  # streamed: the material arrives during the program
        assert party.value["material_before"] == 0
        assert party.value["material_after"] == offline // 2
        assert party.wire.header_received == 0


def test_bulk_and_streamed_give_the_same_results_and_online_bytes(streamed_and_bulk):
    bulk, streamed = streamed_and_bulk["bulk"], streamed_and_bulk["streamed"]
    for a, b in zip(bulk, streamed, strict=True):
        for name in ("x_shares", "hidden_shares", "all", "party0", "patient"):
            assert torch.equal(a.value[name], b.value[name])
        assert (a.wire.online_sent, a.wire.rounds) == (b.wire.online_sent, b.wire.rounds)


def uneven_program(session: DistributedSession) -> None:
    """Not data-oblivious: the dealer's process takes an extra multiplication."""
    x = session.share(X)
    if session.rank == session.dealer_rank:
        x = x * x
    (x * x).reveal()


def test_a_program_that_differs_between_processes_is_caught():
    with pytest.raises(RuntimeError, match="did not run the same program"):
        run_parties(uneven_program, timeout=30)


# -- connect(): settings, interface, errors -----------------------------------------------------
def test_rendezvous_settings_come_from_arguments_or_torchrun_environment(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="set RANK"):
        rendezvous_settings(None, 2, "127.0.0.1", 29500)
    with pytest.raises(ValueError, match="MASTER_ADDR"):
        rendezvous_settings(0, 2, None, 29500)
    with pytest.raises(ValueError, match="MASTER_PORT"):
        rendezvous_settings(0, 2, "127.0.0.1", None)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("MASTER_ADDR", "localhost")
    monkeypatch.setenv("MASTER_PORT", "29611")
    assert rendezvous_settings(None, 2, None, None) == (3, 4, "localhost", 29611)
    assert rendezvous_settings(1, 2, "127.0.0.2", 1234) == (1, 4, "127.0.0.2", 1234)
    monkeypatch.setenv("WORLD_SIZE", "5")
    with pytest.raises(ValueError, match="WORLD_SIZE is 5 but 2 parties need 4"):
        rendezvous_settings(None, 2, None, None)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "four")
    with pytest.raises(ValueError, match="RANK must be an integer"):
        rendezvous_settings(None, 2, None, None)
    with pytest.raises(ValueError, match="rank must be an int from 0 to 3"):
        rendezvous_settings(4, 2, None, None)
    with pytest.raises(ValueError, match="port must be an int from 1 to 65535"):
        rendezvous_settings(0, 2, "127.0.0.1", 70000)
    with pytest.raises(ValueError, match="cannot resolve the master address"):
        rendezvous_settings(0, 2, "no-such-host.invalid", 29500)


def test_the_interface_is_loopback_only_for_a_loopback_master():
    assert interface_towards("127.0.0.1") == interface_towards("localhost") == "lo"
    # any other address: the interface holding the source address the kernel picks for it
    # (tests/smpc/test_across_hosts.py checks eth0 inside emulated hosts)
    with pytest.raises(ValueError, match="cannot resolve"):
        interface_towards("no-such-host.invalid")


def test_connect_refuses_bad_arguments_before_opening_anything(monkeypatch):
    monkeypatch.delenv("GLOO_SOCKET_IFNAME", raising=False)
    bad = [
        ({"rank": 0, "port": 0}, ValueError, "port"),
        ({"rank": 0, "preprocessing": "later"}, ValueError, "preprocessing"),
        ({"rank": 0, "timeout": 0}, ValueError, "timeout"),
        ({"rank": 0, "seed": 1.5}, TypeError, "seed"),
        ({"rank": 0, "precision_bits": 0}, ValueError, "precision"),
    ]
    for kwargs, error, match in bad:
        settings = {"address": "127.0.0.1", "port": 29500, **kwargs}
        with pytest.raises(error, match=match), connect(**settings):
            pass
    assert not torch.distributed.is_initialized()


def test_nobody_listening_is_a_clear_error_within_the_timeout(monkeypatch):
    monkeypatch.delenv("GLOO_SOCKET_IFNAME", raising=False)
    port = free_port()
    with pytest.raises(ConnectionError) as caught, connect(1, address="127.0.0.1", port=port,
                                                           timeout=2):  # fmt: skip
        pass
    assert str(caught.value).startswith(f"rank 1 of 4 (rendezvous tcp://127.0.0.1:{port}")
    assert "interface lo, 127.0.0.1" in str(caught.value)
    assert "GLOO_SOCKET_IFNAME" not in os.environ  # set for the attempt only
    assert not torch.distributed.is_initialized()


# -- the command line ---------------------------------------------------------------------------
def test_the_command_line_refuses_bad_input_before_connecting(tmp_path, capsys, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    master = ["--master", "127.0.0.1:1"]  # nobody listens there: reaching it would fail with 1
    cases = [
        (["--role", "party7", *master], "--role must be party0"),
        (["--role", "owner", *master], "the owner needs --weights"),
        (["--role", "party0"], "MASTER_ADDR"),
        (["--role", "party0", "--master", "127.0.0.1"], "HOST:PORT"),
        (["--role", "party0", *master, "--layers", "784"], "--layers needs"),
        (["--role", "owner", *master, "--weights", str(tmp_path / "no.pt")], "no.pt"),
        (
            [
                "--role",
                "owner",
                *master,
                "--program",
                "lookup",
                "--rows",
                "3",
                "--table",
                str(tmp_path / "t.csv"),
                "--query",
                "5",
            ],
            "3 rows",
        ),  # fmt: skip
    ]
    (tmp_path / "t.csv").write_text("1,2\n3,4\n")
    torch.save(MLP(784, (4,), 10).state_dict(), tmp_path / "w.pt")
    cases.append(
        (["--role", "owner", *master, "--weights", str(tmp_path / "w.pt")], "do not fit --layers")
    )
    for argv, message in cases:
        assert launcher.main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv
    assert not torch.distributed.is_initialized()


# -- one rule for integers and numbers (course_lib.validation): NumPy integers are integers, bools
# are not numbers; every refusal comes before a process starts or a socket opens.

BOOLS = [True, np.bool_(True)]


@pytest.mark.parametrize("flag", BOOLS)
@pytest.mark.parametrize("name", ["timeout", "seed", "threads"])
def test_run_parties_refuses_bools_before_any_process_starts(flag, name):
    started = []
    with pytest.raises(TypeError, match=name):
        run_parties(lambda session: started.append(session), **{name: flag})
    assert started == [] and not torch.distributed.is_initialized()


@pytest.mark.parametrize("flag", BOOLS)
def test_a_bool_rank_or_port_is_refused(monkeypatch, flag):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(TypeError, match="rank"):
        rendezvous_settings(flag, 2, "127.0.0.1", 29500)  # True would silently be rank 1
    with pytest.raises(TypeError, match="port"):
        rendezvous_settings(0, 2, "127.0.0.1", flag)
    with pytest.raises(TypeError, match="rank"):
        DistributedSession(rank=flag)


def test_rendezvous_settings_take_numpy_integers_as_python_ints(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    settings = rendezvous_settings(np.int64(3), np.int32(2), "127.0.0.1", np.int64(29500))
    assert settings == (3, 4, "127.0.0.1", 29500)
    assert all(type(value) is int for value in (settings[0], settings[1], settings[3]))
    with pytest.raises(ValueError, match="rank must be an int from 0 to 3"):
        rendezvous_settings(np.int64(4), 2, "127.0.0.1", 29500)


@pytest.mark.parametrize("flag", BOOLS)
@pytest.mark.parametrize("name", ["rank", "port", "timeout", "seed"])
def test_connect_refuses_bools_before_opening_anything(monkeypatch, flag, name):
    monkeypatch.delenv("GLOO_SOCKET_IFNAME", raising=False)
    settings = {"rank": 0, "address": "127.0.0.1", "port": 29500, name: flag}
    with pytest.raises(TypeError, match=name), connect(**settings):
        pass
    assert not torch.distributed.is_initialized()


def test_run_parties_takes_numpy_numbers():
    runs = run_parties(
        secure_program, seed=np.int64(SEED), timeout=np.float32(60), threads=np.int64(1)
    )
    # np.int64(SEED) seeds every process exactly as SEED does: bit for bit the in-process result
    expected = secure_program(Session(n_parties=2, rng=InsecureSeededRandom(SEED)))
    for party in runs[:2]:
        assert torch.equal(party.value, expected)
