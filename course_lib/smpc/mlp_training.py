"""Encrypted training of a neural network: a one-hidden-layer MLP on secret-shared data.

Data owners secret-share images ``X`` (N, d) and one-hot labels ``Y`` (N, C)
(:func:`share_training_data`); a model owner shares the initial weights of a torch
``nn.Sequential(nn.Linear(d, H), nn.ReLU(), nn.Linear(H, C))``. The parties then run mini-batch
SGD **entirely on shares** and reveal nothing but the trained weights, at the end, to whom the
caller names (:meth:`EncryptedMLP.decrypt`). One step on a batch of ``B`` rows:

forward
    ``H = X W1ᵀ + b1`` (Beaver matmul + truncation), ``m = 1 − [H < 0]`` (the exact secure
    comparison of :mod:`.comparison`: shared 0/1 bits), ``A = H ∘ m`` (one Beaver product by a
    bit: no truncation), ``Z = A W2ᵀ + b2``.
loss gradient
    the **square loss** ``L = ½·mean_b ‖Z_b − Y_b‖²`` has ``∂L/∂Z = (Z − Y)/B``: one product by
    a public constant (a truncation), no comparison, no division, no exponential. (Softmax
    cross-entropy needs ``exp`` and a division on shares; SecureML proposes the substitute
    ``ReLU(z_i) / Σ_j ReLU(z_j)``, which still needs a secure division.)
backward
    ``∂W2 = dZᵀ A``, ``∂b2 = Σ_b dZ``, ``dA = dZ W2``, then **the ReLU's derivative is the bit
    ``m`` the forward pass already computed** — ``dH = dA ∘ m``, one Beaver product by a bit, *no
    second comparison* — and ``∂W1 = dHᵀ X``, ``∂b1 = Σ_b dH``. This reuse is the construction of
    SecureML (Mohassel & Zhang, "SecureML: A System for Scalable Privacy-Preserving Machine
    Learning", IEEE S&P 2017, §5).
SGD
    ``θ ← θ − lr·∂θ`` for the four parameters: products by the public ``lr``, whose four
    truncations are independent and are done together in one round.

Every product of two fixed-point numbers is truncated back to ``precision_bits`` fractional bits
(error ≤ 1 ulp = 2^-f each, see :mod:`.tensor`), so the weights differ from float training by
accumulated fixed-point error only — which SGD feeds back into later steps, and which can flip a
ReLU bit where a hidden pre-activation lies within it of 0. :func:`fit_plain_mlp` is the float
twin: the same network, the same loss, the same batches and learning rate, with torch autograd and
``torch.optim.SGD``.

Communication of one step with ``n`` parties (each ``open`` is one round; the session's log charges
them to the names in :data:`STEP_OPERATIONS`): forward ``2 + (7(n − 1) + 1) + 1 + 2`` rounds
(matmul and truncation, comparison, product by the bit, matmul and truncation), loss gradient 1,
backward ``2 + 2 + 1 + 2``, SGD 1 — **22 rounds for two parties**. The comparison takes the most
rounds; the matrix products together send the most bytes.

**Range.** Nothing computed on shares is range-checked (nobody sees it). Each product lives at
scale ``2^(2f)`` before its truncation, which is exact only while ``|x| < 2^62`` ring units (see
:mod:`.tensor`): every dot product of the forward and backward passes — each entry of ``X W1ᵀ``,
``A W2ᵀ``, ``dZᵀ A``, ``dZ W2``, ``dHᵀ X`` and each ``lr·∂θ`` — must stay below ``2^(62 − 2f)`` in
real value (≈ 1.1·10^9 at the default f = 16, ≈ 4.2·10^6 at f = 20), and the stored values at
scale ``2^f`` below ``2^(63 − f)``. A diverging run (too large a learning rate, unscaled features)
**wraps around silently** and decodes to garbage; keep features and the learning rate small, and
compare with :func:`fit_plain_mlp` on the same data.

**Threat model** (that of :class:`~.session.Session`): semi-honest parties that do not collude
with each other or with the trusted dealer. The servers learn the public shapes (N, d, H, C, the
batch size, the number of steps) and the learning rate; every value opened during training is
masked by the dealer's randomness, so it is uniformly random. The trained weights are revealed
once, to the receiver of :meth:`EncryptedMLP.decrypt` (required; ``session.log.outputs`` lists
it).

**What the model owner learns is more than "a model".** It *chooses* the initial weights ``θ₀``
and, if it also receives the trained ``θ_T``, it learns ``θ_T − θ₀ = −lr · Σ_steps ∂θ``: the sum of
every batch's gradient. The semi-honest assumption constrains how a party follows the protocol,
not which inputs it brings, so crafted "trap" weights are allowed: a first layer built so that
each hidden unit fires for few images makes that difference contain individual training images
exactly (Fowl et al., "Robbing the Fed", ICLR 2022; Boenisch et al., "When the Curious Abandon
Honesty", IEEE EuroS&P 2023). Even with honestly random weights, a short run on little data
exposes the summed gradients to inversion (lesson 12). Mitigations: generate the initial weights
jointly on shares (each party shares a random contribution) or agree on and audit them; reveal the
trained weights to a party that did not choose ``θ₀``; add differentially private noise on shares
before the reveal. Beyond that, any released model can leak training data (membership inference,
lesson 08): SMPC hides the computation, not what its output says.
"""

from __future__ import annotations

import torch
from torch import nn

from course_lib.smpc.comparison import less_than_zero
from course_lib.smpc.encoding import check_public_constant
from course_lib.smpc.session import Participant, Session
from course_lib.smpc.tensor import SharedTensor
from course_lib.training import model_device
from course_lib.validation import check_positive, check_positive_int

__all__ = [
    "EncryptedMLP",
    "STEP_OPERATIONS",
    "fit_plain_mlp",
    "one_hot_labels",
    "share_training_data",
    "square_loss",
]

#: Log operation names of one training step, in the order they run.
STEP_OPERATIONS = (
    "linear 1",
    "ReLU",
    "linear 2",
    "loss grad",
    "grad linear 2",
    "grad ReLU",
    "grad linear 1",
    "SGD update",
)
PARAMETERS = ("0.weight", "0.bias", "2.weight", "2.bias")


def square_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``½ · mean over the batch of ‖logits − targets‖²`` for (B, C) float tensors; gradient
    ``(logits − targets) / B``."""
    return 0.5 * ((logits - targets) ** 2).sum(dim=1).mean()


def one_hot_labels(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(N,) integer class indices → (N, n_classes) float64 one-hot rows.

    Raises ``TypeError`` unless ``labels`` is an integer tensor, ``ValueError`` unless it is 1-D
    with every label in ``0 … n_classes − 1``.
    """
    n_classes = check_positive_int(n_classes, "n_classes")
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch tensor of class indices, got {type(labels)}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(
            f"labels must be integer class indices (torch.int64), got dtype {labels.dtype}"
        )
    if labels.dim() != 1:
        raise ValueError(f"labels must be 1-D (N,), got shape {tuple(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise ValueError(
            f"labels must lie in 0 … {n_classes - 1}, got values from {int(labels.min())} to "
            f"{int(labels.max())}"
        )
    return nn.functional.one_hot(labels.long(), n_classes).double()


def _check_features(features: object, name: str = "features") -> torch.Tensor:
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor (N, d), got {type(features).__name__}")
    if not features.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {features.dtype}")
    if features.dim() != 2 or 0 in features.shape:
        raise ValueError(
            f"{name} must have shape (N, d) with N, d ≥ 1, got {tuple(features.shape)}"
        )
    if not bool(torch.isfinite(features).all()):
        raise ValueError(f"{name} contain NaN or infinite values; clean the data first")
    return features


def _check_labeled_data(
    features: object, labels: object, n_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked ``(features (N, d), one-hot labels (N, C))`` — errors before any work."""
    features = _check_features(features)
    targets = one_hot_labels(labels, n_classes)  # type: ignore[arg-type]
    if targets.shape[0] != features.shape[0]:
        raise ValueError(
            f"{features.shape[0]} feature rows but {targets.shape[0]} labels: one label per row"
        )
    return features, targets


def share_training_data(
    session: Session,
    features: torch.Tensor,
    labels: torch.Tensor,
    n_classes: int,
    owner: Participant = None,
) -> tuple[SharedTensor, SharedTensor]:
    """The data owner's part: check, one-hot encode and secret-share a labelled dataset.

    ``features`` is a finite float (N, d) tensor, ``labels`` an integer (N,) tensor of class
    indices. Returns shared ``(X (N, d), Y (N, n_classes))``; ``owner`` as in
    :meth:`Session.share`. Every check runs before anything is shared.
    """
    if not isinstance(session, Session):
        raise TypeError(f"session must be a course_lib.smpc.Session, got {type(session).__name__}")
    features, targets = _check_labeled_data(features, labels, n_classes)
    session.participant(owner, "owner")
    return session.share(features.cpu(), owner=owner), session.share(targets, owner=owner)


def _check_architecture(model: object) -> tuple[nn.Linear, nn.Linear]:
    if not isinstance(model, nn.Sequential):
        raise TypeError(
            "the model must be nn.Sequential(nn.Linear(d, H), nn.ReLU(), nn.Linear(H, C)), got "
            f"{type(model).__name__}"
        )
    layers = list(model)
    kinds = [type(layer) for layer in layers]
    if kinds != [nn.Linear, nn.ReLU, nn.Linear] or any(
        layer.bias is None for layer in (layers[0], layers[2])
    ):
        raise ValueError(
            "encrypted training supports nn.Sequential(nn.Linear(d, H), nn.ReLU(), "
            f"nn.Linear(H, C)) with biases, got layers {[k.__name__ for k in kinds]}"
        )
    if layers[0].out_features != layers[2].in_features:
        raise ValueError(
            f"the layers do not fit: {layers[0].out_features} hidden units out of the first, "
            f"{layers[2].in_features} into the second"
        )
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise ValueError("the model's weights contain NaN or infinite values")
    first, second = layers[0], layers[2]
    assert isinstance(first, nn.Linear) and isinstance(second, nn.Linear)  # checked above
    return first, second


def _check_hyperparameters(epochs: int, batch_size: int, lr: float) -> tuple[int, int, float]:
    return (
        check_positive_int(epochs, "epochs"),
        check_positive_int(batch_size, "batch_size"),
        check_positive(lr, "the learning rate lr"),
    )


def _check_public_steps(lr: float, n_rows: int, batch_size: int, precision_bits: int) -> None:
    """Refuse public constants of a step that fixed point rounds by more than 1 %: the learning
    rate ``lr`` and the loss gradient's ``1 / B`` for every batch size the epoch uses (see
    :func:`~course_lib.smpc.encoding.check_public_constant`), before anything is computed."""
    check_public_constant(lr, precision_bits, "the learning rate lr")
    for size in sorted({min(batch_size, n_rows), n_rows % batch_size} - {0}):
        check_public_constant(
            1.0 / size, precision_bits, f"the loss gradient's 1 / batch size 1 / {size}"
        )


def _batches(n: int, batch_size: int) -> list[slice]:
    """The mini-batches of one epoch, in order (shuffle the data beforehand)."""
    return [slice(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


class EncryptedMLP:
    """A one-hidden-layer ReLU network whose weights, data and gradients stay secret-shared.

    ``EncryptedMLP(model, session)`` shares the weights of a torch ``nn.Sequential(nn.Linear(d,
    H), nn.ReLU(), nn.Linear(H, C))`` — the model owner's part (``owner``: who sends them, as in
    :meth:`Session.share`). Parameters are kept in torch's layout and names: ``"0.weight"`` (H, d),
    ``"0.bias"`` (H,), ``"2.weight"`` (C, H), ``"2.bias"`` (C,).
    """

    def __init__(self, model: nn.Sequential, session: Session, owner: Participant = None) -> None:
        first, second = _check_architecture(model)
        if not isinstance(session, Session):
            raise TypeError(
                f"session must be a course_lib.smpc.Session, got {type(session).__name__}"
            )
        session.participant(owner, "owner")
        self.session = session
        self.n_features, self.n_hidden = first.in_features, first.out_features
        self.n_classes = second.out_features
        self.params: dict[str, SharedTensor] = {
            name: session.share(param.detach().cpu(), owner=owner)
            for name, param in model.state_dict().items()
        }

    # -- checks ---------------------------------------------------------------------------------
    def _check_shared(self, value: object, name: str) -> SharedTensor:
        if not isinstance(value, SharedTensor):
            raise TypeError(
                f"{name} must be a SharedTensor (share them with share_training_data), got "
                f"{type(value).__name__}"
            )
        if value.session is not self.session:
            raise ValueError(f"{name} belong to another session than the model")
        return value

    def _check_features(self, x: object) -> SharedTensor:
        x = self._check_shared(x, "the features")
        if x.dim() != 2 or x.shape[1] != self.n_features or x.shape[0] == 0:
            raise ValueError(
                f"the features must have shape (N, {self.n_features}), got {tuple(x.shape)}"
            )
        return x

    def _check_batch(self, x: object, y: object) -> None:
        x = self._check_features(x)
        y = self._check_shared(y, "the labels")
        if tuple(y.shape) != (x.shape[0], self.n_classes):
            raise ValueError(
                f"the labels must be one-hot rows of shape {(x.shape[0], self.n_classes)}, got "
                f"{tuple(y.shape)}"
            )

    # -- one step -------------------------------------------------------------------------------
    def forward(self, x: SharedTensor) -> tuple[SharedTensor, SharedTensor, SharedTensor]:
        """Shared ``(logits Z (B, C), hidden activations A (B, H), ReLU derivative m (B, H))``.

        ``m`` holds shared bits (scale 0): 1 where the hidden pre-activation is ≥ 0. It is both
        the ReLU's mask (``A = H ∘ m``) and the ReLU's derivative, kept for :meth:`gradients`.
        Raises ``TypeError`` unless ``x`` is a SharedTensor of this session, ``ValueError`` unless
        its shape is ``(B, d)`` with ``B ≥ 1`` — before any round.
        """
        return self._forward(self._check_features(x))

    def _forward(self, x: SharedTensor) -> tuple[SharedTensor, SharedTensor, SharedTensor]:
        log, p = self.session.log, self.params
        with log.operation("linear 1"):
            hidden = x @ p["0.weight"].T + p["0.bias"]
        with log.operation("ReLU"):
            active = 1 - less_than_zero(hidden)
            activations = hidden * active
        with log.operation("linear 2"):
            logits = activations @ p["2.weight"].T + p["2.bias"]
        return logits, activations, active

    def gradients(self, x: SharedTensor, y: SharedTensor) -> dict[str, SharedTensor]:
        """Shared gradients of the square loss on the batch ``(x (B, d), y (B, C))``, by name.

        Hand-written backpropagation on shares; the ReLU's derivative is the forward pass's bit.
        """
        self._check_batch(x, y)
        return self._gradients(x, y)

    def _gradients(self, x: SharedTensor, y: SharedTensor) -> dict[str, SharedTensor]:
        log = self.session.log
        logits, activations, active = self._forward(x)
        with log.operation("loss grad"):
            grad_logits = (logits - y) * (1.0 / x.shape[0])
        with log.operation("grad linear 2"):
            grads = {"2.weight": grad_logits.T @ activations, "2.bias": grad_logits.sum(0)}
            grad_activations = grad_logits @ self.params["2.weight"]
        with log.operation("grad ReLU"):
            grad_hidden = grad_activations * active  # the forward bit: no new comparison
        with log.operation("grad linear 1"):
            grads["0.weight"] = grad_hidden.T @ x
            grads["0.bias"] = grad_hidden.sum(0)
        return grads

    def step(self, x: SharedTensor, y: SharedTensor, lr: float) -> None:
        """One SGD step ``θ ← θ − lr·∂θ`` on the batch ``(x (B, d), y (B, C))``, on shares."""
        self._check_batch(x, y)
        lr = check_positive(lr, "the learning rate lr")
        _check_public_steps(lr, x.shape[0], x.shape[0], self.session.precision_bits)
        self._step(x, y, lr)

    def _step(self, x: SharedTensor, y: SharedTensor, lr: float) -> None:
        grads = self._gradients(x, y)
        with self.session.log.operation("SGD update"):
            # The four products by the public lr are independent: truncate them in one round.
            flat = SharedTensor.cat([grads[name].reshape(-1) for name in PARAMETERS]) * lr
            start = 0
            for name in PARAMETERS:
                param = self.params[name]
                size = param.numel()
                update = flat[start : start + size].reshape(*param.shape)
                self.params[name] = param - update
                start += size

    def fit(
        self,
        x: SharedTensor,
        y: SharedTensor,
        *,
        epochs: int = 1,
        batch_size: int = 32,
        lr: float = 0.5,
    ) -> EncryptedMLP:
        """Mini-batch SGD on shares, batches in order (shuffle the data before sharing it)."""
        self._check_batch(x, y)
        epochs, batch_size, lr = _check_hyperparameters(epochs, batch_size, lr)
        _check_public_steps(lr, x.shape[0], batch_size, self.session.precision_bits)
        for _ in range(epochs):
            for batch in _batches(x.shape[0], batch_size):
                self._step(x[batch], y[batch], lr)
        return self

    def decrypt(self, *, to: Participant) -> nn.Sequential:
        """Reveal the trained weights — to ``to`` only (a party index or a name such as ``"model
        owner"``) — as a float64 torch model of the same architecture.

        The receiver is required: ``to=None`` (reveal to every server) raises ``ValueError``
        before anything is revealed, because the servers must never see the trained weights
        (compare :meth:`SharedKeyValueStore.get <.database.SharedKeyValueStore.get>`). Who
        receives them matters: see the threat model in the module docstring.
        """
        if to is None:
            raise ValueError(
                "decrypt needs a receiver, e.g. decrypt(to='model owner'): to=None would reveal "
                "the trained weights to every server, which must never see them"
            )
        self.session.participant(to)  # refuse a bad receiver before revealing anything
        model = nn.Sequential(
            nn.Linear(self.n_features, self.n_hidden),
            nn.ReLU(),
            nn.Linear(self.n_hidden, self.n_classes),
        ).double()
        model.load_state_dict({name: t.reveal(to=to) for name, t in self.params.items()})
        return model


def fit_plain_mlp(
    model: nn.Sequential,
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int = 1,
    batch_size: int = 32,
    lr: float = 0.5,
) -> nn.Sequential:
    """The float twin of :meth:`EncryptedMLP.fit`: torch autograd and ``torch.optim.SGD`` on the
    square loss, the same batches in the same order. Trains ``model`` in place (on its device,
    in its dtype) and returns it. Same input checks as :func:`share_training_data`."""
    first, second = _check_architecture(model)
    features, targets = _check_labeled_data(features, labels, second.out_features)
    if features.shape[1] != first.in_features:
        raise ValueError(
            f"the features must have shape (N, {first.in_features}), got {tuple(features.shape)}"
        )
    epochs, batch_size, lr = _check_hyperparameters(epochs, batch_size, lr)
    device, dtype = model_device(model), first.weight.dtype
    features, targets = features.to(device, dtype), targets.to(device, dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    with torch.enable_grad():  # also when called under torch.no_grad()
        for _ in range(epochs):
            for batch in _batches(features.shape[0], batch_size):
                optimizer.zero_grad()
                square_loss(model(features[batch]), targets[batch]).backward()
                optimizer.step()
    return model
