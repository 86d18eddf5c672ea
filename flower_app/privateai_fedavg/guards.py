"""privateai_fedavg: what the app does with a node that fails, or replies NaN, ±inf or nothing new.

**The rule (every mode): a reply that does not arrive, arrives as an error, holds a NaN or
±inf, or (message API) is malformed counts as a zero update; the average keeps the fixed
denominator K = num-nodes.** That is the course's DP-FedAvg
(``course_lib.fl.dp_fedavg.dp_aggregate``: McMahan et al., ICLR 2018, divide by the *expected*
number of clients), and it keeps DP's books right whatever fails:

    released = θ + (Σ_{k ∈ R} clip_C(θ_k − θ) + N(0, (σC)² I)) / K      (R: the usable replies)

Adding or removing one client moves the sum by at most ``C`` whichever replies arrive, so each
round is the Gaussian mechanism with noise multiplier σ and the ε the app reports (the course
accountant's, ``q = 1``) holds. Flower's DP wrappers instead average the replies that arrived
(denominator ``|R|``) while adding noise of std ``σC/K``: with 3 nodes and one failure, one
client's influence is ``C/2`` under noise ``σC/3``, and ten such rounds spend ε ≈ 32.6 where the
accountant says 19.1 (σ = 1, δ = 1e-5) — and the wrappers refuse a whole round when any reply is
an error, which makes *whether* a model is released depend on one node. Refusing such rounds is
no fix: a round refused because one client's update was NaN differs from the round released
without that client with certainty (ε = ∞).

Where each part runs:

- **ClientApp** (:func:`refuse_nonfinite_mod`, every mode): a trained model holding NaN or ±inf
  is not sent — the ClientApp raises, so the node's reply is an error the server counts and
  logs. Under SecAgg+ the server sees only the masked sum, so this is the only place the check
  can be. In the SecAgg+ modes it also refuses a model that SecAgg+ would silently clip to
  ``[−secagg-clipping-range, secagg-clipping-range]``.
- **ClientApp** (:func:`clip_update_mod`, ``secagg+dp``): clips ``θ_k − θ`` to ``C`` with the
  course's ``clip_update`` (Flower's factor ``min(1, C/‖Δ‖)``; Flower's ``fixedclipping_mod``
  divides by a zero norm and crashes on a zero update), between training and masking. A
  training message without a clipping norm is refused there: no update leaves unclipped.
- **ServerApp**, message API (``fedavg``, ``dp-fixed-clipping``): :func:`screen_replies` drops
  errors, non-finite replies (a client without the mod) and malformed ones (keys, shapes or
  dtypes unlike the global model's: :func:`malformed_reason`) before anything else, counting
  them as refused — zero updates, never an exception or a broadcast;
  :class:`ScreenedFedAvg` averages the rest (plain FedAvg has no denominator to keep), and
  :class:`FixedDenominatorServerSideClipping` applies the rule above with server-side clipping.
- **ServerApp**, SecAgg+ (``secagg+``, ``secagg+dp``): SecAgg+ drops failed nodes itself
  (their masks are rebuilt from Shamir shares) and hands over the mean of the ``n`` models that
  arrived; :class:`FixedDenominatorClientSideClipping` rescales it to the fixed denominator,
  ``θ + (n/K)(mean − θ)``, and adds the noise. A round in which SecAgg+ itself halts (fewer than
  ``reconstruction_threshold`` nodes left) releases nothing.

Every round's count of replies aggregated goes to the result (``FlowerResult.aggregated``); like
the course's ``DPFedHistory.participants`` it is computed without noise and lies outside ε.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from logging import INFO

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord
from flwr.common import (
    Error,
    FitRes,
    MessageType,
    NDArrays,
    Parameters,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.logger import log
from flwr.compat.common import recorddict_compat as compat
from flwr.server.strategy import DifferentialPrivacyClientSideFixedClipping
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg
from flwr.supercore.differential_privacy import (
    KEY_CLIPPING_NORM,
    add_gaussian_noise_inplace,
    compute_stdv,
)

from course_lib.fl.flower import AppConfig

#: The start of the error a ClientApp raises instead of sending a non-finite model.
NONFINITE_REFUSAL = "non-finite update refused"
#: The start of the error a ClientApp raises when its run needs client-side clipping and the
#: server sent no clipping norm.
CLIPPING_REFUSAL = "unclipped update refused"
#: The modes in which each client clips its own update (the server never sees it unmasked).
CLIENT_CLIPPING_MODES = ("secagg+dp",)
#: ``report(server_round, aggregated, nonfinite)``: replies averaged, and how many were dropped
#: (or refused by their node) for holding NaN/±inf or, server-side, a malformed content.
Report = Callable[[int, int, int], None]


def first_nonfinite(arrays: Iterable[np.ndarray]) -> int | None:
    """Index of the first array holding a NaN or ±inf, or ``None``."""
    return next((i for i, a in enumerate(arrays) if not np.isfinite(a).all()), None)


def _reply_arrays(message: Message) -> list[np.ndarray]:
    return [
        a for record in message.content.array_records.values() for a in record.to_numpy_ndarrays()
    ]


def _is_refusal(error: object) -> bool:
    return NONFINITE_REFUSAL in str(error)


def distinct_failures(failures: Iterable[object]) -> list[object]:
    """``failures`` with each node's error once. Flower's ``SecAggPlusWorkflow`` (stage 2) appends
    ``Exception(msg.error)`` for a node whose masked upload failed twice (for the sum and again
    for the legacy results), both wrapping the *same* ``flwr.common.Error`` object: that object,
    one per reply message, identifies the node's reply (the failures carry no node id). Anything
    else (an exception wrapping a string, a ``(proxy, FitRes)`` pair) counts once per entry: two
    nodes failing with equal, possibly interned, strings are two failures."""
    seen: set[int] = set()
    distinct = []
    for failure in failures:
        error = failure.args[0] if isinstance(failure, BaseException) and failure.args else None
        key = id(error) if isinstance(error, Error) else id(failure)
        if key not in seen:
            seen.add(key)
            distinct.append(failure)
    return distinct


def count_refusals(failures: Iterable[object]) -> int:
    """How many distinct failures are a node refusing to send a non-finite model."""
    return sum(_is_refusal(f) for f in distinct_failures(failures))


# -- ClientApp mods -------------------------------------------------------------------------------


def refuse_nonfinite_mod(msg: Message, context: Context, call_next) -> Message:
    """Run the ClientApp; refuse (raise) instead of replying with a model holding NaN or ±inf.

    In the SecAgg+ modes also refuse a model whose weighted values (``num-examples /
    train-samples`` times each weight, what SecAgg+ quantises) leave ``[−r, r]``, ``r =
    secagg-clipping-range``: SecAgg+ would clip them silently. Raises ``ValueError``.
    """
    reply = call_next(msg, context)
    if reply.has_error() or msg.metadata.message_type != MessageType.TRAIN:
        return reply
    arrays = _reply_arrays(reply)
    bad = first_nonfinite(arrays)
    if bad is not None:
        raise ValueError(
            f"{NONFINITE_REFUSAL}: the trained model holds NaN or ±inf (array {bad}); this node "
            "sends nothing this round (did local training diverge? learning rate too large?)"
        )
    config = AppConfig.from_run_config(context.run_config)
    if config.mode.startswith("secagg+") and "fitres.parameters" in reply.content.array_records:
        fitres = compat.recorddict_to_fitres(reply.content, keep_input=True)
        weight = fitres.num_examples / config.train_samples  # SecAgg+'s max_weight
        largest = max(float(np.abs(a).max()) for a in arrays if a.size) * weight
        if largest > config.secagg_clipping_range:
            raise ValueError(
                f"this node's weighted model reaches {largest:.3g}, beyond run-config key "
                f"'secagg-clipping-range' ({config.secagg_clipping_range}): SecAgg+ would clip "
                "it silently. Raise secagg-clipping-range."
            )
    return reply


def clip_update_mod(msg: Message, context: Context, call_next) -> Message:
    """Client-side fixed clipping for runs whose server sends a clipping norm (``secagg+dp``).

    In a mode that needs client clipping (:data:`CLIENT_CLIPPING_MODES`) a training message
    without a clipping norm is refused (``ValueError`` starting with :data:`CLIPPING_REFUSAL`):
    passing the update unclipped would break the noise calibration. Other modes pass through.

    Clips the update ``θ_k − θ`` to L2 norm ``C`` with :func:`course_lib.fl.dp_fedavg.clip_update`
    (factor ``min(1, C/‖Δ‖)``, as Flower's ``fixedclipping_mod``; a zero update passes as it is).
    Must run inside :func:`refuse_nonfinite_mod`'s check, i.e. listed after it.
    """
    config = msg.content.config_records.get("fitins.config")
    if config is None or KEY_CLIPPING_NORM not in config:
        if msg.metadata.message_type == MessageType.TRAIN and "fitins.parameters" in (
            msg.content.array_records
        ):
            mode = AppConfig.from_run_config(context.run_config).mode
            if mode in CLIENT_CLIPPING_MODES:
                raise ValueError(
                    f"{CLIPPING_REFUSAL}: mode {mode!r} needs every update clipped on this node, "
                    f"but the server sent no clipping norm ({KEY_CLIPPING_NORM!r} missing from "
                    "fitins.config); this node sends nothing this round"
                )
        return call_next(msg, context)
    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    clipping_norm = float(fitins.config[KEY_CLIPPING_NORM])
    sent = parameters_to_ndarrays(fitins.parameters)
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    fitres = compat.recorddict_to_fitres(reply.content, keep_input=True)
    received = parameters_to_ndarrays(fitres.parameters)
    update = {
        str(i): torch.from_numpy(np.asarray(r) - np.asarray(s))
        for i, (r, s) in enumerate(zip(received, sent, strict=True))
    }
    from course_lib.fl.dp_fedavg import clip_update  # here: SciPy stays out of plain runs

    clipped, _ = clip_update(update, clipping_norm, name="this node's update")
    fitres.parameters = ndarrays_to_parameters(
        [np.asarray(s) + clipped[str(i)].numpy() for i, s in enumerate(sent)]
    )
    reply.content = compat.fitres_to_recorddict(fitres, keep_input=True)
    log(INFO, "clip_update_mod: update clipped to L2 norm %.4f", clipping_norm)
    return reply


# -- ServerApp: message API -----------------------------------------------------------------------


def malformed_reason(
    message: Message, current: ArrayRecord, weighted_by_key: str = "num-examples"
) -> str | None:
    """Why ``message``'s content is not a model of the current global model's form, or ``None``.

    A usable reply holds exactly one ``ArrayRecord`` with the same keys as ``current`` and, under
    each key, an array of the same shape and dtype (as deserialised, not as the reply declares
    it), and exactly one ``MetricRecord`` whose ``weighted_by_key`` is a finite number > 0.
    Anything else would raise inside the average (a missing key) or broadcast silently
    (a shape-``(1,)`` array in ``θ_k − θ``), so the server drops it instead.
    """
    content = message.content
    if len(content.array_records) != 1:
        return f"{len(content.array_records)} ArrayRecords, expected 1"
    record = next(iter(content.array_records.values()))
    if set(record) != set(current):
        missing = sorted(set(current) - set(record))
        extra = sorted(set(record) - set(current))
        return f"array keys differ from the global model's (missing {missing}, extra {extra})"
    try:
        arrays = {k: record[k].numpy() for k in record}
    except Exception as error:  # noqa: BLE001 - any undecodable array is a malformed reply
        return f"an array could not be decoded ({type(error).__name__}: {error})"
    for k, reference in current.items():
        array, expected = arrays[k], reference.numpy()
        if array.shape != expected.shape or array.dtype != expected.dtype:
            return (
                f"array {k!r} is {array.dtype}{list(array.shape)}, the global model's is "
                f"{expected.dtype}{list(expected.shape)}"
            )
    if len(content.metric_records) != 1:
        return f"{len(content.metric_records)} MetricRecords, expected 1"
    metrics = next(iter(content.metric_records.values()))
    weight = metrics.get(weighted_by_key)
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        return f"metric {weighted_by_key!r} is {weight!r}, not a number"
    if not (math.isfinite(weight) and weight > 0):
        return f"metric {weighted_by_key!r} is {weight!r}, not a finite number > 0"
    return None


def screen_replies(
    server_round: int,
    replies: Iterable[Message],
    current: ArrayRecord,
    weighted_by_key: str = "num-examples",
) -> tuple[list[Message], int]:
    """The replies that arrived without error, have the form of the global model ``current``
    (:func:`malformed_reason`) and hold only finite arrays, and how many were refused: dropped
    for NaN/±inf or a malformed content, or refused by their node. Logs every reply left out.

    A refused reply is a zero update, as a failed node (module docstring): it never raises, so
    whether a model is released does not depend on any one node."""
    usable, refused = [], 0
    for reply in replies:
        node = reply.metadata.src_node_id
        if reply.has_error():
            refused += _is_refusal(reply.error.reason)
            log(INFO, "round %s: node %s failed, left out: %s", server_round, node,
                reply.error.reason)  # fmt: skip
            continue
        reason = malformed_reason(reply, current, weighted_by_key)
        if reason is not None:
            refused += 1
            log(INFO, "round %s: node %s sent a malformed reply, dropped: %s", server_round,
                node, reason)  # fmt: skip
        elif first_nonfinite(_reply_arrays(reply)) is not None:
            refused += 1
            log(INFO, "round %s: node %s sent NaN/inf, dropped before clipping", server_round,
                node)  # fmt: skip
        else:
            usable.append(reply)
    return usable, refused


class ScreenedFedAvg(FedAvg):
    """Flower's message-API ``FedAvg`` over the replies :func:`screen_replies` keeps (weighted
    by ``num-examples``); no usable reply: the model stays. ``report`` gets the counts."""

    def __init__(self, *, report: Report, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.report = report
        #: the global model sent this round (``configure_train``); replies must have its form
        self.current_arrays: ArrayRecord | None = None

    def configure_train(  # noqa: D102
        self, server_round: int, arrays: ArrayRecord, config, grid
    ) -> Iterable[Message]:
        self.current_arrays = arrays
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if self.current_arrays is None:
            raise RuntimeError("aggregate_train before configure_train: no global model to check")
        usable, nonfinite = screen_replies(
            server_round, replies, self.current_arrays, self.weighted_by_key
        )
        self.report(server_round, len(usable), nonfinite)
        if not usable:
            return None, None
        return super().aggregate_train(server_round, usable)


class FixedDenominatorServerSideClipping(DifferentialPrivacyServerSideFixedClipping):
    """Flower's ``DifferentialPrivacyServerSideFixedClipping`` with the course's rule (module
    docstring): ``θ + (Σ_{usable} clip_C(θ_k − θ) + N(0, (σC)²)) / K`` — the sum in float64 as
    ``dp_aggregate``, the noise Flower's (std ``σC/K`` on the average, NumPy's generator).

    ``strategy`` must be a :class:`ScreenedFedAvg` (its metric aggregation is reused; ``K`` is
    ``num_sampled_clients``).
    """

    def __init__(self, strategy: ScreenedFedAvg, **kwargs: float) -> None:
        super().__init__(strategy, **kwargs)
        self.report = strategy.report

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        usable, nonfinite = screen_replies(
            server_round, replies, self.current_arrays, self.strategy.weighted_by_key
        )
        self.report(server_round, len(usable), nonfinite)
        from course_lib.fl.dp_fedavg import clip_update

        current = self.current_arrays.to_torch_state_dict()
        total = {k: torch.zeros(v.shape, dtype=torch.float64) for k, v in current.items()}
        for i, reply in enumerate(usable):
            state = reply.content["arrays"].to_torch_state_dict()
            update = {k: state[k] - current[k] for k in current}
            clipped, _ = clip_update(update, self.clipping_norm, name=f"reply {i}")
            for k in total:
                total[k] += clipped[k].to(torch.float64)
        released = ArrayRecord(
            {
                k: Array((current[k] + (total[k] / self.num_sampled_clients).to(v.dtype)).numpy())
                for k, v in current.items()
            }
        )
        released = self._add_noise_to_aggregated_arrays(released)
        metrics = None
        if usable:
            strategy = self.strategy
            metrics = strategy.train_metrics_aggr_fn(
                [r.content for r in usable], strategy.weighted_by_key
            )
        return released, metrics


# -- ServerApp: SecAgg+ (Flower's legacy strategies) ----------------------------------------------


class ScreenedLegacyFedAvg(LegacyFedAvg):
    """Flower's legacy ``FedAvg`` (what SecAgg+ hands its aggregate to), reporting the counts;
    SecAgg+ has already left failed nodes out of the mean."""

    def __init__(self, *, report: Report, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.report = report

    def aggregate_fit(self, server_round, results, failures):  # noqa: D102
        self.report(server_round, len(results), count_refusals(failures))
        return super().aggregate_fit(server_round, results, failures)


class FixedDenominatorClientSideClipping(DifferentialPrivacyClientSideFixedClipping):
    """Flower's legacy ``DifferentialPrivacyClientSideFixedClipping`` with the course's rule:
    SecAgg+ gives the mean of the ``n`` clipped models that arrived; release
    ``θ + (n/K)(mean − θ) + N(0, (σC/K)²)`` (``n = 0``: ``θ`` plus the noise). Flower's own
    wrapper returns nothing when any node failed and otherwise adds ``σC/K`` to the ``n``-mean.
    """

    def __init__(self, strategy: ScreenedLegacyFedAvg, **kwargs: float) -> None:
        super().__init__(strategy, **kwargs)
        self._current: NDArrays = []

    def configure_fit(self, server_round, parameters: Parameters, client_manager):  # noqa: D102
        self._current = parameters_to_ndarrays(parameters)
        return super().configure_fit(server_round, parameters, client_manager)

    def aggregate_fit(
        self,
        server_round: int,
        results: Sequence[tuple[object, FitRes]],
        failures: Sequence[object],
    ) -> tuple[Parameters | None, dict]:
        for failure in distinct_failures(failures):
            log(INFO, "round %s: a node failed, left out: %s", server_round, failure)
        n, k = len(results), self.num_sampled_clients
        metrics: dict = {}
        current = [np.asarray(t, dtype=np.float64) for t in self._current]
        if n:
            mean, metrics = self.strategy.aggregate_fit(server_round, list(results), failures)
            mean_arrays = parameters_to_ndarrays(mean)
            released = [t + (m - t) * (n / k) for t, m in zip(current, mean_arrays, strict=True)]
        else:
            self.strategy.report(server_round, 0, count_refusals(failures))
            released = current
        released = [
            r.astype(np.asarray(t).dtype) for r, t in zip(released, self._current, strict=True)
        ]
        stdv = compute_stdv(self.noise_multiplier, self.clipping_norm, k)
        add_gaussian_noise_inplace(released, stdv)
        log(INFO, "aggregate_fit: central DP noise with %.4f stdev added", stdv)
        return ndarrays_to_parameters(released), metrics
