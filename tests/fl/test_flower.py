"""The repository's Flower App (flower_app/) against the course's in-process FedAvg.

The slow tests start real OS processes on 127.0.0.1 (a SuperLink, SuperNodes, the ClientApp and
ServerApp processes Flower spawns) and check, after each, that none of them is left running.
Every Deployment Engine run of the app shares one federation (the module fixture
``deployment``), and each distinct configuration runs once; tests that only read a run's result
share it. The app's rules for failing nodes are tested in process in ``test_flower_guards.py``;
the runs here check them end to end.
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
from course_lib.fl.dp_fedavg import dp_aggregate, dp_fedavg_epsilon, run_dp_fedavg
from course_lib.fl.fedavg import local_train
from course_lib.fl.flower import (
    APP_DIR,
    AppConfig,
    FlowerResult,
    RoundClock,
    initial_state,
    load_result,
    make_model,
    node_partition,
    reference_dp_fedavg,
    reference_fedavg,
    run_flower_app,
    server_test_set,
)
from course_lib.fl.seeding import client_round_seed
from course_lib.randomness import InsecureSeededRandom
from course_lib.training import make_loader

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


BAD_CONFIGS = [
    # (override, error, the key the message must name)
    (dict(secagg_clipping_range=-8.0), ValueError, "secagg-clipping-range"),
    (dict(secagg_clipping_range=0.0), ValueError, "secagg-clipping-range"),
    (dict(secagg_clipping_range=math.inf), ValueError, "secagg-clipping-range"),
    (dict(secagg_quantization_range=0), ValueError, "secagg-quantization-range"),
    (dict(secagg_quantization_range=2.0**22), TypeError, "secagg-quantization-range"),
    (dict(secagg_quantization_range=2**31, num_nodes=3), ValueError, "secagg-quantization-range"),
    (dict(num_nodes=0), ValueError, "num-nodes"),
    (dict(num_nodes=2.0), TypeError, "num-nodes"),
    (dict(num_server_rounds=-1), ValueError, "num-server-rounds"),
    (dict(num_server_rounds=True), TypeError, "num-server-rounds"),
    (dict(local_epochs=0), ValueError, "local-epochs"),
    (dict(batch_size=0), ValueError, "batch-size"),
    (dict(train_samples=0), ValueError, "train-samples"),
    (dict(train_samples=2, num_nodes=3), ValueError, "train-samples"),
    (dict(test_samples=-5), ValueError, "test-samples"),
    (dict(seed=-1), ValueError, "'seed'"),
    (dict(data_seed=1.5), TypeError, "data-seed"),
    (dict(lr=0.0), ValueError, "'lr'"),
    (dict(lr=math.nan), ValueError, "'lr'"),
    (dict(lr=True), TypeError, "'lr'"),
    (dict(alpha=-0.1), ValueError, "alpha"),
    (dict(noise_multiplier=math.nan), ValueError, "noise-multiplier"),
    (dict(noise_multiplier=-1.0), ValueError, "noise-multiplier"),
    (dict(noise_multiplier=math.inf), ValueError, "noise-multiplier"),
    (dict(clipping_norm=0.0), ValueError, "clipping-norm"),
    (dict(clipping_norm=-1.0), ValueError, "clipping-norm"),
    (dict(clipping_norm=math.inf), ValueError, "clipping-norm"),
    (dict(delta=0.0), ValueError, "delta"),
    (dict(delta=1.0), ValueError, "delta"),
    (dict(partitioning="random"), ValueError, "partitioning"),
    (dict(mode=3), TypeError, "mode"),
    (dict(result_dir=None), TypeError, "result-dir"),
    (dict(fault="crash"), ValueError, "fault"),
    (dict(fault="nan", fault_partition=2), ValueError, "fault-partition"),
    (dict(fault="raise", fault_round=3), ValueError, "fault-round"),
    (dict(fault_round=0), ValueError, "fault-round"),
]


@pytest.mark.parametrize(("override", "error", "key"), BAD_CONFIGS)
def test_every_config_key_is_checked_before_any_process_starts(monkeypatch, override, error, key):
    """Each bad value is refused by AppConfig, naming its run-config key, and by the two ways
    to start a run before any Flower process exists."""
    with pytest.raises(error, match=key):
        AppConfig(**override)

    def no_processes(*args, **kwargs):
        raise AssertionError("a Flower process was started")

    monkeypatch.setattr(LocalFederation, "__enter__", no_processes)
    monkeypatch.setattr(LocalFederation, "_start", no_processes)
    arguments = dict(override)
    num_nodes = arguments.pop("num_nodes", 2)
    with pytest.raises(error, match=key):
        run_flower_app("deployment", num_nodes=num_nodes, **arguments)
    federation = LocalFederation(2, echo=None)
    federation.flwr_home = "/nonexistent"  # as if started: run() must refuse before `flwr run`
    with pytest.raises(error, match=key):
        federation.run(APP_DIR, {k.replace("_", "-"): v for k, v in override.items()})


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


def test_a_federation_s_processes_share_the_data_through_its_cache(monkeypatch, tmp_path):
    """With the cache variable set (LocalFederation sets it for its processes) the first load
    saves the split and a later process reads the file instead: the same images and labels. The
    file is written only when the variable is set."""
    from course_lib.data import load_mnist
    from course_lib.fl import flower

    config = AppConfig(train_samples=600, test_samples=200, data_seed=3)
    expected = load_mnist(train=True, max_samples=600, seed=3)
    monkeypatch.delenv(flower.DATA_CACHE_ENV, raising=False)
    flower._mnist.cache_clear()
    assert len(node_partition(config, 0, 2)) == 300 and list(tmp_path.iterdir()) == []
    monkeypatch.setenv(flower.DATA_CACHE_ENV, str(tmp_path))
    flower._mnist.cache_clear()
    RoundClock(config)  # the ServerApp: the test split, and the nodes' split before they ask
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "mnist-test-200-3.pt",
        "mnist-train-600-3.pt",
    ]
    flower._mnist.cache_clear()  # a fresh ClientApp process
    monkeypatch.setattr(flower, "load_mnist", lambda **_: pytest.fail("the cache was not used"))
    cached = flower._train_data(config)
    assert torch.equal(cached.images, expected.images) and torch.equal(
        cached.labels, expected.labels
    )
    assert (cached.name, cached.source, cached.classes) == (
        expected.name, expected.source, expected.classes
    )  # fmt: skip
    flower._mnist.cache_clear()


def test_the_caller_fills_a_federation_s_data_cache_and_its_processes_read_it(
    monkeypatch, tmp_path
):
    """``fill_data_cache`` saves both splits as the calling process loads them (nothing else is
    left in the folder); a split already saved is kept; the ServerApp and a ClientApp then read
    the same images and labels without loading MNIST. Bad input is refused before any write."""
    from course_lib.data import load_mnist
    from course_lib.fl import flower

    config = AppConfig(train_samples=600, test_samples=200, data_seed=3)
    monkeypatch.delenv(flower.DATA_CACHE_ENV, raising=False)
    flower._mnist.cache_clear()
    with pytest.raises(TypeError, match="AppConfig"):
        flower.fill_data_cache(tmp_path, config.to_run_config())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        flower.fill_data_cache(tmp_path / "missing", config)
    assert list(tmp_path.iterdir()) == []
    names = ["mnist-test-200-3.pt", "mnist-train-600-3.pt"]
    assert sorted(p.name for p in flower.fill_data_cache(tmp_path, config)) == names
    assert sorted(p.name for p in tmp_path.iterdir()) == names  # no partial file left
    assert flower.fill_data_cache(tmp_path, config) == []  # already there: kept
    monkeypatch.setenv(flower.DATA_CACHE_ENV, str(tmp_path))
    flower._mnist.cache_clear()  # a fresh Flower process
    monkeypatch.setattr(flower, "load_mnist", lambda **_: pytest.fail("the cache was not used"))
    RoundClock(config)  # the ServerApp: its test split, and the nodes' split
    for train, samples in ((True, 600), (False, 200)):
        expected = load_mnist(train=train, max_samples=samples, seed=3)
        cached = flower._mnist(train, samples, 3)
        assert torch.equal(cached.images, expected.images)
        assert torch.equal(cached.labels, expected.labels)
        assert (cached.name, cached.source, cached.classes) == (
            expected.name, expected.source, expected.classes
        )  # fmt: skip
    flower._mnist.cache_clear()


class _FinishedRun:
    """A ``flwr run`` that exited with status 0 (no process is started)."""

    pid = None

    def wait(self, timeout=None):
        return 0


def test_a_run_of_the_course_app_starts_with_its_data_cached(monkeypatch, tmp_path):
    """``LocalFederation.run`` fills the data cache for the course's app (checked config first),
    and leaves it alone for any other app."""
    from course_lib.fl import deployment, flower

    monkeypatch.delenv(flower.DATA_CACHE_ENV, raising=False)
    federation = LocalFederation(3, echo=None)
    federation.flwr_home = tmp_path
    cache = tmp_path / "course-data"
    cache.mkdir(mode=0o700)
    started = []
    monkeypatch.setattr(
        federation, "_start", lambda name, args: started.append(args) or _FinishedRun()
    )
    monkeypatch.setattr(deployment, "_signal_group", lambda pid, sig: None)
    config = AppConfig(num_nodes=3, train_samples=600, test_samples=200, data_seed=3)
    federation.run(tmp_path, config.to_run_config())  # not the course's app
    assert list(cache.iterdir()) == [] and len(started) == 1
    with pytest.raises(ValueError, match="num-nodes"):  # refused before anything is written
        federation.run(APP_DIR, {**config.to_run_config(), "num-nodes": 4})
    assert list(cache.iterdir()) == [] and len(started) == 1
    federation.run(APP_DIR, config.to_run_config())
    assert sorted(p.name for p in cache.iterdir()) == [
        "mnist-test-200-3.pt",
        "mnist-train-600-3.pt",
    ]
    assert len(started) == 2


def test_federation_processes_skip_the_slow_unused_import(monkeypatch, tmp_path):
    """Every process a federation starts finds ``rfc3987_syntax`` missing (a module that raises
    ImportError comes first on its PYTHONPATH, before any PYTHONPATH of ours): jsonschema, which
    every Ray process imports, still validates. Ray starts no default worker. Without the shim —
    as in this process — jsonschema imports the module whenever it is installed."""
    import importlib.util
    import subprocess
    import sys

    from course_lib.fl import deployment

    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    federation = LocalFederation(2, simulation=True, echo=None)
    federation.flwr_home = tmp_path
    deployment._write_import_shims(tmp_path / "import-shims")
    env = federation._env()
    assert env["PYTHONPATH"].split(os.pathsep) == [str(tmp_path / "import-shims"), "/elsewhere"]
    assert env["RAY_prestart_worker_first_driver"] == "0"
    assert deployment.SKIPPED_IMPORTS == ("rfc3987_syntax",)
    probe = (
        "import sys, jsonschema\n"
        "schema = {'properties': {'a': {'type': 'integer'}}}\n"
        "jsonschema.validate({'a': 1}, schema)\n"
        "try:\n"
        "    jsonschema.validate({'a': 'x'}, schema)\n"
        "except jsonschema.ValidationError:\n"
        "    print('refused')\n"
        "print('rfc3987_syntax' in sys.modules)\n"
    )

    def run_probe(environment):
        return subprocess.run(
            [sys.executable, "-c", probe], env=environment, capture_output=True, text=True,
            check=True, timeout=120,
        ).stdout.split()  # fmt: skip

    assert run_probe(env) == ["refused", "False"]
    if importlib.util.find_spec("rfc3987_syntax") is not None:
        assert run_probe(dict(os.environ)) == ["refused", "True"]


def test_only_the_simulation_skips_imports_and_an_app_can_keep_them(monkeypatch, tmp_path):
    """The Deployment Engine's processes (a learner's own apps) keep every module; a simulation
    with ``skip_imports=()`` does too; a bad ``skip_imports`` is refused before anything starts."""
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    for federation in (
        LocalFederation(2, echo=None),
        LocalFederation(2, simulation=True, echo=None, skip_imports=()),
    ):
        federation.flwr_home = tmp_path
        assert federation.skip_imports == ()
        assert federation._env()["PYTHONPATH"].split(os.pathsep) == ["/elsewhere"]
    for bad in ("rfc3987_syntax", ["not a module"], [3]):
        with pytest.raises(TypeError, match="skip_imports"):
            LocalFederation(2, simulation=True, echo=None, skip_imports=bad)


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
    with pytest.raises(TypeError, match="tls must be True or False"):
        run_flower_app("deployment", tls="yes")
    with pytest.raises(ValueError, match="needs the deployment runtime"):
        run_flower_app("simulation", tls=True)


def test_the_cli_asks_for_tls_only_with_the_flag(monkeypatch):
    """`python -m course_lib.fl.flower --tls` (make federation TLS=1) runs the app over TLS."""
    from course_lib.fl import flower

    calls = []

    def stop(*args, **kwargs):
        calls.append(kwargs["tls"])
        raise KeyboardInterrupt  # nothing is started: the arguments are what is tested

    monkeypatch.setattr(flower, "run_flower_app", stop)
    for argv in (["--tls", "--nodes", "3"], ["--nodes", "3"]):
        with pytest.raises(KeyboardInterrupt):
            flower.main(argv)
    assert calls == [True, False]


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


# -- the Deployment Engine: one federation for every run of the app -------------------------

COMMON = dict(num_server_rounds=ROUNDS, num_nodes=3, train_samples=3000)
FEDAVG = AppConfig(**COMMON)
SECAGG = AppConfig(**COMMON, mode="secagg+")
#: two rounds of server-side clipping (no noise: the result is deterministic); in round 2 node
#: 2's ClientApp raises
DP_CLIP = AppConfig(
    **{**COMMON, "num_server_rounds": 2}, mode="dp-fixed-clipping", clipping_norm=0.5,
    fault="raise", fault_partition=2, fault_round=2,
)  # fmt: skip
#: two rounds of SecAgg+ with DP; in round 2 node 2's trained model holds a NaN (σ low enough
#: that a wrong denominator would show in the noise's std)
SECAGG_DP = AppConfig(
    num_server_rounds=2, num_nodes=3, train_samples=1500, hidden_units=32,
    mode="secagg+dp", clipping_norm=0.1, noise_multiplier=0.006,
    fault="nan", fault_partition=2, fault_round=2,
)  # fmt: skip


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """One SuperLink + 3 SuperNodes (SecAgg+ needs 3) for every Deployment Engine run of this
    module: ``run(config)`` runs the app once per distinct ``config`` (later calls reuse the
    result) and returns ``(FlowerResult, the run's streamed log lines)``. On teardown no Flower
    process may be left and the federation's folder must be gone."""
    log: list[str] = []
    done: dict[AppConfig, tuple] = {}
    with LocalFederation(3, echo=log.append) as federation:
        home, pids = federation.flwr_home, federation.pids

        def run(config: AppConfig):
            if config not in done:
                out = tmp_path_factory.mktemp(config.mode.replace("+", "plus"))
                first = len(log)
                federation.run(
                    APP_DIR, {**config.to_run_config(), "result-dir": str(out)}, timeout=900
                )
                done[config] = (load_result(out), log[first:])
            return done[config]

        yield run
    assert flower_processes(home) == []
    assert not any(_alive(pid) for pid in pids)
    assert not home.exists()


def _course_dp_round(
    config: AppConfig, theta: dict[str, torch.Tensor], round_index: int, failed: tuple = ()
) -> dict[str, torch.Tensor]:
    """One noise-free round (``round_index`` from 0) of the course's DP-FedAvg (``dp_aggregate``,
    ``q = 1``) from the global model ``theta`` on the app's partitions, the nodes in ``failed``
    dropped (a NaN update: dp_aggregate leaves it out and keeps the denominator K)."""
    updates = []
    for c in range(config.num_nodes):
        if c in failed:
            updates.append({k: torch.full_like(v, math.nan) for k, v in theta.items()})
            continue
        model = make_model(config)
        model.load_state_dict(theta)
        loader = make_loader(
            node_partition(config, c, config.num_nodes), config.batch_size, shuffle=True,
            seed=client_round_seed(config.seed, round_index, c),
        )  # fmt: skip
        state = local_train(model, loader, epochs=config.local_epochs, lr=config.lr)
        updates.append({k: state[k] - theta[k] for k in theta})
    average, norms = dp_aggregate(
        updates, template=theta, clip_norm=config.clipping_norm, noise_multiplier=0.0,
        expected_clients=config.num_nodes, rng=InsecureSeededRandom(0),
    )  # fmt: skip
    assert sum(math.isnan(n) for n in norms) == len(failed)
    return {k: theta[k] + average[k] for k in theta}


def _noise(state, reference) -> torch.Tensor:
    return torch.cat([(state[k] - v).flatten().double() for k, v in reference.items()])


def test_deployment_engine_fedavg_matches_course_fedavg(deployment):
    """Plain FedAvg on 3 SuperNodes, 1,000 images each: Flower averages the same local models
    in float32."""
    plain, _ = deployment(FEDAVG)
    reference = reference_fedavg(FEDAVG, 3)
    _assert_close_states(plain.state, reference.model.state_dict(), atol=1e-6)
    assert plain.test_acc == reference.test_acc
    assert len(plain.round_seconds) == ROUNDS and all(s > 0 for s in plain.round_seconds)
    assert plain.aggregated == [3] * ROUNDS and plain.nonfinite == [0] * ROUNDS
    assert plain.epsilon == []  # no DP, no ε


def test_deployment_engine_server_side_clipping_matches_course_dp_fedavg(deployment):
    """Round 1 of Flower's server-side fixed clipping (no noise: clipping only) = the course's
    DP-FedAvg with q = 1, σ = 0; with equal partitions (1,000 images per node) FedAvg's weights
    are the DP-FedAvg's equal weights."""
    result, _ = deployment(DP_CLIP)
    plain, _ = deployment(FEDAVG)
    parts = [node_partition(FEDAVG, i, 3) for i in range(3)]
    course_dp = run_dp_fedavg(
        make_model, parts, server_test_set(FEDAVG), rounds=ROUNDS, sample_rate=1.0,
        noise_multiplier=0.0, clip_norm=0.5, delta=1e-3, lr=FEDAVG.lr,
        batch_size=FEDAVG.batch_size, seed=FEDAVG.seed, rng=InsecureSeededRandom(0),
        progress=False,
    )  # fmt: skip
    round_1 = result.round_states[ROUNDS - 1]
    _assert_close_states(round_1, course_dp.model.state_dict(), 1e-6)
    # clipping really happened: the clipped run differs from plain FedAvg
    assert any(not torch.allclose(round_1[k], plain.state[k], atol=1e-4) for k in plain.state)
    # the test's one-round helper is that same course DP-FedAvg step
    own = _course_dp_round(DP_CLIP, initial_state(DP_CLIP), 0)
    _assert_close_states(own, course_dp.model.state_dict(), atol=1e-6)
    assert result.epsilon == [math.inf, math.inf]  # σ = 0: no privacy, and the app says so


def test_deployment_engine_secaggplus_is_fedavg_up_to_quantisation(deployment):
    """SecAgg+ sums quantised models: plain FedAvg up to the quantisation step per client."""
    result, _ = deployment(SECAGG)
    plain, _ = deployment(FEDAVG)
    step = 2 * SECAGG.secagg_clipping_range / (SECAGG.secagg_quantization_range - 1)
    _assert_close_states(result.state, plain.state, atol=3 * step + 1e-6)


def test_a_failing_node_counts_as_a_zero_update_under_server_side_clipping(deployment):
    """Node 2's ClientApp raises in round 2. The app releases θ + (clip Δ_0 + clip Δ_1)/3 — the
    course's dp_aggregate with node 2 dropped, so one client still moves the release by at most
    C/3, the sensitivity the noise σC/3 and the reported ε assume. Flower's own wrapper would
    have released nothing (an error reply); averaging the 2 replies would give each 1/2."""
    result, log = deployment(DP_CLIP)
    assert result.aggregated == [3, 2] and result.nonfinite == [0, 0]
    assert any("fault injected: node 2 fails in round 2" in line for line in log)
    theta = result.round_states[0]
    expected = _course_dp_round(DP_CLIP, theta, 1, failed=(2,))
    _assert_close_states(result.round_states[1], expected, atol=1e-6)
    # the mean over the replies that arrived (denominator 2) is another model altogether
    mean_of_two = {k: theta[k] + (expected[k] - theta[k]) * 3 / 2 for k in theta}
    gap = max((mean_of_two[k] - result.state[k]).abs().max().item() for k in theta)
    assert gap > 1e-3


def test_a_nan_node_under_secaggplus_dp_is_refused_and_the_noise_stays_sigma_c_over_k(deployment):
    """Node 2's trained model holds a NaN in round 2: its ClientApp refuses to send it (before
    clipping and masking), SecAgg+ drops the node and rebuilds its masks, and the server rescales
    the mean of the 2 models to the fixed denominator 3. So round 2's release minus the course's
    noise-free step from round 1's model (node 2 dropped) is the noise alone, std σC/3 — with
    denominator 2 it would also hold (1/2 − 1/3)·Σ clip Δ, inflating its std as checked below."""
    config = SECAGG_DP
    result, log = deployment(config)
    assert result.aggregated == [3, 2] and result.nonfinite == [0, 1]
    assert any("non-finite update refused" in line for line in log)
    assert all(bool(torch.isfinite(v).all()) for v in result.state.values())
    expected_std = config.noise_multiplier * config.clipping_norm / config.num_nodes
    theta = result.round_states[0]
    clip_only = _course_dp_round(config, theta, 1, failed=(2,))
    noise = _noise(result.round_states[1], clip_only)
    assert noise.std().item() == pytest.approx(expected_std, rel=0.03)  # ±7 standard errors
    assert abs(noise.mean().item()) < 5 * expected_std / math.sqrt(noise.numel())
    wrong = torch.cat([((clip_only[k] - theta[k]) * 0.5).flatten().double() for k in theta])
    inflated = math.sqrt(expected_std**2 + wrong.pow(2).mean().item())  # (3/2 − 1)·(step)
    assert inflated > 1.1 * expected_std
    assert result.epsilon == [
        dp_fedavg_epsilon(config.noise_multiplier, 1.0, r, config.delta) for r in (1, 2)
    ]
    assert result.delta == config.delta


def test_flower_secaggplus_with_client_side_clipping_adds_the_course_dp_noise(deployment):
    """After round 1, Flower's model minus the course's noise-free DP-FedAvg model (same
    clipping, same partitions, σ = 0) is the noise Flower added: zero-mean Gaussian of std
    σ·C/K per weight — the DP-FedAvg mechanism the course accountant assumes (q = 1). Had the
    clients not clipped, the difference would hold the clipping's effect, far larger than that."""
    result, log = deployment(SECAGG_DP)
    expected_std = SECAGG_DP.noise_multiplier * SECAGG_DP.clipping_norm / SECAGG_DP.num_nodes
    logged = [
        float(m) for m in re.findall(r"central DP noise with ([0-9.]+) stdev added", "".join(log))
    ]
    assert logged == [pytest.approx(expected_std, abs=5e-5)] * 2  # to 4 decimals, once a round

    one_round = AppConfig(
        **{**SECAGG_DP.__dict__, "num_server_rounds": 1, "fault": "none", "fault_round": 1}
    )
    clip_only = reference_dp_fedavg(
        AppConfig(**{**one_round.__dict__, "noise_multiplier": 0.0}), 3, delta=1e-3,
        rng=InsecureSeededRandom(0),
    )  # fmt: skip
    assert clip_only.clipped_fraction == [1.0]  # every update was clipped: clipping matters here
    noise = torch.cat(
        [(result.round_states[0][k] - v).flatten().double()
         for k, v in clip_only.model.state_dict().items()]
    )  # fmt: skip
    n = noise.numel()
    assert noise.std().item() == pytest.approx(expected_std, rel=0.03)  # ±7 standard errors
    assert abs(noise.mean().item()) < 5 * expected_std / math.sqrt(n)
    # Gaussian, not e.g. uniform: the share beyond 2 std is 4.55 % (binomial sd 0.13 %)
    assert (noise.abs() > 2 * expected_std).double().mean().item() == pytest.approx(
        0.0455, abs=0.006
    )
    # without clipping the difference would carry this too (rms per weight), inflating its std
    unclipped = reference_fedavg(one_round, 3).model.state_dict()
    clipping_effect = torch.cat(
        [(unclipped[k] - v).flatten().double() for k, v in clip_only.model.state_dict().items()]
    )
    assert clipping_effect.pow(2).mean().sqrt().item() > expected_std
    assert result.mode == "secagg+dp" and len(result.test_acc) == 2


# -- the ServerApp's result folder: created fresh and owner-only ----------------------------------


def _small_result() -> FlowerResult:
    state = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    return FlowerResult(state=state, test_acc=[0.5], round_states=[state])


@pytest.mark.parametrize("umask", [0o000, 0o022])
def test_the_result_folder_is_created_owner_only_and_reads_back(tmp_path, umask):
    """save_result makes a new folder (parents too) with mode 0700 whatever the umask, and what
    it writes is what load_result reads."""
    from course_lib.fl.flower import save_result

    out = tmp_path / "a" / "result"
    old = os.umask(umask)
    try:
        save_result(_small_result(), out)
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o700 and out.stat().st_uid == os.geteuid()
    back = load_result(out)
    assert torch.equal(back.state["w"], torch.arange(6, dtype=torch.float32).reshape(2, 3))
    assert back.test_acc == [0.5] and len(back.round_states) == 1


def test_the_server_app_claims_its_result_folder_before_the_first_round(tmp_path, monkeypatch):
    """claim_result_dir (what the ServerApp calls before any round) refuses what save_result
    would refuse, and save_result accepts the folder it claimed."""
    import inspect

    from course_lib.fl.flower import claim_result_dir, save_result

    monkeypatch.syspath_prepend(str(APP_DIR))  # the app's package, as a SuperNode installs it
    from privateai_fedavg import server_app

    body = inspect.getsource(server_app.main)
    assert body.index("claim_result_dir(") < body.index("RoundClock(") < body.index("save_result(")
    taken = tmp_path / "taken"
    taken.mkdir(mode=0o700)
    (taken / "model.pt").write_bytes(b"someone's")
    with pytest.raises(FileExistsError, match="not empty"):
        claim_result_dir(taken)
    out = tmp_path / "new" / "result"
    claim_result_dir(out)
    assert out.is_dir() and out.stat().st_mode & 0o777 == 0o700 and not any(out.iterdir())
    save_result(_small_result(), out)
    assert load_result(out).test_acc == [0.5]


def test_an_empty_owner_only_temporary_folder_of_ours_is_accepted(tmp_path):
    """What run_flower_app and the notebook pass: a tempfile.TemporaryDirectory (ours, 0700,
    empty)."""
    import tempfile

    from course_lib.fl.flower import save_result

    with tempfile.TemporaryDirectory(dir=tmp_path) as out:
        save_result(_small_result(), out)
        assert load_result(out).test_acc == [0.5]


def _planted_symlink(tmp_path):
    target = tmp_path / "attacker"
    target.mkdir(mode=0o700)
    os.chmod(target, 0o700)
    (tmp_path / "result").symlink_to(target)
    return tmp_path / "result", target


def _planted_nonempty(tmp_path):
    out = tmp_path / "result"
    out.mkdir(mode=0o700)
    os.chmod(out, 0o700)
    (out / "model.pt").write_bytes(b"attacker's model")
    return out, out


def _planted_open(tmp_path):
    out = tmp_path / "result"
    out.mkdir()
    os.chmod(out, 0o777)  # anyone may put files in or read them
    return out, out


def _planted_file(tmp_path):
    out = tmp_path / "result"
    out.write_bytes(b"not a folder")
    return out, tmp_path


def _planted_by_another_user(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("making a folder of another user needs root (CI runs as root)")
    out = tmp_path / "result"
    out.mkdir(mode=0o700)
    os.chmod(out, 0o700)
    os.chown(out, 12345, 12345)
    return out, out


@pytest.mark.parametrize(
    ("plant", "error", "message"),
    [
        (_planted_symlink, FileExistsError, "is a symlink"),
        (_planted_nonempty, FileExistsError, "is not empty"),
        (_planted_open, PermissionError, "has mode 0777"),
        (_planted_file, FileExistsError, "is not a folder"),
        (_planted_by_another_user, PermissionError, "belongs to user id 12345"),
    ],
)
def test_a_result_folder_someone_else_could_have_made_is_refused(tmp_path, plant, error, message):
    """Another local user who makes the result folder first (their own folder, a symlink to a
    folder they read, a folder open to all, one holding their model) must get nothing: the
    folder is refused before a byte is written, and what was there is unchanged."""
    from course_lib.fl.flower import save_result

    out, watched = plant(tmp_path)
    before = sorted((p.name, p.read_bytes()) for p in watched.iterdir() if p.is_file())
    with pytest.raises(error, match=message):
        save_result(_small_result(), out)
    assert sorted((p.name, p.read_bytes()) for p in watched.iterdir() if p.is_file()) == before
    assert not any(p.name in ("rounds.pt", "history.json") for p in watched.iterdir())
