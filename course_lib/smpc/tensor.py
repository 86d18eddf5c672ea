"""``SharedTensor``: a tensor secret-shared among the parties of a :class:`~.session.Session`.

Linear operations are local — each party works on its own share, nobody talks:

- ``x + y``, ``x − y`` (shared or public), ``x * k`` for a public integer ``k``, reshaping,
  indexing, sums.

Products of two shared tensors use a **Beaver triple** ``(a, b, c = a ∘ b)`` from the dealer, for
any bilinear ``∘`` (elementwise ``*``, ``@``, ``conv2d``). The parties open ``ε = x − a`` and
``δ = y − b`` — uniformly random, so they reveal nothing — and compute, locally,
``x ∘ y = c + ε ∘ b + a ∘ δ + ε ∘ δ`` (the last term by party 0 only). One round. (The simulator
computes all parties' terms in a few batched torch calls — one product for every ``a_i ∘ δ``,
one for every ``ε ∘ b_i`` — which gives each party exactly what it would compute alone.)

Fixed-point **truncation.** A product of two numbers with ``f`` fractional bits has ``2f``; it
must be divided by ``2^f``. Shares cannot simply be shifted (their sum wraps around 2^64). We use a
mask from the dealer: a uniform ``r``. The parties open ``c = x + 2^62 + r`` (uniform: reveals
nothing) and compute ``(c >> f) − (r >> f)``, correcting the one possible wrap-around of ``c``
exactly with ``msb(r)`` (it wrapped iff ``msb(r) = 1`` and ``msb(c) = 0``). Everything in that
formula that depends on ``r`` alone the dealer prepares, for both signs of ``c``; the parties
pick one with the public ``msb(c)`` (see :meth:`.Dealer.truncation_mask`). The only error is the
borrow from the dropped low bits: the result is ``floor(x / 2^f)`` or one more — **at most 1 ulp
(2^-f) of error**, an unbiased stochastic rounding, with **no failure probability** as long as
``|x| ≤ 2^62`` ring units before truncation (guaranteed for one product of two encodable values,
see :mod:`.encoding`; a long dot product or convolution sum can exceed it). **Beyond that range
the result is silently wrong** (off by ``2^(64−f)`` ulps, a huge value) with probability about
``(|x| − 2^62) / 2^63`` per element — ``x = 1.5·2^62`` fails in about 25 % of runs — since ``c``'s
sign no longer tells whether it wrapped; nothing can check it (``x`` is secret), so keep values in
range. Past ``2^63`` the ring itself wraps. One round. A product is truncated inside the
multiplication: the parties add the mask to their shares of ``x ∘ y`` straight away and open only
the masked value. (The popular local truncation of SecureML — each party shifts its own share —
also has a ±1 ulp error but fails with probability about ``|x| / 2^63`` per element, giving a
huge wrong value.)
"""

from __future__ import annotations

import functools
import sys
import types
from collections.abc import Callable, Sequence

import numpy as np
import torch

from course_lib.fixed_point import check_ring_tensor
from course_lib.smpc.encoding import check_public_constant
from course_lib.smpc.ring import (
    check_on_cpu,
    conv2d_output_shape,
    ring_conv2d,
    ring_matmul,
)
from course_lib.smpc.session import Session
from course_lib.validation import as_integer, check_int_in_range

__all__ = ["SharedTensor"]

Public = int | float | torch.Tensor

#: A product of two values at the largest precision (30 bits) briefly has 60 fractional bits.
MAX_SCALE_BITS = 60
RingOp = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: Index entries that never move a dimension (basic indexing; Python bools are advanced).
_BASIC_INDEX = (slice, int, types.NoneType, types.EllipsisType)


#: ``cross_terms(z, a, b, eps, delta)``: add each party's ``op(ε, b_i) + op(a_i, δ)`` to ``z[i]``.
CrossTerms = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], None]


def _mul_cross_terms(
    z: torch.Tensor, a: torch.Tensor, b: torch.Tensor, eps: torch.Tensor, delta: torch.Tensor
) -> None:
    """Elementwise: ``z_i += ε·b_i + a_i·δ`` for every party at once (δ and ε broadcast)."""
    z.addcmul_(a, delta).addcmul_(eps, b)


def _matmul_cross_terms(
    z: torch.Tensor, a: torch.Tensor, b: torch.Tensor, eps: torch.Tensor, delta: torch.Tensor
) -> None:
    """Matmul: ``z_i += a_i @ δ`` as one product of the parties' ``a`` stacked as rows, and
    ``z_i += ε @ b_i`` as one batched product; both accumulate into ``z`` (no temporaries)."""
    n_parties, rows, cols = z.shape
    z.view(n_parties * rows, cols).addmm_(a.reshape(n_parties * rows, -1), delta)
    z.baddbmm_(eps.expand(n_parties, *eps.shape), b)


def _conv2d_cross_terms(
    z: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    eps: torch.Tensor,
    delta: torch.Tensor,
    *,
    stride: int,
    padding: int,
) -> None:
    """conv2d: ``z_i += conv(ε, b_i) + conv(a_i, δ)``, as two convolutions: ε with every party's
    kernels at once, and every party's ``a_i`` (as one batch of images) with δ. ``z`` is
    (parties, N, O, OH, OW)."""
    n_parties, n, out_channels = z.shape[:3]
    kernels = b.reshape(n_parties * out_channels, *b.shape[2:])
    by_b = ring_conv2d(eps, kernels, stride, padding)  # (N, P·O, OH, OW)
    z += by_b.view(n, n_parties, out_channels, *by_b.shape[2:]).transpose(0, 1)
    z += _stacked_conv2d(a, delta, stride, padding)


def _stacked_conv2d(
    shares: torch.Tensor, kernel: torch.Tensor, stride: int, padding: int
) -> torch.Tensor:
    """Every party's share (parties, N, C, H, W) convolved with one public kernel, as one batch."""
    n_parties, n = shares.shape[:2]
    out = ring_conv2d(shares.reshape(n_parties * n, *shares.shape[2:]), kernel, stride, padding)
    return out.view(n_parties, n, *out.shape[1:])


def _share_dim(dim: object, ndim: int, what: str = "dim") -> int:
    """The shares' dimension for dimension ``dim`` of a value with ``ndim`` dimensions.

    The shares carry the party on dimension 0, so value dimension ``d`` is shares dimension
    ``d + 1``; a negative ``d`` counts from the end (``-1`` is the last). ``IndexError`` (as torch
    raises) unless ``-ndim <= d < ndim`` — otherwise a negative ``d`` could land on the party axis
    and mix the parties' shares (summing them would open the secret to every party). Always
    returns a positive shares dimension. ``TypeError`` unless ``dim`` is an integer.
    """
    d = as_integer(dim, what)
    if not -ndim <= d < ndim:
        raise IndexError(
            f"{what} = {d} is out of range: expected {-ndim} to {ndim - 1} (the parties' axis of "
            "the shares is not a dimension of the value)"
        )
    return d % ndim + 1


def _python_scalar(value: object) -> object:
    """A NumPy integer or float as the Python number it holds (NumPy integers are integers, as in
    :mod:`course_lib.validation`); a NumPy bool is refused like a Python bool; anything else
    unchanged."""
    if isinstance(value, np.bool_):
        raise TypeError("cannot combine a SharedTensor with a bool; use 0 or 1")
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def _operand(value: object) -> SharedTensor | int | float | torch.Tensor:
    """``value`` if it can meet a SharedTensor in arithmetic, else ``TypeError`` (bools too)."""
    value = _python_scalar(value)
    if isinstance(value, bool) or not isinstance(value, SharedTensor | int | float | torch.Tensor):
        raise TypeError(
            f"cannot combine a SharedTensor with {type(value).__name__}; use a number, a "
            "torch tensor or another SharedTensor"
        )
    return value


class SharedTensor:
    """Stacked shares ``(n_parties, *shape)`` of fixed-point values with ``scale_bits`` bits.

    ``scale_bits`` is the session precision for real numbers and 0 for plain integers and bits (what
    comparisons return). Create one with :meth:`Session.share`, get the value back with
    :meth:`reveal` (which makes it public — only do that for results that may be seen).
    """

    def __init__(self, shares: torch.Tensor, session: Session, scale_bits: int) -> None:
        check_on_cpu(check_ring_tensor(shares, "the shares"), "the shares")
        scale_bits = check_int_in_range(
            scale_bits, "scale_bits (fractional bits of the fixed-point values)", 0, MAX_SCALE_BITS
        )
        if not isinstance(session, Session):
            raise TypeError(
                f"session must be a course_lib.smpc.Session, got {type(session).__name__}"
            )
        if shares.dim() == 0 or shares.shape[0] != session.n_parties:
            raise ValueError(
                f"mixed party counts: the session has {session.n_parties} parties but "
                f"{shares.shape[0] if shares.dim() else 0} shares were given (dimension 0)"
            )
        self._shares = shares
        self.session = session
        self.scale_bits = scale_bits

    @property
    def shares(self) -> torch.Tensor:
        """The stacked shares ``(n_parties, *shape)``: row ``i`` is what party ``i`` holds.

        Holding all rows at once is holding the secret (their sum), which no real party ever
        does. The protocol code in :mod:`course_lib.smpc` works on them as the simulator of all
        parties; a read from anywhere else (a lesson looking at one share, a learner's function)
        is counted in ``session.log.share_reads``, so a checker can tell a function that computed
        on shares from one that looked at them.
        """
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if not (caller == "course_lib.smpc" or caller.startswith("course_lib.smpc.")):
            self.session.log.record_share_read()
        return self._shares

    # -- basics -------------------------------------------------------------------------------
    @property
    def shape(self) -> torch.Size:
        return self._shares.shape[1:]

    @property
    def n_parties(self) -> int:
        return self.session.n_parties

    def numel(self) -> int:
        return self._shares[0].numel()

    def dim(self) -> int:
        return self._shares.dim() - 1

    def __repr__(self) -> str:
        return (
            f"SharedTensor(shape={tuple(self.shape)}, parties={self.n_parties}, "
            f"scale_bits={self.scale_bits})"
        )

    def _new(self, shares: torch.Tensor, scale_bits: int | None = None) -> SharedTensor:
        """A tensor of the same session from shares the protocol code computed itself.

        Internal path: ``shares`` come from torch operations on this tensor's own int64 CPU shares
        (or the dealer's), so only the cheap invariant is checked again — one share per party on
        dimension 0, a guard against any shape operation reaching the parties' axis (the public
        constructor checks everything it is given).
        """
        if shares.dim() == 0 or shares.shape[0] != self.session.n_parties:
            raise ValueError(
                f"internal error: an operation produced {shares.shape[0] if shares.dim() else 0} "
                f"shares on dimension 0 for a session of {self.session.n_parties} parties"
            )
        out = SharedTensor.__new__(SharedTensor)
        out._shares = shares
        out.session = self.session
        out.scale_bits = self.scale_bits if scale_bits is None else scale_bits
        return out

    def reveal(self, to: int | str | None = None) -> torch.Tensor:
        """Open the tensor (one round) and decode it to float64.

        ``to=None`` opens it to **every** party (each sends its share to all others); ``to=i``
        delivers it to party ``i`` only and ``to="patient"`` (any name) to someone outside the
        computation — the others never see it. The receiver is recorded in ``session.log.outputs``
        and the messages are charged to the log (operation ``"reveal"``). All parties live in this
        one process, so the returned tensor is what the receiver gets.
        """
        with self.session.log.operation("reveal"):
            ring = self.session.deliver(self._shares, to)
        return self.session.encoder.decode(ring, self.scale_bits)

    # -- shape operations (local) ---------------------------------------------------------------
    def reshape(self, *shape: int) -> SharedTensor:
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], Sequence) else shape
        return self._new(self._shares.reshape(self.n_parties, *shape))

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> SharedTensor:
        """``torch.flatten`` of the values (dimension 0 of the shares is the party).

        A 0-dimensional tensor becomes 1-dimensional (as in torch); ``start_dim`` and ``end_dim``
        must be valid dimensions of the value (``IndexError`` otherwise, as in torch).
        """
        ndim = max(self.dim(), 1)  # torch lets dims 0 and -1 name a scalar's (absent) dimension
        start = _share_dim(start_dim, ndim, "flatten's start_dim")
        end = _share_dim(end_dim, ndim, "flatten's end_dim")
        if start > end:
            raise ValueError(
                f"flatten's start_dim ({start_dim}) comes after its end_dim ({end_dim})"
            )
        if self.dim() == 0:
            return self._new(self._shares.reshape(self.n_parties, 1))
        return self._new(self._shares.flatten(start, end))

    def view(self, *shape: int) -> SharedTensor:
        """The same as :meth:`reshape` (shares are copied when needed, like ``torch.reshape``)."""
        return self.reshape(*shape)

    def size(self, dim: int | None = None) -> torch.Size | int:
        """``torch.Tensor.size``: the public shape, or its length along ``dim``."""
        if dim is None:
            return self.shape
        return self.shape[_share_dim(dim, self.dim(), "size's dim") - 1]

    def transpose(self, dim0: int, dim1: int) -> SharedTensor:
        """``torch.transpose`` of the values: dims are the value's (never the parties' axis)."""
        ndim = max(self.dim(), 1)
        d0 = _share_dim(dim0, ndim, "transpose's dim0")
        d1 = _share_dim(dim1, ndim, "transpose's dim1")
        if self.dim() == 0:
            return self._new(self._shares)
        return self._new(self._shares.transpose(d0, d1))

    @property
    def T(self) -> SharedTensor:  # noqa: N802 — mirrors torch.Tensor.T
        if self.dim() != 2:
            raise ValueError(f".T needs a 2-D SharedTensor, this one has shape {tuple(self.shape)}")
        return self.transpose(0, 1)

    def expand(self, *shape: int) -> SharedTensor:
        """``torch.Tensor.expand`` of the values (new dimensions are added in front of the value's,
        never in front of the parties' axis)."""
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], Sequence) else shape
        missing = len(shape) - self.dim()
        if missing < 0:
            raise ValueError(
                f"expand needs at least {self.dim()} sizes for a SharedTensor of shape "
                f"{tuple(self.shape)}, got {tuple(shape)}"
            )
        shares = self._shares.reshape(self.n_parties, *([1] * missing), *self.shape)
        return self._new(shares.expand(self.n_parties, *shape).contiguous())

    def unsqueeze(self, dim: int) -> SharedTensor:
        """``torch.unsqueeze``: ``dim`` ranges over ``-(d + 1) … d`` for a d-dimensional value."""
        return self._new(self._shares.unsqueeze(_share_dim(dim, self.dim() + 1, "unsqueeze's dim")))

    def __getitem__(self, index: object) -> SharedTensor:
        index = index if isinstance(index, tuple) else (index,)
        if all(isinstance(i, _BASIC_INDEX) and not isinstance(i, bool) for i in index):
            return self._new(self._shares[(slice(None), *index)])  # basic indexing: views
        # Advanced indexing (tensors, lists, bools) may move the indexed dimensions to the front
        # (when they are not adjacent), past the parties' axis: index each party's share alone.
        return self._new(torch.stack([share[index] for share in self._shares]))

    def sum(self, dim: int | None = None) -> SharedTensor:
        """The sum of all values, or along the value's dimension ``dim`` (local)."""
        if dim is None:
            return self._new(self._shares.reshape(self.n_parties, -1).sum(dim=1))
        d = _share_dim(dim, max(self.dim(), 1), "sum's dim")
        if self.dim() == 0:
            return self._new(self._shares)
        return self._new(self._shares.sum(dim=d))

    @staticmethod
    def cat(tensors: Sequence[SharedTensor], dim: int = 0) -> SharedTensor:
        """Concatenate shared tensors of one session along the values' dimension ``dim`` (at the
        largest of their scales). ``IndexError`` if ``dim`` is not a dimension of the values."""
        if not isinstance(tensors, Sequence):
            raise TypeError(
                f"SharedTensor.cat takes a list or tuple of SharedTensors, got {type(tensors)}"
            )
        if not tensors:
            raise ValueError("SharedTensor.cat needs at least one SharedTensor")
        for t in tensors:
            if not isinstance(t, SharedTensor):
                raise TypeError(f"SharedTensor.cat takes SharedTensors, got {type(t).__name__}")
        first = tensors[0]
        for t in tensors[1:]:
            first._check_compatible(t)
        if first.dim() == 0:
            raise ValueError("zero-dimensional SharedTensors cannot be concatenated (unsqueeze)")
        d = _share_dim(dim, first.dim(), "cat's dim")
        aligned = [t._rescaled(max(u.scale_bits for u in tensors)) for t in tensors]
        return aligned[0]._new(torch.cat([t._shares for t in aligned], dim=d))

    # -- checks and public values -----------------------------------------------------------------
    def _check_compatible(self, other: SharedTensor) -> None:
        if other.n_parties != self.n_parties:
            raise ValueError(
                "mixed party counts: cannot combine a tensor shared among "
                f"{self.n_parties} parties with one shared among {other.n_parties}"
            )
        if other.session is not self.session:
            raise ValueError("these SharedTensors belong to different sessions and cannot be mixed")

    def _rescaled(self, scale_bits: int) -> SharedTensor:
        """The same values with more fractional bits (exact, local)."""
        if scale_bits == self.scale_bits:
            return self
        return self._new(self._shares << (scale_bits - self.scale_bits), scale_bits)

    def _encode_public(self, public: object, scale_bits: int) -> torch.Tensor:
        value = _python_scalar(public)
        if isinstance(value, bool) or not isinstance(value, int | float | torch.Tensor):
            raise TypeError(
                f"cannot combine a SharedTensor with {type(value).__name__}; use a number, a "
                "torch tensor or another SharedTensor"
            )
        encoded = self.session.encoder.encode(value, scale_bits)
        if scale_bits == 0 and not torch.equal(
            encoded.double(), torch.as_tensor(value, dtype=torch.float64, device="cpu")
        ):
            raise ValueError(
                "a SharedTensor of integers (scale 0) can only be combined with integers"
            )
        return encoded

    def _broadcast_shares(self, shape: torch.Size) -> torch.Tensor:
        """The shares broadcast to ``(n_parties, *shape)`` (NumPy rules, ignoring the party dim)."""
        missing = len(shape) - self.dim()
        shares = self._shares.reshape(self.n_parties, *([1] * missing), *self.shape)
        return shares.expand(self.n_parties, *shape)

    def _add_public_to_party0(self, public: torch.Tensor) -> torch.Tensor:
        """Shares of ``self + public``: party 0 adds the public value, the others keep theirs."""
        out = self._broadcast_shares(torch.broadcast_shapes(self.shape, public.shape)).clone()
        out[0] += public
        return out

    # -- addition and subtraction (local) -------------------------------------------------------
    def __add__(self, other: SharedTensor | Public) -> SharedTensor:
        if isinstance(other, SharedTensor):
            self._check_compatible(other)
            scale = max(self.scale_bits, other.scale_bits)
            a, b = self._rescaled(scale), other._rescaled(scale)
            shape = torch.broadcast_shapes(a.shape, b.shape)
            return self._new(a._broadcast_shares(shape) + b._broadcast_shares(shape), scale)
        public = self._encode_public(other, self.scale_bits)
        return self._new(self._add_public_to_party0(public))

    __radd__ = __add__

    def __neg__(self) -> SharedTensor:
        return self._new(-self._shares)

    def __sub__(self, other: SharedTensor | Public) -> SharedTensor:
        return self + (-_operand(other))

    def __rsub__(self, other: Public) -> SharedTensor:
        return (-self) + _operand(other)

    # -- multiplication -------------------------------------------------------------------------
    def __mul__(self, other: SharedTensor | Public) -> SharedTensor:
        """Elementwise product: with a shared tensor of the same shape (a Beaver triple, one round
        + the fused truncation), or with a public number or tensor (local + one truncation; a
        public integer scales the shares exactly, with no truncation).

        Range: exact to 1 ulp only while every product is at most ``2^62`` ring units in magnitude
        before truncation; beyond, the result is silently wrong with probability about
        ``(|x| − 2^62) / 2^63`` (module docstring).
        """
        if isinstance(other, SharedTensor):
            if self.shape != other.shape:
                raise ValueError(
                    f"elementwise product needs equal shapes, got {tuple(self.shape)} and "
                    f"{tuple(other.shape)} (use .expand to broadcast)"
                )
            return self._beaver(other, torch.mul, "mul", _mul_cross_terms)
        scalar = _python_scalar(other)
        if isinstance(scalar, int) and not isinstance(scalar, bool):
            return self._new(self._shares * scalar)  # exact, stays at the same scale
        if isinstance(scalar, float) or (isinstance(scalar, torch.Tensor) and scalar.dim() == 0):
            # a public scalar factor: refuse it if fixed point would round it too far (encoding.py)
            check_public_constant(scalar, self.session.precision_bits, "the public factor")
        self._check_product_scale(self.session.precision_bits)
        public = self._encode_public(scalar, self.session.precision_bits)
        shape = torch.broadcast_shapes(self.shape, public.shape)
        return self._public_product(self._broadcast_shares(shape) * public)

    __rmul__ = __mul__

    def __matmul__(self, other: SharedTensor | torch.Tensor) -> SharedTensor:
        """2-D matrix product with a shared or public matrix (one round + the fused truncation;
        local + one truncation for a public one).

        Range: exact to 1 ulp only while every output (a sum of products) is at most ``2^62`` ring
        units in magnitude before truncation; beyond, the result is silently wrong with probability
        about ``(|x| − 2^62) / 2^63`` (module docstring).
        """
        if not isinstance(other, SharedTensor | torch.Tensor):
            raise TypeError(f"cannot matmul a SharedTensor with {type(other).__name__}")
        if self.dim() != 2 or other.dim() != 2:
            raise ValueError(
                "@ multiplies 2-D matrices, got shapes "
                f"{tuple(self.shape)} and {tuple(other.shape)}"
            )
        if self.shape[1] != other.shape[0]:
            raise ValueError(
                f"cannot multiply shapes {tuple(self.shape)} and {tuple(other.shape)}: "
                "inner dimensions differ"
            )
        if isinstance(other, SharedTensor):
            return self._beaver(other, ring_matmul, "matmul", _matmul_cross_terms)
        self._check_product_scale(self.session.precision_bits)
        public = self._encode_public(other, self.session.precision_bits)
        n_parties, (rows, inner) = self.n_parties, self.shape
        # every party's share times the public matrix, in one product: the shares stacked as rows
        product = self._shares.reshape(n_parties * rows, inner) @ public
        return self._public_product(product.view(n_parties, rows, -1))

    def __rmatmul__(self, other: torch.Tensor) -> SharedTensor:
        return (self.T @ other.T).T

    def conv2d(self, weight: SharedTensor | torch.Tensor, stride: int = 1, padding: int = 0):
        """``torch.nn.functional.conv2d(self, weight, stride=, padding=)`` (no bias).

        ``stride`` is an int ≥ 1 and ``padding`` an int ≥ 0 (the same in both directions).

        Range: exact to 1 ulp only while every output (a sum of products) is at most ``2^62`` ring
        units in magnitude before truncation; beyond, the result is silently wrong with probability
        about ``(|x| − 2^62) / 2^63`` (module docstring).
        """
        if not isinstance(weight, SharedTensor | torch.Tensor):
            raise TypeError(f"the kernel must be a SharedTensor or a tensor, got {type(weight)}")
        conv2d_output_shape(tuple(self.shape), tuple(weight.shape), stride, padding)

        def conv(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            return ring_conv2d(x, w, stride, padding)

        if isinstance(weight, SharedTensor):
            cross = functools.partial(_conv2d_cross_terms, stride=stride, padding=padding)
            return self._beaver(weight, conv, "conv2d", cross)
        self._check_product_scale(self.session.precision_bits)
        public = self._encode_public(weight, self.session.precision_bits)
        return self._public_product(_stacked_conv2d(self._shares, public, stride, padding))

    def _check_product_scale(self, extra_bits: int) -> None:
        """``ValueError`` (before anything is sent) if a product would carry more than
        :data:`MAX_SCALE_BITS` fractional bits before its truncation."""
        if self.scale_bits + extra_bits > MAX_SCALE_BITS:
            raise ValueError(
                f"the product would have scale_bits = {self.scale_bits} + {extra_bits} fractional "
                f"bits, more than the {MAX_SCALE_BITS} a 64-bit ring can hold; truncate the "
                "operands first"
            )

    def _public_product(self, shares: torch.Tensor) -> SharedTensor:
        """Shares (computed locally from this tensor's and a public value at the session's
        precision), truncated back to the session's precision."""
        product = self._new(shares, self.scale_bits + self.session.precision_bits)
        return product._truncate_to_precision()

    def _beaver(
        self, other: SharedTensor, op: RingOp, name: str, cross_terms: CrossTerms
    ) -> SharedTensor:
        """``op(self, other)`` for bilinear ``op`` with a Beaver triple (one round + truncation).

        ``cross_terms(z, a, b, eps, delta)`` adds every party's ``op(ε, b_i) + op(a_i, δ)`` to its
        row of ``z`` in place (batched over the parties: a few large torch calls, not one per
        party). The truncation back to the session precision is fused in: the parties only ever
        open the masked product.
        """
        self._check_compatible(other)
        self._check_product_scale(other.scale_bits)
        session, scale_bits = self.session, self.scale_bits + other.scale_bits
        excess = scale_bits - session.precision_bits
        with session.log.operation(name):
            a, b, c = session.dealer.beaver_triple(op, tuple(self.shape), tuple(other.shape))
            eps, delta = session.open(self._shares - a, other._shares - b)
            # Party 0 also adds ε∘δ: it uses b_0 + δ for its ε∘b_0 (the triple is used only once).
            b[0] += delta
            if excess <= 0:
                z = c.contiguous()  # the dealer's fresh shares of op(a, b), completed in place
                cross_terms(z, a, b, eps, delta)
                return self._new(z, scale_bits)
            # the truncation (charged to `name`, the outermost operation, like everything here)
            mask, if_nonneg, if_neg = session.dealer.truncation_mask(tuple(c.shape[1:]), excess)
            masked = c + mask  # shares of op(x, y) + 2^62 + r, never of the product alone
            cross_terms(masked, a, b, eps, delta)
            out = self._open_truncated(masked, if_nonneg, if_neg, excess)
        return self._new(out, scale_bits - excess)

    # -- truncation -------------------------------------------------------------------------------
    def _truncate_to_precision(self) -> SharedTensor:
        excess = self.scale_bits - self.session.precision_bits
        return self.truncate(excess) if excess > 0 else self

    def truncate(self, bits: int) -> SharedTensor:
        """Divide by ``2^bits`` (drop fractional bits): error ≤ 1 ulp, see the module docstring.

        Exact to 1 ulp only while the value is at most ``2^62`` ring units in magnitude (its
        integer before the shift); beyond, the result is silently wrong with probability about
        ``(|x| − 2^62) / 2^63`` per element (measured: ``x = 1.5·2^62`` wrong in 24.9 % of runs).
        """
        bits = as_integer(bits, "truncate's number of bits")
        if not 0 < bits <= self.scale_bits:
            raise ValueError(
                f"can truncate by 1 to scale_bits = {self.scale_bits} bits (the fractional bits "
                f"this tensor has), got {bits}"
            )
        session = self.session
        with session.log.operation("truncate"):
            mask, if_nonneg, if_neg = session.dealer.truncation_mask(tuple(self.shape), bits)
            out = self._open_truncated(self._shares + mask, if_nonneg, if_neg, bits)
        return self._new(out, self.scale_bits - bits)

    def _open_truncated(
        self, masked: torch.Tensor, if_nonneg: torch.Tensor, if_neg: torch.Tensor, bits: int
    ) -> torch.Tensor:
        """Open ``c = x + 2^62 + r`` (``masked`` holds its shares) and return shares of about
        ``x / 2^bits`` (floor or one more).

        With ``c_high`` the logical shift of ``c`` and the wrap-around bit
        ``w = msb(r)·(1 − msb(c))``, the result is ``c_high − 2^(62−f) − (r >> f) + w·2^(64−f)``
        (module docstring). Everything in it that depends on ``r`` comes from the dealer
        (:meth:`.Dealer.truncation_mask`), for either sign of ``c`` as an int64: the parties pick
        one with the public sign, and party 0 adds the arithmetic shift ``c >> f`` (which is
        ``c_high − 2^(64−f)`` for a negative ``c``: ``if_neg`` puts the ``2^(64−f)`` back).
        """
        (c,) = self.session.open(masked)
        # in place: the dealer's shares serve this truncation only
        out = torch.where(c < 0, if_neg, if_nonneg, out=if_nonneg)
        out[0] += c >> bits
        return out

    # -- comparisons (defined in course_lib.smpc.comparison) -------------------------------------
    def ltz(self) -> SharedTensor:
        """Shared bits (scale 0): 1 where the value is negative. Exact; see comparison.py."""
        from course_lib.smpc.comparison import less_than_zero

        return less_than_zero(self)

    def __bool__(self) -> bool:
        raise TypeError(
            "the truth value of a SharedTensor is secret: no party knows it, so Python cannot "
            "branch on it (`if x < y:`). Compute with the shared 0/1 result instead (e.g. "
            "`b * x + (1 - b) * y`), or reveal it if it may become public"
        )

    def __eq__(self, other: SharedTensor | Public) -> SharedTensor:  # type: ignore[override]
        """Shared bits, 1 where ``self == other`` (exact): ``1 − [x < y] − [y < x]``.

        Two secure comparisons (see :mod:`.comparison`), batched into one circuit evaluation so
        they share its rounds (as CrypTen's ``MPCTensor.ne`` does); the result stays
        secret-shared. Anything but a SharedTensor, a number or a tensor raises ``TypeError``
        (never a plain ``False``).
        """
        diff = self - _operand(other)
        with self.session.log.operation("eq"):
            below = SharedTensor.cat([diff.unsqueeze(0), (-diff).unsqueeze(0)]).ltz()
            return 1 - below[0] - below[1]

    def __ne__(self, other: SharedTensor | Public) -> SharedTensor:  # type: ignore[override]
        return 1 - (self == other)

    __hash__ = object.__hash__  # identity, like torch.Tensor (== no longer returns a bool)

    def __lt__(self, other: SharedTensor | Public) -> SharedTensor:
        return (self - other).ltz()

    def __gt__(self, other: SharedTensor | Public) -> SharedTensor:
        return (-(self - other)).ltz()

    def __ge__(self, other: SharedTensor | Public) -> SharedTensor:
        return 1 - (self - other).ltz()

    def __le__(self, other: SharedTensor | Public) -> SharedTensor:
        return 1 - (-(self - other)).ltz()

    def relu(self) -> SharedTensor:
        from course_lib.smpc.comparison import relu

        return relu(self)
