"""The course's FedAvg as a Flower App: the task code the app imports, and a Python front end.

Flower (https://flower.ai) is the most widely used federated-learning framework. The repository's
Flower App (``flower_app/``, laid out like Flower's own examples: a ``pyproject.toml`` with the
``[tool.flwr.app]`` sections, ``task.py``, ``client_app.py``, ``server_app.py``) is deliberately
thin: everything it computes comes from this module, so the app, the tests and lesson 10 share one
definition of the experiment.

- :class:`AppConfig` — the app's run configuration (``[tool.flwr.app.config]``), validated.
- :func:`node_partition` — what SuperNode ``partition-id`` of ``num-partitions`` trains on: the
  course's MNIST split by :func:`course_lib.fl.partition.partition_iid` (or Dirichlet / shards).
- :func:`train_on_partition` — one client's local training: the same
  :func:`course_lib.fl.fedavg.local_train_with_metrics` and the same shuffle seed
  (:func:`course_lib.fl.seeding.client_round_seed`) as :func:`course_lib.fl.fedavg.run_fedavg`.
- :func:`reference_fedavg` — the in-process course FedAvg on the same partitions: both Flower runs
  (simulation runtime and Deployment Engine) must reproduce its final weights.
- :func:`reference_dp_fedavg` — the course's DP-FedAvg on the same partitions with every client in
  every round (``q = 1``): what the app's two DP modes compute, up to their noise draw.
- :func:`run_flower_app` — start a local federation (:mod:`course_lib.fl.deployment`), run the
  app with ``flwr run`` and read back what its ``ServerApp`` saved (:class:`FlowerResult`).

Flower's in-notebook ``run_simulation`` is deprecated in favour of ``flwr run``; the course now
uses ``flwr run`` for both runtimes. The app has four modes (run-config ``mode``):

- ``"fedavg"``: Flower's message-API ``FedAvg`` strategy;
- ``"dp-fixed-clipping"``: that strategy wrapped in Flower's
  ``DifferentialPrivacyServerSideFixedClipping`` (clip each update to ``clipping-norm``, average,
  add Gaussian noise of std ``noise-multiplier · clipping-norm / K``) — the same mechanism as
  :func:`course_lib.fl.dp_fedavg.dp_aggregate` with every client sampled (``q = 1``);
- ``"secagg+"``: Flower's SecAgg+ protocol (Bell et al., CCS 2020): ``SecAggPlusWorkflow`` on
  the server, ``secaggplus_mod`` on the clients, as Flower's ``flower-secure-aggregation``
  example wires them (through Flower's legacy ``DefaultWorkflow``, the only place SecAgg+ lives
  in flwr 1.42). Each node's mask seeds are Shamir-shared among all ``num-nodes`` nodes
  (Flower needs at least 3) with reconstruction threshold ``num-nodes // 2 + 1``; models are
  quantised to ``secagg-quantization-range`` levels over ``[-r, r]``,
  ``r = secagg-clipping-range``, so the aggregate equals FedAvg up to that step per node;
- ``"secagg+dp"``: both at once, as Flower's ``fl-dp-sa`` example wires them: SecAgg+ as above,
  each client clips its own update to ``clipping-norm`` (after training and before masking,
  where Flower's ``fixedclipping_mod`` clips; the app's ``clip_update_mod`` also takes a zero
  update) and the server adds Gaussian noise of std
  ``noise-multiplier · clipping-norm / K`` to the unmasked average
  (``DifferentialPrivacyClientSideFixedClipping``) — central DP in which the server never sees
  an unclipped or unmasked update.

Both DP modes calibrate the noise as if every update entered the average with weight ``1/K``;
Flower's FedAvg weights by examples, so :class:`AppConfig` refuses them unless the partitions are
equal (an IID split of ``train-samples`` divisible by ``num-nodes``), and the nodes check it again.

A node that fails, or whose trained model holds NaN/±inf, counts as a zero update and the DP
modes keep the denominator ``K`` (as :func:`course_lib.fl.dp_fedavg.dp_aggregate` does), so the
noise and the reported ε (:attr:`FlowerResult.epsilon`) stay right whatever fails; the ClientApp
refuses to send a non-finite model in every mode (``flower_app/privateai_fedavg/guards.py``).

Flower draws its DP noise (server) and SecAgg+'s stochastic rounding (clients) from NumPy's global
generator, unseeded: two runs of a noisy mode differ, and the noise is not from a CSPRNG.
"""

from __future__ import annotations

import functools
import json
import math
import os
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset

from course_lib.data import ImageDataset, load_mnist
from course_lib.fl.fedavg import FedHistory, local_train_with_metrics, run_fedavg
from course_lib.fl.partition import (
    client_subsets,
    partition_dirichlet,
    partition_iid,
    partition_shards,
)
from course_lib.fl.seeding import client_round_seed
from course_lib.models import MLP
from course_lib.randomness import RandomSource
from course_lib.training import make_loader
from course_lib.validation import (
    check_delta,
    check_int_in_range,
    check_noise_multiplier,
    check_nonnegative_int,
    check_positive,
    check_positive_int,
)

if TYPE_CHECKING:
    from course_lib.fl.dp_fedavg import DPFedHistory

# course_lib.fl.dp_fedavg (and through its accountant, SciPy) is imported where it is used: every
# Flower process imports this module, and a ClientApp process starts afresh for every task.

__all__ = [
    "APP_DIR",
    "MODES",
    "AppConfig",
    "FlowerResult",
    "node_partition",
    "server_test_set",
    "fill_data_cache",
    "make_model",
    "train_on_partition",
    "reference_fedavg",
    "reference_dp_fedavg",
    "RoundClock",
    "claim_result_dir",
    "save_result",
    "load_result",
    "run_flower_app",
]

#: The repository's Flower App (present in a git checkout / editable install).
APP_DIR = Path(__file__).resolve().parents[2] / "flower_app"
MODES = ("fedavg", "dp-fixed-clipping", "secagg+", "secagg+dp")
#: The modes that add DP noise: Flower's wrappers calibrate it as σ·C/K, which bounds one client's
#: influence only if every client's update enters the average with weight 1/K.
DP_MODES = ("dp-fixed-clipping", "secagg+dp")
_PARTITIONINGS = ("iid", "dirichlet", "shards")
#: What ``fault`` makes one node do in one round (see :class:`AppConfig`).
FAULTS = ("none", "raise", "nan", "inf", "zero")
#: Flower's SecAgg+ adds the masked, quantised vectors modulo 2**32 (``modulus_range``).
_SECAGG_MODULUS = 2**32
#: The fewest quantisation levels ``secagg-quantization-range`` may give (2**8: 8-bit weights).
_MIN_QUANTIZATION_RANGE = 2**8


@dataclass(frozen=True)
class AppConfig:
    """The app's run configuration: the keys of ``[tool.flwr.app.config]`` with ``-`` for ``_``.

    ``num_nodes``: the SuperNodes the ServerApp waits for and trains on every round (one per
    partition). ``train_samples``/``test_samples``: MNIST images used (the lesson's 4,000 /
    1,000 of the offline sample); ``data_seed`` fixes the subset and the partition; ``seed`` the
    initial model and the clients' shuffles. ``hidden_units``: width of the MLP's hidden layer
    (lesson 10: 128, lesson 13: 32). ``delta``: the δ of the ε the DP modes report.
    ``result_dir``: where the ServerApp writes its result ("" = nowhere): a new folder, created
    owner-only (an existing one only if it is ours, empty and mode 0700).

    ``fault``, ``fault_partition``, ``fault_round``: make one node misbehave, to see (and test)
    what each mode does with a node that fails. In round ``fault_round`` the ClientApp of
    SuperNode ``partition-id = fault_partition`` raises (``"raise"``), replies with a NaN or an
    infinite weight (``"nan"``, ``"inf"``) or with an unchanged model (``"zero"``: a zero
    update); ``"none"`` (default) turns it off.

    Every key is checked here, when the configuration is built — by :func:`run_flower_app` and
    :meth:`LocalFederation.run <course_lib.fl.deployment.LocalFederation.run>` before any
    process starts, and again by the ServerApp and every ClientApp. ``TypeError`` (wrong type:
    a float where an integer is needed, a bool anywhere) and ``ValueError`` (out of range, NaN,
    ±∞) name the run-config key; ``flower_app/README.md`` lists the rule of every key.
    """

    num_server_rounds: int = 2
    num_nodes: int = 2
    local_epochs: int = 1
    lr: float = 0.05
    batch_size: int = 32
    hidden_units: int = 128
    seed: int = 0
    train_samples: int = 4000
    test_samples: int = 1000
    data_seed: int = 0
    partitioning: str = "iid"
    alpha: float = 0.1
    mode: str = "fedavg"
    clipping_norm: float = 1.0
    noise_multiplier: float = 0.0
    delta: float = 1e-5
    secagg_clipping_range: float = 8.0
    secagg_quantization_range: int = 2**22
    result_dir: str = ""
    fault: str = "none"
    fault_partition: int = 0
    fault_round: int = 1

    def __post_init__(self) -> None:
        def key(name: str) -> str:
            return f"run-config key {name.replace('_', '-')!r} ({name})"

        checked: dict[str, object] = {}
        for name in (
            "num_server_rounds",
            "num_nodes",
            "local_epochs",
            "batch_size",
            "hidden_units",
            "train_samples",
            "test_samples",
            "secagg_quantization_range",
            "fault_round",
        ):
            checked[name] = check_positive_int(getattr(self, name), key(name))
        for name in ("seed", "data_seed", "fault_partition"):
            checked[name] = check_nonnegative_int(getattr(self, name), key(name))
        for name in ("lr", "alpha", "clipping_norm", "secagg_clipping_range"):
            checked[name] = check_positive(getattr(self, name), key(name))
        checked["noise_multiplier"] = check_noise_multiplier(
            self.noise_multiplier, key("noise_multiplier"), allow_zero=True
        )
        checked["delta"] = check_delta(self.delta, "run-config key 'delta'")
        for name, allowed in (
            ("mode", MODES),
            ("partitioning", _PARTITIONINGS),
            ("fault", FAULTS),
            ("result_dir", None),
        ):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"{key(name)} must be a string, got {value!r}")
            if allowed is not None and value not in allowed:
                raise ValueError(f"{key(name)} must be one of {allowed}, got {value!r}")
        for name, value in checked.items():  # NumPy scalars become Python numbers
            object.__setattr__(self, name, value)
        self._check_together(key)

    def _check_together(self, key: Callable[[str], str]) -> None:
        """The rules that tie several keys together."""
        if self.secagg_quantization_range < _MIN_QUANTIZATION_RANGE:
            raise ValueError(
                f"{key('secagg_quantization_range')} must be at least 2**8 = "
                f"{_MIN_QUANTIZATION_RANGE} levels: SecAgg+ rounds every weight to one of them "
                f"over [-r, r], so fewer levels lose the model; got "
                f"{self.secagg_quantization_range}"
            )
        if self.mode.startswith("secagg+") and self.num_nodes < 3:
            raise ValueError(
                "Flower's SecAgg+ shares every mask among more than 2 nodes: use num_nodes >= 3 "
                f"for mode {self.mode!r} (got {self.num_nodes})"
            )
        if self.train_samples < self.num_nodes:
            raise ValueError(
                f"{key('train_samples')} must give every node at least one image: "
                f"{self.train_samples} images for {self.num_nodes} nodes"
            )
        if self.num_nodes * self.secagg_quantization_range >= _SECAGG_MODULUS:
            # each node sends values in [0, Q]; their sum must not wrap around Flower's modulus
            raise ValueError(
                f"{key('secagg_quantization_range')} times num_nodes must stay below SecAgg+'s "
                f"modulus 2**32, or the masked sum wraps around (got {self.num_nodes} x "
                f"{self.secagg_quantization_range})"
            )
        if self.mode in DP_MODES and (
            self.partitioning != "iid" or self.train_samples % self.num_nodes
        ):
            raise ValueError(
                f"mode {self.mode!r} needs equal partitions: Flower's FedAvg weights each update "
                "by its client's examples, while its DP wrapper's noise (std σ·C/K) assumes weight "
                "1/K each, so a larger client would move the average by more than C/K. Use "
                f"partitioning 'iid' with train_samples divisible by num_nodes (got "
                f"{self.partitioning!r}, {self.train_samples} samples, {self.num_nodes} nodes)"
            )
        if self.fault_partition >= self.num_nodes:
            raise ValueError(
                f"{key('fault_partition')} names a SuperNode's partition-id, in 0.."
                f"{self.num_nodes - 1}; got {self.fault_partition}"
            )
        if self.fault_round > self.num_server_rounds:
            raise ValueError(
                f"{key('fault_round')} is a round in 1..{self.num_server_rounds} "
                f"(num-server-rounds); got {self.fault_round}"
            )

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, object]) -> AppConfig:
        """Build from Flower's ``context.run_config`` (keys with ``-``); unknown keys refused."""
        known = {f.name for f in fields(cls)}
        values = {key.replace("-", "_"): value for key, value in run_config.items()}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown run-config keys {unknown}; known: {sorted(known)}")
        return cls.checked(values)

    @classmethod
    def checked(cls, values: Mapping[str, object]) -> AppConfig:
        """Build from untrusted ``values`` (field names with ``_``): ``__post_init__`` checks the
        type and range of every one, so any object may come in."""
        untrusted: dict[str, Any] = dict(values)
        return cls(**untrusted)

    def to_run_config(self) -> dict[str, object]:
        """The ``--run-config`` form (keys with ``-``)."""
        return {key.replace("_", "-"): value for key, value in asdict(self).items()}


#: Environment variable naming a private folder where Flower processes share the data they load.
#: :class:`~course_lib.fl.deployment.LocalFederation` sets it to a folder inside its temporary
#: ``FLWR_HOME`` (removed with it) and, before ``flwr run``, saves both splits of the course app's
#: run there from the calling process (:func:`fill_data_cache`: a notebook has them loaded
#: already); every ServerApp and ClientApp process — a fresh one per node and round on the
#: Deployment Engine — then reads a tensor file instead of importing torchvision and parsing the
#: sample again (a split still missing is saved by the first process that loads it). Unset (a
#: real deployment, a SuperNode started by hand), every process loads its data itself.
DATA_CACHE_ENV = "COURSE_FLOWER_DATA_CACHE"


def _cache_file(folder: str | Path, train: bool, max_samples: int, seed: int) -> Path:
    return Path(folder) / f"mnist-{'train' if train else 'test'}-{max_samples}-{seed}.pt"


def _save_cached(path: Path, data: ImageDataset) -> None:
    saved = {"images": data.images, "labels": data.labels, "name": data.name}
    saved.update(source=data.source, classes=list(data.classes))
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    torch.save(saved, partial)
    os.replace(partial, path)  # atomic: a process reading at the same time sees all or nothing


@functools.lru_cache(maxsize=4)
def _mnist(train: bool, max_samples: int, seed: int) -> ImageDataset:
    folder = os.environ.get(DATA_CACHE_ENV)
    if not folder:
        return load_mnist(train=train, max_samples=max_samples, seed=seed)
    path = _cache_file(folder, train, max_samples, seed)
    try:
        saved = torch.load(path, weights_only=True)
    except FileNotFoundError:
        data = load_mnist(train=train, max_samples=max_samples, seed=seed)
        _save_cached(path, data)
        return data
    return ImageDataset(
        saved["images"],
        saved["labels"],
        name=saved["name"],
        source=saved["source"],
        classes=saved["classes"],
    )


def fill_data_cache(folder: str | Path, config: AppConfig) -> list[Path]:
    """Save the training and test splits of ``config`` into ``folder``, a federation's data cache
    (:data:`DATA_CACHE_ENV`), from this process; returns the files written (a split already
    there is left as it is). :meth:`LocalFederation.run
    <course_lib.fl.deployment.LocalFederation.run>` calls it before ``flwr run``, so no Flower
    process has to load MNIST itself.

    The splits are loaded as this process loads them (the same :func:`load_mnist` call every
    process makes, cached per process): a notebook that has trained on them pays nothing more.
    Raises ``TypeError`` if ``config`` is not an :class:`AppConfig`, ``FileNotFoundError`` if
    ``folder`` does not exist (it is never created here: the federation makes it owner-only).
    """
    if not isinstance(config, AppConfig):
        raise TypeError(f"config must be an AppConfig, got {type(config).__name__}")
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"the data cache folder {folder} does not exist")
    written = []
    for train, samples in ((True, config.train_samples), (False, config.test_samples)):
        path = _cache_file(folder, train, samples, config.data_seed)
        if not path.exists():
            _save_cached(path, _mnist(train, samples, config.data_seed))
            written.append(path)
    return written


def _train_data(config: AppConfig):
    return _mnist(True, config.train_samples, config.data_seed)


def server_test_set(config: AppConfig) -> Dataset:
    """The server's central test set (MNIST test split, ``test_samples`` images)."""
    return _mnist(False, config.test_samples, config.data_seed)


def _partitions(config: AppConfig, num_partitions: int):
    num_partitions = check_positive_int(num_partitions, "num-partitions")
    train = _train_data(config)
    if config.partitioning == "iid":
        parts = partition_iid(train.labels, num_partitions, seed=config.data_seed)
    elif config.partitioning == "dirichlet":
        parts = partition_dirichlet(
            train.labels, num_partitions, alpha=config.alpha, seed=config.data_seed
        )
    else:
        parts = partition_shards(train.labels, num_partitions, seed=config.data_seed)
    if config.mode in DP_MODES and len({len(part) for part in parts}) > 1:
        # AppConfig checks the configured sizes; this catches a dataset smaller than train_samples
        raise ValueError(
            f"mode {config.mode!r} needs equal partitions, got sizes "
            f"{sorted({len(part) for part in parts})} "
            f"({len(train)} images in {num_partitions} parts)"
        )
    return client_subsets(train, parts)


def node_partition(config: AppConfig, partition_id: int, num_partitions: int) -> Dataset:
    """The training data of SuperNode ``partition_id`` (its ``--node-config``) of
    ``num_partitions``: one part of the course's MNIST sample, split as ``config.partitioning``."""
    num_partitions = check_positive_int(num_partitions, "num-partitions")
    partition_id = check_int_in_range(partition_id, "partition-id", 0, num_partitions - 1)
    return _partitions(config, num_partitions)[partition_id]


def make_model(config: AppConfig | None = None) -> torch.nn.Module:
    """The course's MNIST model: ``MLP(784, (hidden_units,), 10)`` — lesson 02's
    ``MLP(784, (128,), 10)`` without a ``config``."""
    return MLP(hidden=(AppConfig().hidden_units if config is None else config.hidden_units,))


def initial_state(config: AppConfig) -> dict[str, torch.Tensor]:
    """The global model before round 1, seeded exactly as :func:`run_fedavg` seeds it."""
    torch.manual_seed(config.seed)
    return make_model(config).state_dict()


def train_on_partition(
    config: AppConfig,
    state: Mapping[str, torch.Tensor],
    data: Dataset,
    *,
    server_round: int,
    partition_id: int,
) -> tuple[dict[str, torch.Tensor], float, float]:
    """One client's local training in round ``server_round`` (Flower counts from 1): returns
    (new state, mean train loss, train accuracy) — what :func:`run_fedavg` computes for the
    same client in the same round."""
    torch.set_num_threads(1)
    model = make_model(config)
    model.load_state_dict(state)
    loader = make_loader(
        data,
        config.batch_size,
        shuffle=True,
        seed=client_round_seed(config.seed, server_round - 1, partition_id),
    )
    return local_train_with_metrics(model, loader, epochs=config.local_epochs, lr=config.lr, mu=0.0)


def reference_fedavg(config: AppConfig, num_partitions: int) -> FedHistory:
    """The course's in-process FedAvg (:func:`run_fedavg`) on the app's partitions."""
    return run_fedavg(
        lambda: make_model(config),
        _partitions(config, num_partitions),
        server_test_set(config),
        rounds=config.num_server_rounds,
        local_epochs=config.local_epochs,
        lr=config.lr,
        batch_size=config.batch_size,
        seed=config.seed,
        progress=False,
    )


def reference_dp_fedavg(
    config: AppConfig,
    num_partitions: int,
    *,
    delta: float,
    rng: RandomSource | None = None,
) -> DPFedHistory:
    """The course's DP-FedAvg (:func:`run_dp_fedavg`) on the app's partitions, with the app's
    ``clipping_norm`` and ``noise_multiplier`` and every client in every round (``q = 1``).

    That is what the app's ``"dp-fixed-clipping"`` and ``"secagg+dp"`` modes compute: clip each
    update to ``C``, add ``N(0, (σC)²)`` to the sum, divide by ``K`` — so ε (for ``delta``) is the
    course accountant's for ``q = 1``. With equal partitions (``train_samples`` divisible by
    ``num_partitions`` for an IID split) Flower's weighted average is this equal-weight one.
    ``rng`` draws the noise (secure by default).
    """
    from course_lib.fl.dp_fedavg import run_dp_fedavg

    return run_dp_fedavg(
        lambda: make_model(config),
        _partitions(config, num_partitions),
        server_test_set(config),
        rounds=config.num_server_rounds,
        sample_rate=1.0,
        noise_multiplier=config.noise_multiplier,
        clip_norm=config.clipping_norm,
        delta=delta,
        local_epochs=config.local_epochs,
        lr=config.lr,
        batch_size=config.batch_size,
        seed=config.seed,
        rng=rng,
        progress=False,
    )


@dataclass
class FlowerResult:
    """What a Flower run's ServerApp saved: final global weights and per-round numbers.

    ``round_seconds[r]``: wall time of round ``r + 1`` as the ServerApp saw it (send the model,
    train on every node, aggregate, evaluate centrally). ``epsilon[r]``: in the DP modes, the ε
    (for ``delta``) spent after round ``r + 1`` — the course accountant's for ``q = 1``
    (:func:`course_lib.fl.dp_fedavg.dp_fedavg_epsilon`), ∞ when ``noise_multiplier`` is 0; it
    holds whatever nodes fail, because a missing or dropped reply counts as a zero update under
    the fixed denominator ``num_nodes`` (``flower_app/privateai_fedavg/guards.py``); empty in the
    other modes. ``aggregated[r]``: replies averaged in round ``r + 1``; ``nonfinite[r]``: how
    many were refused: NaN/±inf or, in the message-API modes, keys, shapes or dtypes unlike the
    global model's (dropped by the server), or refused by their node. Those two are computed
    from the nodes' replies without noise: outside ε, not for publication.
    """

    state: dict[str, torch.Tensor]
    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    round_seconds: list[float] = field(default_factory=list)
    mode: str = "fedavg"
    wall_seconds: float = float("nan")  # the whole `flwr run`, start-up included
    epsilon: list[float] = field(default_factory=list)
    delta: float = 0.0
    aggregated: list[int] = field(default_factory=list)
    nonfinite: list[int] = field(default_factory=list)
    #: the global model after each round (``round_states[-1]`` is ``state``)
    round_states: list[dict[str, torch.Tensor]] = field(default_factory=list, repr=False)


class RoundClock:
    """Per-round central evaluation, timing, reply counts and ε for a ServerApp (a round ends at
    its evaluation)."""

    def __init__(self, config: AppConfig) -> None:
        self.config = config
        self.test = server_test_set(config)
        if os.environ.get(DATA_CACHE_ENV):  # the nodes' split too, before any node asks for it
            _train_data(config)
        self.result = FlowerResult(state={}, mode=config.mode, delta=config.delta)
        self._last = time.perf_counter()
        self._replies: dict[int, tuple[int, int]] = {}

    def note_replies(self, server_round: int, aggregated: int, nonfinite: int) -> None:
        """Record that round ``server_round`` averaged ``aggregated`` replies and left out
        ``nonfinite`` refused for NaN/±inf or a malformed content (``guards.py`` calls it)."""
        self._replies[server_round] = (aggregated, nonfinite)

    def end_round(
        self, server_round: int, state: Mapping[str, torch.Tensor]
    ) -> tuple[float, float]:
        """Record round ``server_round``'s global ``state``; round 0 (the initial model) only
        restarts the clock. Returns (test loss, test accuracy)."""
        from course_lib.training import evaluate

        model = make_model(self.config)
        model.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
        loss, acc = evaluate(model, torch.utils.data.DataLoader(self.test, batch_size=1000))
        now = time.perf_counter()
        if server_round > 0:
            result, config = self.result, self.config
            result.test_loss.append(loss)
            result.test_acc.append(acc)
            result.round_seconds.append(now - self._last)
            result.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            result.round_states.append(result.state)
            aggregated, nonfinite = self._replies.get(server_round, (0, 0))  # halted: nothing
            result.aggregated.append(aggregated)
            result.nonfinite.append(nonfinite)
            if config.mode in DP_MODES:  # every round is charged, released or not
                from course_lib.fl.dp_fedavg import dp_fedavg_epsilon

                result.epsilon.append(
                    dp_fedavg_epsilon(config.noise_multiplier, 1.0, server_round, config.delta)
                    if config.noise_multiplier > 0
                    else math.inf
                )
        self._last = now
        return loss, acc


def _claim_result_dir(out: Path) -> None:
    """Make ``out`` a folder only this user can read or write: created fresh with mode 0700
    (``mkdir`` fails if anything is at the path, a symlink included), or an existing one that is
    already exactly that — a real folder (not a symlink), empty, ours, mode 0700 (what
    ``tempfile.TemporaryDirectory`` and pytest's ``tmp_path`` give). Anything else at the path
    may have been put there by another local user to read or replace the model, and is refused.

    Raises:
        FileExistsError: ``out`` is a symlink, not a folder, or a folder that is not empty.
        PermissionError: ``out`` is a folder of another user, or others may open it.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(out, 0o700)
    except FileExistsError:
        info = os.lstat(out)
        if stat.S_ISLNK(info.st_mode):
            raise FileExistsError(
                f"result-dir {out} is a symlink: give a new folder (it is created owner-only)"
            ) from None
        if not stat.S_ISDIR(info.st_mode):
            raise FileExistsError(f"result-dir {out} exists and is not a folder") from None
        if info.st_uid != os.geteuid():
            raise PermissionError(
                f"result-dir {out} belongs to user id {info.st_uid}, not to this user "
                f"({os.geteuid()}): give a new folder"
            ) from None
        if stat.S_IMODE(info.st_mode) != 0o700:
            raise PermissionError(
                f"result-dir {out} has mode {stat.S_IMODE(info.st_mode):04o}: others may open "
                "it (it must be 0700, or give a new folder)"
            ) from None
        if any(out.iterdir()):
            raise FileExistsError(
                f"result-dir {out} is not empty: give a new folder (a result is never "
                "written over another)"
            ) from None
    else:
        os.chmod(out, 0o700)  # the umask may have taken the owner's bits too


def claim_result_dir(result_dir: str | Path) -> None:
    """Claim ``result_dir`` for :func:`save_result` now (same rules): the ServerApp calls it
    before its first round, so a folder that would be refused fails the run at once instead of
    after every round has trained. :func:`save_result` accepts the claimed folder (empty, ours,
    0700) later."""
    _claim_result_dir(Path(result_dir))


def save_result(result: FlowerResult, result_dir: str | Path) -> None:
    """Write ``result`` as ``model.pt`` (final weights), ``rounds.pt`` (the weights after each
    round) and ``history.json`` (the rest) into ``result_dir``: a new folder, created owner-only
    (0700), or an empty 0700 folder of this user (``tempfile.TemporaryDirectory()``). A folder
    someone else could have made or opened — a symlink, another user's, readable by others, or
    not empty — is refused (``FileExistsError``/``PermissionError``) before anything is written.
    """
    out = Path(result_dir)
    _claim_result_dir(out)
    torch.save(result.state, out / "model.pt")
    torch.save(result.round_states, out / "rounds.pt")
    history = {
        k: getattr(result, k) for k in (f.name for f in fields(result))
        if k not in ("state", "round_states")
    }  # fmt: skip
    (out / "history.json").write_text(json.dumps(history, indent=1))


def load_result(result_dir: str | Path) -> FlowerResult:
    """Read what :func:`save_result` wrote; ``FileNotFoundError`` if the run saved nothing."""
    out = Path(result_dir)
    if not (out / "history.json").exists():
        raise FileNotFoundError(
            f"no Flower result in {out}: the ServerApp did not finish (see the streamed log)"
        )
    history = json.loads((out / "history.json").read_text())
    state = torch.load(out / "model.pt", weights_only=True)
    round_states = torch.load(out / "rounds.pt", weights_only=True)
    return FlowerResult(state=state, round_states=round_states, **history)


def run_flower_app(
    runtime: str,
    *,
    num_nodes: int = 2,
    echo=print,
    timeout: float = 600.0,
    tls: bool = False,
    **run_config: object,
) -> FlowerResult:
    """Run the repository's Flower App with ``flwr run`` on a fresh local federation.

    Args:
        runtime: ``"deployment"`` (one SuperLink + ``num_nodes`` SuperNodes, each its own OS
            process on 127.0.0.1) or ``"simulation"`` (a SuperLink in simulation mode running
            ``num_nodes`` virtual SuperNodes on Ray).
        num_nodes: SuperNodes; node ``i`` gets ``partition-id=i num-partitions=num_nodes``.
        echo: called with every line the run streams (``None``: silent).
        timeout: seconds before the run is stopped (every process killed either way).
        tls: serve the SuperLink over TLS with a throw-away CA (``LocalFederation(tls=True)``,
            deployment runtime only) instead of ``--insecure``.
        run_config: overrides of :class:`AppConfig` (``num_server_rounds=2, mode="secagg+"``...).
    Returns:
        The :class:`FlowerResult` the ServerApp saved, with ``wall_seconds`` of the whole run.
    Raises:
        ValueError: bad runtime, ``num_nodes`` or run config, or ``tls`` with the simulation
            runtime (before anything starts).
        TypeError: ``tls`` is not a bool.
        RuntimeError: the run failed or timed out (its log tail in the message).
    """
    import tempfile

    from course_lib.fl.deployment import LocalFederation

    if runtime not in ("deployment", "simulation"):
        raise ValueError(f"runtime must be 'deployment' or 'simulation', got {runtime!r}")
    if not isinstance(tls, bool):
        raise TypeError(f"tls must be True or False, got {tls!r}")
    if tls and runtime == "simulation":
        raise ValueError("tls=True needs the deployment runtime: the simulation has no network")
    AppConfig.checked({**run_config, "num_nodes": num_nodes})  # every key, before starting
    if not (APP_DIR / "pyproject.toml").exists():
        raise FileNotFoundError(
            f"the Flower App folder {APP_DIR} is missing: run from a clone of the course "
            "repository (pip install -e .)"
        )
    with tempfile.TemporaryDirectory(prefix="course-flower-result-") as out:
        config = AppConfig.checked({**run_config, "num_nodes": num_nodes, "result_dir": out})
        attempts = 3  # Ray's node start-up limit is a fixed 30 s: a busy machine can miss it
        for attempt in range(1, attempts + 1):
            with LocalFederation(
                num_nodes, simulation=runtime == "simulation", echo=echo, tls=tls
            ) as federation:
                try:
                    wall = federation.run(APP_DIR, config.to_run_config(), timeout=timeout)
                    break
                except RuntimeError:
                    if attempt == attempts or not any(
                        "timed out during startup" in line for line in federation.log
                    ):
                        raise
            if echo is not None:
                echo("Ray did not start within its 30 s limit (busy machine?); retrying.")
        result = load_result(out)
    result.wall_seconds = wall
    return result


def main(argv: list[str] | None = None) -> None:
    """``python -m course_lib.fl.flower``: run the app on a local federation, print round times
    next to the course's in-process FedAvg (``make federation``)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--runtime", choices=("deployment", "simulation"), default="deployment")
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--mode", choices=MODES, default="fedavg")
    parser.add_argument(
        "--tls", action="store_true", help="serve the SuperLink over TLS (throw-away CA)"
    )
    args = parser.parse_args(argv)
    from course_lib.fl.deployment import stop_on_sigterm

    with stop_on_sigterm():  # `kill` / `timeout`: stop every Flower process, remove temp folders
        result = run_flower_app(
            args.runtime,
            num_nodes=args.nodes,
            num_server_rounds=args.rounds,
            mode=args.mode,
            tls=args.tls,
        )
    reference = reference_fedavg(
        AppConfig(num_server_rounds=args.rounds, num_nodes=args.nodes), args.nodes
    )
    assert reference.model is not None  # run_fedavg always returns its model
    gap = max(
        (result.state[k] - v).abs().max().item() for k, v in reference.model.state_dict().items()
    )
    print(
        f"\n{args.runtime} ({args.mode}{', TLS' if args.tls else ''}), "
        f"{args.nodes} nodes x {args.rounds} rounds"
    )
    print(f"  whole `flwr run`: {result.wall_seconds:.1f} s")
    print("  round seconds, Flower:    ", [round(s, 2) for s in result.round_seconds])
    print("  round seconds, course_lib:", [round(s, 2) for s in reference.round_seconds])
    print("  test accuracy, Flower:    ", result.test_acc)
    print("  test accuracy, course_lib:", reference.test_acc)
    print(f"  largest weight difference to course_lib's FedAvg: {gap:.2e}")


if __name__ == "__main__":
    main()
