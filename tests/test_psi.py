"""Diffie–Hellman PSI and Paillier PIR (course_lib.psi).

PIR tests use 512-bit Paillier keys for speed: they check that the right record comes back, not the
strength of the key.
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from course_lib.he.paillier import generate_keypair
from course_lib.psi import (
    PIRClient,
    PIRServer,
    PSIClient,
    PSIServer,
    hash_to_point,
    private_set_intersection,
)
from course_lib.randomness import InsecureSeededRandom

identifiers = st.sets(st.text(min_size=0, max_size=12), max_size=25)


@settings(deadline=None, max_examples=40)
@given(client=identifiers, server=identifiers)
def test_psi_returns_exactly_the_intersection(client, server):
    result = private_set_intersection(client, server)
    assert result.intersection == {x.encode() for x in client & server}
    assert result.messages == 2
    assert result.bytes_to_server == 32 * len(client)
    assert result.bytes_to_client == 32 * (len(client) + len(server))


def test_empty_and_disjoint_sets():
    assert private_set_intersection([], ["a"]).intersection == set()
    assert private_set_intersection(["a"], []).intersection == set()
    assert private_set_intersection([], []).intersection == set()
    assert private_set_intersection(["a", "b"], ["c", "d"]).intersection == set()
    assert private_set_intersection([b"\x00", "b"], [b"\x00"]).intersection == {b"\x00"}


def test_messages_reveal_no_identifiers_or_plain_hashes():
    client_items = [f"patient-{i:04d}" for i in range(50)]
    server_items = [f"patient-{i:04d}" for i in range(25, 75)]
    result = private_set_intersection(client_items, server_items)
    sent = (
        list(result.request) + list(result.reply.double_blinded) + list(result.reply.server_blinded)
    )
    hashes = {hash_to_point(x) for x in client_items + server_items}
    for message in sent:
        assert len(message) == 32
        assert not hashes & {message}
        assert not any(x.encode() in message for x in client_items + server_items)
    # a shared patient's blinded values differ between the two parties' messages
    assert not set(result.request) & set(result.reply.server_blinded)


def test_fresh_keys_give_unlinkable_messages_and_seeds_reproduce():
    a = private_set_intersection(["alice"], ["alice"])
    b = private_set_intersection(["alice"], ["alice"])
    assert a.request != b.request
    s1 = private_set_intersection(["alice"], ["bob"], rng=InsecureSeededRandom(3))
    s2 = private_set_intersection(["alice"], ["bob"], rng=InsecureSeededRandom(3))
    assert s1.request == s2.request


def test_psi_bad_inputs():
    with pytest.raises(TypeError, match="str or bytes"):
        private_set_intersection([1, 2], ["a"])
    with pytest.raises(TypeError, match="collection"):
        private_set_intersection("alice", ["a"])
    client = PSIClient(["a", "b"])
    server = PSIServer(["a"])
    with pytest.raises(RuntimeError, match="request"):
        client.intersect(server.respond([]))
    reply = server.respond(client.request()[:1])
    with pytest.raises(ValueError, match="were sent"):
        client.intersect(reply)
    with pytest.raises(ValueError, match="32 bytes"):
        server.respond([b"short"])


@pytest.fixture(scope="module")
def keys():
    return generate_keypair(512)  # fast, NOT secure: correctness only


@pytest.mark.parametrize("n_records", [1, 2, 7, 10])
def test_pir_returns_the_right_record(keys, n_records):
    pk, sk = keys
    records = [f"record {i}".encode() for i in range(n_records)]
    records[0] = b"\x00\x00leading zeros"
    server = PIRServer(records)
    client = PIRClient(pk, sk)
    for index in range(n_records):
        query = client.query(index, n_records)
        assert len(query.selector) == server.cols
        answer = server.answer(query)
        assert len(answer) == server.rows
        assert client.decode(answer) == records[index]


def test_pir_query_hides_the_index(keys):
    pk, sk = keys
    client = PIRClient(pk, sk)
    q1, q2 = client.query(0, 9), client.query(0, 9)
    # same index twice: every ciphertext differs, so equal choices cannot be spotted
    assert {c.ciphertext(be_secure=False) for c in q1.selector}.isdisjoint(
        {c.ciphertext(be_secure=False) for c in q2.selector}
    )


def test_pir_bad_inputs(keys):
    pk, sk = keys
    client = PIRClient(pk, sk)
    with pytest.raises(ValueError, match="outside"):
        client.query(5, 5)
    with pytest.raises(TypeError, match="int"):
        client.query(1.0, 5)
    with pytest.raises(ValueError, match="too long"):
        PIRServer([b"x" * 100]).answer(client.query(0, 1))
    with pytest.raises(ValueError, match="empty"):
        PIRServer([])
    with pytest.raises(ValueError, match="columns"):
        PIRServer(["a"] * 10).answer(client.query(0, 2))
    other_pk, _ = generate_keypair(512)
    with pytest.raises(ValueError, match="does not match"):
        PIRClient(other_pk, sk)
