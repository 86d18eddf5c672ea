"""The course's random sources: secure by default, seeded only on request, unbiased."""

from __future__ import annotations

import math
import os

import pytest
import torch

from course_lib.randomness import InsecureSeededRandom, SecureRandom, resolve_random_source


def _chi_square_bytes(sample: torch.Tensor) -> float:
    counts = torch.bincount(
        sample.view(torch.uint8).flatten().to(torch.int64), minlength=256
    ).double()
    expected = counts.sum() / 256
    return float(((counts - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("source", [SecureRandom(), InsecureSeededRandom(7)])
def test_int64_bytes_are_uniform(source) -> None:
    # chi-square with 255 degrees of freedom: the 99.9% quantile is about 330
    assert _chi_square_bytes(source.int64(20_000)) < 330


def test_uniform_floats_in_unit_interval_with_right_mean() -> None:
    u = InsecureSeededRandom(0).uniform(100_000)
    assert u.dtype == torch.float64 and u.min() >= 0.0 and u.max() < 1.0
    # mean of U(0,1) has standard error 1/sqrt(12 n); allow 5 standard errors
    assert abs(u.mean().item() - 0.5) < 5 / math.sqrt(12 * 100_000)


def test_randbelow_is_unbiased() -> None:
    rng = InsecureSeededRandom(1)
    draws = torch.tensor([rng.randbelow(3) for _ in range(6000)])
    counts = torch.bincount(draws, minlength=3).double()
    assert counts.sum() == 6000 and ((counts - 2000) ** 2 / 2000).sum() < 13.8  # chi2(2) 99.9%


def test_seeded_is_reproducible_and_secure_is_not() -> None:
    assert torch.equal(InsecureSeededRandom(5).int64(8), InsecureSeededRandom(5).int64(8))
    assert not torch.equal(SecureRandom().int64(8), SecureRandom().int64(8))
    assert SecureRandom.secure and not InsecureSeededRandom.secure
    assert "INSECURE" in repr(InsecureSeededRandom(5))


def test_resolve_defaults_to_secure() -> None:
    assert isinstance(resolve_random_source(None), SecureRandom)
    seeded = InsecureSeededRandom(0)
    assert resolve_random_source(seeded) is seeded
    with pytest.raises(TypeError, match="RandomSource"):
        resolve_random_source(42)  # type: ignore[arg-type]


def test_bad_input() -> None:
    rng = SecureRandom()
    with pytest.raises(ValueError, match="positive"):
        rng.randbelow(0)
    with pytest.raises(ValueError, match="probability"):
        rng.bernoulli(1.5, 3)
    with pytest.raises(ValueError, match="shape"):
        rng.int64((2, -1))
    with pytest.raises(TypeError, match="seed"):
        InsecureSeededRandom(1.5)  # type: ignore[arg-type]
    assert rng.int64((0, 3)).shape == (0, 3)


def test_secure_streams_are_fresh_per_instance_and_not_reproducible() -> None:
    """Two SecureRandom instances (same process, same moment) never share a stream."""
    a, b = SecureRandom(), SecureRandom()
    first = a.bytes(64)
    assert first != b.bytes(64) and first != a.bytes(64)  # nor does one repeat itself
    assert first != bytes(64)  # the keystream, not the zeros it encrypts
    assert _chi_square_bytes(torch.frombuffer(bytearray(a.bytes(160_000)), dtype=torch.int64)) < 330


def test_secure_source_rekeys_after_its_byte_budget(monkeypatch) -> None:
    rng = SecureRandom()
    rekeys = []
    original = rng._rekey
    monkeypatch.setattr(rng, "_rekey", lambda: (rekeys.append(1), original()))
    monkeypatch.setattr(rng, "REKEY_BYTES", 64)
    out = rng.bytes(200)  # 64 under the first key, then 64 + 64 + 8 under three fresh keys
    assert len(out) == 200 and len(rekeys) == 3
    assert len({out[i : i + 64] for i in range(0, 192, 64)}) == 3


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")
def test_a_forked_child_does_not_continue_the_parents_stream() -> None:
    rng = SecureRandom()
    rng.bytes(16)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: write what it draws next, then leave without running pytest's exit
        os.write(write_end, rng.bytes(32))
        os._exit(0)
    os.close(write_end)
    parent = rng.bytes(32)
    child = os.read(read_end, 32)
    os.waitpid(pid, 0)
    assert len(child) == 32 and child != parent


def test_the_seeded_source_says_it_is_insecure_and_the_secure_one_does_not() -> None:
    assert not InsecureSeededRandom.secure and SecureRandom.secure
    assert (
        "INSECURE" in repr(InsecureSeededRandom(3)) and "INSECURE" in InsecureSeededRandom.__doc__
    )
    assert "INSECURE" not in repr(SecureRandom())
    with pytest.raises(ValueError, match="non-negative"):
        SecureRandom().bytes(-1)
