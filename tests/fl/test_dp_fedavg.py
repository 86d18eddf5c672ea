"""DP-FedAvg: clipping bounds each client's influence, the noise has the promised scale, and ε is
the RDP accountant's."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from torch.utils.data import TensorDataset

from course_lib.dp.accounting import rdp_epsilon
from course_lib.fl.dp_fedavg import (
    DPFedHistory,
    clip_update,
    dp_aggregate,
    dp_fedavg_epsilon,
    run_dp_fedavg,
    update_norm,
)
from course_lib.models import MLP
from course_lib.randomness import InsecureSeededRandom

CONFIDENCE = 1e-4


@settings(deadline=None, max_examples=40)
@given(
    scale=st.floats(min_value=1e-3, max_value=1e3),
    clip=st.floats(min_value=1e-2, max_value=1e2),
    seed=st.integers(0, 1000),
)
def test_clipping_bounds_the_norm_and_keeps_the_direction(scale, clip, seed):
    g = torch.Generator().manual_seed(seed)
    update = {"w": torch.randn(5, 4, generator=g) * scale, "b": torch.randn(4, generator=g)}
    clipped, norm = clip_update(update, clip)
    assert norm == pytest.approx(update_norm(update))
    assert update_norm(clipped) <= clip * (1 + 1e-6)
    if norm <= clip:
        assert all(torch.equal(clipped[k], update[k]) for k in update)
    else:
        assert update_norm(clipped) == pytest.approx(clip, rel=1e-5)
        ratio = clipped["w"] / update["w"]
        assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio))


def test_noise_has_standard_deviation_sigma_times_c_over_expected_clients():
    template = {"w": torch.zeros(200, 250)}
    sigma, clip, expected = 1.3, 0.7, 4.0
    noisy, norms = dp_aggregate(
        [{"w": torch.zeros(200, 250)}] * 3,
        template=template,
        clip_norm=clip,
        noise_multiplier=sigma,
        expected_clients=expected,
        rng=InsecureSeededRandom(0),
    )
    assert norms == [0.0, 0.0, 0.0]
    x = noisy["w"].double().flatten()
    n = x.numel()
    target = sigma * clip / expected
    # (n − 1)·s²/σ² follows a chi-square distribution with n − 1 degrees of freedom
    lo = stats.chi2.ppf(CONFIDENCE / 2, n - 1) / (n - 1)
    hi = stats.chi2.ppf(1 - CONFIDENCE / 2, n - 1) / (n - 1)
    assert lo < x.var().item() / target**2 < hi
    assert abs(x.mean().item()) < stats.norm.ppf(1 - CONFIDENCE / 2) * target / math.sqrt(n)


def test_without_noise_the_aggregate_is_the_clipped_sum_over_expected_clients():
    updates = [{"w": torch.full((4,), 3.0)}, {"w": torch.full((4,), 0.1)}]  # norms 6 and 0.2
    noisy, norms = dp_aggregate(
        updates, template=updates[0], clip_norm=1.0, noise_multiplier=0.0, expected_clients=2.0
    )
    assert norms == pytest.approx([6.0, 0.2])
    assert torch.allclose(noisy["w"], torch.full((4,), (0.5 + 0.1) / 2))


def test_bad_arguments_are_rejected():
    template = {"w": torch.zeros(2)}
    with pytest.raises(ValueError, match="clip_norm"):
        dp_aggregate(
            [], template=template, clip_norm=-1.0, noise_multiplier=1.0, expected_clients=1
        )
    with pytest.raises(ValueError, match="noise_multiplier"):
        dp_aggregate([], template=template, clip_norm=1.0, noise_multiplier=-1, expected_clients=1)
    with pytest.raises(ValueError, match="does not match"):
        dp_aggregate(
            [{"w": torch.zeros(3)}],
            template=template,
            clip_norm=1.0,
            noise_multiplier=1.0,
            expected_clients=1,
        )


def _tiny_federation(num_clients=6, per_client=8):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(num_clients * per_client, 1, 4, 4, generator=g)
    y = (x.flatten(1).sum(1) > 0).long()
    clients = [
        TensorDataset(
            x[i * per_client : (i + 1) * per_client], y[i * per_client : (i + 1) * per_client]
        )
        for i in range(num_clients)
    ]
    return clients, TensorDataset(x, y)


def test_epsilon_is_the_rdp_accountants():
    assert dp_fedavg_epsilon(1.1, 1 / 16, 80, 1e-5) == rdp_epsilon(1.1, 1 / 16, 80, 1e-5)
    clients, test = _tiny_federation()
    history = run_dp_fedavg(
        lambda: MLP(16, (8,), 2),
        clients,
        test,
        rounds=3,
        sample_rate=0.5,
        noise_multiplier=1.2,
        clip_norm=0.5,
        delta=1e-3,
        rng=InsecureSeededRandom(0),
        progress=False,
    )
    assert history.epsilon == [rdp_epsilon(1.2, 0.5, r, 1e-3) for r in (1, 2, 3)]
    assert all(0 <= p <= 6 for p in history.participants)
    assert len(history.test_acc) == 3


def test_run_rejects_bad_settings():
    clients, test = _tiny_federation()
    kwargs = dict(rounds=1, noise_multiplier=1.0, clip_norm=1.0, progress=False)
    with pytest.raises(ValueError, match="sample_rate"):
        run_dp_fedavg(lambda: MLP(16, (8,), 2), clients, test, sample_rate=0, delta=1e-3, **kwargs)
    with pytest.raises(ValueError, match="delta"):
        run_dp_fedavg(lambda: MLP(16, (8,), 2), clients, test, sample_rate=0.5, delta=2, **kwargs)
    with pytest.raises(ValueError, match="at least one client"):
        run_dp_fedavg(lambda: MLP(16, (8,), 2), [], test, sample_rate=0.5, delta=1e-3, **kwargs)


DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
    ),
]

#: a NaN or ±inf in one coordinate, or in every coordinate
NON_FINITE = [
    torch.tensor([math.nan, 1000.0, 0.0, 0.0]),
    torch.tensor([math.inf, 1000.0, 0.0, 0.0]),
    torch.tensor([-math.inf, 0.0, 0.0, 0.0]),
    torch.full((4,), math.nan),
    torch.full((4,), math.inf),
    torch.full((4,), -math.inf),
]


@pytest.mark.parametrize("bad", NON_FINITE)
def test_clip_update_refuses_a_non_finite_update_and_names_it(bad):
    with pytest.raises(ValueError, match=r"client 7 contains NaN or ±inf \(in parameter 'w'\)"):
        clip_update({"b": torch.ones(2), "w": bad}, 1.0, name="client 7")


def test_huge_finite_update_is_clipped_not_overflowed():
    update = {"w": torch.tensor([1e300, -1e300], dtype=torch.float64)}
    clipped, norm = clip_update(update, 1.0)
    assert norm == pytest.approx(math.sqrt(2) * 1e300)
    assert update_norm(clipped) == pytest.approx(1.0)


@pytest.mark.parametrize("bad", NON_FINITE)
def test_dp_aggregate_drops_a_non_finite_client_and_counts_it(bad):
    good = {"w": torch.tensor([0.3, 0.0, 0.0, 0.0])}
    released, norms = dp_aggregate(
        [good, {"w": bad}],
        template=good,
        clip_norm=1.0,
        noise_multiplier=0.0,
        expected_clients=2.0,
    )
    assert torch.isfinite(released["w"]).all()
    assert torch.allclose(released["w"], good["w"] / 2)  # the bad client contributed exactly 0
    assert norms[0] == pytest.approx(0.3) and math.isnan(norms[1])


@settings(deadline=None, max_examples=60)
@given(
    value=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True, width=32),
        st.just(math.nan),
        st.just(math.inf),
    ),
    where=st.integers(0, 3),
    everywhere=st.booleans(),
)
def test_one_client_moves_the_noiseless_release_by_at_most_c(value, where, everywhere):
    """Neighbouring rounds, with and without one client: whatever that client sends (huge, NaN,
    ±inf, in one coordinate or all), the sums differ by at most C in L2."""
    clip, others = 0.5, [{"w": torch.tensor([0.1, -0.2, 0.3, 0.0])}] * 2
    attacker = (
        torch.full((4,), value)
        if everywhere
        else torch.zeros(4).index_fill(0, torch.tensor([where]), value)
    )
    kwargs = dict(template=others[0], clip_norm=clip, noise_multiplier=0.0, expected_clients=1.0)
    with_client, _ = dp_aggregate([*others, {"w": attacker}], **kwargs)
    without, _ = dp_aggregate(others, **kwargs)
    assert torch.isfinite(with_client["w"]).all()
    assert float((with_client["w"].double() - without["w"].double()).norm()) <= clip * (1 + 1e-6)


def test_run_dp_fedavg_counts_a_diverging_client_and_stays_finite():
    clients, test = _tiny_federation()
    x, _ = clients[0].tensors
    clients[0] = TensorDataset(torch.full_like(x, math.nan), clients[0].tensors[1])
    history = run_dp_fedavg(
        lambda: MLP(16, (8,), 2),
        clients,
        test,
        rounds=2,
        sample_rate=1.0,
        noise_multiplier=1.0,
        clip_norm=0.5,
        delta=1e-3,
        rng=InsecureSeededRandom(0),
        progress=False,
    )
    assert history.dropped == [1, 1]
    assert all(f >= 1 / 6 for f in history.clipped_fraction)  # the dropped one counts as shrunk
    assert all(torch.isfinite(p).all() for p in history.model.parameters())
    assert "outside ε" in str(history)
    assert set(DPFedHistory.OUTSIDE_EPSILON) == {"participants", "clipped_fraction", "dropped"}


def test_run_dp_fedavg_refuses_a_non_dataset_before_training():
    clients, test = _tiny_federation()
    with pytest.raises(TypeError, match="client dataset 1 must be a map-style torch Dataset"):
        run_dp_fedavg(
            lambda: MLP(16, (8,), 2),
            [clients[0], torch.zeros(3)],
            test,
            rounds=1,
            sample_rate=1.0,
            noise_multiplier=1.0,
            clip_norm=0.5,
            delta=1e-3,
            progress=False,
        )
    subset = torch.utils.data.Subset(test, range(8))  # any map-style dataset works
    history = run_dp_fedavg(
        lambda: MLP(16, (8,), 2),
        [torch.utils.data.Subset(c, range(4)) for c in clients],
        subset,
        rounds=1,
        sample_rate=1.0,
        noise_multiplier=1.0,
        clip_norm=0.5,
        delta=1e-3,
        rng=InsecureSeededRandom(0),
        progress=False,
    )
    assert len(history.test_acc) == 1


@pytest.mark.parametrize("device", DEVICES)
def test_dp_aggregate_follows_the_templates_device(device):
    template = {"w": torch.zeros(3, device=device), "b": torch.zeros(2, device=device)}
    updates = [{"w": torch.ones(3, device=device), "b": torch.ones(2, device=device)}]
    released, norms = dp_aggregate(
        updates,
        template=template,
        clip_norm=1.0,
        noise_multiplier=1.0,
        expected_clients=1.0,
        rng=InsecureSeededRandom(0),
    )
    assert all(t.device.type == device and t.dtype == torch.float32 for t in released.values())
    assert norms == pytest.approx([math.sqrt(5)])
