"""Issue 23 §3a: public constants that scale shared values go through the same checks as inputs.

Fixed point rounds a public constant to a multiple of 2^-f. A step ``lr / B`` of 0.01 / 2000
becomes 0 (the model never trains) and 0.05 / 2000 becomes 2^-15, 22 % too large. Every public
factor in course_lib.smpc is refused when rounding moves it by more than 1 %.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from course_lib.randomness import InsecureSeededRandom
from course_lib.smpc import EncryptedLogisticRegression, Session
from course_lib.smpc.encoding import PUBLIC_CONSTANT_TOLERANCE, check_public_constant
from course_lib.smpc.mlp_training import EncryptedMLP, share_training_data
from course_lib.smpc.training import fit_plain_logistic_regression


def _session() -> Session:
    return Session(2, rng=InsecureSeededRandom(23))


def _data(n: int, d: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    return x, (x[:, :1] > 0).double()


@pytest.mark.parametrize(("lr", "batch", "error"), [(0.01, 2000, "100.0%"), (0.05, 2000, "22.1%")])
def test_logistic_regression_refuses_a_step_that_fixed_point_rounds_away(lr, batch, error) -> None:
    """The attacker's case: the step rounds to 0 (never trains) or 22 % off — refused, named."""
    session = _session()
    x, y = _data(batch)
    model = EncryptedLogisticRegression(session, 3)
    xs, ys = session.share(x), session.share(y)
    weight_shares = model.weight.shares.clone()
    before = session.log.total
    with pytest.raises(ValueError, match=rf"lr / batch size = {lr:g} / {batch}.*{error}"):
        model.fit(xs, ys, epochs=1, batch_size=batch, lr=lr)
    assert session.log.total == before  # refused before any computation
    assert torch.equal(model.weight.shares, weight_shares)


def test_logistic_regression_refuses_with_a_partial_last_batch_too() -> None:
    session = _session()
    x, y = _data(2003)
    model = EncryptedLogisticRegression(session, 3)
    with pytest.raises(ValueError, match=r"0.05 / 2000"):
        model.fit(session.share(x), session.share(y), batch_size=2000, lr=0.05)


def test_lesson_17_parameters_are_accepted_and_train_like_plaintext() -> None:
    session = _session()
    x, y = _data(200)
    model = EncryptedLogisticRegression(session, 3)
    model.fit(session.share(x), session.share(y), epochs=2, batch_size=64, lr=0.5)  # lesson 17
    weight, bias = model.decrypt(to="model owner")
    plain_weight, plain_bias = fit_plain_logistic_regression(x, y, epochs=2, batch_size=64, lr=0.5)
    assert torch.allclose(weight, plain_weight, atol=1e-3)
    assert torch.allclose(bias, plain_bias, atol=1e-3)


def test_a_public_factor_is_refused_when_rounding_moves_it_by_more_than_the_tolerance() -> None:
    session = _session()
    x = session.share(torch.tensor([1000.0, -2000.0]))
    with pytest.raises(ValueError, match="public factor = 1e-06.*100.0%"):
        x * 1e-6
    with pytest.raises(ValueError, match="public factor"):
        x * torch.tensor(3e-5, dtype=torch.float64)
    assert torch.equal((x * 0.25).reveal(), torch.tensor([250.0, -500.0], dtype=torch.float64))
    want = torch.tensor([1.0, -2.0], dtype=torch.float64)  # 0.001 is rounded by 0.7 %: accepted
    assert torch.all(((x * 0.001).reveal() - want).abs() <= 0.01 * want.abs() + 2**-15)


@pytest.mark.parametrize("value", [0.0, 0.5, 1 / 32, 1e-3, -0.3])
def test_exact_enough_constants_pass_unchanged(value: float) -> None:
    assert check_public_constant(value, 16, "c") == value
    rounded = round(value * 2**16) / 2**16
    assert abs(rounded - value) <= PUBLIC_CONSTANT_TOLERANCE * abs(value)


@pytest.mark.parametrize("bad", [True, "0.1", float("nan"), None])
def test_a_public_constant_must_be_a_finite_number(bad) -> None:
    with pytest.raises((TypeError, ValueError)):
        check_public_constant(bad, 16, "c")


def test_numpy_constants_are_numbers() -> None:
    assert check_public_constant(np.float32(0.5), 16, "c") == 0.5


def _mlp_setup(n: int):
    session = _session()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).double()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 4, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 2, (n,), generator=g)
    xs, ys = share_training_data(session, x, labels, n_classes=2)
    return session, EncryptedMLP(net, session), xs, ys


def test_mlp_refuses_a_learning_rate_that_rounds_away_before_training() -> None:
    session, mlp, xs, ys = _mlp_setup(8)
    before = session.log.total
    with pytest.raises(ValueError, match="learning rate lr = 1e-06"):
        mlp.fit(xs, ys, epochs=1, batch_size=4, lr=1e-6)
    with pytest.raises(ValueError, match="learning rate lr = 1e-06"):
        mlp.step(xs[0:4], ys[0:4], 1e-6)
    assert session.log.total == before


def test_mlp_refuses_a_batch_whose_one_over_b_rounds_away() -> None:
    session, mlp, xs, ys = _mlp_setup(8)
    # 1 / 7000 = 1.43e-4 is 9.4 ulps: rounding moves it by 3.8 %
    with pytest.raises(ValueError, match="1 / 7000"):
        check_public_constant(1 / 7000, 16, "the loss gradient's 1 / batch size 1 / 7000")
    mlp.fit(xs, ys, epochs=1, batch_size=4, lr=0.5)  # 1/4 and 0.5: exact
