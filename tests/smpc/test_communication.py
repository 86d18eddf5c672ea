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
    assert set(s.log.by_operation) == {"share", "relu", "reveal"}
    assert "relu" in s.log.table() and "total" in s.log.table()
    s.log.reset()
    assert s.log.total.rounds == 0


def test_input_sharing_is_charged_to_the_owner(s):
    n = s.n_parties
    with s.log.measure() as cost:
        s.share(torch.ones(5))  # an outside data owner sends one share to each party
    assert (cost.rounds, cost.bytes) == (1, 8 * n * 5)
    with s.log.measure() as cost:
        s.share(torch.ones(5), owner=0)  # party 0 keeps its own share
    assert (cost.rounds, cost.bytes) == (1, 8 * (n - 1) * 5)
    with s.log.measure() as cost:
        s.share_integers(torch.ones(4, dtype=torch.int64), owner="patient")
    assert cost.bytes == 8 * n * 4 and s.log.by_operation["share"].rounds == 3


def test_reveal_to_one_receiver_costs_less_and_is_recorded(s):
    n = s.n_parties
    x = s.share(torch.tensor([1.5, -2.0, 3.25]))
    s.log.reset()
    with s.log.measure() as to_all:
        everyone = x.reveal()
    with s.log.measure() as to_party:
        party = x.reveal(to=n - 1)
    with s.log.measure() as to_patient:
        patient = x.reveal(to="patient")
    for value in (everyone, party, patient):
        assert torch.equal(value, torch.tensor([1.5, -2.0, 3.25], dtype=torch.float64))
    assert (to_all.rounds, to_all.bytes) == (1, words(s, 3))
    assert (to_party.rounds, to_party.bytes) == (1, 8 * (n - 1) * 3)
    assert (to_patient.rounds, to_patient.bytes) == (1, 8 * n * 3)
    receivers = [(o.operation, o.receiver, o.elements) for o in s.log.outputs]
    assert receivers == [
        ("reveal", "all parties", 3),
        ("reveal", f"party {n - 1}", 3),
        ("reveal", "patient", 3),
    ]


@pytest.mark.parametrize(
    ("to", "error"), [(5, ValueError), (-1, ValueError), ("", ValueError), (True, TypeError)]
)
def test_bad_receivers_are_refused_before_anything_is_sent(to, error):
    s = Session(2, rng=InsecureSeededRandom(0))
    x = s.share(torch.ones(2))
    before = s.log.total
    with pytest.raises(error, match="party index|name"):
        x.reveal(to=to)
    with pytest.raises(error, match="party index|name"):
        s.share(torch.ones(2), owner=to)
    assert s.log.total == before and s.log.outputs == []


def test_openings_check_the_shares_before_charging_the_log(s):
    good = s.share_integers(torch.ones(3, dtype=torch.int64)).shares
    before = (s.log.total.rounds, s.log.total.bytes, len(s.log.openings))
    for bad, error in ((good.double(), TypeError), (torch.tensor(5), ValueError)):
        for opener in (s.open, s.open_xor):
            with pytest.raises(error):
                opener(good, bad)
    assert (s.log.total.rounds, s.log.total.bytes, len(s.log.openings)) == before
    assert s.open(good)[0].tolist() == [1, 1, 1]
