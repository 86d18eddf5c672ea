"""Encrypted training of a logistic regression on secret-shared data.

The data owners share features ``X`` and labels ``y``; the parties run mini-batch gradient descent
on shares and end with shared weights, which only the model owner reconstructs.

The sigmoid ``1 / (1 + e^-z)`` has no cheap exact secure protocol, so it is replaced by the
piecewise-linear **hard sigmoid** ``clip(z/4 + 1/2, 0, 1)`` — the tangent of the sigmoid at 0,
cut off at 0 and 1 (the sigmoid differs from it by at most 0.12, at ``|z| = 2``). With
``u = z/4 + 1/2``, ``clip(u, 0, 1) = relu(u) − relu(u − 1)``: two exact secure ReLUs, computed in
one batch. The gradient of the log-loss keeps its usual form ``Xᵀ(p − y) / B``.

:func:`fit_plain_logistic_regression` runs the *same* algorithm on plaintext (same approximation,
same batches), so a lesson can show that encryption changes the weights only by fixed-point error.
"""

from __future__ import annotations

import torch

from course_lib.smpc.comparison import relu
from course_lib.smpc.encoding import check_public_constant
from course_lib.smpc.session import Session
from course_lib.smpc.tensor import SharedTensor
from course_lib.validation import check_positive, check_positive_int

__all__ = [
    "EncryptedLogisticRegression",
    "check_steps",
    "fit_plain_logistic_regression",
    "hard_sigmoid",
]


def hard_sigmoid(z: torch.Tensor) -> torch.Tensor:
    """``clip(z/4 + 1/2, 0, 1)``: the plaintext version of the secure sigmoid approximation."""
    return torch.clamp(z / 4 + 0.5, 0.0, 1.0)


def _check_data(x_shape: tuple[int, ...], y_shape: tuple[int, ...], n_features: int) -> None:
    if len(x_shape) != 2 or x_shape[1] != n_features:
        raise ValueError(f"features must have shape (N, {n_features}), got {x_shape}")
    if tuple(y_shape) != (x_shape[0], 1):
        raise ValueError(f"labels must have shape ({x_shape[0]}, 1), got {tuple(y_shape)}")


def _check_hyperparameters(epochs: int, batch_size: int, lr: float) -> tuple[int, int, float]:
    return (
        check_positive_int(epochs, "epochs"),
        check_positive_int(batch_size, "batch_size"),
        check_positive(lr, "the learning rate lr"),
    )


def check_steps(lr: float, n_rows: int, batch_size: int, precision_bits: int) -> None:
    """Refuse a public step ``lr / B`` that fixed point cannot hold to within 1 %.

    Checks the step of every batch size the epoch uses (``batch_size`` and the last, partial
    batch) with :func:`~course_lib.smpc.encoding.check_public_constant`; ``ValueError`` names
    ``lr``, the batch size and the relative rounding error.
    """
    for size in sorted({min(batch_size, n_rows), n_rows % batch_size} - {0}):
        check_public_constant(
            lr / size, precision_bits, f"the step lr / batch size = {lr:g} / {size}"
        )


class EncryptedLogisticRegression:
    """Logistic regression whose weights, data and gradients stay secret-shared."""

    def __init__(self, session: Session, n_features: int) -> None:
        if not isinstance(session, Session):
            raise TypeError(f"session must be a course_lib.smpc.Session, got {type(session)}")
        n_features = check_positive_int(n_features, "n_features")
        self.session = session
        self.n_features = n_features
        self.weight = session.share(torch.zeros(n_features, 1))
        self.bias = session.share(torch.zeros(1))

    def predict_proba(self, x: SharedTensor) -> SharedTensor:
        """Shared hard-sigmoid probabilities, shape (N, 1)."""
        u = (x @ self.weight + self.bias) * 0.25 + 0.5
        both = relu(SharedTensor.cat([u, u - 1], dim=1))  # one batched secure ReLU
        return both[:, 0:1] - both[:, 1:2]

    def fit(
        self,
        x: SharedTensor,
        y: SharedTensor,
        *,
        epochs: int = 1,
        batch_size: int = 64,
        lr: float = 0.5,
    ) -> EncryptedLogisticRegression:
        """Mini-batch gradient descent on shares, batches in order (shuffle the data beforehand).

        Each step is ``w ← w − (lr / B) · Xᵀ(p − y)`` with the *public* step ``lr / B`` encoded in
        fixed point. The step is not re-encoded more finely: a step whose rounding to a multiple
        of ``2^-precision_bits`` is off by more than 1 % (e.g. ``lr = 0.01`` with ``B = 2000``,
        which rounds to 0 and would never train) is **refused** with ``ValueError`` naming lr,
        the batch size and the relative error, before anything is computed (see
        :func:`check_steps`).
        """
        _check_data(tuple(x.shape), tuple(y.shape), self.n_features)
        epochs, batch_size, lr = _check_hyperparameters(epochs, batch_size, lr)
        check_steps(lr, x.shape[0], batch_size, self.session.precision_bits)
        with self.session.log.operation("training"):
            for _ in range(epochs):
                for start in range(0, x.shape[0], batch_size):
                    xb, yb = x[start : start + batch_size], y[start : start + batch_size]
                    error = self.predict_proba(xb) - yb
                    step = lr / xb.shape[0]
                    self.weight = self.weight - (xb.T @ error) * step
                    self.bias = self.bias - error.sum(0) * step
        return self

    def decrypt(self, *, to: int | str) -> tuple[torch.Tensor, torch.Tensor]:
        """Reveal the trained ``(weight (d, 1), bias (1,))`` at the end — to ``to`` only (a party
        index or a name such as ``"model owner"``), see
        :meth:`SharedTensor.reveal <course_lib.smpc.tensor.SharedTensor.reveal>`.

        The receiver is required: ``to=None`` (reveal to every server) raises ``ValueError``
        before anything is revealed, as in :meth:`.mlp_training.EncryptedMLP.decrypt`.
        """
        if to is None:
            raise ValueError(
                "decrypt needs a receiver, e.g. decrypt(to='model owner'): to=None would reveal "
                "the trained weights to every server, which must never see them"
            )
        self.session.participant(to)  # refuse a bad receiver before revealing anything
        return self.weight.reveal(to=to), self.bias.reveal(to=to)


def fit_plain_logistic_regression(
    x: torch.Tensor, y: torch.Tensor, *, epochs: int = 1, batch_size: int = 64, lr: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same training on plaintext float64 (hard sigmoid, same batches): ``(weight, bias)``."""
    _check_data(tuple(x.shape), tuple(y.shape), x.shape[1])
    epochs, batch_size, lr = _check_hyperparameters(epochs, batch_size, lr)
    x, y = x.double(), y.double()
    weight, bias = (
        torch.zeros(x.shape[1], 1, dtype=torch.float64),
        torch.zeros(1, dtype=torch.float64),
    )
    for _ in range(epochs):
        for start in range(0, x.shape[0], batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            error = hard_sigmoid(xb @ weight + bias) - yb
            step = lr / xb.shape[0]
            weight = weight - (xb.T @ error) * step
            bias = bias - error.sum(0) * step
    return weight, bias
