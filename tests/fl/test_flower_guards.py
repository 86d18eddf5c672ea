"""The Flower App's rule for nodes that fail or reply NaN/±inf/zero (flower_app/.../guards.py),
in process: the strategies and mods get hand-built Flower messages, no process is started.

Each test plays the faulty (or hostile) node and checks the released model against the
course's reference DP-FedAvg step (``course_lib.fl.dp_fedavg.dp_aggregate``), or shows what
Flower's own component does with the same input.
"""

import itertools
import math
import sys

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common import (
    Code,
    Error,
    FitIns,
    FitRes,
    MessageType,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.compat.common import recorddict_compat as compat
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM, compute_clip_model_update
from flwr.supercore.task_identity import TaskIdentity

from course_lib.fl.dp_fedavg import clip_update, dp_aggregate, dp_fedavg_epsilon
from course_lib.fl.flower import APP_DIR, AppConfig, node_partition
from course_lib.randomness import InsecureSeededRandom

sys.path.insert(0, str(APP_DIR))  # the app's package, as a SuperNode installs it
from privateai_fedavg import guards  # noqa: E402
from privateai_fedavg.client_app import node_settings  # noqa: E402

K, C = 3, 0.5


@pytest.fixture(autouse=True)
def _task_identity(monkeypatch):
    """Flower's messages take their run and node ids from the running task: give them one."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def _global_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"w": torch.randn(20, 5, generator=g), "b": torch.randn(5, generator=g)}


def _client_states(theta, scales=(0.3, 2.0, 5.0)):
    """Client models θ + Δ_k with ‖Δ_k‖ = scales[k]: below C, and far above it."""
    g = torch.Generator().manual_seed(1)
    states = []
    for scale in scales:
        delta = {k: torch.randn(v.shape, generator=g) for k, v in theta.items()}
        norm = math.sqrt(sum(float((d**2).sum()) for d in delta.values()))
        states.append({k: theta[k] + delta[k] * (scale / norm) for k in theta})
    return states


def _instruction(node: int) -> Message:
    return Message(
        content=RecordDict({"config": ConfigRecord({"server-round": 1})}),
        dst_node_id=node,
        message_type=MessageType.TRAIN,
    )


def _reply(node: int, state) -> Message:
    content = RecordDict(
        {"arrays": ArrayRecord(state), "metrics": MetricRecord({"num-examples": 100})}
    )
    return Message(content=content, reply_to=_instruction(node))


def _failure(node: int, reason: str) -> Message:
    return Message(Error(code=0, reason=reason), reply_to=_instruction(node))


def _release(replies, theta, noise_multiplier=0.0):
    counts = []
    strategy = guards.FixedDenominatorServerSideClipping(
        guards.ScreenedFedAvg(report=lambda *c: counts.append(c)),
        noise_multiplier=noise_multiplier,
        clipping_norm=C,
        num_sampled_clients=K,
    )
    strategy.current_arrays = ArrayRecord(theta)
    arrays, _ = strategy.aggregate_train(1, replies)
    return arrays.to_torch_state_dict(), counts


def _course_release(theta, updates):
    """The course's DP-FedAvg step, noise-free: θ + dp_aggregate(...)."""
    average, norms = dp_aggregate(
        updates, template=theta, clip_norm=C, noise_multiplier=0.0, expected_clients=K,
        rng=InsecureSeededRandom(0),
    )  # fmt: skip
    return {k: theta[k] + average[k] for k in theta}, norms


def _distance(a, b) -> float:
    return math.sqrt(sum(float(((a[k].double() - b[k].double()) ** 2).sum()) for k in a))


# -- server-side fixed clipping (mode dp-fixed-clipping) ------------------------------------------


def test_a_failed_node_counts_as_a_zero_update_as_in_the_course_dp_fedavg():
    """Node 2 raises: the release is θ + (clip Δ_0 + clip Δ_1)/K — the course's dp_aggregate with
    node 2's update dropped — not Flower's mean over the 2 replies that arrived."""
    theta = _global_state()
    states = _client_states(theta)
    replies = [_reply(0, states[0]), _reply(1, states[1]), _failure(2, "fault injected")]
    released, counts = _release(replies, theta)
    nan_update = {k: torch.full_like(v, math.nan) for k, v in theta.items()}
    updates = [{k: s[k] - theta[k] for k in theta} for s in states[:2]] + [nan_update]
    course, norms = _course_release(theta, updates)
    assert math.isnan(norms[2])  # the course drops it too
    for k in theta:
        torch.testing.assert_close(released[k], course[k], atol=1e-7, rtol=0)
    assert counts == [(1, 2, 0)]  # round 1: 2 replies averaged, none non-finite


def test_one_client_moves_the_release_by_at_most_c_over_k_whoever_fails():
    """The attacker's view of sensitivity: for every set of nodes that fail, adding one client
    X (with a huge update) to the replies moves the noise-free release by at most C/K. Flower's
    own wrapper, with node 1 missing, lets X move it by C/2 (X's clipped update against a zero
    one) under the same noise σC/K — and releases nothing at all when a reply is an error."""
    theta = _global_state()
    states = _client_states(theta, scales=(5.0, 7.0, 50.0))
    for failed in itertools.chain.from_iterable(
        itertools.combinations(range(2), r) for r in range(3)
    ):
        present = [i for i in range(2) if i not in failed]
        without = [_reply(i, states[i]) for i in present]
        for x_state in (states[2], theta):  # X added with a huge update, or with a zero one
            with_x = [*without, _reply(2, x_state)]
            move = _distance(_release(with_x, theta)[0], _release(without, theta)[0])
            assert move <= C / K + 1e-6
        if not failed:
            assert move == pytest.approx(0.0, abs=1e-7)  # a zero update is no update
    ours = [_release([_reply(0, states[0]), _reply(2, s)], theta)[0] for s in (states[2], theta)]
    assert _distance(*ours) == pytest.approx(C / K, rel=1e-5)  # the bound is reached

    flower = DifferentialPrivacyServerSideFixedClipping(
        FedAvg(), noise_multiplier=0.0, clipping_norm=C, num_sampled_clients=K
    )
    theirs = []
    tiny = _client_states(theta, scales=(1e-6,))[0]  # Flower's clipping divides by a zero norm
    for x_state in (states[2], tiny):
        flower.current_arrays = ArrayRecord(theta)
        arrays, _ = flower.aggregate_train(1, [_reply(0, states[0]), _reply(2, x_state)])
        theirs.append(arrays.to_torch_state_dict())
    assert _distance(*theirs) == pytest.approx(C / 2, rel=1e-4)  # > C/K: noise σC/K too small
    flower.current_arrays = ArrayRecord(theta)
    refused = flower.aggregate_train(1, [_reply(0, states[0]), _failure(2, "crash")])
    assert refused == (None, None)  # whether a model is released depends on one node


def test_nonfinite_replies_are_dropped_before_clipping_and_counted():
    """A client without the ClientApp mod sends NaN / inf: Flower's clipping would pass a NaN
    unscaled (min(1, C/nan) = 1); the server drops it first, as dp_aggregate does."""
    theta = _global_state()
    states = _client_states(theta)
    for bad in (math.nan, math.inf, -math.inf):
        poisoned = {k: v.clone() for k, v in states[2].items()}
        poisoned["w"][3, 1] = bad
        replies = [_reply(0, states[0]), _reply(1, states[1]), _reply(2, poisoned)]
        released, counts = _release(replies, theta)
        assert all(bool(torch.isfinite(v).all()) for v in released.values())
        updates = [{k: s[k] - theta[k] for k in theta} for s in (*states[:2], poisoned)]
        course, norms = _course_release(theta, updates)
        assert math.isnan(norms[2])
        for k in theta:
            torch.testing.assert_close(released[k], course[k], atol=1e-7, rtol=0)
        assert counts == [(1, 2, 1)]
    # what Flower's clipping alone does with it: the NaN survives
    arrays = [np.full((2,), np.nan, dtype=np.float32)]
    compute_clip_model_update(arrays, [np.zeros(2, dtype=np.float32)], C)
    assert np.isnan(arrays[0]).all()


def test_a_zero_update_does_not_crash_the_round():
    theta = _global_state()
    states = _client_states(theta)
    replies = [_reply(0, states[0]), _reply(1, theta), _reply(2, states[2])]
    released, counts = _release(replies, theta)
    updates = [{k: s[k] - theta[k] for k in theta} for s in (states[0], theta, states[2])]
    course, _ = _course_release(theta, updates)
    for k in theta:
        torch.testing.assert_close(released[k], course[k], atol=1e-7, rtol=0)
    assert counts == [(1, 3, 0)]
    with pytest.raises(ZeroDivisionError):  # Flower's own clipping, for comparison
        compute_clip_model_update([np.zeros(2)], [np.zeros(2)], C)


def test_no_usable_reply_still_releases_theta_plus_noise_of_the_stated_std():
    theta = {"w": torch.zeros(200_000)}
    replies = [_failure(i, "crash") for i in range(K)]
    np.random.seed(0)  # Flower draws its noise from NumPy's global generator
    released, counts = _release(replies, theta, noise_multiplier=1.5)
    assert counts == [(1, 0, 0)]
    assert released["w"].double().std().item() == pytest.approx(1.5 * C / K, rel=0.01)
    assert abs(released["w"].double().mean().item()) < 5 * 1.5 * C / K / math.sqrt(200_000)


def test_fedavg_mode_averages_the_finite_replies_only():
    theta = _global_state()
    states = _client_states(theta)
    poisoned = {k: torch.full_like(v, math.nan) for k, v in theta.items()}
    counts = []
    strategy = guards.ScreenedFedAvg(report=lambda *c: counts.append(c))
    with pytest.raises(RuntimeError, match="configure_train"):  # no global model to check against
        strategy.aggregate_train(1, [_reply(0, states[0])])
    strategy.current_arrays = ArrayRecord(theta)  # what configure_train records
    replies = [_reply(0, states[0]), _reply(1, poisoned), _reply(2, states[2]),
               _failure(3, "crash")]  # fmt: skip
    arrays, _ = strategy.aggregate_train(1, replies)
    mean = {k: (states[0][k] + states[2][k]) / 2 for k in theta}
    for k in theta:
        torch.testing.assert_close(arrays.to_torch_state_dict()[k], mean[k])
    assert counts == [(1, 2, 1)]
    assert strategy.aggregate_train(2, [_reply(1, poisoned)]) == (None, None)  # model stays


def _malformed_states(theta, state):
    """Node 2's hostile replies: ``state`` with a key missing, a key added, a shape changed (to
    shapes that broadcast in ``θ_k − θ``: ``(1,)`` and ``(1, 5)``, and to one that does not) or
    a dtype changed."""
    missing = {k: v for k, v in state.items() if k != "b"}
    extra = {**state, "c": torch.zeros(3)}
    return {
        "missing key": missing,
        "extra key": extra,
        "shape (1,)": {**state, "b": state["b"][:1] * 1e3},
        "shape (1, 5)": {**state, "w": state["w"][:1] * 1e3},
        "shape (5, 20)": {**state, "w": state["w"].T.contiguous()},
        "dtype float64": {k: v.double() for k, v in state.items()},
        "dtype float16": {**state, "b": state["b"].half()},
    }


def test_malformed_replies_count_as_zero_updates_in_both_message_api_modes():
    """A node (hostile, or running other code) replies with keys, shapes or dtypes unlike the
    global model's: the server drops it and counts it, as a NaN reply — no KeyError aborting the
    round, no shape-(1,) array broadcast into the average. The release is the course's with that
    node's update left out (K kept), so adding it moves the release by 0 ≤ C/K."""
    theta = _global_state()
    states = _client_states(theta, scales=(0.3, 2.0, 50.0))
    without = [_reply(0, states[0]), _reply(1, states[1])]
    updates = [{k: s[k] - theta[k] for k in theta} for s in states[:2]]
    nan_update = {k: torch.full_like(v, math.nan) for k, v in theta.items()}
    course, _ = _course_release(theta, [*updates, nan_update])
    released_without, _ = _release(without, theta)
    for name, bad in _malformed_states(theta, states[2]).items():
        released, counts = _release([*without, _reply(2, bad)], theta)
        assert counts == [(1, 2, 1)], name  # 2 averaged, 1 refused
        for k in theta:
            torch.testing.assert_close(released[k], course[k], atol=1e-7, rtol=0, msg=name)
        assert _distance(released, released_without) <= C / K
        assert _distance(released, released_without) == 0.0, name
        fedavg_counts: list[tuple] = []
        strategy = guards.ScreenedFedAvg(report=lambda *c, f=fedavg_counts: f.append(c))
        strategy.current_arrays = ArrayRecord(theta)
        arrays, _ = strategy.aggregate_train(1, [*without, _reply(2, bad)])
        for k in theta:
            torch.testing.assert_close(
                arrays.to_torch_state_dict()[k], (states[0][k] + states[1][k]) / 2, msg=name
            )
        assert fedavg_counts == [(1, 2, 1)], name


def test_replies_without_a_positive_weight_or_with_extra_records_are_dropped():
    theta = _global_state()
    states = _client_states(theta)
    arrays = ArrayRecord(states[2])
    hostile = {
        "no num-examples": RecordDict({"arrays": arrays, "metrics": MetricRecord({"loss": 1.0})}),
        "num-examples 0": RecordDict(
            {"arrays": arrays, "metrics": MetricRecord({"num-examples": 0})}
        ),
        "num-examples nan": RecordDict(
            {"arrays": arrays, "metrics": MetricRecord({"num-examples": math.nan})}
        ),
        "two ArrayRecords": RecordDict(
            {
                "arrays": arrays,
                "more": ArrayRecord(states[2]),
                "metrics": MetricRecord({"num-examples": 100}),
            }
        ),  # fmt: skip
        "no MetricRecord": RecordDict({"arrays": arrays}),
    }
    current = ArrayRecord(theta)
    for name, content in hostile.items():
        reply = Message(content=content, reply_to=_instruction(2))
        assert guards.malformed_reason(reply, current) is not None, name
        released, counts = _release([_reply(0, states[0]), _reply(1, states[1]), reply], theta)
        assert counts == [(1, 2, 1)], name
    assert guards.malformed_reason(_reply(0, states[0]), current) is None


# -- SecAgg+ with client-side clipping (mode secagg+dp): the server only sees the mean ------------


def _fitres(state_list, num_examples=100):
    return FitRes(
        status=Status(code=Code.OK, message="ok"),
        parameters=ndarrays_to_parameters(state_list),
        num_examples=num_examples,
        metrics={},
    )


def test_secaggplus_mean_of_n_replies_is_rescaled_to_the_fixed_denominator():
    theta = [np.zeros((4, 3), dtype=np.float32), np.ones(3, dtype=np.float32)]
    mean = [np.full((4, 3), 0.3, dtype=np.float32), np.full(3, 1.6, dtype=np.float32)]
    counts = []
    strategy = guards.FixedDenominatorClientSideClipping(
        guards.ScreenedLegacyFedAvg(report=lambda *c: counts.append(c)),
        noise_multiplier=0.0, clipping_norm=C, num_sampled_clients=K,
    )  # fmt: skip
    strategy._current = theta
    # SecAgg+ hands every result the same aggregated parameters: the mean of those that arrived
    results = [(None, _fitres(mean)), (None, _fitres(mean))]
    error = Error(code=0, reason=guards.NONFINITE_REFUSAL + ": array 0")
    # Flower's SecAggPlusWorkflow (stage 2) appends a failed node's error twice: count it once
    params, _ = strategy.aggregate_fit(1, results, [Exception(error), Exception(error)])
    released = parameters_to_ndarrays(params)
    for t, m, r in zip(theta, mean, released, strict=True):
        np.testing.assert_allclose(r, t + (m - t) * 2 / 3, atol=1e-7)
        assert r.dtype == np.float32
    assert counts == [(1, 2, 1)]
    errors = [Error(code=0, reason=f"{guards.NONFINITE_REFUSAL}: node {i}") for i in range(3)]
    failures = [Exception(e) for e in errors] * 2  # three nodes, each reported twice
    params, _ = strategy.aggregate_fit(2, [], failures)  # nobody: θ (plus σ = 0 noise)
    for t, r in zip(theta, parameters_to_ndarrays(params), strict=True):
        np.testing.assert_array_equal(r, t)
    assert counts[-1] == (2, 0, 3)
    crashed = Exception(Error(code=0, reason="RuntimeError: fault injected"))
    # two nodes failing with equal reasons are two failures (distinct Error objects)
    twins = [Exception(Error(code=0, reason=f"{guards.NONFINITE_REFUSAL}: array 0")) for _ in "ab"]
    strategy.aggregate_fit(4, results, twins * 2)
    assert counts[-1] == (4, 2, 2)
    strategy.aggregate_fit(3, results, [crashed, crashed])  # an error, not a NaN: not counted
    assert counts[-1] == (3, 2, 0)


def test_distinct_failures_tell_nodes_apart_by_their_reply_not_by_an_equal_string():
    """Failures carry no node id; Flower's SecAgg+ wraps each failed reply's own Error object
    (twice in stage 2). Equal strings, which Python may intern to one object, are not one node."""
    reason = guards.NONFINITE_REFUSAL + ": array 0"
    same_string = [Exception(reason), Exception(reason)]  # two nodes, the same (interned) str
    assert same_string[0].args[0] is same_string[1].args[0]
    assert guards.distinct_failures(same_string) == same_string
    assert guards.count_refusals(same_string) == 2
    one_error = Error(code=0, reason=reason)
    twice = [Exception(one_error), Exception(one_error)]  # one node, appended twice
    assert guards.distinct_failures(twice) == twice[:1]
    assert guards.count_refusals(twice) == 1
    two_errors = [Exception(Error(code=0, reason=reason)) for _ in range(2)]  # equal, 2 nodes
    assert guards.count_refusals(two_errors * 2) == 2
    assert guards.count_refusals([*twice, *two_errors, *same_string]) == 5


# -- ClientApp mods -------------------------------------------------------------------------------


def _context(**run_config) -> Context:
    config = AppConfig(**run_config).to_run_config()
    return Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config=config)


def _legacy_instruction(theta, clipping_norm=None) -> Message:
    config = {"server-round": 1}
    if clipping_norm is not None:
        config[KEY_CLIPPING_NORM] = clipping_norm
    fitins = FitIns(ndarrays_to_parameters(theta), config)
    return Message(
        content=compat.fitins_to_recorddict(fitins, keep_input=True),
        dst_node_id=7,
        message_type=MessageType.TRAIN,
    )


def _legacy_reply(msg, arrays, num_examples=100):
    return Message(
        compat.fitres_to_recorddict(_fitres(arrays, num_examples), keep_input=True), reply_to=msg
    )


def test_the_client_refuses_to_send_a_nonfinite_model_in_every_format():
    theta = [np.zeros(3, dtype=np.float32)]
    context = _context(mode="secagg+dp", num_nodes=3, train_samples=300)
    for bad in (np.nan, np.inf, -np.inf):
        trained = [np.array([0.1, bad, 0.2], dtype=np.float32)]
        msg = _legacy_instruction(theta, clipping_norm=C)
        with pytest.raises(ValueError, match=guards.NONFINITE_REFUSAL):
            guards.refuse_nonfinite_mod(msg, context, lambda m, c, t=trained: _legacy_reply(m, t))
        msg = _instruction(7)
        with pytest.raises(ValueError, match=guards.NONFINITE_REFUSAL):
            guards.refuse_nonfinite_mod(
                msg, _context(), lambda m, c, t=trained: _reply(7, {"w": torch.from_numpy(t[0])})
            )
    fine = [np.array([0.1, -0.3, 0.2], dtype=np.float32)]
    msg = _legacy_instruction(theta)
    reply = guards.refuse_nonfinite_mod(msg, context, lambda m, c: _legacy_reply(m, fine))
    assert not reply.has_error()


def test_the_client_refuses_a_model_secaggplus_would_clip_silently():
    """SecAgg+ clips each weighted value to ±secagg-clipping-range before quantising."""
    context = _context(mode="secagg+", num_nodes=3, train_samples=300, secagg_clipping_range=2.0)
    big = [np.array([0.0, 7.0], dtype=np.float32)]  # weight 100/300: 7/3 > 2
    msg = _legacy_instruction([np.zeros(2, dtype=np.float32)])
    with pytest.raises(ValueError, match="secagg-clipping-range"):
        guards.refuse_nonfinite_mod(msg, context, lambda m, c: _legacy_reply(m, big))
    ok = [np.array([0.0, 5.9], dtype=np.float32)]  # 5.9/3 < 2
    assert not guards.refuse_nonfinite_mod(
        msg, context, lambda m, c: _legacy_reply(m, ok)
    ).has_error()


def test_client_side_clipping_matches_the_course_and_passes_a_zero_update():
    theta = [np.full((4,), 0.5, dtype=np.float32), np.zeros(2, dtype=np.float32)]
    context = _context()
    for trained in (
        [theta[0] + 3.0, theta[1] - 4.0],  # norm 10 > C: clipped
        [theta[0] + 0.01, theta[1]],  # norm 0.02 < C: unchanged
        [theta[0].copy(), theta[1].copy()],  # zero update: Flower's fixedclipping_mod crashes
    ):
        msg = _legacy_instruction(theta, clipping_norm=C)
        reply = guards.clip_update_mod(msg, context, lambda m, c, t=trained: _legacy_reply(m, t))
        sent = parameters_to_ndarrays(compat.recorddict_to_fitres(reply.content, True).parameters)
        course, _ = clip_update(
            {
                str(i): torch.from_numpy(t - s)
                for i, (t, s) in enumerate(zip(trained, theta, strict=True))
            },
            C,
        )
        for i, s in enumerate(sent):
            np.testing.assert_allclose(s, theta[i] + course[str(i)].numpy(), atol=1e-7)
        norm = math.sqrt(sum(float(((s - t) ** 2).sum()) for s, t in zip(sent, theta, strict=True)))
        assert norm <= C + 1e-6
    msg = _legacy_instruction(theta)  # no clipping norm sent: the mod stays out of the way
    untouched = [theta[0] + 3.0, theta[1]]
    reply = guards.clip_update_mod(msg, context, lambda m, c: _legacy_reply(m, untouched))
    sent = parameters_to_ndarrays(compat.recorddict_to_fitres(reply.content, True).parameters)
    np.testing.assert_array_equal(sent[0], untouched[0])


def test_client_clipping_mode_refuses_to_send_an_unclipped_update():
    """secagg+dp: a server that sends no clipping norm (misconfigured, or hostile) gets no
    unclipped update — the node refuses before training; other modes pass the message on."""
    theta = [np.zeros(3, dtype=np.float32)]
    trained = []

    def train(m, c):
        trained.append(m)
        return _legacy_reply(m, [theta[0] + 3.0])

    context = _context(mode="secagg+dp", num_nodes=3, train_samples=300, noise_multiplier=1.0)
    with pytest.raises(ValueError, match=guards.CLIPPING_REFUSAL) as refused:
        guards.clip_update_mod(_legacy_instruction(theta), context, train)
    assert KEY_CLIPPING_NORM in str(refused.value) and "secagg+dp" in str(refused.value)
    assert trained == []  # refused before any training
    reply = guards.clip_update_mod(_legacy_instruction(theta, clipping_norm=C), context, train)
    sent = parameters_to_ndarrays(compat.recorddict_to_fitres(reply.content, True).parameters)
    assert float(np.linalg.norm(sent[0] - theta[0])) == pytest.approx(C, rel=1e-6)
    plain = _context(mode="secagg+", num_nodes=3, train_samples=300)
    reply = guards.clip_update_mod(_legacy_instruction(theta), plain, train)
    sent = parameters_to_ndarrays(compat.recorddict_to_fitres(reply.content, True).parameters)
    np.testing.assert_array_equal(sent[0], theta[0] + 3.0)  # no DP: nothing to clip


def test_secagg_quantization_range_has_a_floor():
    with pytest.raises(ValueError, match=r"secagg-quantization-range.*2\*\*8 = 256.*got 2\b"):
        AppConfig(secagg_quantization_range=2)
    with pytest.raises(ValueError, match="secagg-quantization-range"):
        AppConfig(secagg_quantization_range=255)
    assert AppConfig(secagg_quantization_range=256).secagg_quantization_range == 256


def test_the_quoted_epsilons_are_the_accountants():
    """guards.py and flower_app/README.md quote ε ≈ 32.6 (Flower's wrappers, 3 nodes, one failed:
    influence C/2 under noise σC/3, i.e. noise multiplier 2σ/3) against 19.1 (fixed K), ten
    rounds at σ = 1, δ = 1e-5, q = 1."""
    sigma, rounds, delta = 1.0, 10, 1e-5
    fixed_k = dp_fedavg_epsilon(sigma, 1.0, rounds, delta)
    flower = dp_fedavg_epsilon(sigma * (C / K) / (C / 2), 1.0, rounds, delta)  # std / influence
    assert f"{fixed_k:.1f}" == "19.1" and f"{flower:.1f}" == "32.6"
    readme = (APP_DIR / "README.md").read_text()
    for text in (guards.__doc__, readme):
        flat = " ".join(text.split())
        assert f"ε ≈ {flower:.1f}" in flat and f"{fixed_k:.1f}" in flat
        assert "σ = 1" in flat and "δ = 1e-5" in flat


def test_node_config_is_checked_against_the_run():
    config = AppConfig(num_nodes=3)
    assert node_settings({"partition-id": 2, "num-partitions": 3}, config) == (2, 3)
    with pytest.raises(ValueError, match="num-partitions"):
        node_settings({"partition-id": 0, "num-partitions": 2}, config)
    with pytest.raises(ValueError, match="partition-id"):
        node_settings({"partition-id": 3, "num-partitions": 3}, config)
    with pytest.raises(TypeError, match="partition-id"):
        node_settings({"partition-id": 1.5, "num-partitions": 3}, config)
    with pytest.raises(KeyError, match="partition-id"):
        node_settings({"num-partitions": 3}, config)
    # the one rule (issue 23 §5): NumPy integers are integers, bools are not
    assert node_settings({"partition-id": np.int64(1), "num-partitions": 3}, config) == (1, 3)
    with pytest.raises(TypeError, match="partition-id"):
        node_settings({"partition-id": True, "num-partitions": 3}, config)
    with pytest.raises(TypeError, match="num-partitions"):
        node_partition(config, 0, np.bool_(True))
    with pytest.raises(ValueError, match="partition-id"):
        node_partition(config, np.int64(3), 3)
