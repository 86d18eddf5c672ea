"""Small models used throughout the course.

No model here uses BatchNorm: BatchNorm mixes the samples of a batch, which breaks per-sample
gradients (and so DP-SGD, Part II) and leaks across clients in federated learning (Part III).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from course_lib.validation import check_nonnegative, check_positive_int

__all__ = ["MLP", "SmallCNN", "SmallCNNGroupNorm"]


class MLP(nn.Module):
    """A multi-layer perceptron: flatten → (Linear → ReLU → Dropout)* → Linear.

    ``MLP(784, (128,), 10)`` is the classic MNIST network of lesson 02.
    """

    def __init__(
        self,
        in_features: int = 784,
        hidden: Sequence[int] = (128,),
        num_classes: int = 10,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        dropout = check_nonnegative(dropout, "dropout")
        if dropout >= 1.0:
            raise ValueError(f"dropout is a probability in [0, 1), got {dropout}")
        in_features = check_positive_int(in_features, "in_features (a layer size)")
        num_classes = check_positive_int(num_classes, "num_classes (a layer size)")
        hidden = [check_positive_int(h, "each hidden layer size") for h in hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """The compact MNIST CNN of Opacus' examples (≈26k parameters), for 1×28×28 inputs.

    ``features``: conv 16@8×8 stride 2 → max-pool 2 (stride 1) → conv 32@4×4 stride 2 → max-pool 2
    (stride 1) → flatten, turning an image into 512 numbers.
    ``head``: fully connected 512 → 32 → ``num_classes``.
    Tanh activations, which train better than ReLU under DP noise. The two parts are separate
    modules so lessons can freeze one and train the other (transfer learning, split learning).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 8, stride=2, padding=3),
            nn.Tanh(),
            nn.MaxPool2d(2, 1),
            nn.Conv2d(16, 32, 4, stride=2),
            nn.Tanh(),
            nn.MaxPool2d(2, 1),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Linear(32 * 4 * 4, 32), nn.Tanh(), nn.Linear(32, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[-2:] != (28, 28):
            raise ValueError(
                f"SmallCNN expects images of shape (N, C, 28, 28), got {tuple(x.shape)}"
            )
        return self.head(self.features(x))


class SmallCNNGroupNorm(SmallCNN):
    """:class:`SmallCNN` with a GroupNorm after each convolution: the DP-SGD variant of issue #26.

    Same layers, same 26,010 parameters and the same initialisation for a given seed, same
    ``features``/``head`` split; each convolution's output is normalised over groups of channels
    *within each image* (mean 0, variance 1) before its activation. Unlike BatchNorm this never
    mixes the examples of a batch, so per-sample gradients and DP-SGD stay well defined; with
    ``affine=False`` it adds no parameters, so every trainable parameter is still in an
    ``nn.Linear``/``nn.Conv2d`` layer and DP-SGD's fast path applies.

    ``activation``: ``"relu"`` (default) or ``"tanh"`` for every activation of the network. With
    the normalisation in place ReLU trained better under DP noise than tanh on the offline MNIST
    sample's validation split (92.8% vs 91.5%, ``benchmarks/dp_accuracy.py``); without it, tanh
    is SmallCNN's choice.
    """

    ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        *,
        groups: int = 4,
        activation: str = "relu",
    ) -> None:
        if activation not in self.ACTIVATIONS:
            raise ValueError(f"activation must be 'relu' or 'tanh', got {activation!r}")
        groups = check_positive_int(groups, "groups")
        if 16 % groups or 32 % groups:
            raise ValueError(f"groups must divide 16 and 32 (the channel counts), got {groups}")
        super().__init__(num_classes=num_classes, in_channels=in_channels)
        act = self.ACTIVATIONS[activation]
        conv1, _, pool1, conv2, _, pool2, flatten = self.features
        self.features = nn.Sequential(
            conv1,
            nn.GroupNorm(groups, 16, affine=False),
            act(),
            pool1,
            conv2,
            nn.GroupNorm(groups, 32, affine=False),
            act(),
            pool2,
            flatten,
        )
        hidden, _, out = self.head
        self.head = nn.Sequential(hidden, act(), out)
