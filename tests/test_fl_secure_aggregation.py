"""Secure aggregation: Shamir sharing, exact masked sums with and without dropouts, and masked
updates that look uniformly random whatever they hide."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from course_lib.fl.fedavg import fedavg
from course_lib.fl.secure_aggregation import (
    PRIME,
    TrustedAggregator,
    encode_fixed_point,
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
    with pytest.raises(ValueError, match="exceeds"):
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
    from course_lib.fl.secure_aggregation import _Client

    client = _Client(0, torch.zeros(3, dtype=torch.int64), InsecureSeededRandom(0), b"s")
    with pytest.raises(ValueError, match="both shares"):
        client.unmasking_shares(included=[1, 2], dropped=[2])
