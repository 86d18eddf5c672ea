"""Split learning: the client runs the first layers, the server the rest (Gupta & Raskar 2018;
Vepakomma et al. 2018).

Instead of shipping model updates (federated learning), a split network ships *activations*: the
client computes the network up to the *cut layer* and sends those activations (the "smashed data")
to the server, which finishes the forward pass, computes the loss and sends back the gradient with
respect to the activations; the client finishes backpropagation. Raw inputs never leave the client,
but activations and gradients do — and both leak:

- activations of early layers are close to an invertible function of the input: a server that ever
  learns a few input/activation pairs fits a decoder and reconstructs every other input
  (:func:`fit_activation_decoder`);
- in the *U-shaped* variant the client also keeps the last layer and the labels, yet the gradients
  it sends back cluster by label (Li et al., *Label Leakage and Protection in Two-party Split
  Learning*, ICLR 2022): :func:`cluster_gradients`.

:class:`SplitNN` records every tensor that crosses the wire in a :class:`WireLog`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from course_lib.validation import check_int_in_range

__all__ = [
    "WireLog",
    "SplitNN",
    "split_sequential",
    "fit_activation_decoder",
    "cluster_gradients",
    "cluster_accuracy",
]


@dataclass
class WireLog:
    """Everything that crossed the network: one entry per message ``(direction, what, bytes)``."""

    entries: list[tuple[str, str, int]] = field(default_factory=list)

    def send(self, direction: str, what: str, tensor: torch.Tensor) -> None:
        self.entries.append((direction, what, tensor.numel() * tensor.element_size()))

    def summary(self) -> dict[tuple[str, str], tuple[int, int]]:
        """``{(direction, what): (messages, bytes)}``."""
        out: dict[tuple[str, str], tuple[int, int]] = {}
        for direction, what, nbytes in self.entries:
            m, b = out.get((direction, what), (0, 0))
            out[(direction, what)] = (m + 1, b + nbytes)
        return out

    @property
    def total_bytes(self) -> int:
        return sum(nbytes for _, _, nbytes in self.entries)

    def __str__(self) -> str:
        rows = [f"{'direction':<18}{'what':<30}{'messages':>9}{'bytes':>14}"]
        for (direction, what), (m, b) in self.summary().items():
            rows.append(f"{direction:<18}{what:<30}{m:>9}{b:>14,}")
        rows.append(f"{'total':<48}{len(self.entries):>9}{self.total_bytes:>14,}")
        return "\n".join(rows)


def split_sequential(model: nn.Sequential, cut: int) -> tuple[nn.Sequential, nn.Sequential]:
    """Cut a sequential model after its first ``cut`` layers: ``(client part, server part)``.

    The two parts share the original modules (and so the weights).
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"split_sequential cuts an nn.Sequential, got {type(model).__name__}")
    cut = check_int_in_range(cut, "cut (layers kept by the client)", 1, len(model) - 1)
    return model[:cut], model[cut:]


class SplitNN:
    """A network split between a client (``client_part``) and a server (``server_part``).

    With ``client_head`` the network is *U-shaped*: the server's output goes back to the client,
    which applies its head and computes the loss itself, so labels never leave the client.
    Otherwise the client sends its labels along with the activations (vanilla split learning).
    Each party has its own SGD optimiser with learning rate ``lr``.
    """

    def __init__(
        self,
        client_part: nn.Module,
        server_part: nn.Module,
        *,
        client_head: nn.Module | None = None,
        lr: float = 0.05,
    ) -> None:
        if lr <= 0:
            raise ValueError(f"the learning rate must be positive, got {lr}")
        self.client_part, self.server_part, self.client_head = client_part, server_part, client_head
        client_params = list(client_part.parameters())
        if client_head is not None:
            client_params += list(client_head.parameters())
        self.client_opt = torch.optim.SGD(client_params, lr=lr)
        self.server_opt = torch.optim.SGD(server_part.parameters(), lr=lr)
        self.wire = WireLog()
        #: gradients the server received from a U-shaped client (for the label-leakage demo)
        self.server_received_gradients: list[torch.Tensor] = []

    @property
    def u_shaped(self) -> bool:
        return self.client_head is not None

    @property
    def device(self) -> torch.device:
        """Where the client's part lives; :meth:`fit`, :meth:`predict` and :meth:`evaluate` move
        their batches there."""
        # CPU by design: a client part without parameters runs on the CPU
        return next(self.client_part.parameters(), torch.empty(0)).device

    def _check_batch(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise TypeError("inputs and labels must be torch tensors")
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"{x.shape[0]} inputs but {y.shape[0]} labels")
        if x.shape[0] == 0:
            raise ValueError("the batch is empty")
        if y.dtype != torch.int64:
            raise TypeError(f"labels must be int64 class indices, got {y.dtype}")

    def compute_gradients(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One forward/backward pass through the protocol; leaves ``.grad`` on every parameter of
        both parties and returns the loss. Every message is logged in :attr:`wire`."""
        self._check_batch(x, y)
        self.client_opt.zero_grad()
        self.server_opt.zero_grad()
        # client: forward to the cut layer, send the activations (and, vanilla, the labels)
        activations = self.client_part(x)
        sent = activations.detach().clone()
        self.wire.send("client → server", "cut-layer activations", sent)
        # server: continue from what it received
        received = sent.requires_grad_(True)
        server_out = self.server_part(received)
        if self.client_head is not None:  # U-shaped (self.u_shaped), spelled so mypy narrows
            returned = server_out.detach().clone()
            self.wire.send("server → client", "server-part outputs", returned)
            at_client = returned.requires_grad_(True)
            loss = F.cross_entropy(self.client_head(at_client), y)
            loss.backward()
            grad_out = at_client.grad.detach().clone()
            self.wire.send("client → server", "gradient of server outputs", grad_out)
            self.server_received_gradients.append(grad_out)
            server_out.backward(grad_out)
        else:
            self.wire.send("client → server", "labels", y)
            loss = F.cross_entropy(server_out, y)
            loss.backward()
        grad_activations = received.grad.detach().clone()
        self.wire.send("server → client", "gradient of activations", grad_activations)
        # client: finish backpropagation through its own layers
        activations.backward(grad_activations)
        return loss.detach()

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """:meth:`compute_gradients` then one SGD step on each side; returns the loss."""
        loss = self.compute_gradients(x, y)
        self.client_opt.step()
        self.server_opt.step()
        return float(loss)

    def fit(self, loader: Iterable, *, epochs: int = 1, progress: bool = True) -> list[float]:
        """Train for ``epochs``; returns the mean training loss of each epoch."""
        if epochs <= 0:
            raise ValueError(f"epochs must be positive, got {epochs}")
        self._train_mode(True)
        losses = []
        for _ in tqdm(range(epochs), desc="split learning", disable=not progress):
            total, seen = 0.0, 0
            for x, y in loader:
                total += self.train_step(x.to(self.device), y.to(self.device)) * len(y)
                seen += len(y)
            if seen == 0:
                raise ValueError("the training loader yielded no batches")
            losses.append(total / seen)
        return losses

    def _train_mode(self, mode: bool) -> None:
        for part in (self.client_part, self.server_part, self.client_head):
            if part is not None:
                part.train(mode)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the whole split network (evaluation mode, nothing logged)."""
        self._train_mode(False)
        out = self.server_part(self.client_part(x.to(self.device)))
        return self.client_head(out) if self.client_head is not None else out  # U-shaped or not

    @torch.no_grad()
    def evaluate(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """Accuracy of the split network on a labelled set."""
        return (self.predict(images).argmax(1) == labels.to(self.device)).float().mean().item()


def fit_activation_decoder(
    activations: torch.Tensor, inputs: torch.Tensor, *, ridge: float = 1.0
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The server's inversion attack: a linear decoder from cut-layer activations to inputs.

    Fitted by ridge regression on a few ``(activation, input)`` pairs the server learned (a handful
    of the client's images leaked or published); returns a function mapping activations to
    reconstructed inputs (clamped to [0, 1]).
    """
    if activations.shape[0] != inputs.shape[0]:
        raise ValueError(f"{activations.shape[0]} activations but {inputs.shape[0]} inputs")
    if ridge <= 0:
        raise ValueError(f"ridge must be positive, got {ridge}")
    a = activations.detach().flatten(1).double()
    x = inputs.detach().flatten(1).double()
    a_mean, x_mean = a.mean(0), x.mean(0)
    ac, xc = a - a_mean, x - x_mean
    # weights = (AᵀA + λI)⁻¹ Aᵀ X, solved in the dual when there are fewer pairs than features
    gram = ac @ ac.T + ridge * torch.eye(len(ac), dtype=torch.float64, device=ac.device)
    weights = ac.T @ torch.linalg.solve(gram, xc)
    shape = inputs.shape[1:]

    def decode(new_activations: torch.Tensor) -> torch.Tensor:
        out = (
            new_activations.detach().flatten(1).double().to(a.device) - a_mean
        ) @ weights + x_mean
        return out.clamp(0, 1).to(inputs.dtype).reshape(-1, *shape)

    return decode


def cluster_gradients(gradients: torch.Tensor, num_clusters: int, *, seed: int = 0) -> np.ndarray:
    """Group per-example gradients by direction (k-means on unit vectors): the label-leakage
    attack on U-shaped split learning. Returns a cluster id per example."""
    from sklearn.cluster import KMeans

    g = gradients.detach().flatten(1).double()
    if len(g) < num_clusters:
        raise ValueError(f"{len(g)} gradients cannot form {num_clusters} clusters")
    unit = F.normalize(g, dim=1).cpu().numpy()  # scikit-learn works on the CPU
    return KMeans(num_clusters, n_init=10, random_state=seed).fit_predict(unit)


def cluster_accuracy(clusters: np.ndarray, labels: torch.Tensor | np.ndarray) -> float:
    """Accuracy of clusters as labels once each cluster is named by the best one-to-one mapping
    (what an attacker achieves after seeing one labelled example per cluster)."""
    labels = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    clusters = np.asarray(clusters)
    if clusters.shape != labels.shape:
        raise ValueError(f"{clusters.shape} cluster ids but {labels.shape} labels")
    k = int(max(clusters.max(), labels.max())) + 1
    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (clusters, labels), 1)
    rows, cols = linear_sum_assignment(-counts)
    return float(counts[rows, cols].sum() / len(labels))
