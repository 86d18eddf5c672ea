"""Issue 23 §2: a secure exercise's checker accepts only the protocol's own openings.

Every exercise whose answer is computed on secret shares (16.beaver_multiply, 16.secure_equal,
16.one_hot_select, 17.secure_relu, 17.hidden_backward) is played by attackers that get the right
numbers by looking at the secrets — reveal and re-share, open the shares with ``session.open`` and
re-share, add the parties' shares up locally — and each must be refused, with its reason, while
the honest solutions (and honest variants that open the same values) pass.
"""

from __future__ import annotations

import pytest
import torch

from course_lib.exercises import _registry, check
from course_lib.smpc import SharedTensor, share


@pytest.fixture(autouse=True)
def _fresh_attempts() -> None:
    _registry._WRONG_ATTEMPTS.clear()


def _reshared(template: SharedTensor, values: torch.Tensor, scale_bits: int) -> SharedTensor:
    """A fresh sharing of plaintext ``values`` made without the log (no session.share)."""
    session = template.session
    ring = session.encoder.encode(values, scale_bits) if scale_bits else values.long()
    return SharedTensor(share(ring, session.n_parties, session.rng), session, scale_bits)


# -- honest solutions -----------------------------------------------------------------------------


def secure_equal(x, y):
    return 1 - (x < y) - (y < x)


def secure_equal_batched(x, y):  # both comparisons in one circuit: the same openings, fewer rounds
    diff = x - y
    below = SharedTensor.cat([diff.unsqueeze(0), (-diff).unsqueeze(0)]).ltz()
    return 1 - below[0] - below[1]


def one_hot_select(match, values):
    return (match * values).sum(), match.sum()


def one_hot_select_matmul(match, values):  # a 1×k by k×1 product opens the same 2k values
    return (match.reshape(1, -1) @ values.reshape(-1, 1)).reshape(()), match.sum()


def secure_relu(x):
    return x * (1 - x.ltz())


def hidden_backward(x, grad_a, active):
    grad_h = grad_a * active
    return grad_h.T @ x, grad_h.sum(0)


def hidden_backward_transposed(x, grad_a, active):
    grad_h = active * grad_a
    return (x.T @ grad_h).T, grad_h.sum(0)


def beaver_multiply(x, y, a, b, c):
    eps, delta = (x - a).sum(0), (y - b).sum(0)
    z = c + eps * b + delta * a
    z[-1] += eps * delta  # any one party may add ε·δ
    return z


HONEST = [
    ("16.secure_equal", secure_equal),
    ("16.secure_equal", secure_equal_batched),
    ("16.one_hot_select", one_hot_select),
    ("16.one_hot_select", one_hot_select_matmul),
    ("17.secure_relu", secure_relu),
    ("17.secure_relu", lambda x: x.relu()),
    ("17.hidden_backward", hidden_backward),
    ("17.hidden_backward", hidden_backward_transposed),
    ("16.beaver_multiply", beaver_multiply),
]


@pytest.mark.parametrize(("name", "answer"), HONEST)
def test_honest_solutions_pass(name, answer, capsys: pytest.CaptureFixture[str]) -> None:
    assert check(name, answer), capsys.readouterr().out


# -- attackers -----------------------------------------------------------------------------------


def equal_reveal_reshare(x, y):
    return x.session.share_integers((x.reveal() == y.reveal()).long())


def equal_sum_shares(x, y):
    plain = x.shares.sum(0) == y.shares.sum(0)
    return _reshared(x, plain.long(), 0)


def equal_open_reshare(x, y):  # opens through the session, re-shares through the session
    opened_x, opened_y = x.session.open(x._shares, y._shares)
    return x.session.share_integers((opened_x == opened_y).long())


def equal_open_quietly(x, y):  # opens through the session, re-shares without the log
    opened_x, opened_y = x.session.open(x._shares, y._shares)
    return _reshared(x, (opened_x == opened_y).long(), 0)


def equal_local_sum_quietly(x, y):  # adds private shares up: no opening at all
    return _reshared(x, (x._shares.sum(0) == y._shares.sum(0)).long(), 0)


def select_reveal(match, values):
    session = match.session
    value = (match.reveal() * values.reveal()).sum()
    return session.share_integers(value.long()), match.sum()


def select_sum_shares(match, values):
    value = (match.shares.sum(0) * values.shares.sum(0)).sum()
    return _reshared(match, value, 0), match.sum()


def select_open_reshare(match, values):
    m, v = match.session.open(match._shares, values._shares)
    return _reshared(match, (m * v).sum(), 0), match.sum()


def relu_reveal(x):
    return x.session.share(x.reveal().clamp(min=0))


def relu_sum_shares(x):
    plain = x.session.encoder.decode(x.shares.sum(0))
    return _reshared(x, plain.clamp(min=0), x.scale_bits)


def relu_open_reshare(x):
    (ring,) = x.session.open(x._shares)
    return _reshared(x, x.session.encoder.decode(ring).clamp(min=0), x.scale_bits)


def relu_extra_comparison(x):  # correct and on shares, but opens more than the protocol
    return x * (1 - x.ltz()) * (1 - x.ltz())


def backward_reveal(x, grad_a, active):
    grad_h = grad_a.reveal() * active.reveal()
    s = x.session
    return s.share(grad_h.T @ x.reveal()), s.share(grad_h.sum(0))


def backward_sum_shares(x, grad_a, active):
    decode = x.session.encoder.decode
    plain_x, plain_g = decode(x.shares.sum(0)), decode(grad_a.shares.sum(0))
    grad_h = plain_g * active.shares.sum(0)
    return _reshared(x, grad_h.T @ plain_x, 16), _reshared(x, grad_h.sum(0), 16)


def backward_open_reshare(x, grad_a, active):
    rx, rg, ra = x.session.open(x._shares, grad_a._shares, active._shares)
    decode = x.session.encoder.decode
    grad_h = decode(rg) * ra
    return _reshared(x, grad_h.T @ decode(rx), 16), _reshared(x, grad_h.sum(0), 16)


def beaver_reconstruct_reshare(x, y, a, b, c):
    product = x.sum(0) * y.sum(0)  # reconstructs both inputs
    z = torch.zeros_like(x)
    z[0] = product
    return z


def beaver_reconstruct_random_reshare(x, y, a, b, c):
    product = x.sum(0) * y.sum(0)
    return share(product, x.shape[0])


ATTACKS = [
    ("16.secure_equal", equal_reveal_reshare, "revealed"),
    ("16.secure_equal", equal_sum_shares, "read the parties' shares"),
    ("16.secure_equal", equal_open_reshare, "shared 7 new value"),
    ("16.secure_equal", equal_open_quietly, "outside the protocol's operations"),
    ("16.secure_equal", equal_local_sum_quietly, "the protocol opens exactly"),
    ("16.one_hot_select", select_reveal, "revealed"),
    ("16.one_hot_select", select_sum_shares, "read the parties' shares"),
    ("16.one_hot_select", select_open_reshare, "outside the protocol's operations"),
    ("17.secure_relu", relu_reveal, "revealed"),
    ("17.secure_relu", relu_sum_shares, "read the parties' shares"),
    ("17.secure_relu", relu_open_reshare, "outside the protocol's operations"),
    ("17.secure_relu", relu_extra_comparison, "the protocol opens exactly"),
    ("17.hidden_backward", backward_reveal, "reveal"),
    ("17.hidden_backward", backward_sum_shares, "read the parties' shares"),
    ("17.hidden_backward", backward_open_reshare, "outside the protocol's operations"),
    ("16.beaver_multiply", beaver_reconstruct_reshare, "a different sharing"),
    ("16.beaver_multiply", beaver_reconstruct_random_reshare, "a different sharing"),
]


@pytest.mark.parametrize(("name", "attack", "reason"), ATTACKS)
def test_answers_that_look_at_the_secrets_are_refused(
    name, attack, reason, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not check(name, attack)
    out = capsys.readouterr().out
    assert out.startswith(f"✗ {name}: ") and reason in out, out
