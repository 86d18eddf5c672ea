"""The repository's Flower App (flower_app/) against the course's in-process FedAvg.

The slow tests start real OS processes on 127.0.0.1 (a SuperLink, SuperNodes, the ClientApp and
ServerApp processes Flower spawns) and check, after each, that none of them is left running.
"""

import os
import shutil
import signal
import time

import pytest
import torch

from course_lib.fl.deployment import LocalFederation, flower_processes
from course_lib.fl.dp_fedavg import run_dp_fedavg
from course_lib.fl.flower import (
    APP_DIR,
    AppConfig,
    load_result,
    make_model,
    node_partition,
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


def test_partitions_are_the_course_iid_split():
    config = AppConfig(train_samples=400)
    parts = [node_partition(config, i, 2) for i in range(2)]
    assert [len(p) for p in parts] == [200, 200]
    assert not set(map(int, parts[0].indices)) & set(map(int, parts[1].indices))
    with pytest.raises(ValueError, match="partition-id"):
        node_partition(config, 2, 2)


def test_bad_arguments_fail_before_any_process_starts():
    with pytest.raises(ValueError, match="runtime"):
        run_flower_app("cluster")
    with pytest.raises(ValueError, match="num_nodes"):
        run_flower_app("deployment", num_nodes=0)
    with pytest.raises(ValueError, match="mode"):
        run_flower_app("deployment", mode="homomorphic")
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
