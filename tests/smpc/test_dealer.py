"""The trusted dealer's correlated randomness (course_lib.smpc.dealer), checked on the secrets."""

import pytest

from course_lib.randomness import InsecureSeededRandom
from course_lib.smpc import Dealer, reconstruct

MOD = 2**64


def signed(value: int) -> int:
    value %= MOD
    return value - MOD if value >= 2**63 else value


@pytest.mark.parametrize("bits", [1, 2, 17, 45, 60])
def test_dealer_truncation_mask_holds_r_and_both_corrections(bits):
    dealer = Dealer(3, InsecureSeededRandom(bits))
    mask, if_nonneg, if_neg = (reconstruct(t).tolist() for t in dealer.truncation_mask((50,), bits))
    for m, pos, neg in zip(mask, if_nonneg, if_neg, strict=True):
        r = (m - 2**62) % MOD  # r read as unsigned
        assert pos == signed((r >> 63) * 2 ** (64 - bits) - (r >> bits) - 2 ** (62 - bits))
        assert neg == signed(2 ** (64 - bits) - (r >> bits) - 2 ** (62 - bits))
