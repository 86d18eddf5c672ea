"""Encrypted inference: a trained torch model on secret-shared inputs with secret-shared weights.

The model owner shares the weights, the data owner shares the images; the parties evaluate the
network on shares and reveal only the predicted class (the argmax is computed on shares too).

**What runs is what ``forward`` does.** :class:`EncryptedModel` traces the model with ``torch.fx``
(``symbolic_trace``: it records the operations ``forward`` performs, not just the list of
sub-modules) and replays that graph on shares. So a model written like lesson 02's own,
``self.out(torch.relu(self.hidden(x.flatten(1))))``, runs exactly as in plaintext. Supported:

- modules ``Linear``, ``Conv2d`` (square stride/padding, no groups or dilation), ``ReLU``,
  ``MaxPool2d`` (no padding), ``Flatten``, and, as the identity at inference, ``Dropout`` and
  ``Identity``;
- functions ``F.relu`` / ``torch.relu``, ``torch.flatten``, ``torch.reshape``, ``F.max_pool2d``,
  ``F.dropout`` (identity), ``+`` / ``−`` of two shared values (residual connections);
- tensor methods ``.relu()``, ``.flatten()``, ``.view()``, ``.reshape()``, ``.size()`` and
  ``.shape`` (for ``x.view(x.size(0), -1)``).

Anything else — ``Tanh``/``Sigmoid`` (no exact secure protocol here), ``torch.sigmoid``, a
``BatchNorm`` layer, data-dependent control flow that ``torch.fx`` cannot trace — is refused when
the ``EncryptedModel`` is built, with an error naming the operation: never a silent mismatch.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from course_lib.smpc.comparison import argmax, max_pool2d, relu
from course_lib.smpc.session import Session
from course_lib.smpc.tensor import SharedTensor
from course_lib.validation import check_positive_int

__all__ = ["EncryptedModel", "encrypted_predict"]

Layer = Callable[[SharedTensor], SharedTensor]


def _single(value: int | tuple[int, ...], what: str, layer: object) -> int:
    if isinstance(value, int):
        return value
    if len(set(value)) != 1:
        raise ValueError(f"{layer}: only square {what} is supported, got {value}")
    return value[0]


def _flatten(x: SharedTensor, start_dim: int = 0, end_dim: int = -1) -> SharedTensor:
    return x.flatten(start_dim, end_dim)


def _max_pool(
    x: SharedTensor,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> SharedTensor:
    where = "max_pool2d"
    if (
        _single(padding, "padding", where) != 0
        or _single(dilation, "dilation", where) != 1
        or ceil_mode
        or return_indices
    ):
        raise ValueError(
            "encrypted max-pooling supports no padding, dilation, ceil_mode or return_indices"
        )
    kernel = _single(kernel_size, "kernel", where)
    step = kernel if stride is None else _single(stride, "stride", where)
    return max_pool2d(x, kernel, step)


def _identity(x: SharedTensor, *_args: object, **_kwargs: object) -> SharedTensor:
    return x  # dropout does nothing at inference time


def _relu(x: SharedTensor, inplace: bool = False) -> SharedTensor:
    return relu(x)


def _add(x: Any, y: Any) -> Any:
    return x + y


def _sub(x: Any, y: Any) -> Any:
    return x - y


#: ``call_function`` targets and what they become on shares.
_FUNCTIONS: dict[object, Callable[..., Any]] = {
    F.relu: _relu,
    torch.relu: _relu,
    torch.flatten: _flatten,
    torch.reshape: lambda x, shape: x.reshape(shape),
    F.max_pool2d: _max_pool,
    F.dropout: _identity,
    operator.add: _add,
    operator.sub: _sub,
    operator.getitem: operator.getitem,  # on sizes and shapes only (checked below)
    getattr: getattr,  # x.shape
}
#: ``call_method`` names replayed on :class:`SharedTensor` (same meaning as on torch tensors).
_METHODS = {"relu", "flatten", "view", "reshape", "size"}


def _function_name(target: object) -> str:
    module = getattr(target, "__module__", None) or ""
    return f"{module}.{getattr(target, '__name__', repr(target))}".lstrip(".")


def _trace(model: nn.Module) -> fx.GraphModule:
    try:
        return fx.symbolic_trace(model)
    except Exception as error:  # fx raises several types (TraceError, TypeError, ...)
        raise ValueError(
            f"encrypted inference could not trace {type(model).__name__}.forward with torch.fx "
            f"({type(error).__name__}: {error}); write forward without data-dependent control "
            "flow, using the supported layers and functions"
        ) from error


class EncryptedModel:
    """A torch model with secret-shared weights, evaluated on :class:`SharedTensor` inputs.

    The model is traced with ``torch.fx`` once, here; weights are shared by an outside model owner
    (charged to ``session.log`` as ``"share"``). Raises ``ValueError`` naming the first unsupported
    operation. Calling it maps a shared ``(N, ...)`` input to shared outputs (logits).
    """

    def __init__(self, model: nn.Module, session: Session) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"EncryptedModel takes a torch nn.Module, got {type(model).__name__}")
        if not isinstance(session, Session):
            raise TypeError(f"session must be a course_lib.smpc.Session, got {type(session)}")
        self.session = session
        if type(model).__module__.startswith("torch.nn.modules") and not list(model.children()):
            # one torch layer (nn.Linear, ...): trace it as a one-layer network
            model = nn.Sequential(model)
        self.graph = _trace(model).graph
        modules = dict(model.named_modules())
        self.layers: dict[str, Layer] = {}
        self.names: dict[fx.Node, str] = {}  # what the cost log calls each step
        for node in self.graph.nodes:
            self.names[node] = node.name
            if node.op == "call_module":
                self.layers[node.target] = self._convert(modules[node.target])
                self.names[node] = f"{node.target}:{type(modules[node.target]).__name__}"
            elif node.op == "call_function" and node.target not in _FUNCTIONS:
                raise ValueError(
                    f"encrypted inference does not support the function "
                    f"{_function_name(node.target)} (in {type(model).__name__}.forward); "
                    "supported: F.relu, torch.relu, torch.flatten, torch.reshape, F.max_pool2d, "
                    "F.dropout, + and −"
                )
            elif node.op == "call_method" and node.target not in _METHODS:
                raise ValueError(
                    f"encrypted inference does not support the tensor method .{node.target}() "
                    f"(in {type(model).__name__}.forward); supported: "
                    + ", ".join(f".{m}()" for m in sorted(_METHODS))
                )
            elif node.op == "get_attr":
                raise ValueError(
                    f"encrypted inference does not support using the parameter or buffer "
                    f"{node.target!r} directly in forward; put it in a Linear or Conv2d layer"
                )

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
            return lambda x: _max_pool(
                x, layer.kernel_size, layer.stride, layer.padding, layer.dilation, layer.ceil_mode
            )
        if isinstance(layer, nn.Flatten):
            return lambda x: x.flatten(layer.start_dim, layer.end_dim)
        if isinstance(layer, nn.Dropout | nn.Identity):
            return _identity
        raise ValueError(
            f"encrypted inference does not support {type(layer).__name__} layers; use Linear, "
            "Conv2d, ReLU, MaxPool2d, Flatten (and Dropout) — e.g. a ReLU network"
        )

    def __call__(self, x: SharedTensor) -> SharedTensor:
        if not isinstance(x, SharedTensor):
            raise TypeError(f"EncryptedModel takes a SharedTensor, got {type(x).__name__}")
        if x.session is not self.session:
            raise ValueError("the input is shared in a different session than the model")
        values: dict[fx.Node, Any] = {}

        def value(arg: Any) -> Any:
            return fx.node.map_arg(arg, lambda node: values[node])

        for node in self.graph.nodes:
            if node.op == "placeholder":
                values[node] = x
            elif node.op == "output":
                return value(node.args[0])
            else:
                args, kwargs = value(node.args), value(node.kwargs)
                with self.session.log.operation(self.names[node]):
                    values[node] = self._run(node, args, kwargs)
        raise ValueError("the traced model has no output")  # fx graphs always have one

    def _run(self, node: fx.Node, args: tuple, kwargs: dict) -> Any:
        if node.op == "call_module":  # the target of a module or method call is its name
            return self.layers[str(node.target)](*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], str(node.target))(*args[1:], **kwargs)
        if node.target in (operator.getitem, getattr) and isinstance(args[0], SharedTensor):
            if node.target is getattr and args[1] == "shape":
                return args[0].shape
            raise ValueError(
                f"encrypted inference does not support {_function_name(node.target)} on a shared "
                "tensor (indexing or attributes of the data); only x.shape / x.size() are public"
            )
        return _FUNCTIONS[node.target](*args, **kwargs)


def encrypted_predict(
    model: nn.Module | EncryptedModel,
    images: torch.Tensor,
    session: Session,
    batch_size: int = 100,
    to: int | str | None = None,
) -> torch.Tensor:
    """Class predictions for ``images``, computed on shares; only the predicted classes are opened.

    ``images`` are secret-shared by their owner (``to`` when that is a name or a party, else an
    outside data owner); ``model`` (a torch module, whose weights then get shared, or an already
    shared :class:`EncryptedModel`) runs on the shares, and the argmax is computed by the secure
    comparison protocol. ``to`` says who learns the predictions: ``None`` opens them to every party,
    ``to=i`` delivers them to party ``i`` only, ``to="patient"`` to an outside receiver only (the
    parties then learn nothing but the input's shape). Returns the ``(N,)`` int64 classes.

    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> x = torch.rand(5, 4)
    >>> predicted = encrypted_predict(model, x, Session(n_parties=2), to="patient")
    >>> torch.equal(predicted, model(x).argmax(dim=1))
    True
    """
    encrypted = model if isinstance(model, EncryptedModel) else EncryptedModel(model, session)
    session.participant(to)  # validate before any work
    if not isinstance(images, torch.Tensor) or images.dim() == 0 or len(images) == 0:
        raise ValueError("encrypted_predict needs a non-empty batch of images (N ≥ 1)")
    batch_size = check_positive_int(batch_size, "batch_size")
    predictions = []
    for start in range(0, len(images), batch_size):
        logits = encrypted(session.share(images[start : start + batch_size], owner=to))
        one_hot = argmax(logits)
        predictions.append(one_hot.reveal(to=to).argmax(dim=-1))
    return torch.cat(predictions)
