"""Every protocol's communication matches its formula (course_lib.smpc)."""

import pytest
import torch

from course_lib.randomness import InsecureSeededRandom
from course_lib.smpc import Session


@pytest.fixture(params=[2, 3, 4])
def s(request):
    return Session(request.param, rng=InsecureSeededRandom(0))


def words(s, elements):
    """Bytes of one round in which every party sends `elements` words to every other party."""
    return 8 * s.n_parties * (s.n_parties - 1) * elements


def test_local_operations_are_free(s):
    x, y = s.share(torch.ones(5)), s.share(torch.ones(5))
    with s.log.measure() as cost:
        _ = (x + y - 2) * 3
    assert (cost.rounds, cost.bytes, cost.offline_bytes) == (0, 0, 0)


def test_multiplication_costs_one_round_plus_truncation(s):
    m = 7
    x, y = s.share(torch.ones(m)), s.share(torch.ones(m))
    with s.log.measure() as cost:
        x * y
    assert cost.rounds == 2
    assert cost.bytes == words(s, 2 * m) + words(s, m)  # open ε and δ; then open x + r
    assert cost.offline_bytes == 8 * s.n_parties * (3 * m + 3 * m)  # triple + truncation mask


def test_matmul_cost(s):
    x, y = s.share(torch.ones(4, 6)), s.share(torch.ones(6, 3))
    with s.log.measure() as cost:
        x @ y
    assert cost.rounds == 2
    assert cost.bytes == words(s, 4 * 6 + 6 * 3) + words(s, 4 * 3)


def test_comparison_and_relu_cost(s):
    n, m = s.n_parties, 5
    x = s.share(torch.linspace(-2, 2, m))
    with s.log.measure() as cost:
        x.ltz()
    assert cost.rounds == 7 * (n - 1) + 1
    assert cost.bytes == words(s, m * (24 * (n - 1) + 1))
    with s.log.measure() as cost:
        x.relu()
    assert cost.rounds == 7 * (n - 1) + 2  # + one multiplication by the bit, no truncation
    assert cost.bytes == words(s, m * (24 * (n - 1) + 1 + 2))


def test_costs_are_charged_to_the_outermost_operation(s):
    x = s.share(torch.ones(3))
    x.relu()
    x.reveal()
    assert set(s.log.by_operation) == {"relu", "reveal"}
    assert "relu" in s.log.table() and "total" in s.log.table()
    s.log.reset()
    assert s.log.total.rounds == 0
