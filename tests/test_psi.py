"""Diffie–Hellman PSI and Paillier PIR (course_lib.psi).

The PSI tests play the attacker: a server that tries to tell which of two identifiers the client
holds (the two-candidate distinguishing game), replayed and forged replies, invalid group elements.
Games use a seeded source so that they are deterministic; their pass bands are 99.9% binomial
intervals. PIR tests use 512-bit Paillier keys for speed: they check that the right record comes
back, not the strength of the key.
"""

import unicodedata
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st
from rbcl import crypto_core_ristretto255_is_valid_point
from scipy.stats import binom

from course_lib.exercises import check
from course_lib.he.paillier import generate_keypair
from course_lib.psi import (
    P25519,
    PIRClient,
    PIRServer,
    PSIClient,
    PSIReply,
    PSIRequest,
    PSIServer,
    hash_to_point,
    naive_hash_to_u,
    on_curve25519,
    private_set_intersection,
)
from course_lib.randomness import InsecureSeededRandom, RandomSource, SecureRandom

identifiers = st.sets(st.text(min_size=0, max_size=12), max_size=25)
TRIALS = 2000
CHANCE_LOW, CHANCE_HIGH = binom.interval(0.999, TRIALS, 0.5)  # 926, 1074


def _nfc(items):
    return {unicodedata.normalize("NFC", x).encode() for x in items}


@settings(deadline=None, max_examples=40)
@given(client=identifiers, server=identifiers)
def test_psi_returns_exactly_the_intersection(client, server):
    result = private_set_intersection(client, server)
    assert result.intersection == _nfc(client) & _nfc(server)
    n, m = len(_nfc(client)), len(_nfc(server))
    assert result.messages == 2
    assert result.bytes_to_server == 16 + 32 * n  # request id + one point per item
    assert result.bytes_to_client == 32 + 32 * (n + m)  # request digest + points


def test_intersection_of_random_sets_is_exact():
    rng = InsecureSeededRandom(7)
    pool = [rng.bytes(rng.randbelow(20)) for _ in range(800)]
    for _ in range(3):
        client = {pool[rng.randbelow(len(pool))] for _ in range(300)}
        server = {pool[rng.randbelow(len(pool))] for _ in range(200)}
        assert private_set_intersection(client, server).intersection == client & server


def test_empty_and_disjoint_sets():
    assert private_set_intersection([], ["a"]).intersection == set()
    assert private_set_intersection(["a"], []).intersection == set()
    assert private_set_intersection([], []).intersection == set()
    assert private_set_intersection(["a", "b"], ["c", "d"]).intersection == set()
    assert private_set_intersection([b"\x00", "b"], [b"\x00"]).intersection == {b"\x00"}


def test_every_message_is_a_valid_prime_order_group_element():
    items = [f"patient-{i:04d}" for i in range(60)]
    result = private_set_intersection(items[:40], items[20:])
    sent = (
        result.request.points + result.reply.double_blinded + result.reply.server_blinded
    ) + tuple(hash_to_point(x) for x in items)
    assert len(sent) == 40 + 40 + 40 + 60
    for point in sent:
        assert len(point) == 32 and point != bytes(32)
        assert crypto_core_ristretto255_is_valid_point(point)


def test_messages_reveal_no_identifiers_or_plain_hashes():
    client_items = [f"patient-{i:04d}" for i in range(50)]
    server_items = [f"patient-{i:04d}" for i in range(25, 75)]
    result = private_set_intersection(client_items, server_items)
    sent = result.request.points + result.reply.double_blinded + result.reply.server_blinded
    hashes = {hash_to_point(x) for x in client_items + server_items}
    assert not hashes & set(sent)
    assert not any(x.encode() in m for m in sent for x in client_items + server_items)
    # a shared patient's blinded values differ between the two parties' messages
    assert not set(result.request.points) & set(result.reply.server_blinded)


def test_secret_scalars_come_from_the_secure_source_by_default(monkeypatch):
    calls, draw = [], SecureRandom.bytes

    def spy(self, n):
        calls.append(n)
        return draw(self, n)

    monkeypatch.setattr(SecureRandom, "bytes", spy)
    private_set_intersection(["a"], ["a"])
    assert calls.count(64) == 2  # one 64-byte scalar per party, reduced modulo ℓ


def test_fresh_keys_give_unlinkable_messages_and_seeds_reproduce():
    a = private_set_intersection(["alice"], ["alice"])
    b = private_set_intersection(["alice"], ["alice"])
    assert a.request.points != b.request.points
    assert a.request.request_id != b.request.request_id
    s1 = private_set_intersection(["alice"], ["bob"], rng=InsecureSeededRandom(3))
    s2 = private_set_intersection(["alice"], ["bob"], rng=InsecureSeededRandom(3))
    assert s1.request == s2.request


# -- the two-candidate distinguishing game ------------------------------------------------------


def _legendre_is_square(x: int) -> bool:
    return pow(x % P25519, (P25519 - 1) // 2, P25519) in (0, 1)


#: Public bits a server can compute from one 32-byte message (the attack, and variants of it).
PREDICATES: dict[str, Callable[[bytes], bool]] = {
    "Euler's criterion on u³+Au²+u (the twist bit)": on_curve25519,
    "Legendre symbol of the encoding": lambda m: _legendre_is_square(int.from_bytes(m, "little")),
    "parity of the encoding's bits": lambda m: bin(int.from_bytes(m, "little")).count("1") % 2 == 1,
}


def _play(
    send: Callable[[str, RandomSource], bytes],
    hash_: Callable[[str], bytes],
    predicate: Callable[[bytes], bool],
    seed: int,
) -> int:
    """The server picks two identifiers whose hashes differ in ``predicate``; the client holds one
    of them at random and sends its blinded hash; the server guesses the one whose hash has the
    message's predicate bit. Returns how many of ``TRIALS`` guesses were right."""
    names = (f"patient-{i}" for i in range(1000))
    a = next(names)
    b = next(x for x in names if predicate(hash_(x)) != predicate(hash_(a)))
    rng = InsecureSeededRandom(seed)
    correct = 0
    for _ in range(TRIALS):
        held = (a, b)[rng.randbelow(2)]
        message = send(held, rng)
        guess = a if predicate(message) == predicate(hash_(a)) else b
        correct += guess == held
    return correct


def _naive_send(item: str, rng: RandomSource) -> bytes:
    """The old client: X25519 with a fresh secret scalar applied to the naive u-coordinate hash."""
    key = X25519PrivateKey.from_private_bytes(rng.bytes(32))
    return key.exchange(X25519PublicKey.from_public_bytes(naive_hash_to_u(item)))


def _ristretto_send(item: str, rng: RandomSource) -> bytes:
    """The real client: its PSI request for a set holding only ``item``, with a fresh scalar."""
    return PSIClient([item], rng=rng).request().points[0]


def test_naive_hash_loses_the_game_every_time():
    correct = _play(_naive_send, naive_hash_to_u, on_curve25519, seed=1)
    assert correct == TRIALS  # far outside the 99.9% interval around chance, [926, 1074]


def test_naive_blinding_keeps_the_twist_bit_of_every_hash():
    # so the client also learns how many of the server's items hash onto the curve
    rng = InsecureSeededRandom(2)
    items = [f"id-{i}" for i in range(300)]
    bits = [on_curve25519(naive_hash_to_u(x)) for x in items]
    assert CHANCE_LOW / TRIALS * 300 - 10 < sum(bits) < CHANCE_HIGH / TRIALS * 300 + 10
    assert [on_curve25519(_naive_send(x, rng)) for x in items] == bits


@pytest.mark.parametrize("predicate", PREDICATES, ids=list(PREDICATES))
def test_ristretto_hash_leaves_the_server_at_chance(predicate):
    correct = _play(_ristretto_send, hash_to_point, PREDICATES[predicate], seed=3)
    assert CHANCE_LOW <= correct <= CHANCE_HIGH, f"{correct} of {TRIALS} guesses right"


def test_on_curve25519_against_known_points():
    assert on_curve25519((9).to_bytes(32, "little"))  # the X25519 base point
    rng = InsecureSeededRandom(4)
    for _ in range(50):  # public keys k·9 lie on the curve, never on the twist
        key = X25519PrivateKey.from_private_bytes(rng.bytes(32))
        assert on_curve25519(key.public_key().public_bytes_raw())
    assert not on_curve25519((2).to_bytes(32, "little"))  # 2³+A·2²+2 is a non-square mod p
    share = sum(on_curve25519(naive_hash_to_u(f"x{i}")) for i in range(TRIALS))
    assert CHANCE_LOW <= share <= CHANCE_HIGH  # about half of the naive hashes are on the twist
    with pytest.raises(ValueError, match="32 bytes"):
        on_curve25519(b"\x09")


# -- a reply belongs to one request -------------------------------------------------------------


def test_a_reply_to_an_earlier_request_is_refused():
    client = PSIClient([f"p{i}" for i in range(20)], rng=InsecureSeededRandom(5))
    server = PSIServer([f"p{i}" for i in range(10, 30)])
    first, second = client.request(), client.request()
    stale = server.respond(first)
    with pytest.raises(ValueError, match="different request"):
        client.intersect(stale)
    assert client.intersect(server.respond(second)) == {f"p{i}".encode() for i in range(10, 20)}
    with pytest.raises(RuntimeError, match="no request is waiting"):
        client.intersect(server.respond(second))  # replaying a used reply
    other = PSIClient(["p1"]).request()
    client.request()
    with pytest.raises(ValueError, match="different request"):
        client.intersect(server.respond(other))  # the reply to another client


def test_forged_request_digest_is_refused():
    client, server = PSIClient(["a", "b"]), PSIServer(["a"])
    reply = server.respond(client.request())
    forged = PSIReply(bytes(32), reply.double_blinded, reply.server_blinded)
    with pytest.raises(ValueError, match="different request"):
        client.intersect(forged)
    assert client.intersect(reply) == {b"a"}  # the refusal changed nothing


# -- invalid group elements ---------------------------------------------------------------------


def _bad_points() -> dict[str, bytes]:
    valid = hash_to_point("x")
    return {
        "identity": bytes(32),
        "all ones": b"\xff" * 32,
        "non-canonical (top bit set)": valid[:-1] + bytes([valid[-1] | 0x80]),
        "field element ≥ p (p + 1)": bytes([0xEE]) + b"\xff" * 30 + b"\x7f",
        "odd (negative) field element": bytes([valid[0] | 1]) + valid[1:],
        "a Curve25519 u-coordinate": next(
            u
            for u in (naive_hash_to_u(f"u{i}") for i in range(100))
            if not crypto_core_ristretto255_is_valid_point(u)
        ),
    }


@pytest.mark.parametrize("name", list(_bad_points()))
def test_invalid_points_are_refused_by_both_parties(name):
    bad = _bad_points()[name]
    client, server = PSIClient(["a", "b"]), PSIServer(["a", "c"])
    request = client.request()
    with pytest.raises(ValueError, match="point 1 of the request") as error:
        server.respond(PSIRequest(request.request_id, (request.points[0], bad)))
    assert "identity" in str(error.value) or "not a valid ristretto255 element" in str(error.value)
    reply = server.respond(request)
    tampered = PSIReply(reply.request_digest, reply.double_blinded, (bad,) + reply.server_blinded)
    with pytest.raises(ValueError, match="server point 0 of the reply"):
        client.intersect(tampered)
    tampered = PSIReply(reply.request_digest, (bad,) + reply.double_blinded[1:], ())
    with pytest.raises(ValueError, match="double-blinded point 0"):
        client.intersect(tampered)
    assert client.intersect(reply) == {b"a"}  # refusals happen before any state changes


# -- how identifiers are compared ---------------------------------------------------------------


def test_identifiers_are_nfc_normalised_and_case_sensitive():
    composed, decomposed = "Jos\u00e9", "Jose\u0301"  # "José" two ways
    assert composed != decomposed
    assert private_set_intersection([composed], [decomposed]).intersection == {
        composed.encode("utf-8")
    }
    assert private_set_intersection(["Ana"], ["ana"]).intersection == set()
    assert private_set_intersection(["ana "], ["ana"]).intersection == set()
    assert private_set_intersection(["ana"], [b"ana"]).intersection == {b"ana"}
    # bytes are taken as they are: decomposed UTF-8 bytes are another identifier
    assert private_set_intersection([composed], [decomposed.encode()]).intersection == set()
    with pytest.raises(ValueError, match="not valid Unicode"):
        private_set_intersection(["a\ud800"], ["a"])


def test_psi_bad_inputs():
    with pytest.raises(TypeError, match="str or bytes"):
        private_set_intersection([1, 2], ["a"])
    with pytest.raises(TypeError, match="collection"):
        private_set_intersection("alice", ["a"])
    client = PSIClient(["a", "b"])
    server = PSIServer(["a"])
    with pytest.raises(RuntimeError, match="call request"):
        client.intersect(server.respond(PSIClient([]).request()))
    request = client.request()
    reply = server.respond(PSIRequest(request.request_id, request.points[:1]))
    with pytest.raises(ValueError, match="different request"):
        client.intersect(reply)
    honest = server.respond(request)
    forged = PSIReply(honest.request_digest, honest.double_blinded[:1], honest.server_blinded)
    with pytest.raises(ValueError, match="were sent"):
        client.intersect(forged)
    with pytest.raises(TypeError, match="PSIRequest"):
        server.respond(list(request.points))
    with pytest.raises(TypeError, match="PSIReply"):
        client.intersect(request)
    with pytest.raises(ValueError, match="32 bytes"):
        server.respond(PSIRequest(request.request_id, (b"short",)))
    with pytest.raises(ValueError, match="request id"):
        server.respond(PSIRequest(b"id", request.points))


# -- lesson 19's exercise on the twist bit ------------------------------------------------------


def test_on_curve_exercise_accepts_euler_and_rejects_wrong_answers():
    def right(u):
        return pow(u**3 + 486662 * u * u + u, (P25519 - 1) // 2, P25519) in (0, 1)

    def forgets_zero(u):
        return pow(u**3 + 486662 * u * u + u, (P25519 - 1) // 2, P25519) == 1

    def wrong_curve(u):
        return pow(u**3 + u, (P25519 - 1) // 2, P25519) in (0, 1)

    assert check("19.on_curve", right)
    for wrong in (forgets_zero, wrong_curve, lambda u: True, lambda u: u % 2 == 0):
        assert not check("19.on_curve", wrong)


# -- private information retrieval --------------------------------------------------------------


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
