"""The repository's Flower App (flower_app/) against the course's in-process FedAvg.

The slow tests start real OS processes on 127.0.0.1 (a SuperLink, SuperNodes, the ClientApp and
ServerApp processes Flower spawns) and check, after each, that none of them is left running.
"""

import math
import os
import re
import shutil
import signal
import time

import pytest
import torch

from course_lib.fl.deployment import LocalFederation, flower_processes
from course_lib.fl.dp_fedavg import dp_fedavg_epsilon, run_dp_fedavg
from course_lib.fl.flower import (
    APP_DIR,
    AppConfig,
    load_result,
    make_model,
    node_partition,
    reference_dp_fedavg,
    reference_fedavg,
    run_flower_app,
    server_test_set,
)
from course_lib.randomness import InsecureSeededRandom

ROUNDS = 1  # every round starts a fresh ClientApp process per node: keep CI short


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _assert_close_states(ours, theirs, atol):
    assert set(ours) == set(theirs)
    for name, tensor in theirs.items():
        torch.testing.assert_close(ours[name], tensor, atol=atol, rtol=0)


# -- fast: validation before any process starts ---------------------------------------------


def test_app_config_matches_pyproject_and_refuses_bad_values():
    import tomllib

    pyproject = tomllib.loads((APP_DIR / "pyproject.toml").read_text())
    run_config = pyproject["tool"]["flwr"]["app"]["config"]
    assert AppConfig.from_run_config(run_config) == AppConfig()  # same keys, same defaults
    assert pyproject["tool"]["flwr"]["app"]["components"] == {
        "serverapp": "privateai_fedavg.server_app:app",
        "clientapp": "privateai_fedavg.client_app:app",
    }
    with pytest.raises(ValueError, match="mode"):
        AppConfig(mode="secagg")
    with pytest.raises(ValueError, match="unknown run-config keys"):
        AppConfig.from_run_config({"num-rounds": 3})
    with pytest.raises(ValueError, match="num_server_rounds"):
        AppConfig(num_server_rounds=0)
    with pytest.raises(ValueError, match="num_nodes >= 3"):
        AppConfig(mode="secagg+", num_nodes=2)
    with pytest.raises(ValueError, match="num_nodes >= 3"):
        AppConfig(mode="secagg+dp", num_nodes=2)
    # DP noise σ·C/K bounds one client only if each enters the average with weight 1/K
    for mode in ("dp-fixed-clipping", "secagg+dp"):
        with pytest.raises(ValueError, match="equal partitions"):
            AppConfig(mode=mode, num_nodes=3, train_samples=1000)
        with pytest.raises(ValueError, match="equal partitions"):
            AppConfig(mode=mode, num_nodes=4, partitioning="dirichlet")
        assert AppConfig(mode=mode, num_nodes=4, train_samples=1000).mode == mode
    with pytest.raises(ValueError, match="hidden_units"):
        AppConfig(hidden_units=0)


def test_the_model_has_the_configured_width():
    assert make_model().state_dict()["net.1.weight"].shape == (128, 784)  # lesson 10's MLP
    narrow = make_model(AppConfig(hidden_units=32)).state_dict()
    assert [tuple(t.shape) for t in narrow.values()] == [(32, 784), (32,), (10, 32), (10,)]


def test_course_dp_fedavg_with_every_client_is_fedavg_without_clipping_or_noise():
    """reference_dp_fedavg (q = 1) with a clipping norm no update reaches and no noise is the
    course FedAvg on the same equal partitions, and its ε is the accountant's for q = 1."""
    config = AppConfig(num_server_rounds=2, num_nodes=3, train_samples=600, hidden_units=16)
    plain = reference_fedavg(config, 3)
    unclipped = reference_dp_fedavg(
        AppConfig(**{**config.__dict__, "mode": "dp-fixed-clipping", "clipping_norm": 1e6}),
        3, delta=1e-3, rng=InsecureSeededRandom(0),
    )  # fmt: skip
    _assert_close_states(unclipped.model.state_dict(), plain.model.state_dict(), atol=1e-6)
    noisy = AppConfig(**{**config.__dict__, "noise_multiplier": 2.0, "clipping_norm": 0.5})
    history = reference_dp_fedavg(noisy, 3, delta=1e-3, rng=InsecureSeededRandom(1))
    assert history.participants == [3, 3]  # q = 1: every client, every round
    assert history.epsilon[-1] == dp_fedavg_epsilon(2.0, 1.0, 2, 1e-3)


def test_partitions_are_the_course_iid_split():
    config = AppConfig(train_samples=400)
    parts = [node_partition(config, i, 2) for i in range(2)]
    assert [len(p) for p in parts] == [200, 200]
    assert not set(map(int, parts[0].indices)) & set(map(int, parts[1].indices))
    with pytest.raises(ValueError, match="partition-id"):
        node_partition(config, 2, 2)
    dp_config = AppConfig(train_samples=400, mode="secagg+dp", num_nodes=4)
    assert [len(node_partition(dp_config, i, 4)) for i in range(4)] == [100] * 4
    with pytest.raises(ValueError, match="equal partitions, got sizes"):  # 400 images in 3 parts
        node_partition(dp_config, 0, 3)


def test_bad_arguments_fail_before_any_process_starts():
    with pytest.raises(ValueError, match="runtime"):
        run_flower_app("cluster")
    with pytest.raises(ValueError, match="num_nodes"):
        run_flower_app("deployment", num_nodes=0)
    with pytest.raises(ValueError, match="mode"):
        run_flower_app("deployment", mode="homomorphic")
    with pytest.raises(ValueError, match="num_nodes >= 3"):  # checked with the nodes it gets
        run_flower_app("simulation", num_nodes=2, mode="secagg+dp")
    with pytest.raises(ValueError, match="at least one SuperNode"):
        LocalFederation(0)


# -- slow: real processes --------------------------------------------------------------------


def test_a_failure_inside_the_federation_still_stops_every_process():
    with (
        pytest.raises(RuntimeError, match="the cell failed"),
        LocalFederation(2, echo=None) as federation,
    ):
        home, pids = federation.flwr_home, federation.pids
        assert len(pids) == 3 and all(_alive(pid) for pid in pids)
        time.sleep(3)  # let the SuperNodes start their own SuperExec children
        assert len(flower_processes(home)) >= 3
        raise RuntimeError("the cell failed")
    assert flower_processes(home) == []
    assert not any(_alive(pid) for pid in pids)
    assert not home.exists()


def test_deployment_engine_matches_course_fedavg_fedavg_dp_and_secaggplus(tmp_path):
    """One SuperLink + 3 SuperNodes (SecAgg+ needs 3), three runs of the app: plain FedAvg, DP
    fixed clipping (no noise: clipping only, so the result is deterministic) and SecAgg+.
    3,000 images: 1,000 per node, so FedAvg's weights are the DP-FedAvg's equal weights."""
    common = dict(num_server_rounds=ROUNDS, num_nodes=3, train_samples=3000)
    config = AppConfig(**common)
    reference = reference_fedavg(config, 3)
    dp_config = AppConfig(**common, mode="dp-fixed-clipping", clipping_norm=0.5)
    secagg_config = AppConfig(**common, mode="secagg+")

    with LocalFederation(3, echo=None) as federation:
        home, pids = federation.flwr_home, federation.pids
        results = {}
        for cfg in (config, dp_config, secagg_config):
            out = tmp_path / cfg.mode
            federation.run(APP_DIR, {**cfg.to_run_config(), "result-dir": str(out)}, timeout=900)
            results[cfg.mode] = load_result(out)
    assert flower_processes(home) == []
    assert not any(_alive(pid) for pid in pids)

    # 1. plain FedAvg: Flower averages the same local models in float32
    plain = results["fedavg"]
    _assert_close_states(plain.state, reference.model.state_dict(), atol=1e-6)
    assert plain.test_acc == reference.test_acc
    assert len(plain.round_seconds) == ROUNDS and all(s > 0 for s in plain.round_seconds)

    # 2. Flower's server-side fixed clipping = the course's DP-FedAvg with q = 1, sigma = 0
    parts = [node_partition(config, i, 3) for i in range(3)]
    course_dp = run_dp_fedavg(
        make_model, parts, server_test_set(config), rounds=ROUNDS, sample_rate=1.0,
        noise_multiplier=0.0, clip_norm=0.5, delta=1e-3, lr=config.lr,
        batch_size=config.batch_size, seed=config.seed, rng=InsecureSeededRandom(0),
        progress=False,
    )  # fmt: skip
    _assert_close_states(results["dp-fixed-clipping"].state, course_dp.model.state_dict(), 1e-6)
    # clipping really happened: the clipped run differs from plain FedAvg
    assert any(
        not torch.allclose(results["dp-fixed-clipping"].state[k], plain.state[k], atol=1e-4)
        for k in plain.state
    )

    # 3. SecAgg+ sums quantised models: plain FedAvg up to the quantisation step per client
    step = 2 * secagg_config.secagg_clipping_range / (secagg_config.secagg_quantization_range - 1)
    _assert_close_states(results["secagg+"].state, plain.state, atol=3 * step + 1e-6)


def test_simulation_runtime_matches_course_fedavg():
    config = AppConfig(num_server_rounds=ROUNDS)
    reference = reference_fedavg(config, 2)
    result = run_flower_app("simulation", num_nodes=2, num_server_rounds=ROUNDS, echo=None)
    _assert_close_states(result.state, reference.model.state_dict(), atol=1e-6)
    assert result.test_acc == reference.test_acc


def test_a_killed_parent_takes_its_federation_with_it(tmp_path):
    """A Jupyter kernel killed mid-run cannot run `finally`: the kernel asks Linux to stop its
    Flower children (PR_SET_PDEATHSIG) instead."""
    import subprocess
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux-only")
    script = (
        "import sys, time\n"
        "from course_lib.fl.deployment import LocalFederation\n"
        "fed = LocalFederation(1, echo=None).__enter__()\n"
        "print(fed.flwr_home, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    home = parent.stdout.readline().strip()
    try:
        assert len(flower_processes(home)) >= 2
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 30
    while flower_processes(home) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = flower_processes(home)
    for pid, _ in left:  # do not leave them to the next test, even when this one fails
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(home, ignore_errors=True)  # the killed parent could not remove its FLWR_HOME
    assert left == []


# -- Flower's SecAgg+ with Flower's DP (client-side fixed clipping): one Deployment Engine run ---

SECAGG_DP = AppConfig(
    num_server_rounds=1, num_nodes=3, train_samples=1500, hidden_units=32,
    mode="secagg+dp", clipping_norm=0.1, noise_multiplier=0.012,
)  # fmt: skip


@pytest.fixture(scope="module")
def secagg_dp_run(tmp_path_factory):
    """One round of the app's ``secagg+dp`` mode on the Deployment Engine (3 SuperNodes; no Ray,
    whose start-up a busy machine can miss), with the run's log."""
    log: list[str] = []
    out = tmp_path_factory.mktemp("secagg-dp")
    with LocalFederation(3, echo=log.append) as federation:
        home = federation.flwr_home
        federation.run(APP_DIR, {**SECAGG_DP.to_run_config(), "result-dir": str(out)}, timeout=900)
    assert flower_processes(home) == []
    return load_result(out), log


def test_flower_secaggplus_with_client_side_clipping_adds_the_course_dp_noise(secagg_dp_run):
    """After one round, Flower's model minus the course's noise-free DP-FedAvg model (same
    clipping, same partitions, σ = 0) is the noise Flower added: zero-mean Gaussian of std
    σ·C/K per weight — the DP-FedAvg mechanism the course accountant assumes (q = 1). Had the
    clients not clipped, the difference would hold the clipping's effect, far larger than that."""
    result, log = secagg_dp_run
    expected_std = SECAGG_DP.noise_multiplier * SECAGG_DP.clipping_norm / SECAGG_DP.num_nodes
    logged = [
        float(m) for m in re.findall(r"central DP noise with ([0-9.]+) stdev added", "".join(log))
    ]
    assert logged == [pytest.approx(expected_std, abs=5e-5)]  # logged to 4 decimals, once

    clip_only = reference_dp_fedavg(
        AppConfig(**{**SECAGG_DP.__dict__, "noise_multiplier": 0.0}), 3, delta=1e-3,
        rng=InsecureSeededRandom(0),
    )  # fmt: skip
    assert clip_only.clipped_fraction == [1.0]  # every update was clipped: clipping matters here
    noise = torch.cat(
        [(result.state[k] - v).flatten().double() for k, v in clip_only.model.state_dict().items()]
    )
    n = noise.numel()
    assert noise.std().item() == pytest.approx(expected_std, rel=0.03)  # ±7 standard errors
    assert abs(noise.mean().item()) < 5 * expected_std / math.sqrt(n)
    # Gaussian, not e.g. uniform: the share beyond 2 std is 4.55 % (binomial sd 0.13 %)
    assert (noise.abs() > 2 * expected_std).double().mean().item() == pytest.approx(
        0.0455, abs=0.006
    )
    # without clipping the difference would carry this too (rms per weight), inflating its std
    unclipped = reference_fedavg(SECAGG_DP, 3).model.state_dict()
    clipping_effect = torch.cat(
        [(unclipped[k] - v).flatten().double() for k, v in clip_only.model.state_dict().items()]
    )
    assert clipping_effect.pow(2).mean().sqrt().item() > expected_std
    assert result.mode == "secagg+dp" and len(result.test_acc) == 1
