"""The one rule that gives every simulated client its own, reproducible random stream.

Every federated-learning loop in the course (hand-written FedAvg, DP-FedAvg, the Flower app)
shuffles client ``c``'s data in round ``r`` with the seed :func:`client_round_seed` returns. Because
all of them call this one function, the same experiment seed gives the same mini-batches everywhere
— which is what lets lesson 10 compare the course's FedAvg with Flower's number for number.
"""

from __future__ import annotations

from course_lib.validation import check_nonnegative_int

__all__ = ["client_round_seed"]


def client_round_seed(seed: int, round_index: int, client: int) -> int:
    """Seed of client ``client``'s data shuffling in round ``round_index`` (both counted from 0).

    The two multipliers are distinct primes, so different (round, client) pairs of one experiment
    get different seeds for any realistic number of rounds and clients.

    >>> client_round_seed(0, 0, 3)
    3
    >>> client_round_seed(1, 2, 0)
    102021
    """
    seed = check_nonnegative_int(seed, "seed")
    round_index = check_nonnegative_int(round_index, "round_index")
    client = check_nonnegative_int(client, "client")
    return seed * 100_003 + round_index * 1_009 + client
