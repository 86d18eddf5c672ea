"""Small models used throughout the course.

Neither model uses BatchNorm: BatchNorm mixes the samples of a batch, which breaks per-sample
gradients (and so DP-SGD, Part II) and leaks across clients in federated learning (Part III).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from course_lib.validation import check_nonnegative, check_positive_int

__all__ = ["MLP", "SmallCNN"]


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
