"""Lesson 21: canaries, exposure, extraction and DP-SGD (course_lib.dp.memorization)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from course_lib.dp.dpsgd import train_private
from course_lib.dp.memorization import (
    ALPHABET,
    Canary,
    CharMLP,
    candidate_secrets,
    encode,
    exposure,
    exposure_from_rank,
    greedy_extract,
    insert_canaries,
    log_perplexities,
    next_char_dataset,
    normalise_text,
    perplexity,
    rank_of,
    secret_log_perplexities,
    stdlib_corpus,
    train_lm,
)
from course_lib.exercises import check
from course_lib.randomness import InsecureSeededRandom

CONTEXT = 12


def test_exposure_matches_hand_computed_values():
    assert exposure_from_rank(1, 10_000) == pytest.approx(13.287712379549449)  # log2 10^4
    assert exposure_from_rank(10_000, 10_000) == 0.0
    assert exposure_from_rank(8, 1024) == pytest.approx(7.0)  # 10 - 3 bits
    assert exposure_from_rank(2, 4) == pytest.approx(1.0)


@pytest.mark.parametrize(("rank", "n"), [(0, 10), (11, 10), (1.5, 10), (1, 0)])
def test_exposure_rejects_impossible_ranks(rank, n):
    with pytest.raises((ValueError, TypeError)):
        exposure_from_rank(rank, n)


def test_rank_counts_ties_against_the_secret_as_carlini_et_al():
    # rank = |{r' : score(r') <= score(r)}| (Carlini et al. 2019, Definition 3)
    scores = torch.tensor([3.0, 1.0, 2.0, 1.0])
    assert [rank_of(scores, i) for i in range(4)] == [4, 2, 3, 2]
    assert rank_of(torch.full((7,), 2.5), 3) == 7
    with pytest.raises(ValueError, match="outside"):
        rank_of(scores, 4)
    with pytest.raises(ValueError, match="NaN"):
        rank_of(torch.tensor([1.0, float("nan")]), 0)
    with pytest.raises(TypeError, match="index"):
        rank_of(scores, True)
    assert rank_of(scores, np.int64(1)) == 2


def test_an_indifferent_model_exposes_no_secret():
    """The attacker's case from issue 23: a model whose scores are all equal must not give a
    never-seen secret the maximum exposure (it gave 9.97 of 9.97 bits when ties favoured it)."""
    model = CharMLP(context=CONTEXT, hidden=8)
    for parameter in model.parameters():
        torch.nn.init.zeros_(parameter)  # uniform next-character distribution everywhere
    scores = secret_log_perplexities(model, "the pin of zoe is ", 3)
    assert torch.all(scores == scores[0])  # indifferent: every candidate ties
    result = exposure(model, Canary("the pin of zoe is ", "123", 0))
    assert result.rank == 1000
    assert result.exposure == 0.0


def test_corpus_is_real_normalised_english_and_deterministic():
    text = stdlib_corpus(5_000)
    assert len(text) == 5_000 and text == stdlib_corpus(5_000)
    assert set(text) <= set(ALPHABET) and "  " not in text
    assert text.count(" the ") > 20  # English, not code
    with pytest.raises(ValueError, match="fewer than"):
        stdlib_corpus(10_000, modules=("bisect",))


def test_normalise_and_encode_round_trip():
    assert normalise_text("Hello,\n\tWORLD!  §") == "hello, world"
    assert "".join(ALPHABET[i] for i in encode("pin 42")) == "pin 42"
    with pytest.raises(ValueError, match="not in the alphabet"):
        encode("PIN")
    with pytest.raises(TypeError):
        normalise_text(42)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"prefix": "", "secret": "1234", "insertions": 1}, ValueError, "prefix"),
        ({"prefix": "My PIN ", "secret": "1234", "insertions": 1}, ValueError, "alphabet"),
        ({"prefix": "pin ", "secret": "12a4", "insertions": 1}, ValueError, "digits"),
        ({"prefix": "pin ", "secret": "١٢", "insertions": 1}, ValueError, "0-9"),
        ({"prefix": "pin ", "secret": "1234", "insertions": -1}, ValueError, "insertions"),
        ({"prefix": "pin ", "secret": "1234", "insertions": 1.5}, TypeError, "insertions"),
    ],
)
def test_canary_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        Canary(**kwargs)


def test_insertion_puts_each_copy_in_and_nothing_else_changes():
    text = stdlib_corpus(3_000)
    canaries = [Canary("the pin of alice is ", "4719", 3), Canary("the pin of bob is ", "0042", 0)]
    out = insert_canaries(text, canaries, seed=1)
    assert out.count("the pin of alice is 4719") == 3 and "bob" not in out
    assert out.replace(" the pin of alice is 4719", "") == text
    assert out == insert_canaries(text, canaries, seed=1)
    with pytest.raises(TypeError, match="Canary"):
        insert_canaries(text, ["the pin is 1234"])
    with pytest.raises(ValueError, match="no space"):
        insert_canaries("abc", canaries)


def test_tree_scores_equal_direct_scores():
    torch.manual_seed(0)
    model = CharMLP(CONTEXT, 16)
    tree = secret_log_perplexities(model, "the pin is ", 3)
    direct = log_perplexities(model, "the pin is ", candidate_secrets(3))
    assert torch.allclose(tree, direct, atol=1e-4)
    with pytest.raises(ValueError, match="same length"):
        log_perplexities(model, "x ", ["12", "123"])


@pytest.fixture(scope="module")
def memorising_setup():
    """A corpus with one canary repeated 20 times, one never inserted (the control)."""
    text = stdlib_corpus(6_000)
    planted = Canary("the pin of alice is ", "4719", 20)
    control = Canary("the pin of bob is ", "8362", 0)
    data = next_char_dataset(insert_canaries(text, [planted, control], seed=0), CONTEXT)
    return data, planted, control


def test_repeated_canary_is_exposed_and_extractable(memorising_setup):
    data, planted, control = memorising_setup
    torch.manual_seed(0)
    model = CharMLP(CONTEXT, 64)
    train_lm(model, data, epochs=15, seed=0)
    hit = exposure(model, planted)
    assert hit.rank == 1 and hit.exposure == pytest.approx(math.log2(10_000))
    assert greedy_extract(model, planted.prefix, 4) == "4719"
    # the control was never seen: its exposure is what chance gives (P(≥ 10 bits) = 2^-10)
    assert exposure(model, control).exposure < 10


def test_dp_sgd_lowers_exposure_of_a_single_copy():
    """One copy of the canary: the non-private model ranks it first; DP-SGD at ε ≈ 1 does not.

    (A canary repeated k times is a group of k records: DP's guarantee for it is about kε, and
    the lesson shows that a 16-times repeated canary is still exposed at small ε.)"""
    text = stdlib_corpus(6_000)
    once = Canary("the pin of alice is ", "4719", 1)
    data = next_char_dataset(insert_canaries(text, [once], seed=0), CONTEXT)
    torch.manual_seed(0)
    plain = CharMLP(CONTEXT, 64)
    train_lm(plain, data, epochs=15, seed=0)
    torch.manual_seed(0)
    private = CharMLP(CONTEXT, 64)
    history = train_private(
        private,
        data,
        epochs=3,
        sample_rate=256 / len(data),
        lr=1.0,
        noise_multiplier=1.5,
        momentum=0.9,
        rng=InsecureSeededRandom(0),
        progress=False,
    )
    assert history.epsilon[-1] < 2.0
    assert exposure(plain, once).exposure > 10
    assert exposure(private, once).exposure < 7  # P(chance ≥ 7 bits) = 1/128
    assert greedy_extract(private, once.prefix, 4) != "4719"
    assert perplexity(private, data) < len(ALPHABET)  # it learned something: better than uniform


def test_checkers_accept_solutions_and_reject_wrong_answers():
    def good_exposure(rank, n):
        return math.log2(n) - math.log2(rank)

    def find_secret(model, prefix, length):
        candidates = candidate_secrets(length)
        return candidates[int(log_perplexities(model, prefix, candidates).argmin())]

    assert check("21.exposure", good_exposure).passed
    assert not check("21.exposure", lambda rank, n: math.log2(rank)).passed
    assert check("21.find_secret", find_secret).passed
    assert not check("21.find_secret", lambda model, prefix, length: "0" * length).passed
