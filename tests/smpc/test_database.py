"""The encrypted key–value store (course_lib.smpc.database): right answers for present and absent
keys, a cost whose rounds do not grow with the table, a server view that does not depend on the
query (a distinguishing game at chance, and uniform shares), and bad input refused before any
share is made."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import binom

from course_lib.randomness import InsecureSeededRandom
from course_lib.smpc import Cost, Session, SharedTensor
from course_lib.smpc.communication import Output
from course_lib.smpc.database import KEY_RANGE, VALUE_RANGE, SharedKeyValueStore


def _random_table(g: torch.Generator, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    keys = torch.randperm(1000, generator=g)[:rows] * 4_000_000  # distinct, spread over KEY_RANGE
    keys[0] = KEY_RANGE[1] - 1
    values = torch.randint(VALUE_RANGE[0], VALUE_RANGE[1], (rows,), generator=g)
    values[-1] = 0  # a stored zero: only `found` tells it from a missing key
    return keys, values


@pytest.mark.parametrize("n_parties", [2, 3])
def test_lookups_are_right_for_present_and_absent_keys(n_parties: int) -> None:
    g = torch.Generator().manual_seed(n_parties)
    for trial in range(12):
        rows = int(torch.randint(1, 40, (1,), generator=g))
        keys, values = _random_table(g, rows)
        session = Session(n_parties, rng=InsecureSeededRandom(100 * n_parties + trial))
        store = SharedKeyValueStore(keys, values, session)
        absent = torch.cat([torch.tensor([0, 1, KEY_RANGE[1] - 2]), keys[1:] + 1])  # neighbours
        absent = absent[~torch.isin(absent, keys)]
        query = torch.cat([keys[torch.randperm(rows, generator=g)], absent])
        got, found = store.get(query)
        table = dict(zip(keys.tolist(), values.tolist(), strict=True))
        assert got.tolist() == [table.get(k, 0) for k in query.tolist()]
        assert found.tolist() == [k in table for k in query.tolist()]
        assert found.dtype == torch.bool and got.dtype == torch.int64


def test_one_key_gives_scalars_and_a_missing_key_differs_from_a_stored_zero_only_in_found():
    session = Session(2, rng=InsecureSeededRandom(0))
    store = SharedKeyValueStore([7, 8, 9], [0, -5, 2**31 - 1], session)
    assert [(int(v), bool(f)) for v, f in (store.get(k) for k in (7, 6, 9))] == [
        (0, True),
        (0, False),
        (2**31 - 1, True),
    ]
    value, found = store.lookup(store.share_query(8))
    assert isinstance(value, SharedTensor) and value.shape == () and found.shape == ()


def _lookup_cost(n_parties: int, rows: int, queries: int) -> tuple[Cost, dict[str, Cost]]:
    session = Session(n_parties, rng=InsecureSeededRandom(rows))
    keys = torch.arange(rows) * 3
    store = SharedKeyValueStore(keys, keys + 1, session)
    session.log.reset()
    store.get(torch.arange(queries) * 5)
    return session.log.total, session.log.by_operation


@pytest.mark.parametrize(("n_parties", "rounds"), [(2, 11), (3, 18)])
def test_rounds_do_not_grow_with_the_table_and_bytes_follow_the_formula(
    n_parties: int, rounds: int
) -> None:
    p = n_parties
    for rows, queries in [(10, 1), (1_000, 1), (1_000, 3)]:
        total, by_operation = _lookup_cost(p, rows, queries)
        assert total.rounds == rounds == 1 + (7 * (p - 1) + 1) + 1 + 1
        pairs = rows * queries
        assert by_operation["share"].bytes == 8 * p * queries  # the client sends p shares
        assert by_operation["eq"].bytes == pairs * 2 * 8 * p * (p - 1) * (24 * (p - 1) + 1)
        assert by_operation["mul"].bytes == pairs * 2 * 8 * p * (p - 1)  # ε and δ
        assert by_operation["reveal"].bytes == 2 * queries * 8 * p  # value and found, to the client
        assert total.bytes == sum(c.bytes for c in by_operation.values())


def test_the_cost_and_the_message_sizes_do_not_depend_on_the_query() -> None:
    """Same rounds and bytes whether the key is in row 0, the last row or absent: the traffic
    does not tell the servers which row matched."""
    costs = []
    for query in (0, 3 * 99, 1, 10**9):
        session = Session(2, rng=InsecureSeededRandom(1))
        store = SharedKeyValueStore(torch.arange(100) * 3, torch.arange(100), session)
        sizes = []
        session.open = _recording(session.open, sizes)  # type: ignore[method-assign]
        session.open_xor = _recording(session.open_xor, sizes)  # type: ignore[method-assign]
        session.log.reset()
        store.get(query)
        costs.append((session.log.total, [tuple(s.shape) for s in sizes]))
    assert all(c == costs[0] for c in costs)


def _recording(open_, opened: list[torch.Tensor]):
    """Wrap Session.open / open_xor so that every value opened to the servers is kept."""

    def wrapped(*stacked):
        values = open_(*stacked)
        opened.extend(values)
        return values

    return wrapped


def test_only_the_client_receives_an_output() -> None:
    session = Session(3, rng=InsecureSeededRandom(2))
    store = SharedKeyValueStore([1, 2, 3], [10, 20, 30], session, owner="registry")
    store.get([2, 4], client="doctor")
    assert session.log.outputs == [Output("reveal", "doctor", 4)]  # 2 values + 2 found bits


def _server_view_bits(session: Session, store, queries: torch.Tensor, collude: bool):
    """Server 0's view of one batched lookup as binary features, one row per query.

    The view: its share of each query and every value opened to the servers (Beaver ε, δ, the
    masked words of the adder circuit, the masked sign bits). ``collude=True`` adds what servers
    0 and 1 learn together — the query itself — as a control that the game can be won.
    """
    m = len(queries)
    opened: list[torch.Tensor] = []
    session.open = _recording(session.open, opened)  # type: ignore[method-assign]
    session.open_xor = _recording(session.open_xor, opened)  # type: ignore[method-assign]
    shared = store.share_query(queries)
    store.lookup(shared)
    columns = [shared.shares[0].reshape(m, 1)]
    if collude:
        columns.append(shared.shares.sum(dim=0).reshape(m, 1))
    for value in opened:
        (dim,) = [d for d, size in enumerate(value.shape) if size == m]
        columns.append(value.movedim(dim, 0).reshape(m, -1))
    words = torch.cat(columns, dim=1)
    bits = torch.cat([(words >> i) & 1 for i in range(8)] + [(words < 0).long()], dim=1)
    return bits.numpy().astype(bool)


def _naive_bayes_right_guesses(bits: np.ndarray, secret: np.ndarray) -> int:
    """Train a naive Bayes guesser on the first half of the games, count its hits on the rest."""
    half = len(secret) // 2
    train, test = bits[:half], bits[half:]
    log_odds = np.zeros(len(test))
    for b in (0, 1):
        rows = train[secret[:half] == b]
        p_one = (rows.sum(axis=0) + 1) / (len(rows) + 2)  # Laplace smoothing
        sign = 1 if b == 1 else -1
        log_odds += sign * (test * np.log(p_one) + (~test) * np.log(1 - p_one)).sum(axis=1)
    return int(((log_odds > 0) == secret[half:].astype(bool)).sum())


def _leaky_lookup(store, query):
    """A broken store for the control: it also opens the match bits to the servers."""
    result = SharedKeyValueStore.lookup(store, query)
    store.session.open((store.keys == query.unsqueeze(-1)).shares)
    return result


@pytest.mark.parametrize("other_query", [40, 99])  # another present key / an absent key
def test_one_servers_view_does_not_tell_two_queries_apart(
    other_query: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A distinguishing game: in each of 4,000 games the client looks up key 20 or
    ``other_query`` (a fair coin). A naive-Bayes guesser is trained on 2,000 of server 0's views,
    as 1,500+ bits each (the low 8 bits and the sign of every word), and guesses the coin on the
    other 2,000. If the view is independent of the query it is right as often as a coin: inside
    the 99.9% binomial interval. Controls that the game can be won when the view leaks: the same
    guesser wins more than 95% of the games given what two colluding servers see, or against a
    store that opens its match bits."""
    games = 4_000
    secret = np.random.default_rng(other_query).integers(0, 2, games)
    queries = torch.where(torch.from_numpy(secret).bool(), other_query, 20)
    low, high = binom.interval(0.999, games // 2, 0.5)
    for variant in ("honest", "colluding servers", "leaky store"):
        session = Session(2, rng=InsecureSeededRandom(other_query))
        store = SharedKeyValueStore([10, 20, 30, 40], [1, 2, 3, 4], session)
        if variant == "leaky store":
            monkeypatch.setattr(store, "lookup", lambda q, store=store: _leaky_lookup(store, q))
        bits = _server_view_bits(session, store, queries, collude=variant == "colluding servers")
        assert bits.shape[1] > 1_500
        right = _naive_bayes_right_guesses(bits, secret)
        if variant == "honest":
            assert low <= right <= high, (right, low, high)
        else:
            assert right > 0.95 * games // 2, (variant, right)


def _uniform_bytes(share: torch.Tensor) -> bool:
    """Chi-square of the top and the bottom byte (255 d.o.f.; P(> 380) ≈ 1e-6 when uniform)."""
    expected = share.numel() / 256
    for byte in ((share >> 56) & 0xFF, share & 0xFF):
        observed = torch.bincount(byte.flatten(), minlength=256).double()
        if float(((observed - expected) ** 2 / expected).sum()) > 380.0:
            return False
    return True


def test_each_servers_shares_of_table_and_query_are_uniform() -> None:
    """Small keys, values and one repeated query: a server's shares of them are uniform bytes,
    while the plaintexts' own top bytes are all 0 (the control the test can fail on)."""
    n = 256 * 64
    session = Session(3, rng=InsecureSeededRandom(5))
    keys = torch.arange(n)
    store = SharedKeyValueStore(keys, keys % 7, session)
    query = store.share_query(torch.full((n,), 20))
    for server in range(3):
        for shares in (store.keys.shares, store.values.shares, query.shares):
            assert _uniform_bytes(shares[server])
    assert not _uniform_bytes(keys) and not _uniform_bytes(torch.full((n,), 20))


BAD_TABLES = [
    ([1, 2.0], [1, 2], TypeError, "must be integers"),
    ([1, True], [1, 2], TypeError, "must be integers"),
    ([1, np.bool_(True)], [1, 2], TypeError, "must be integers"),  # the one rule: bools are not
    (torch.tensor([1.0, 2.0]), [1, 2], TypeError, "dtype torch.float32"),
    ("12", [1, 2], TypeError, "a list of ints, or an integer torch tensor or NumPy array"),
    (np.array([1.0, 2.0]), [1, 2], TypeError, "NumPy array of dtype float64"),
    (np.array([True, False]), [1, 2], TypeError, "NumPy array of dtype bool"),
    (np.array([1, 2**63], dtype=np.uint64), [1, 2], ValueError, "got 9223372036854775808"),
    (np.ones((2, 2), dtype=np.int64), [1, 2], ValueError, "1-D"),
    ([1, 2], [1, None], TypeError, "must be integers"),
    ([-1, 2], [1, 2], ValueError, r"keys must lie in \[0, 4294967296\), got -1"),
    ([1, 2**32], [1, 2], ValueError, "got 4294967296"),
    (torch.tensor([1, 2**40]), [1, 2], ValueError, "got 1099511627776"),
    ([1, 2], [2**31, 0], ValueError, r"values must lie in \[-2147483648, 2147483648\)"),
    ([1, 2, 3], [1, 2], ValueError, "3 keys but 2 values"),
    ([], [], ValueError, "the table is empty"),
    ([5, 6, 5], [1, 2, 3], ValueError, "key 5 appears 2 times"),
    (torch.ones(2, 2, dtype=torch.int64), [1, 2], ValueError, "1-D"),
]


def _untouched(session: Session, seed: int) -> bool:
    """Nothing shared, charged or revealed, and no randomness drawn."""
    return (
        session.log.total == Cost()
        and not session.log.outputs
        and session.rng.bytes(8) == InsecureSeededRandom(seed).bytes(8)
    )


@pytest.mark.parametrize(("keys", "values", "error", "message"), BAD_TABLES)
def test_bad_tables_are_refused_before_any_share_is_made(keys, values, error, message) -> None:
    session = Session(2, rng=InsecureSeededRandom(3))
    with pytest.raises(error, match=message):
        SharedKeyValueStore(keys, values, session)
    assert _untouched(session, 3)


def test_a_bad_owner_or_session_is_refused_before_sharing() -> None:
    session = Session(2, rng=InsecureSeededRandom(3))
    with pytest.raises(ValueError, match="name must not be empty"):
        SharedKeyValueStore([1], [2], session, owner=" ")
    with pytest.raises(TypeError, match="must be a course_lib.smpc.Session"):
        SharedKeyValueStore([1], [2], "session")
    assert _untouched(session, 3)


@pytest.mark.parametrize(
    ("query", "client", "error", "message"),
    [
        (2.0, "client", TypeError, "an int, a list of ints"),
        (np.array([2.0]), "client", TypeError, "NumPy array of dtype float64"),
        (torch.tensor([2.5]), "client", TypeError, "dtype torch.float32"),
        (-3, "client", ValueError, "query must lie in"),
        ([1, 2**32], "client", ValueError, "got 4294967296"),
        (1, None, ValueError, "would reveal the answer to every server"),
        (1, 5, ValueError, "party index from 0 to 1"),
        (1, 1.5, TypeError, "the receiver must be"),
    ],
)
def test_bad_queries_are_refused_before_any_share_is_made(query, client, error, message) -> None:
    session = Session(2, rng=InsecureSeededRandom(4))
    twin = Session(2, rng=InsecureSeededRandom(4))
    store = SharedKeyValueStore([1, 2], [3, 4], session)
    SharedKeyValueStore([1, 2], [3, 4], twin)  # the same draws, and no query
    session.log.reset()
    with pytest.raises(error, match=message):
        store.get(query, client=client)
    assert session.log.total == Cost() and not session.log.outputs
    assert session.rng.bytes(8) == twin.rng.bytes(8)  # no randomness drawn for the query


def test_numpy_integer_arrays_work_like_lists() -> None:
    """1-D integer NumPy arrays (signed or unsigned) are accepted as keys, values and queries."""
    session = Session(2, rng=InsecureSeededRandom(7))
    keys = np.array([10, 20, 30], dtype=np.uint32)
    store = SharedKeyValueStore(keys, np.array([-5, 0, 7], dtype=np.int32), session)
    values, found = store.get(np.array([30, 11, 10], dtype=np.int64))
    assert values.tolist() == [7, 0, -5] and found.tolist() == [True, False, True]
    value, found_one = store.get(np.int64(20))
    assert value.item() == 0 and found_one.item() is True


def test_lookup_refuses_a_query_that_is_not_this_tables_shared_integers() -> None:
    session = Session(2, rng=InsecureSeededRandom(6))
    store = SharedKeyValueStore([1, 2], [3, 4], session)
    with pytest.raises(TypeError, match="as a SharedTensor"):
        store.lookup(torch.tensor(1))
    with pytest.raises(ValueError, match="different session"):
        store.lookup(Session(2).share_integers(torch.tensor(1)))
    with pytest.raises(ValueError, match="scale 0"):
        store.lookup(session.share(torch.tensor(1.0)))
    with pytest.raises(ValueError, match="scale 0"):
        store.lookup(session.share_integers(torch.ones(2, 2, dtype=torch.int64)))
