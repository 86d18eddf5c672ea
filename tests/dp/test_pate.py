"""PATE: noisy aggregation and its privacy analysis on hand-checkable vote counts."""

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import stats
from torch.utils.data import Subset, TensorDataset

from course_lib.dp.accounting import rdp_to_epsilon
from course_lib.dp.pate import (
    PATE_ORDERS,
    gaussian_noisy_max,
    gnmax_epsilon,
    gnmax_log_q,
    gnmax_rdp,
    laplace_noise,
    laplace_noisy_max,
    lnmax_epsilon,
    lnmax_q,
    partition_indices,
    teacher_votes,
    train_teachers,
)
from course_lib.models import MLP
from course_lib.randomness import InsecureSeededRandom

UNANIMOUS = [[50, 0, 0, 0, 0, 0, 0, 0, 0, 0]]
SPLIT = [[25, 25, 0, 0, 0, 0, 0, 0, 0, 0]]


def test_partitions_are_disjoint_and_cover_everything():
    parts = partition_indices(103, 10)
    assert len(parts) == 10
    assert sorted(torch.cat(parts).tolist()) == list(range(103))
    assert {len(p) for p in parts} <= {10, 11}


def test_teachers_vote_once_per_query():
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(
        torch.rand(60, 1, 28, 28, generator=g), torch.randint(0, 10, (60,), generator=g)
    )
    teachers = train_teachers(data, 3, MLP, epochs=1)
    votes = teacher_votes(teachers, data.tensors[0][:7])
    assert votes.shape == (7, 10)
    assert torch.all(votes.sum(1) == 3)


def test_aggregation_returns_the_clear_winner_when_noise_is_small():
    votes = torch.tensor([[0, 40, 2, 0], [30, 1, 1, 0], [0, 0, 1, 45]])
    rng = InsecureSeededRandom(0)
    assert gaussian_noisy_max(votes, 1.0, rng).tolist() == [1, 0, 3]
    assert laplace_noisy_max(votes, 1.0, rng).tolist() == [1, 0, 3]


def test_aggregation_is_random_when_votes_tie():
    votes = torch.tensor([[20, 20]] * 2000)
    labels = gaussian_noisy_max(votes, 5.0, InsecureSeededRandom(1))
    share = labels.float().mean().item()
    assert abs(share - 0.5) < 5 * math.sqrt(0.25 / 2000)  # a fair coin, 5 standard errors


def test_laplace_noise_has_variance_two_scale_squared():
    n, b = 200_000, 3.0
    z = laplace_noise((n,), b, InsecureSeededRandom(2))
    # Var = 2b², Var of the sample variance = (μ4 - σ⁴)/n with μ4 = 24 b⁴
    assert abs(z.var().item() - 2 * b**2) < 5 * math.sqrt((24 - 4) * b**4 / n)


def test_gnmax_data_independent_epsilon_by_hand():
    # Q answers of GNMax are (α, Q·α/σ²)-RDP; ε = min over α of the RDP → (ε, δ) conversion
    sigma, queries, delta = 10.0, 20, 1e-5
    orders = np.asarray(PATE_ORDERS)
    rdp = queries * orders / sigma**2
    expected = np.min(
        rdp + np.log((orders - 1) / orders) - (np.log(delta) + np.log(orders)) / (orders - 1)
    )
    got = gnmax_epsilon(SPLIT * queries, sigma, delta, data_dependent=False)
    assert got == pytest.approx(expected)
    assert got == pytest.approx(rdp_to_epsilon(rdp, delta, orders)[0])


def test_gnmax_log_q_by_hand():
    sigma = 4.0
    # one rival class with gap 50: q ≤ 9 · P[N(0, 2σ²) ≥ 50] (nine losing classes, all at 0)
    expected = math.log(9 * stats.norm.sf(50 / (math.sqrt(2) * sigma)))
    assert gnmax_log_q(UNANIMOUS, sigma)[0] == pytest.approx(expected)
    # a tie: the rival wins with probability ≤ 1/2, the eight empty classes (gap 25) barely count
    tail = stats.norm.sf(25 / (math.sqrt(2) * sigma))
    assert gnmax_log_q(SPLIT, sigma)[0] == pytest.approx(math.log(0.5 + 8 * tail))
    # with very little noise the union bound exceeds 1 and is capped at 1 - 1/classes
    assert gnmax_log_q([[2, 1, 1, 1]], 100.0)[0] == pytest.approx(math.log(1 - 1 / 4))


def test_gnmax_data_dependent_helps_only_with_consensus():
    sigma, delta = 4.0, 1e-5
    independent = gnmax_epsilon(UNANIMOUS * 100, sigma, delta, data_dependent=False)
    assert gnmax_epsilon(UNANIMOUS * 100, sigma, delta) < independent / 5
    assert gnmax_epsilon(SPLIT * 100, sigma, delta) == pytest.approx(independent)
    # the data-dependent RDP never exceeds the data-independent α/σ²
    for log_q in (-1.0, -10.0, -100.0):
        assert np.all(gnmax_rdp(log_q, sigma) <= np.asarray(PATE_ORDERS) / sigma**2 + 1e-12)


def test_lnmax_by_hand():
    gamma, delta = 0.5, 1e-5
    # q for a unanimous vote of 50: 9 rivals with gap γ·50 = 25, each (2 + 25) / (4 e^25)
    assert lnmax_q(UNANIMOUS, gamma)[0] == pytest.approx(9 * 27 / (4 * math.exp(25)))
    # data-independent: α(λ) = min(2γ²λ(λ+1), 2γλ) per answer; ε = min_λ (Qα(λ) + log 1/δ) / λ
    queries = 10
    expected = min(
        (queries * min(2 * gamma**2 * lam * (lam + 1), 2 * gamma * lam) + math.log(1 / delta)) / lam
        for lam in range(1, 33)
    )
    assert lnmax_epsilon(SPLIT * queries, gamma, delta, data_dependent=False) == pytest.approx(
        expected
    )
    assert lnmax_epsilon(SPLIT * queries, gamma, delta) == pytest.approx(expected)  # no consensus
    assert lnmax_epsilon(UNANIMOUS * queries, gamma, delta) < expected / 3


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: gnmax_epsilon(SPLIT, 0.0, 1e-5), "sigma"),
        (lambda: gnmax_epsilon(SPLIT, 1.0, 0.0), "delta"),
        (lambda: lnmax_epsilon(SPLIT, -1.0, 1e-5), "gamma"),
        (lambda: gaussian_noisy_max([[1.5, 2.0]], 1.0), "integers"),
        (lambda: gaussian_noisy_max([[-1, 2]], 1.0), "integers"),
        (lambda: laplace_noisy_max([[1, 2, 3]], float("inf")), "gamma"),
        (lambda: gnmax_log_q([5], 1.0), "shape"),
        (lambda: partition_indices(5, 10), "parts"),
        (lambda: gnmax_rdp(0.5, 1.0), "log_q"),
    ],
)
def test_bad_input_raises_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("gamma", [5.0, 50.0, 400.0, 1e6])
def test_lnmax_is_finite_for_agreeing_teachers_and_large_gamma(gamma):
    # all 250 teachers agree: q underflows to 0 and e^{2γλ} overflows, yet the data-dependent
    # bound is Σ log 1 = 0 per query, so ε = min_λ log(1/δ)/λ over λ ≤ 32
    votes = [[250, 0, 0, 0]] * 10
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warnings either
        eps = lnmax_epsilon(votes, gamma, 1e-5)
    assert eps == pytest.approx(math.log(1e5) / 32, rel=1e-12)
    assert lnmax_epsilon(votes, gamma, 1e-5, data_dependent=False) > 2 * gamma * 10 - 1


def test_lnmax_log_space_agrees_with_the_direct_formula_where_both_work():
    # the 2017 paper's Theorem 3, written out directly for a moderate case
    votes, gamma, delta = [[30, 10, 5, 5]] * 20, 0.2, 1e-5
    q = float(lnmax_q(votes, gamma)[0])
    eps = 2 * gamma
    best = math.inf
    for lam in range(1, 33):
        bound = min(0.5 * eps**2 * lam * (lam + 1), eps * lam)
        if q < (math.exp(eps) - 1) / (math.exp(2 * eps) - 1):
            tight = (1 - q) * ((1 - q) / (1 - math.exp(eps) * q)) ** lam + q * math.exp(eps * lam)
            bound = min(bound, math.log(tight))
        best = min(best, (20 * bound + math.log(1 / delta)) / lam)
    assert lnmax_epsilon(votes, gamma, delta) == pytest.approx(best, rel=1e-12)


@pytest.mark.parametrize("delta", [np.float32(1e-5), torch.tensor(1e-5), np.float64(1e-5)])
def test_pate_accepts_numpy_and_tensor_deltas(delta):
    votes = [[8, 1, 1]] * 5
    assert gnmax_epsilon(votes, 2.0, delta) == pytest.approx(
        gnmax_epsilon(votes, 2.0, 1e-5), rel=1e-6
    )
    assert lnmax_epsilon(votes, 0.1, delta) == pytest.approx(
        lnmax_epsilon(votes, 0.1, 1e-5), rel=1e-6
    )


def test_train_teachers_accepts_a_subset():
    data = TensorDataset(torch.randn(40, 1, 28, 28), torch.randint(0, 10, (40,)))
    teachers = train_teachers(
        Subset(data, range(20)), 2, lambda: MLP(784, (8,), 10), epochs=1, batch_size=10
    )
    assert len(teachers) == 2


def test_the_data_dependent_epsilon_is_a_statistic_of_the_private_votes():
    # lesson 07's claim: publishing the data-dependent ε is itself a release. Two neighbouring vote
    # tables (one teacher, hence one private partition, changes its vote on one query) give
    # different data-dependent ε, while the data-independent ε — the guarantee — is the same.
    votes = np.array([[18, 1, 1, 0]] * 30 + [[19, 1, 0, 0]])
    neighbour = votes.copy()
    neighbour[-1] = [18, 2, 0, 0]  # one teacher switched from class 0 to class 1
    sigma, delta = 2.0, 1e-5
    dependent = [gnmax_epsilon(v, sigma, delta) for v in (votes, neighbour)]
    independent = [gnmax_epsilon(v, sigma, delta, data_dependent=False) for v in (votes, neighbour)]
    assert dependent[0] != dependent[1]
    assert independent[0] == independent[1]
    assert dependent[0] < independent[0]


DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
    ),
]


@pytest.mark.parametrize("device", DEVICES)
def test_votes_and_noisy_max_work_on_the_device(device):
    torch.manual_seed(0)
    teachers = [MLP(784, (8,), 10).to(device) for _ in range(3)]
    votes = teacher_votes(teachers, torch.rand(5, 1, 28, 28, device=device))
    assert votes.device.type == device and votes.sum().item() == 15
    assert gaussian_noisy_max(votes, 1.0, InsecureSeededRandom(0)).shape == (5,)
    assert gnmax_epsilon(votes, 4.0, 1e-5) > 0


def test_partition_indices_follows_the_one_integer_rule():
    """Issue 23 §5: ``partition_indices(100, np.int64(4))`` was refused while
    ``check_positive_int`` accepts NumPy integers; bools are refused."""
    parts = partition_indices(np.int64(100), np.int64(4), seed=np.int64(0))
    assert [len(p) for p in parts] == [25, 25, 25, 25]
    assert all(torch.equal(p, q) for p, q in zip(parts, partition_indices(100, 4), strict=True))
    for bad in ({"num_parts": True}, {"num_examples": np.bool_(True)}, {"num_parts": 4.0}):
        with pytest.raises(TypeError):
            partition_indices(**{"num_examples": 100, "num_parts": 4, **bad})
