"""privateai_fedavg: a Flower ClientApp — one hospital/phone training on its own partition.

Each SuperNode is started with ``--node-config "partition-id=i num-partitions=N"``; its
ClientApp trains the course's MLP on that partition (``task.node_partition``) with the course's
local training and shuffle seeds (``task.train_on_partition``) and replies with its new weights
and its ``num-examples``.

Two message formats reach ``train``: Flower's message API (``arrays`` + ``config`` records, sent
by the ``FedAvg`` strategy, plain or DP-wrapped), and the legacy ``fitins`` format that Flower's
``SecAggPlusWorkflow`` sends. For the latter, ``secaggplus_mod`` runs the SecAgg+ protocol
around the training: key agreement, secret sharing of the masks, and a masked, quantised upload.
When the server's ``DifferentialPrivacyClientSideFixedClipping`` sends a clipping norm (mode
``secagg+dp``), ``fixedclipping_mod`` clips the update ``θ_new − θ`` to it between training and
masking — the mod order of Flower's ``fl-dp-sa`` example.
"""

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.client.mod import fixedclipping_mod, secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat as compat
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from privateai_fedavg.task import AppConfig, make_model, node_partition, train_on_partition


def secaggplus_when_asked(msg: Message, context: Context, call_next):
    """Flower's ``secaggplus_mod``, for the messages of a SecAgg+ run only (plain FedAvg and DP
    runs of the same app send no SecAgg+ stage)."""
    if RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, context, call_next)
    return call_next(msg, context)


def fixedclipping_when_asked(msg: Message, context: Context, call_next):
    """Flower's ``fixedclipping_mod``, for the runs whose server asks for client-side clipping
    (its fit config carries the clipping norm)."""
    config = msg.content.config_records.get("fitins.config")
    if config is not None and KEY_CLIPPING_NORM in config:
        return fixedclipping_mod(msg, context, call_next)
    return call_next(msg, context)


app = ClientApp(mods=[secaggplus_when_asked, fixedclipping_when_asked])


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train on this node's partition, starting from the global weights in ``msg``."""
    config = AppConfig.from_run_config(context.run_config)
    partition_id = int(context.node_config["partition-id"])
    data = node_partition(config, partition_id, int(context.node_config["num-partitions"]))
    names = list(make_model(config).state_dict())
    legacy = "fitins.parameters" in msg.content.array_records
    if legacy:  # SecAgg+ (Flower's legacy fit format): parameters as a list of numpy arrays
        fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
        arrays = parameters_to_ndarrays(fitins.parameters)
        state = {n: torch.from_numpy(np.array(a)) for n, a in zip(names, arrays, strict=True)}
        server_round = int(fitins.config["server-round"])
    else:
        state = msg.content["arrays"].to_torch_state_dict()
        server_round = int(msg.content["config"]["server-round"])

    new_state, loss, acc = train_on_partition(
        config, state, data, server_round=server_round, partition_id=partition_id
    )
    metrics = {"train_loss": loss, "train_acc": acc, "num-examples": len(data)}
    if legacy:
        fitres = FitRes(
            status=Status(code=Code.OK, message="ok"),
            parameters=ndarrays_to_parameters([new_state[n].numpy() for n in names]),
            num_examples=len(data),
            metrics=metrics,
        )
        return Message(compat.fitres_to_recorddict(fitres, keep_input=True), reply_to=msg)
    content = RecordDict({"arrays": ArrayRecord(new_state), "metrics": MetricRecord(metrics)})
    return Message(content=content, reply_to=msg)
