"""client_round_seed: the one seed rule, and its argument checks."""

import numpy as np
import pytest

from course_lib.fl.seeding import client_round_seed


def test_seeds_follow_the_documented_formula_and_differ_per_round_and_client():
    assert client_round_seed(1, 2, 3) == 100_003 + 2 * 1_009 + 3
    seeds = {client_round_seed(7, r, c) for r in range(50) for c in range(100)}
    assert len(seeds) == 50 * 100


@pytest.mark.parametrize("flag", [True, np.bool_(True)])
@pytest.mark.parametrize("position", [0, 1, 2])
def test_bools_and_floats_are_refused(flag, position):
    for bad in (flag, 1.0):
        args = [1, 2, 3]
        args[position] = bad
        with pytest.raises(TypeError, match=["seed", "round_index", "client"][position]):
            client_round_seed(*args)


def test_negative_values_are_refused():
    with pytest.raises(ValueError, match="round_index"):
        client_round_seed(0, -1, 0)


def test_numpy_integers_give_the_same_python_int():
    seed = client_round_seed(np.int64(1), np.int32(2), np.uint8(3))
    assert type(seed) is int and seed == client_round_seed(1, 2, 3)
