"""The same FedAvg experiment on Flower's simulation engine (``flwr[simulation]``).

Flower (https://flower.ai) is the most widely used federated-learning framework. Its apps are
written the way its PyTorch quickstart writes them:

- a :class:`~flwr.clientapp.ClientApp` whose ``@app.train()`` function receives a
  :class:`~flwr.app.Message` carrying the global weights (an :class:`~flwr.app.ArrayRecord`) and a
  config, trains on *its* partition (``context.node_config["partition-id"]``) and replies with
  new weights and a ``num-examples`` metric;
- a :class:`~flwr.serverapp.ServerApp` whose ``@app.main()`` runs the built-in
  :class:`~flwr.serverapp.strategy.FedAvg` strategy for some rounds, evaluating the global model
  centrally after each one.

The simulation engine runs every virtual client in a Ray worker process on this machine. Client
training here calls the very same :func:`course_lib.fl.fedavg.local_train_with_metrics` with the
same per-round shuffle seeds as :func:`course_lib.fl.fedavg.run_fedavg`, so the two runs should
agree up to floating-point rounding: Flower adds the production machinery (messages, a
scheduler, separate processes), not a different algorithm.

Flower's in-notebook entry point ``run_simulation`` logs that it is deprecated in favour of the
``flwr run`` command line (which needs a project folder with a ``pyproject.toml``). A notebook
cannot use that, so :func:`run_flower_fedavg` keeps ``run_simulation`` and lowers Flower's and
Ray's log level while it runs, deliberately hiding that notice and Ray's start-up chatter.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from course_lib.fl.fedavg import FedHistory, local_train_with_metrics
from course_lib.fl.seeding import client_round_seed
from course_lib.training import evaluate, make_loader

__all__ = ["run_flower_fedavg", "make_client_app", "make_server_app"]


def make_client_app(
    model_fn: Callable[[], nn.Module],
    client_datasets: Sequence[Dataset],
    *,
    batch_size: int,
    seed: int,
):
    """A Flower ``ClientApp``: virtual client ``partition-id`` trains on ``client_datasets[id]``."""
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)  # one CPU per virtual client, as the backend config reserves
        client = int(context.node_config["partition-id"])
        config = msg.content["config"]
        model = model_fn()
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        round_index = int(config["server-round"]) - 1  # Flower counts rounds from 1
        loader = make_loader(
            client_datasets[client],
            batch_size,
            shuffle=True,
            seed=client_round_seed(seed, round_index, client),
        )
        state, loss, acc = local_train_with_metrics(
            model,
            loader,
            epochs=int(config["epochs"]),
            lr=float(config["lr"]),
            mu=float(config["mu"]),
        )
        metrics = MetricRecord(
            {"train_loss": loss, "train_acc": acc, "num-examples": len(client_datasets[client])}
        )
        content = RecordDict({"arrays": ArrayRecord(state), "metrics": metrics})
        return Message(content=content, reply_to=msg)

    return app


def make_server_app(
    model_fn: Callable[[], nn.Module],
    test_dataset: Dataset,
    *,
    num_clients: int,
    rounds: int,
    local_epochs: int,
    lr: float,
    mu: float,
    seed: int,
    history: FedHistory,
):
    """A Flower ``ServerApp`` running ``FedAvg`` with central evaluation into ``history``."""
    from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg

    app = ServerApp()
    test_loader = DataLoader(test_dataset, batch_size=1000, shuffle=False)

    clock = []

    def central_evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model = model_fn()
        model.load_state_dict(arrays.to_torch_state_dict())
        loss, acc = evaluate(model, test_loader)
        if server_round > 0:  # round 0 is the untrained model; course_lib records rounds 1..R
            history.val_loss.append(loss)
            history.val_acc.append(acc)
            history.model = model
            history.round_seconds.append(time.perf_counter() - clock[-1])
        clock.append(time.perf_counter())  # a round ends with its central evaluation
        return MetricRecord({"loss": loss, "accuracy": acc})

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        torch.manual_seed(seed)
        initial = ArrayRecord(model_fn().state_dict())
        strategy = FedAvg(
            fraction_train=1.0,
            fraction_evaluate=0.0,
            min_train_nodes=num_clients,
            min_available_nodes=num_clients,
        )
        result = strategy.start(
            grid=grid,
            initial_arrays=initial,
            num_rounds=rounds,
            train_config=ConfigRecord({"lr": lr, "epochs": local_epochs, "mu": mu}),
            evaluate_fn=central_evaluate,
        )
        for r in range(1, rounds + 1):
            history.train_loss.append(float(result.train_metrics_clientapp[r]["train_loss"]))
            history.train_acc.append(float(result.train_metrics_clientapp[r]["train_acc"]))

    return app


@contextlib.contextmanager
def _quiet_flower() -> Iterator[None]:
    """Lower Flower's and Ray's log levels (deprecation notice, start-up banners) and hide Ray's
    GPU-related FutureWarning, for the duration of one simulation."""
    loggers = [logging.getLogger(name) for name in ("flwr", "ray")]
    levels = [lg.level for lg in loggers]
    previous_env = os.environ.get("RAY_DEDUP_LOGS")
    os.environ["RAY_DEDUP_LOGS"] = "0"
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            # Ray's FutureWarning about GPU environment variables: irrelevant on a CPU run
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"ray\.")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
        if previous_env is None:
            os.environ.pop("RAY_DEDUP_LOGS", None)
        else:
            os.environ["RAY_DEDUP_LOGS"] = previous_env


def _ray_start_timed_out(error: BaseException | None) -> bool:
    while error is not None:
        if "timed out during startup" in str(error):
            return True
        error = error.__cause__
    return False


def run_flower_fedavg(
    model_fn: Callable[[], nn.Module],
    client_datasets: Sequence[Dataset],
    test_dataset: Dataset,
    *,
    rounds: int,
    local_epochs: int = 1,
    lr: float = 0.05,
    batch_size: int = 32,
    mu: float = 0.0,
    seed: int = 0,
    num_cpus: int | None = None,
    quiet: bool = True,
) -> FedHistory:
    """Run FedAvg with Flower's simulation engine; same arguments and result as
    :func:`course_lib.fl.fedavg.run_fedavg` (all clients take part in every round).

    ``num_cpus`` caps the Ray workers (default: all cores); each virtual client takes one.
    ``quiet`` hides Flower's deprecation notice and Ray's log lines.
    """
    from flwr.simulation import run_simulation

    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds <= 0:
        raise ValueError(f"rounds must be a positive integer, got {rounds!r}")
    if len(client_datasets) == 0:
        raise ValueError("a federation needs at least one client dataset")
    if any(len(ds) == 0 for ds in client_datasets):
        raise ValueError("every client needs a non-empty dataset")
    history = FedHistory(client_sizes=[len(ds) for ds in client_datasets])
    num_cpus = num_cpus or os.cpu_count() or 1
    backend_config = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {
            "num_cpus": num_cpus,
            "num_gpus": 0,
            "include_dashboard": False,
            "logging_level": logging.ERROR if quiet else logging.INFO,
            "log_to_driver": not quiet,
        },
    }
    client_app = make_client_app(model_fn, client_datasets, batch_size=batch_size, seed=seed)
    server_app = make_server_app(
        model_fn,
        test_dataset,
        num_clients=len(client_datasets),
        rounds=rounds,
        local_epochs=local_epochs,
        lr=lr,
        mu=mu,
        seed=seed,
        history=history,
    )
    for attempt in (1, 2):
        try:
            with _quiet_flower() if quiet else contextlib.nullcontext():
                run_simulation(
                    server_app=server_app,
                    client_app=client_app,
                    num_supernodes=len(client_datasets),
                    backend_config=backend_config,
                )
            break
        except RuntimeError as error:
            # Ray gives its node 30 s to start; a busy machine can miss that. Retry once.
            if attempt == 2 or not _ray_start_timed_out(error):
                raise
            print("Ray did not start within its 30 s limit (busy machine?); retrying once.")
            for series in (
                history.train_loss,
                history.train_acc,
                history.val_loss,
                history.val_acc,
            ):
                series.clear()
    if len(history.val_acc) != rounds:
        raise RuntimeError(
            f"the Flower simulation finished {len(history.val_acc)} of {rounds} "
            "rounds; rerun with quiet=False to see its log"
        )
    return history
