"""privateai_fedavg: a Flower ServerApp — FedAvg, DP-FedAvg (fixed clipping), SecAgg+, or both.

``mode`` (run config) picks what the server runs each round over all ``num-nodes`` SuperNodes:

- ``fedavg``: Flower's ``FedAvg`` strategy (message API), weighted by ``num-examples``;
- ``dp-fixed-clipping``: the same strategy inside ``DifferentialPrivacyServerSideFixedClipping``
  (with the course's rule for failed nodes, ``guards.py``) — central DP: the server clips each
  update to ``clipping-norm`` and adds Gaussian noise of std
  ``noise-multiplier · clipping-norm / num-nodes`` to the average;
- ``secagg+``: Flower's ``SecAggPlusWorkflow`` inside its ``DefaultWorkflow`` (as Flower's
  ``flower-secure-aggregation`` example does): the server only learns the sum of the masked,
  quantised, weighted client models;
- ``secagg+dp``: SecAgg+ as above, with the legacy ``FedAvg`` inside Flower's
  ``DifferentialPrivacyClientSideFixedClipping`` (as Flower's ``fl-dp-sa`` example does, with
  the course's rule for failed nodes, ``guards.py``): it asks every client to clip its update
  to ``clipping-norm`` (``clip_update_mod`` on the ClientApp) and adds Gaussian noise of std
  ``noise-multiplier · clipping-norm / num-nodes`` to the unmasked average — the server never
  sees an unclipped or unmasked update.

Both DP modes give each client's clipped update a sensitivity of ``clipping-norm / num-nodes``
in the average — hence that noise std, and the course accountant's ε — only when every update
enters the average with weight ``1 / num-nodes``: Flower's DP wrappers assume so, but its FedAvg
weights by ``num-examples``. So they hold only with equal partitions (an IID split whose
``train-samples`` is divisible by ``num-nodes``), and the app refuses DP modes unless the
partitions are equal.

**Nodes that fail.** In every mode a node whose reply is missing, an error, or holds NaN/±inf
counts as a zero update, and the DP modes keep the denominator ``num-nodes`` (the course's
DP-FedAvg), so the noise and the reported ε stay right: ``guards.py`` says why, and wraps
Flower's strategies to do it.

After each round the global model is evaluated on the course's test set; at the end the final
weights and per-round numbers go to ``result-dir`` (when set) for the tests and lesson 10.
"""

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.common import ndarrays_to_parameters
from flwr.server import LegacyContext, ServerConfig
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid, ServerApp

from privateai_fedavg.guards import (
    FixedDenominatorClientSideClipping,
    FixedDenominatorServerSideClipping,
    ScreenedFedAvg,
    ScreenedLegacyFedAvg,
)
from privateai_fedavg.task import (
    AppConfig,
    RoundClock,
    claim_result_dir,
    initial_state,
    save_result,
)

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run ``num-server-rounds`` rounds in the chosen ``mode`` and save the result."""
    config = AppConfig.from_run_config(context.run_config)
    if config.result_dir:  # claimed first: a folder save_result would refuse fails the run now
        claim_result_dir(config.result_dir)
    clock = RoundClock(config)
    if config.mode.startswith("secagg+"):
        _run_secaggplus(grid, context, config, clock)
    else:
        _run_message_api(grid, config, clock)
    if config.result_dir:
        save_result(clock.result, config.result_dir)


def _run_message_api(grid: Grid, config: AppConfig, clock: RoundClock) -> None:
    strategy = ScreenedFedAvg(
        report=clock.note_replies,
        fraction_train=1.0,
        fraction_evaluate=0.0,
        min_train_nodes=config.num_nodes,
        min_available_nodes=config.num_nodes,
    )
    if config.mode == "dp-fixed-clipping":
        strategy = FixedDenominatorServerSideClipping(
            strategy,
            noise_multiplier=config.noise_multiplier,
            clipping_norm=config.clipping_norm,
            num_sampled_clients=config.num_nodes,
        )

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        loss, acc = clock.end_round(server_round, arrays.to_torch_state_dict())
        return MetricRecord({"loss": loss, "accuracy": acc})

    strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(initial_state(config)),
        num_rounds=config.num_server_rounds,
        train_config=ConfigRecord({}),
        evaluate_fn=evaluate,
    )


def _run_secaggplus(grid: Grid, context: Context, config: AppConfig, clock: RoundClock) -> None:
    start = initial_state(config)
    names = list(start)

    def evaluate(server_round, ndarrays, _config):
        state = {n: torch.from_numpy(np.array(a)) for n, a in zip(names, ndarrays, strict=True)}
        loss, acc = clock.end_round(server_round, state)
        return loss, {"accuracy": acc}

    strategy = ScreenedLegacyFedAvg(
        report=clock.note_replies,
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=config.num_nodes,
        min_available_clients=config.num_nodes,
        initial_parameters=ndarrays_to_parameters([t.numpy() for t in start.values()]),
        on_fit_config_fn=lambda server_round: {"server-round": server_round},
        evaluate_fn=evaluate,
    )
    if config.mode == "secagg+dp":
        strategy = FixedDenominatorClientSideClipping(
            strategy,
            noise_multiplier=config.noise_multiplier,
            clipping_norm=config.clipping_norm,
            num_sampled_clients=config.num_nodes,
        )
    legacy = LegacyContext(
        context=context,
        config=ServerConfig(num_rounds=config.num_server_rounds),
        strategy=strategy,
    )
    workflow = DefaultWorkflow(
        fit_workflow=SecAggPlusWorkflow(
            num_shares=config.num_nodes,  # every node holds a share of every mask seed
            reconstruction_threshold=config.num_nodes // 2 + 1,
            # client weights (num-examples) are divided by max_weight before quantisation
            max_weight=float(config.train_samples),
            clipping_range=config.secagg_clipping_range,
            quantization_range=config.secagg_quantization_range,
        )
    )
    workflow(grid, legacy)
