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
``secagg+dp``), ``clip_update_mod`` clips the update ``θ_new − θ`` to it between training and
masking — the mod order of Flower's ``fl-dp-sa`` example (its ``fixedclipping_mod`` crashes on a
zero update). Innermost, ``refuse_nonfinite_mod`` refuses to send a model holding NaN or ±inf,
before any clipping or masking, in every mode (``guards.py``).

The run-config keys ``fault``, ``fault-partition`` and ``fault-round`` make one node fail on
purpose (``AppConfig``): that is how the tests and the README show what each mode does then.
"""

from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat as compat

from course_lib.validation import as_integer
from privateai_fedavg.guards import clip_update_mod, refuse_nonfinite_mod
from privateai_fedavg.task import AppConfig, make_model, node_partition, train_on_partition


def secaggplus_when_asked(msg: Message, context: Context, call_next):
    """Flower's ``secaggplus_mod``, for the messages of a SecAgg+ run only (plain FedAvg and DP
    runs of the same app send no SecAgg+ stage)."""
    if RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, context, call_next)
    return call_next(msg, context)


# the first mod is the outermost: a reply passes refuse_nonfinite_mod, then clipping, then masking
app = ClientApp(mods=[secaggplus_when_asked, clip_update_mod, refuse_nonfinite_mod])


def node_settings(node_config: Mapping[str, object], config: AppConfig) -> tuple[int, int]:
    """``(partition-id, num-partitions)`` from this SuperNode's ``--node-config``, checked:
    integers, ``num-partitions == num-nodes`` of the run, ``0 <= partition-id < num-partitions``.
    Raises ``KeyError``/``TypeError``/``ValueError`` naming the node-config key."""
    values = []
    for key in ("partition-id", "num-partitions"):
        if key not in node_config:
            raise KeyError(f'start the SuperNode with --node-config "{key}=..." (missing {key})')
        values.append(as_integer(node_config[key], f"node-config key {key!r}"))
    partition_id, num_partitions = values
    if num_partitions != config.num_nodes:
        raise ValueError(
            f"node-config key 'num-partitions' is {num_partitions} but the run has num-nodes = "
            f"{config.num_nodes}: the partitions would not match the server's"
        )
    if not 0 <= partition_id < num_partitions:
        raise ValueError(
            f"node-config key 'partition-id' must lie in 0..{num_partitions - 1}, "
            f"got {partition_id}"
        )
    return partition_id, num_partitions


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train on this node's partition, starting from the global weights in ``msg``."""
    config = AppConfig.from_run_config(context.run_config)
    partition_id, num_partitions = node_settings(context.node_config, config)
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
    faulty = (partition_id, server_round) == (config.fault_partition, config.fault_round)
    fault = config.fault if faulty else "none"
    if fault == "raise":
        raise RuntimeError(f"fault injected: node {partition_id} fails in round {server_round}")
    data = node_partition(config, partition_id, num_partitions)
    new_state, loss, acc = train_on_partition(
        config, state, data, server_round=server_round, partition_id=partition_id
    )
    if fault == "zero":  # reply with the model it was sent: a zero update
        new_state = {k: v.clone() for k, v in state.items()}
    elif fault in ("nan", "inf"):
        first = next(iter(new_state))
        new_state[first] = new_state[first].clone()
        new_state[first].view(-1)[0] = float(fault)
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
