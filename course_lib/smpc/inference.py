"""Encrypted inference: a trained torch model on secret-shared inputs with secret-shared weights.

The model owner shares the weights, the data owner shares the images; the parties evaluate the
network layer by layer on shares and reveal only the predicted class (the argmax is computed on
shares too). Supported layers: ``Linear``, ``Conv2d`` (square stride/padding, no groups or
dilation), ``ReLU``, ``MaxPool2d`` (no padding), ``Flatten`` and, as the identity in evaluation,
``Dropout``. The model must be a chain of such layers — an ``nn.Sequential`` (possibly nested) or
a module whose children run in order, such as :class:`course_lib.models.MLP`. ``Tanh``/``Sigmoid``
are not supported: they have no exact secure protocol here (use ReLU networks for encrypted
inference).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from course_lib.smpc.comparison import argmax, max_pool2d, relu
from course_lib.smpc.session import Session
from course_lib.smpc.tensor import SharedTensor

__all__ = ["EncryptedModel", "encrypted_predict"]

Layer = Callable[[SharedTensor], SharedTensor]


def _single(value: int | tuple[int, ...], what: str, layer: nn.Module) -> int:
    if isinstance(value, int):
        return value
    if len(set(value)) != 1:
        raise ValueError(f"{layer}: only square {what} is supported, got {value}")
    return value[0]


def _leaf_layers(model: nn.Module) -> list[nn.Module]:
    children = list(model.children())
    if not children:
        return [model]
    return [leaf for child in children for leaf in _leaf_layers(child)]


class EncryptedModel:
    """A chain of torch layers with secret-shared weights, evaluated on :class:`SharedTensor`."""

    def __init__(self, model: nn.Module, session: Session) -> None:
        self.session = session
        self.layers: list[tuple[str, Layer]] = []
        for i, layer in enumerate(_leaf_layers(model)):
            self.layers.append((f"{i}:{type(layer).__name__}", self._convert(layer)))

    def _convert(self, layer: nn.Module) -> Layer:
        share = self.session.share
        if isinstance(layer, nn.Linear):
            weight_t = share(layer.weight.detach().T)
            bias = share(layer.bias.detach()) if layer.bias is not None else None
            return lambda x: x @ weight_t + bias if bias is not None else x @ weight_t
        if isinstance(layer, nn.Conv2d):
            if layer.groups != 1 or _single(layer.dilation, "dilation", layer) != 1:
                raise ValueError(f"{layer}: grouped or dilated convolutions are not supported")
            if not isinstance(layer.padding, tuple) or layer.padding_mode != "zeros":
                raise ValueError(f"{layer}: only numeric zero padding is supported")
            stride = _single(layer.stride, "stride", layer)
            padding = _single(layer.padding, "padding", layer)
            weight = share(layer.weight.detach())
            bias = share(layer.bias.detach().reshape(-1, 1, 1)) if layer.bias is not None else None

            def conv(x: SharedTensor) -> SharedTensor:
                out = x.conv2d(weight, stride=stride, padding=padding)
                return out + bias if bias is not None else out

            return conv
        if isinstance(layer, nn.ReLU):
            return relu
        if isinstance(layer, nn.MaxPool2d):
            if (
                _single(layer.padding, "padding", layer) != 0
                or _single(layer.dilation, "dilation", layer) != 1
                or layer.ceil_mode
            ):
                raise ValueError(
                    f"{layer}: max-pooling with padding/dilation/ceil_mode is not supported"
                )
            kernel = _single(layer.kernel_size, "kernel", layer)
            stride = _single(layer.stride, "stride", layer)
            return lambda x: max_pool2d(x, kernel, stride)
        if isinstance(layer, nn.Flatten):
            if layer.end_dim != -1:
                raise ValueError(f"{layer}: only Flatten(start_dim, end_dim=-1) is supported")
            return lambda x: x.flatten(layer.start_dim)
        if isinstance(layer, nn.Dropout | nn.Identity):
            return lambda x: x  # dropout does nothing at inference time
        raise ValueError(
            f"encrypted inference does not support {type(layer).__name__} layers; use Linear, "
            "Conv2d, ReLU, MaxPool2d, Flatten (and Dropout) — e.g. a ReLU network"
        )

    def __call__(self, x: SharedTensor) -> SharedTensor:
        if not isinstance(x, SharedTensor):
            raise TypeError(f"EncryptedModel takes a SharedTensor, got {type(x).__name__}")
        if x.session is not self.session:
            raise ValueError("the input is shared in a different session than the model")
        for name, layer in self.layers:
            with self.session.log.operation(name):
                x = layer(x)
        return x


def encrypted_predict(
    model: nn.Module | EncryptedModel, images: torch.Tensor, session: Session, batch_size: int = 100
) -> torch.Tensor:
    """Class predictions for ``images``, computed on shares; only the predicted classes are opened.

    ``images`` are secret-shared by their owner; ``model`` (a torch module, whose weights then get
    shared, or an already shared :class:`EncryptedModel`) runs on the shares, and the argmax is
    computed by the secure comparison protocol.
    """
    encrypted = model if isinstance(model, EncryptedModel) else EncryptedModel(model, session)
    predictions = []
    for start in range(0, len(images), batch_size):
        logits = encrypted(session.share(images[start : start + batch_size]))
        with session.log.operation("argmax"):
            one_hot = argmax(logits).reveal()
        predictions.append(one_hot.argmax(dim=-1))
    return torch.cat(predictions)
