"""Encrypted training of a one-hidden-layer MLP (course_lib.smpc.mlp_training, lesson 17 §6):
gradients on shares equal autograd's, SGD on shares tracks the float twin to fixed-point error,
the ReLU's derivative is the forward pass's bit (no second comparison), one step costs what the
protocol says, bad input is refused before any work, and nothing but the final weights is
revealed — to the receiver named."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from course_lib.data import load_mnist
from course_lib.randomness import InsecureSeededRandom
from course_lib.smpc import Session, comparison
from course_lib.smpc import mlp_training as training_module
from course_lib.smpc.mlp_training import (
    STEP_OPERATIONS,
    EncryptedMLP,
    fit_plain_mlp,
    share_training_data,
    square_loss,
)

ULP = 2.0**-16  # one unit in the last place at the sessions' default 16 fractional bits


def _network(d: int, hidden: int, classes: int, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, classes)).double()


def _data(n: int, d: int, classes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    features = torch.rand(n, d, generator=generator, dtype=torch.float64)
    return features, torch.randint(0, classes, (n,), generator=generator)


def _setup(n=32, d=12, hidden=6, classes=3, bits=16, seed=0, n_parties=2):
    session = Session(n_parties, precision_bits=bits, rng=InsecureSeededRandom(seed))
    features, labels = _data(n, d, classes, seed)
    model = _network(d, hidden, classes, seed)
    x, y = share_training_data(session, features, labels, classes)
    return session, model, EncryptedMLP(copy.deepcopy(model), session), x, y, features, labels


def _max_difference(encrypted: EncryptedMLP, model: nn.Module) -> float:
    revealed = {name: t.reveal() for name, t in encrypted.params.items()}
    return max((revealed[name] - p).abs().max().item() for name, p in model.state_dict().items())


def test_gradients_on_shares_equal_autograd() -> None:
    """Hand-written backpropagation on shares = torch autograd of the square loss, to a few ulps
    (each truncation adds at most 1 ulp; measured: ≤ 4 ulps)."""
    _, model, encrypted, x, y, features, labels = _setup()
    grads = encrypted.gradients(x, y)
    targets = nn.functional.one_hot(labels, 3).double()
    loss = square_loss(model(features), targets)
    expected = dict(
        zip(
            dict(model.named_parameters()),
            torch.autograd.grad(loss, list(model.parameters())),
            strict=True,
        )
    )
    assert set(grads) == set(expected)
    for name, grad in grads.items():
        assert tuple(grad.shape) == tuple(expected[name].shape), name
        error = (grad.reveal() - expected[name]).abs().max().item()
        assert error <= 16 * ULP, (name, error)
    # a wrong gradient (say, without the 1/B of the mean) would be far outside that bound
    assert (expected["2.bias"] * 32 - expected["2.bias"]).abs().max() > 1000 * ULP


def test_weights_after_k_steps_track_the_float_twin_to_fixed_point_error() -> None:
    """After k = 4 SGD steps the shared weights equal the float twin's within k · 8 ulps, and the
    difference is fixed-point error: with 20 instead of 16 fractional bits it shrinks ≥ 8×."""
    k, lr, batch = 4, 0.1, 8
    differences = {}
    for bits in (16, 20):
        _, model, encrypted, x, y, features, labels = _setup(bits=bits)
        encrypted.fit(x[: k * batch], y[: k * batch], epochs=1, batch_size=batch, lr=lr)
        fit_plain_mlp(model, features[: k * batch], labels[: k * batch], batch_size=batch, lr=lr)
        differences[bits] = _max_difference(encrypted, model)
    assert differences[16] <= k * 8 * ULP, differences
    assert differences[20] * 8 <= differences[16], differences
    assert differences[20] > 0  # fixed point is not exact: the bound is not vacuous


def test_the_relu_derivative_is_the_forward_bit_not_a_second_comparison(monkeypatch) -> None:
    """One step runs exactly one secure comparison, on the (B, H) hidden pre-activations; the
    backward pass multiplies by that bit (one round, charged to "grad ReLU")."""
    calls: list[tuple[int, ...]] = []
    original = comparison.less_than_zero

    def counting(x):
        calls.append(tuple(x.shape))
        return original(x)

    monkeypatch.setattr(training_module, "less_than_zero", counting)
    session, _, encrypted, x, y, *_ = _setup()
    session.log.reset()
    encrypted.step(x[:8], y[:8], lr=0.1)
    assert calls == [(8, 6)]
    assert session.log.by_operation["grad ReLU"].rounds == 1


def _expected_step_cost(n: int, b: int, d: int, h: int, c: int) -> dict[str, tuple[int, int]]:
    """(rounds, online bytes) of one SGD step by operation, counted by hand from the protocol:
    a Beaver product opens both masked operands (one round), a truncation opens the product
    (one round), a comparison costs 7(n − 1) + 1 rounds and 24(n − 1) + 1 words per element;
    every opened word costs 8·n·(n − 1) bytes."""
    word = 8 * n * (n - 1)
    compare = (7 * (n - 1) + 1, word * (24 * (n - 1) + 1) * b * h)
    return {
        "linear 1": (2, word * (b * d + d * h + b * h)),  # X W1ᵀ, truncate (B, H)
        "ReLU": (compare[0] + 1, compare[1] + word * 2 * b * h),  # compare, H ∘ m (no trunc)
        "linear 2": (2, word * (b * h + h * c + b * c)),  # A W2ᵀ, truncate (B, C)
        "loss grad": (1, word * b * c),  # (Z − Y) · 1/B: one truncation
        "grad linear 2": (4, word * ((c * b + b * h + c * h) + (b * c + c * h + b * h))),
        "grad ReLU": (1, word * 2 * b * h),  # dA ∘ m: no comparison, no truncation
        "grad linear 1": (2, word * (h * b + b * d + h * d)),  # dHᵀ X, truncate (H, d)
        "SGD update": (1, word * (h * d + h + c * h + c)),  # one truncation for all parameters
    }


@pytest.mark.parametrize("n_parties", [2, 3])
def test_one_step_costs_what_the_protocol_says(n_parties: int) -> None:
    b, d, h, c = 8, 12, 6, 3
    session, _, encrypted, x, y, *_ = _setup(d=d, hidden=h, classes=c, n_parties=n_parties)
    session.log.reset()
    encrypted.step(x[:b], y[:b], lr=0.1)
    expected = _expected_step_cost(n_parties, b, d, h, c)
    measured = {name: (cost.rounds, cost.bytes) for name, cost in session.log.by_operation.items()}
    assert measured == expected
    assert list(session.log.by_operation) == list(STEP_OPERATIONS)
    assert session.log.total.rounds == {2: 22, 3: 29}[n_parties]


def test_training_learns_and_matches_plaintext_accuracy() -> None:
    """0 vs 1 from 256 offline MNIST images (7×7), one epoch: the encrypted and the float twin
    both reach ≥ 95% test accuracy, from chance level, and agree on ≥ 99% of test images."""

    def digits(train: bool, n: int | None = None):
        data = load_mnist(train=train, max_samples=4000 if train else None)
        keep = data.labels <= 1
        features = nn.functional.avg_pool2d(data.images[keep], 4).flatten(1).double()
        return features[:n], data.labels[keep][:n]

    x_train, y_train = digits(True, 256)
    x_test, y_test = digits(False)
    model = _network(49, 8, 2)
    session = Session(2, rng=InsecureSeededRandom(0))
    x, y = share_training_data(session, x_train, y_train, 2)
    encrypted = EncryptedMLP(copy.deepcopy(model), session).fit(x, y, batch_size=32, lr=0.5)
    with torch.no_grad():
        before = (model(x_test).argmax(1) == y_test).double().mean().item()
        fit_plain_mlp(model, x_train, y_train, batch_size=32, lr=0.5)
        plain = model(x_test).argmax(1)
        shared = encrypted.decrypt(to="model owner")(x_test).argmax(1)
    assert before < 0.8
    assert (plain == y_test).double().mean() >= 0.95
    assert (shared == y_test).double().mean() >= 0.95
    assert (shared == plain).double().mean() >= 0.99


BAD_DATA = [
    (lambda f, lab: (f, lab[:-1]), ValueError, "one label per row"),
    (
        lambda f, lab: (f.clone().index_fill_(0, torch.tensor([3]), float("nan")), lab),
        ValueError,
        "NaN",
    ),
    (
        lambda f, lab: (f.clone().index_fill_(0, torch.tensor([0]), float("inf")), lab),
        ValueError,
        "infinite",
    ),
    (lambda f, lab: (f, lab.double()), TypeError, "integer class indices"),
    (lambda f, lab: (f, lab == 1), TypeError, "integer class indices"),
    (lambda f, lab: (f, lab + 3), ValueError, r"labels must lie in 0 … 2"),
    (lambda f, lab: (f.long(), lab), TypeError, "floating-point"),
    (lambda f, lab: (f.numpy(), lab), TypeError, "torch tensor"),
    (lambda f, lab: (f[0], lab), ValueError, r"shape \(N, d\)"),
]


@pytest.mark.parametrize(("corrupt", "error", "message"), BAD_DATA)
def test_bad_data_is_refused_before_anything_is_shared(corrupt, error, message) -> None:
    session, model, *_, features, labels = _setup()
    before = session.log.total
    features, labels = corrupt(features, labels)
    with pytest.raises(error, match=message):
        share_training_data(session, features, labels, 3)
    with pytest.raises(error, match=message):
        fit_plain_mlp(model, features, labels)
    assert session.log.total == before


def _poison(module: nn.Module) -> None:
    if isinstance(module, nn.Linear) and module.out_features == 3:
        module.bias.data[0] = float("nan")


def test_bad_batches_and_hyperparameters_are_refused_before_any_work() -> None:
    session, model, encrypted, x, y, features, labels = _setup()
    other = Session(2, rng=InsecureSeededRandom(1))
    x_other, y_other = share_training_data(other, features, labels, 3)
    before, weights = session.log.total, {n: t.shares.clone() for n, t in encrypted.params.items()}
    cases = [
        (lambda: encrypted.fit(x[:, :5], y), ValueError, r"shape \(N, 12\)"),
        (lambda: encrypted.fit(x, y[:10]), ValueError, r"one-hot rows of shape \(32, 3\)"),
        (lambda: encrypted.fit(x, y[:, :2]), ValueError, "one-hot rows"),
        (lambda: encrypted.fit(features, y), TypeError, "must be a SharedTensor"),
        (lambda: encrypted.fit(x_other, y_other), ValueError, "another session"),
        (lambda: encrypted.fit(x, y, lr=0.0), ValueError, "learning rate"),
        (lambda: encrypted.fit(x, y, lr=float("nan")), ValueError, "learning rate"),
        (lambda: encrypted.fit(x, y, epochs=0), ValueError, "epochs"),
        (lambda: encrypted.fit(x, y, batch_size=True), TypeError, "batch_size"),
        (lambda: encrypted.fit(x, y, batch_size=2.0), TypeError, "batch_size"),
        (lambda: encrypted.step(x, y, lr=-1), ValueError, "learning rate"),
        (lambda: encrypted.gradients(x, y[:, :1]), ValueError, "one-hot rows"),
        (lambda: encrypted.decrypt(to=5), ValueError, "party index"),
        (lambda: encrypted.decrypt(to=None), ValueError, "reveal the trained weights to every"),
        (lambda: encrypted.decrypt(), TypeError, "to"),  # the receiver is required
        (lambda: encrypted.forward(x[:, :5]), ValueError, r"shape \(N, 12\)"),
        (lambda: encrypted.forward(x[:0]), ValueError, r"shape \(N, 12\)"),
        (lambda: encrypted.forward(x[0]), ValueError, r"shape \(N, 12\)"),
        (lambda: encrypted.forward(features), TypeError, "must be a SharedTensor"),
        (lambda: encrypted.forward(x_other), ValueError, "another session"),
        (
            lambda: EncryptedMLP(
                nn.Sequential(nn.Linear(12, 6), nn.Tanh(), nn.Linear(6, 3)), session
            ),
            ValueError,
            "Tanh",
        ),
        (lambda: EncryptedMLP(nn.Linear(12, 3), session), TypeError, "nn.Sequential"),
        (
            lambda: EncryptedMLP(
                nn.Sequential(nn.Linear(12, 6), nn.ReLU(), nn.Linear(5, 3)), session
            ),
            ValueError,
            "do not fit",
        ),
        (lambda: EncryptedMLP(model, "session"), TypeError, "Session"),
        (lambda: EncryptedMLP(_network(12, 6, 3).apply(_poison), session), ValueError, "NaN"),
        (lambda: fit_plain_mlp(model, features, labels, lr=-0.5), ValueError, "learning rate"),
        (lambda: fit_plain_mlp(model, features[:, :5], labels), ValueError, r"shape \(N, 12\)"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()
    assert session.log.total == before and not session.log.outputs
    assert all(torch.equal(weights[n], t.shares) for n, t in encrypted.params.items())


def test_only_the_trained_weights_are_revealed_and_only_to_the_named_receiver() -> None:
    session, model, encrypted, x, y, *_ = _setup()
    encrypted.fit(x, y, batch_size=8, lr=0.1)
    assert session.log.outputs == []  # training opened only masked values, delivered nothing
    trained = encrypted.decrypt(to="model owner")
    assert {o.receiver for o in session.log.outputs} == {"model owner"}
    assert sum(o.elements for o in session.log.outputs) == sum(
        p.numel() for p in model.parameters()
    )
    assert isinstance(trained, nn.Sequential) and trained[0].weight.dtype == torch.float64


def _top_byte_is_uniform(words: torch.Tensor) -> bool:
    """Chi-square of the top byte over 256 bins: P(statistic > 380 | uniform) ≈ 1e-6."""
    counts = torch.bincount(((words >> 56) & 0xFF).flatten(), minlength=256).double()
    expected = words.numel() / 256
    return float(((counts - expected) ** 2 / expected).sum()) < 380.0


def test_every_value_opened_during_training_is_uniformly_random(monkeypatch) -> None:
    """The attacker is a party recording everything opened to it during training (Beaver's ε and
    δ, truncation's masked values): their top bytes are uniform, so they carry no information on
    the data. The same test catches a leaky protocol that opens the hidden pre-activations to
    compute the ReLU in the clear."""
    session, _, encrypted, x, y, *_ = _setup(n=64)
    opened: list[torch.Tensor] = []
    original_open = Session.open

    def recording_open(self, *stacked):
        values = original_open(self, *stacked)
        opened.extend(v.flatten() for v in values)
        return values

    monkeypatch.setattr(Session, "open", recording_open)
    encrypted.fit(x, y, batch_size=16, lr=0.1)
    words = torch.cat(opened)
    assert words.numel() >= 256 * 20  # ≥ 20 expected per bin: the chi-square test applies
    assert _top_byte_is_uniform(words)
    # a leaky protocol would also open H = X W1ᵀ once per step: 64 × 6 small numbers
    leaked = (x @ encrypted.params["0.weight"].T).shares.sum(0).flatten()
    assert not _top_byte_is_uniform(torch.cat([words, leaked]))


def _hidden_backward(x, grad_a, active):
    grad_h = grad_a * active
    return grad_h.T @ x, grad_h.sum(0)


def _recompares(x, grad_a, active):  # right values, but a second comparison on grad_a's signs
    grad_a.ltz()
    grad_h = grad_a * active
    return grad_h.T @ x, grad_h.sum(0)


def _reveals(x, grad_a, active):
    grad_h = grad_a * active
    grad_h.reveal()
    return grad_h.T @ x, grad_h.sum(0)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda x, g, a: (g.T @ x, g.sum(0)), "grad_weight.reveal() for 2 parties' shares"),
        (_recompares, "ran a new secure comparison"),
        (_reveals, "ran a reveal"),
        (lambda x, g, a: ((g * a).T @ x, (g * a).sum(1)), "grad_bias should have shape (3,)"),
        (lambda x, g, a: ((g * a).T @ x).reveal(), "return two SharedTensors"),
    ],
    ids=["no ReLU mask", "second comparison", "reveal", "bias summed over units", "revealed"],
)
def test_the_hidden_backward_exercise_accepts_the_reference_and_rejects_wrong_answers(
    answer, message, capsys: pytest.CaptureFixture[str]
) -> None:
    from course_lib.exercises import check

    assert check("17.hidden_backward", _hidden_backward)
    assert capsys.readouterr().out == "✓ 17.hidden_backward: correct!\n"
    assert not check("17.hidden_backward", answer)
    out = capsys.readouterr().out
    assert out.startswith("✗ 17.hidden_backward: ") and message in out, out
