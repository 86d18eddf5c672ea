"""Paillier encrypted aggregation (course_lib.he.paillier).

Keys here are 512 bits so the suite stays fast: these tests check correctness of the encoding,
packing and homomorphic sum, not the strength of the key (use >= 2048 bits for real data).
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from course_lib.he.paillier import (
    FixedPointEncoding,
    aggregate,
    decrypt_sum,
    encrypt_update,
    generate_keypair,
)
from course_lib.randomness import InsecureSeededRandom

TEST_KEY_BITS = 512  # fast, NOT secure: correctness tests only


@pytest.fixture(scope="module")
def keys():
    return generate_keypair(TEST_KEY_BITS)


@settings(deadline=None, max_examples=15)
@given(
    clients=st.integers(1, 6),
    size=st.integers(1, 40),
    scale=st.floats(1e-3, 100.0),
    pack=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_aggregate_is_exact_to_the_encoding_precision(keys, clients, size, scale, pack, seed):
    pk, sk = keys
    encoding = FixedPointEncoding(pack=pack)
    gen = torch.Generator().manual_seed(seed)
    updates = [
        (torch.rand(size, generator=gen, dtype=torch.float64) * 2 - 1) * scale
        for _ in range(clients)
    ]
    total = aggregate([encrypt_update(pk, u, encoding=encoding) for u in updates])
    assert total.summands == clients
    got = decrypt_sum(sk, total)
    error = (got - sum(updates)).abs().max().item()
    assert error <= encoding.sum_error_bound(clients)


def test_state_dicts_round_trip_with_names_and_shapes(keys):
    pk, sk = keys
    gen = torch.Generator().manual_seed(0)
    states = [
        {"fc.weight": torch.randn(3, 5, generator=gen), "fc.bias": torch.randn(3, generator=gen)}
        for _ in range(3)
    ]
    total = decrypt_sum(sk, aggregate([encrypt_update(pk, s) for s in states]))
    assert list(total) == ["fc.weight", "fc.bias"]
    for name in total:
        expected = sum(s[name].double() for s in states)
        assert total[name].shape == expected.shape
        assert torch.allclose(total[name], expected, atol=FixedPointEncoding().sum_error_bound(3))


def test_packing_uses_fewer_ciphertexts(keys):
    pk, _ = keys
    update = torch.zeros(100)
    packed = encrypt_update(pk, update)
    single = encrypt_update(pk, update, encoding=FixedPointEncoding(pack=False))
    slots = FixedPointEncoding().slots_per_ciphertext(pk)
    assert slots > 1
    assert len(packed.ciphertexts) == -(-100 // slots)
    assert len(single.ciphertexts) == 100
    assert packed.nbytes == len(packed.ciphertexts) * 2 * TEST_KEY_BITS // 8


def test_encryption_is_randomised_and_seedable(keys):
    pk, _ = keys
    update = torch.ones(4)
    a, b = encrypt_update(pk, update), encrypt_update(pk, update)
    assert a.ciphertexts[0].ciphertext(be_secure=False) != b.ciphertexts[0].ciphertext(
        be_secure=False
    )  # same plaintext
    s1 = encrypt_update(pk, update, rng=InsecureSeededRandom(1))
    s2 = encrypt_update(pk, update, rng=InsecureSeededRandom(1))
    assert s1.ciphertexts[0].ciphertext(be_secure=False) == s2.ciphertexts[0].ciphertext(
        be_secure=False
    )


def test_out_of_range_and_non_finite_values_are_rejected(keys):
    pk, _ = keys
    with pytest.raises(ValueError, match="does not fit"):
        encrypt_update(
            pk, torch.tensor([300.0])
        )  # default int_bits=8: |x| < 256  # default int_bits=8: |x| < 256
    with pytest.raises(ValueError, match="NaN"):
        encrypt_update(pk, torch.tensor([float("nan")]))
    with pytest.raises(TypeError, match="floats"):
        encrypt_update(pk, torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="tensor or a dict"):
        encrypt_update(pk, [1.0, 2.0])


def test_mismatched_updates_are_rejected(keys):
    pk, sk = keys
    other_pk, other_sk = generate_keypair(TEST_KEY_BITS)
    a = encrypt_update(pk, torch.zeros(3))
    with pytest.raises(ValueError, match="different public keys"):
        aggregate([a, encrypt_update(other_pk, torch.zeros(3))])
    with pytest.raises(ValueError, match="shapes"):
        aggregate([a, encrypt_update(pk, torch.zeros(4))])
    with pytest.raises(ValueError, match="does not belong"):
        decrypt_sum(other_sk, a)
    with pytest.raises(ValueError, match="no encrypted updates"):
        aggregate([])


def test_summing_more_than_max_summands_is_refused(keys):
    pk, _ = keys
    encoding = FixedPointEncoding(max_summands=2)
    updates = [encrypt_update(pk, torch.zeros(2), encoding=encoding) for _ in range(3)]
    with pytest.raises(ValueError, match="overflow"):
        aggregate(updates)


@settings(deadline=None, max_examples=40)
@given(
    below=st.integers(0, 2**20),
    negative=st.booleans(),
    int_bits=st.integers(0, 10),
    summands=st.integers(1, 3),
)
def test_every_accepted_value_decrypts_to_itself_at_the_range_boundary(
    keys, below, negative, int_bits, summands
):
    """Attack on the slot: a value just below 2^int_bits that rounds up must not wrap around."""
    pk, sk = keys
    encoding = FixedPointEncoding(frac_bits=24, int_bits=int_bits, max_summands=summands)
    value = 2.0**int_bits - below * 2.0**-30  # from 2^-30 below the bound down to ~2^-10 below
    value = -value if negative else value
    update = torch.full((3,), value, dtype=torch.float64)
    if abs(round(value * 2**24)) >= 2 ** (int_bits + 24):
        with pytest.raises(ValueError, match="after rounding"):
            encrypt_update(pk, update, encoding=encoding)
        return
    total = decrypt_sum(sk, aggregate([encrypt_update(pk, update, encoding=encoding)] * summands))
    assert torch.allclose(total, summands * update, rtol=0, atol=summands * 2.0**-25)


def test_the_issue_example_is_refused(keys):
    pk, _ = keys
    encoding = FixedPointEncoding(int_bits=8, max_summands=1)
    with pytest.raises(ValueError, match="after rounding"):
        encrypt_update(pk, torch.tensor([256 - 2**-26], dtype=torch.float64), encoding=encoding)


def test_bad_key_sizes_and_encodings():
    with pytest.raises(ValueError, match="at least 256"):
        generate_keypair(128)
    with pytest.raises(ValueError, match="at most 62"):
        FixedPointEncoding(frac_bits=40, int_bits=30)


def test_integers_follow_the_one_rule():
    """Issue 23 §5: NumPy integers are integers, bools are not (course_lib.validation)."""
    encoding = FixedPointEncoding(frac_bits=np.int64(20), int_bits=np.int32(6))
    assert (encoding.frac_bits, encoding.int_bits) == (20, 6)
    assert type(encoding.frac_bits) is int
    for bad in (True, np.bool_(True), 20.0):
        with pytest.raises(TypeError, match="frac_bits"):
            FixedPointEncoding(frac_bits=bad)
        with pytest.raises(TypeError, match="key_bits"):
            generate_keypair(bad)
