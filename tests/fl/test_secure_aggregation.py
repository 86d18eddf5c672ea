"""Secure aggregation: Shamir sharing, exact masked sums with and without dropouts, and masked
updates that look uniformly random whatever they hide."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from course_lib.fl.fedavg import fedavg
from course_lib.fl.secure_aggregation import (
    PRIME,
    SecAggClient,
    TrustedAggregator,
    add_pairwise_masks,
    decode_fixed_point,
    encode_fixed_point,
    expand_seed,
    secure_fedavg,
    secure_sum,
    shamir_reconstruct,
    shamir_split,
)
from course_lib.randomness import InsecureSeededRandom

CONFIDENCE = 1e-4  # probability that a correct implementation fails a statistical check


@settings(deadline=None, max_examples=25)
@given(
    secret=st.integers(min_value=0, max_value=PRIME - 1),
    n=st.integers(min_value=2, max_value=7),
    data=st.data(),
)
def test_any_t_shares_rebuild_the_secret_and_fewer_fail(secret, n, data):
    t = data.draw(st.integers(min_value=1, max_value=n))
    shares = shamir_split(secret, threshold=t, num_shares=n, rng=InsecureSeededRandom(n))
    for subset in itertools.combinations(shares, t):
        assert shamir_reconstruct(subset) == secret
    if t > 1:
        with pytest.raises(ValueError, match="at least"):
            shamir_reconstruct(shares[: t - 1])


def test_t_minus_one_shares_are_uniform_whatever_the_secret():
    # with t = 2 one share is f(x) = secret + a·x for a uniform a: uniform over the field, so its
    # low byte is uniform too; compare the secret 0 with the secret 2^500
    rng = InsecureSeededRandom(3)
    for secret in (0, 2**500):
        low_bytes = [
            shamir_split(secret, threshold=2, num_shares=3, rng=rng)[0].y % 256 for _ in range(4000)
        ]
        counts = torch.bincount(torch.tensor(low_bytes), minlength=256)
        assert stats.chisquare(counts.numpy()).pvalue > CONFIDENCE


def test_shamir_rejects_bad_input():
    with pytest.raises(ValueError, match="threshold"):
        shamir_split(5, threshold=4, num_shares=3)
    with pytest.raises(ValueError, match="secret"):
        shamir_split(-1, threshold=2, num_shares=3)
    with pytest.raises(TypeError):
        shamir_split(1.5, threshold=2, num_shares=3)
    shares = shamir_split(7, threshold=2, num_shares=3)
    with pytest.raises(ValueError, match="same x"):
        shamir_reconstruct([shares[0], shares[0]])


def _updates(n, numel=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(numel, generator=g) * 3 for _ in range(n)]


def _encoded_sum(updates, ids, frac_bits=16):
    total = torch.zeros_like(encode_fixed_point(updates[0], frac_bits))
    for i in ids:
        total = total + encode_fixed_point(updates[i], frac_bits)
    return total


def test_sum_is_exact_without_dropout():
    updates = _updates(5)
    result = secure_sum(updates, rng=InsecureSeededRandom(0))
    assert result.included == [0, 1, 2, 3, 4] and result.dropped == []
    assert torch.equal(result.encoded_total, _encoded_sum(updates, range(5)))
    assert torch.allclose(result.total, sum(updates), atol=5 * 2**-17)


def test_sum_is_exact_when_a_client_drops_after_the_others_masked():
    updates = _updates(6, seed=1)
    result = secure_sum(
        updates,
        threshold=3,
        drop_before_upload=[2, 4],
        drop_before_unmasking=[5],
        rng=InsecureSeededRandom(1),
    )
    assert result.included == [0, 1, 3, 5] and result.dropped == [2, 4]
    assert torch.equal(result.encoded_total, _encoded_sum(updates, [0, 1, 3, 5]))
    # without the survivors' help the orphaned masks would remain: the raw sum is garbage
    raw = sum(result.masked_updates.values())
    assert not torch.equal(raw, result.encoded_total)


def test_too_few_survivors_cannot_unmask():
    updates = _updates(4)
    with pytest.raises(ValueError, match="threshold"):
        secure_sum(updates, threshold=3, drop_before_upload=[0, 1])
    with pytest.raises(ValueError, match="unmasking"):
        secure_sum(updates, threshold=3, drop_before_unmasking=[0, 1])


def test_bad_input_is_rejected_clearly():
    with pytest.raises(ValueError, match="same shape"):
        secure_sum([torch.zeros(3), torch.zeros(4)])
    with pytest.raises(ValueError, match="at least 2"):
        secure_sum([torch.zeros(3)])
    with pytest.raises(ValueError, match="threshold"):
        secure_sum(_updates(3), threshold=4)
    with pytest.raises(ValueError, match="unknown"):
        secure_sum(_updates(3), drop_before_upload=[7])
    with pytest.raises(ValueError, match="outside the range"):
        secure_sum([torch.full((2,), 1e20), torch.zeros(2)])


def _top_byte_histogram(words):
    top = torch.bitwise_right_shift(words, 56) & 0xFF
    return torch.bincount(top.flatten(), minlength=256).numpy()


def test_a_masked_update_is_uniform_whatever_it_hides():
    numel = 20_000
    hidden = {
        "zeros": torch.zeros(numel),
        "large constant": torch.full((numel,), 1000.0),
        "ramp": torch.linspace(-50, 50, numel),
    }
    histograms = {}
    for k, (name, update) in enumerate(hidden.items()):
        others = _updates(2, numel=numel, seed=k)
        result = secure_sum([update, *others], rng=InsecureSeededRandom(10 + k))
        masked = result.masked_updates[0]
        histograms[name] = _top_byte_histogram(masked)
        # each byte value of the top byte equally likely, and every bit a fair coin
        assert stats.chisquare(histograms[name]).pvalue > CONFIDENCE, name
        bits = torch.stack([(masked >> b) & 1 for b in range(64)]).double().mean(1)
        bound = stats.norm.ppf(1 - CONFIDENCE / 128) * 0.5 / numel**0.5
        assert (bits - 0.5).abs().max() < bound, name
    # and the distributions do not depend on what is hidden (chi-square test of homogeneity)
    table = [histograms["zeros"], histograms["large constant"], histograms["ramp"]]
    assert stats.chi2_contingency(table).pvalue > CONFIDENCE
    # the masked values are not correlated with the hidden ramp
    masked = secure_sum(
        [hidden["ramp"], *_updates(2, numel=numel)], rng=InsecureSeededRandom(99)
    ).masked_updates[0]
    corr = torch.corrcoef(torch.stack([masked.double(), hidden["ramp"].double()]))[0, 1]
    assert abs(corr) < stats.norm.ppf(1 - CONFIDENCE / 2) / numel**0.5


def test_transcript_counts_messages():
    result = secure_sum(_updates(4, numel=10), drop_before_upload=[1], rng=InsecureSeededRandom(0))
    assert result.transcript.messages["2 masked input (up)"] == 3
    assert result.transcript.bytes["2 masked input (up)"] == 3 * 10 * 8
    assert result.transcript.messages["0 advertise keys (up)"] == 4


def test_secure_fedavg_matches_plain_fedavg():
    g = torch.Generator().manual_seed(0)
    states = [
        {"w": torch.randn(4, 3, generator=g), "b": torch.randn(3, generator=g)} for _ in range(4)
    ]
    weights = [10, 20, 30, 40]
    secure = secure_fedavg(states, weights, rng=InsecureSeededRandom(0), frac_bits=24)
    plain = fedavg(states, weights)
    for k in plain:
        assert torch.allclose(secure[k], plain[k], atol=1e-5)
    dropped = secure_fedavg(states, weights, drop_before_upload=[3], rng=InsecureSeededRandom(0))
    expected = fedavg(states[:3], weights[:3])
    for k in expected:
        assert torch.allclose(dropped[k], expected[k], atol=1e-4)


def test_trusted_aggregator_sees_everything():
    agg = TrustedAggregator()
    agg.receive(0, torch.ones(3))
    agg.receive(1, torch.full((3,), 2.0))
    assert torch.equal(agg.total(), torch.full((3,), 3.0))
    assert torch.equal(agg.seen[0], torch.ones(3))
    with pytest.raises(ValueError, match="same shape"):
        agg.receive(2, torch.ones(4))


def test_secure_by_default_masks_differ_between_runs_but_the_sum_does_not():
    updates = _updates(3, numel=50)
    first, second = secure_sum(updates), secure_sum(updates)  # SecureRandom (os.urandom)
    assert not torch.equal(first.masked_updates[0], second.masked_updates[0])
    assert torch.equal(first.encoded_total, second.encoded_total)


def test_an_honest_client_never_reveals_both_shares_of_one_client():
    client = SecAggClient(0, torch.zeros(3, dtype=torch.int64), InsecureSeededRandom(0), b"s")
    client.received = {j: (None, None) for j in range(3)}
    with pytest.raises(ValueError, match="both shares"):
        client.unmasking_shares(included=[1, 2], dropped=[2])


# -- a malicious server plays against the clients ------------------------------------------------


def _set_up_round(n=4, threshold=3, seed=5):
    """Rounds 0-2 run honestly; the attacking server holds every masked upload."""
    rng = InsecureSeededRandom(seed)
    updates = _updates(n, numel=50, seed=seed)
    encoded = [encode_fixed_point(u) for u in updates]
    clients = [SecAggClient(i, encoded[i], rng, b"round-1") for i in range(n)]
    keys = {i: c.public_keys() for i, c in enumerate(clients)}
    outgoing = {i: c.share_keys(keys, threshold) for i, c in enumerate(clients)}
    for j, c in enumerate(clients):
        c.receive_shares({i: out[j] for i, out in outgoing.items() if j in out}, keys, threshold)
    masked = {i: c.masked_input(keys, range(n)) for i, c in enumerate(clients)}
    return clients, keys, encoded, masked


def _unmask_fully(masked, mask_key_shares, self_mask_shares, victim, keys):
    """What a server holding both kinds of share of ``victim`` computes: its update."""
    seed = shamir_reconstruct(self_mask_shares).to_bytes(32, "big")
    secret = shamir_reconstruct(mask_key_shares).to_bytes(32, "big")
    peers = {i: keys[i][1] for i in keys}
    pair_masks = add_pairwise_masks(
        torch.zeros(50, dtype=torch.int64), victim, secret, peers, b"round-1"
    )
    return masked[victim] - pair_masks - expand_seed(seed, 50)


@pytest.mark.parametrize("order", ["self-mask first", "mask key first"])
def test_a_server_asking_twice_for_one_peer_is_refused(order):
    clients, keys, encoded, masked = _set_up_round()
    victim, survivors = 3, [0, 1, 2]
    everyone = [0, 1, 2, 3]
    ask_self_mask = (everyone, [])  # "client 3's upload arrived"
    ask_mask_key = ([0, 1, 2], [victim])  # "client 3 dropped out"
    first, second = (
        (ask_self_mask, ask_mask_key)
        if order == "self-mask first"
        else (ask_mask_key, ask_self_mask)
    )
    answers = [clients[i].unmasking_shares(*first) for i in survivors]
    for i in survivors:
        with pytest.raises(ValueError, match="never both"):
            clients[i].unmasking_shares(*second)
    # what the refusal protects: had the clients answered, the server would hold the victim's
    # update exactly (the attack works on the shares the clients hold)
    kinds = {"self": 1, "key": 0}
    key_shares = [clients[i].received[victim][kinds["key"]] for i in survivors]
    self_shares = [clients[i].received[victim][kinds["self"]] for i in survivors]
    assert torch.equal(
        _unmask_fully(masked, key_shares, self_shares, victim, keys), encoded[victim]
    )
    # and the honest answers it did get cover one kind only
    assert all(victim in answer for answer in answers)


def test_the_self_mask_hides_a_late_client():
    """The server declares client 3 dropped, gets its mask key, then its upload arrives late:
    all the server can strip off is the pair masks, and the self-mask still hides the update."""
    clients, keys, encoded, masked = _set_up_round()
    shares = [clients[i].unmasking_shares([0, 1, 2], [3])[3] for i in range(3)]
    secret = shamir_reconstruct(shares).to_bytes(32, "big")
    peers = {i: keys[i][1] for i in keys}
    pair_masks = add_pairwise_masks(
        torch.zeros(50, dtype=torch.int64), 3, secret, peers, b"round-1"
    )
    left = masked[3] - pair_masks
    assert torch.equal(left, encoded[3] + expand_seed(clients[3].self_seed, 50))
    assert (decode_fixed_point(left).abs() > 1e6).float().mean() > 0.99  # garbage, not an update


def test_clients_refuse_other_malicious_unmasking_requests():
    clients, *_ = _set_up_round()
    with pytest.raises(ValueError, match="uploaded its masked input"):
        clients[3].unmasking_shares([0, 1, 2], [3])
    with pytest.raises(ValueError, match="below the threshold"):
        clients[0].unmasking_shares([0, 1], [2, 3])
    with pytest.raises(ValueError, match="no shares of client"):
        clients[0].unmasking_shares([0, 1, 2, 3, 9], [])
    assert clients[0].revealed == {}  # a refused request reveals nothing


# -- non-finite and out-of-range inputs ----------------------------------------------------------


def _poisoned(value, where):
    bad = torch.randn(6)
    if where == "one":
        bad[2] = value
    else:
        bad[:] = value
    return bad


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", ["one", "all"])
def test_a_non_finite_update_is_refused_naming_its_client(value, where):
    updates = [torch.randn(6), _poisoned(value, where), torch.randn(6)]
    rng = InsecureSeededRandom(0)
    with pytest.raises(ValueError, match=r"client 1's update holds \d+ non-finite"):
        secure_sum(updates, rng=rng)
    assert rng.bytes(8) == InsecureSeededRandom(0).bytes(8)  # refused before any randomness
    states = [{"w": u} for u in updates]
    with pytest.raises(ValueError, match=r"client 1 \(w\)'s update holds"):
        secure_fedavg(states, [1, 1, 1])
    with pytest.raises(ValueError, match="client 2's weight"):
        secure_fedavg(states[:1] * 3, [1, 1, value])
    server = TrustedAggregator()
    with pytest.raises(ValueError, match="client 1's update"):
        server.receive(1, updates[1])
    assert server.seen == {}


def test_fixed_point_range_is_checked_after_rounding():
    # 1 + 0.6·2^-16 is within max_abs but rounds up to 65537 / 2^16, beyond it
    x = torch.tensor([1 + 0.6 * 2**-16], dtype=torch.float64)
    with pytest.raises(ValueError, match="after rounding"):
        encode_fixed_point(x, 16, max_abs=float(x))
    assert encode_fixed_point(torch.tensor([1 - 2**-16]), 16, max_abs=1.0).item() == 2**16 - 1
    # a bound beyond what int64 holds would let the cast wrap around silently
    with pytest.raises(ValueError, match="max_abs"):
        encode_fixed_point(torch.tensor([2.0**48]), 16, max_abs=2.0**50)


def test_the_largest_allowed_values_sum_without_wrapping_around():
    limit = 2.0 ** (62 - 16 - 2)  # three clients: two bits of headroom for the sum
    largest = torch.full((4,), limit - 1, dtype=torch.float64)
    result = secure_sum([largest] * 3, rng=InsecureSeededRandom(0))
    assert torch.equal(result.total, 3 * largest)
    assert torch.equal(secure_sum([-largest] * 3, rng=InsecureSeededRandom(0)).total, -3 * largest)
    with pytest.raises(ValueError, match="outside the range"):
        secure_sum([torch.full((4,), limit, dtype=torch.float64)] * 3)


# --- one rule for integers and numbers (course_lib.validation): NumPy integers are integers, bools
# are not numbers; a refusal comes before any randomness is drawn.

BOOLS = [True, np.bool_(True)]


@pytest.mark.parametrize("flag", BOOLS)
def test_shamir_refuses_bools_before_drawing_randomness(flag):
    for kwargs in (
        {"secret": flag, "threshold": 2, "num_shares": 3},
        {"secret": 5, "threshold": flag, "num_shares": 3},
        {"secret": 5, "threshold": 2, "num_shares": flag},
    ):
        rng = InsecureSeededRandom(0)
        secret = kwargs.pop("secret")
        with pytest.raises(TypeError, match="secret|threshold|num_shares"):
            shamir_split(secret, rng=rng, **kwargs)
        assert rng.bytes(8) == InsecureSeededRandom(0).bytes(8)


def test_shamir_takes_numpy_integers_as_python_ints():
    shares = shamir_split(
        np.int64(2**62 + 7),
        threshold=np.int64(2),
        num_shares=np.int32(3),
        rng=InsecureSeededRandom(0),
    )
    assert len(shares) == 3
    assert all(type(s.y) is int for s in shares)  # no int64 overflow in the field arithmetic
    assert shamir_reconstruct(shares[1:]) == 2**62 + 7


@pytest.mark.parametrize("flag", BOOLS)
def test_encode_fixed_point_refuses_bools(flag):
    with pytest.raises(TypeError, match="frac_bits"):
        encode_fixed_point(torch.tensor([1.0]), flag)
    with pytest.raises(TypeError, match="max_abs"):
        encode_fixed_point(torch.tensor([1.0]), 16, max_abs=flag)
    encoded = encode_fixed_point(torch.tensor([1.5]), np.int64(4), max_abs=np.float32(2.0))
    assert encoded.tolist() == [24]


@pytest.mark.parametrize("flag", BOOLS)
def test_secure_sum_and_fedavg_refuse_bools_before_drawing_randomness(flag):
    updates = _updates(3)
    for kwargs in ({"threshold": flag}, {"frac_bits": flag}):
        rng = InsecureSeededRandom(0)
        with pytest.raises(TypeError, match="threshold|frac_bits"):
            secure_sum(updates, rng=rng, **kwargs)
        assert rng.bytes(8) == InsecureSeededRandom(0).bytes(8)
    states = [{"w": u} for u in updates]
    rng = InsecureSeededRandom(0)
    with pytest.raises(TypeError, match="client 1's weight"):
        secure_fedavg(states, [1, flag, 1], rng=rng)
    assert rng.bytes(8) == InsecureSeededRandom(0).bytes(8)


def test_secure_sum_and_fedavg_take_numpy_integers():
    updates = [torch.tensor([1.0, 2.0]), torch.tensor([0.5, -1.0]), torch.tensor([2.0, 0.0])]
    result = secure_sum(
        updates, threshold=np.int64(2), frac_bits=np.int64(16), rng=InsecureSeededRandom(0)
    )
    assert result.total.tolist() == [3.5, 1.0]
    states = [{"w": u} for u in updates]
    mean = secure_fedavg(
        states,
        [np.int64(1), np.int64(1), np.int64(2)],
        threshold=np.int64(2),
        rng=InsecureSeededRandom(0),
    )
    assert torch.allclose(mean["w"], torch.tensor([5.5 / 4, 1.0 / 4]), atol=1e-4)
