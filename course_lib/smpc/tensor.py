"""``SharedTensor``: a tensor secret-shared among the parties of a :class:`~.session.Session`.

Linear operations are local — each party works on its own share, nobody talks:

- ``x + y``, ``x − y`` (shared or public), ``x * k`` for a public integer ``k``, reshaping,
  indexing, sums.

Products of two shared tensors use a **Beaver triple** ``(a, b, c = a ∘ b)`` from the dealer, for
any bilinear ``∘`` (elementwise ``*``, ``@``, ``conv2d``). The parties open ``ε = x − a`` and
``δ = y − b`` — uniformly random, so they reveal nothing — and compute, locally,
``x ∘ y = c + ε ∘ b + a ∘ δ + ε ∘ δ`` (the last term by party 0 only). One round.

Fixed-point **truncation.** A product of two numbers with ``f`` fractional bits has ``2f``; it
must be divided by ``2^f``. Shares cannot simply be shifted (their sum wraps around 2^64). We use a
mask from the dealer: shares of a uniform ``r``, of ``r >> f`` and of ``msb(r)``. The parties open
``c = x + 2^62 + r`` (uniform: reveals nothing) and compute ``(c >> f) − (r >> f)``, correcting the
one possible wrap-around of ``c`` exactly with ``msb(r)`` (it wrapped iff ``msb(r) = 1`` and
``msb(c) = 0``). The only error is the borrow from the dropped low bits: the result is
``floor(x / 2^f)`` or one more — **at most 1 ulp (2^-f) of error**, an unbiased stochastic rounding,
with **no failure probability** as long as ``|x| < 2^62`` before truncation (guaranteed for products
of encodable values, see :mod:`.encoding`). One round. (The popular local truncation of SecureML —
each party shifts its own share — also has a ±1 ulp error but fails with probability about
``|x| / 2^63`` per element, giving a huge wrong value.)
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import numpy as np
import torch

from course_lib.fixed_point import check_ring_tensor
from course_lib.smpc.encoding import check_public_constant
from course_lib.smpc.ring import check_on_cpu, conv2d_output_shape, ring_conv2d, ring_matmul
from course_lib.smpc.session import Session
from course_lib.validation import as_integer, check_int_in_range

__all__ = ["SharedTensor"]

Public = int | float | torch.Tensor

#: A product of two values at the largest precision (30 bits) briefly has 60 fractional bits.
MAX_SCALE_BITS = 60
RingOp = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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
        return SharedTensor(
            shares, self.session, self.scale_bits if scale_bits is None else scale_bits
        )

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
        """``torch.flatten`` of the values (dimension 0 of the shares is the party)."""
        start, end = (d + 1 if d >= 0 else d for d in (start_dim, end_dim))
        return self._new(self._shares.flatten(start, end))

    def view(self, *shape: int) -> SharedTensor:
        """The same as :meth:`reshape` (shares are copied when needed, like ``torch.reshape``)."""
        return self.reshape(*shape)

    def size(self, dim: int | None = None) -> torch.Size | int:
        """``torch.Tensor.size``: the public shape, or its length along ``dim``."""
        return self.shape if dim is None else self.shape[dim]

    def transpose(self, dim0: int, dim1: int) -> SharedTensor:
        d0, d1 = (d + 1 if d >= 0 else d for d in (dim0, dim1))
        return self._new(self._shares.transpose(d0, d1))

    @property
    def T(self) -> SharedTensor:  # noqa: N802 — mirrors torch.Tensor.T
        if self.dim() != 2:
            raise ValueError(f".T needs a 2-D SharedTensor, this one has shape {tuple(self.shape)}")
        return self.transpose(0, 1)

    def expand(self, *shape: int) -> SharedTensor:
        return self._new(self._shares.expand(self.n_parties, *shape).contiguous())

    def unsqueeze(self, dim: int) -> SharedTensor:
        return self._new(self._shares.unsqueeze(dim + 1 if dim >= 0 else dim))

    def __getitem__(self, index) -> SharedTensor:
        index = index if isinstance(index, tuple) else (index,)
        return self._new(self._shares[(slice(None), *index)])

    def sum(self, dim: int | None = None) -> SharedTensor:
        if dim is None:
            return self._new(self._shares.reshape(self.n_parties, -1).sum(dim=1))
        return self._new(self._shares.sum(dim=dim + 1 if dim >= 0 else dim))

    @staticmethod
    def cat(tensors: Sequence[SharedTensor], dim: int = 0) -> SharedTensor:
        """Concatenate shared tensors of one session and scale along ``dim``."""
        first = tensors[0]
        for t in tensors[1:]:
            first._check_compatible(t)
        aligned = [t._rescaled(max(u.scale_bits for u in tensors)) for t in tensors]
        shares = torch.cat([t._shares for t in aligned], dim=dim + 1 if dim >= 0 else dim)
        return aligned[0]._new(shares)

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
        if isinstance(other, SharedTensor):
            if self.shape != other.shape:
                raise ValueError(
                    f"elementwise product needs equal shapes, got {tuple(self.shape)} and "
                    f"{tuple(other.shape)} (use .expand to broadcast)"
                )
            return self._beaver(other, torch.mul, "mul")
        scalar = _python_scalar(other)
        if isinstance(scalar, int) and not isinstance(scalar, bool):
            return self._new(self._shares * scalar)  # exact, stays at the same scale
        if isinstance(scalar, float) or (isinstance(scalar, torch.Tensor) and scalar.dim() == 0):
            # a public scalar factor: refuse it if fixed point would round it too far (encoding.py)
            check_public_constant(scalar, self.session.precision_bits, "the public factor")
        public = self._encode_public(scalar, self.session.precision_bits)
        return self._public_product(lambda s: s * public, self.session.precision_bits)

    __rmul__ = __mul__

    def __matmul__(self, other: SharedTensor | torch.Tensor) -> SharedTensor:
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
            return self._beaver(other, ring_matmul, "matmul")
        public = self._encode_public(other, self.session.precision_bits)
        return self._public_product(lambda s: ring_matmul(s, public), self.session.precision_bits)

    def __rmatmul__(self, other: torch.Tensor) -> SharedTensor:
        return (self.T @ other.T).T

    def conv2d(self, weight: SharedTensor | torch.Tensor, stride: int = 1, padding: int = 0):
        """``torch.nn.functional.conv2d(self, weight, stride=, padding=)`` (no bias).

        ``stride`` is an int ≥ 1 and ``padding`` an int ≥ 0 (the same in both directions).
        """
        if not isinstance(weight, SharedTensor | torch.Tensor):
            raise TypeError(f"the kernel must be a SharedTensor or a tensor, got {type(weight)}")
        conv2d_output_shape(tuple(self.shape), tuple(weight.shape), stride, padding)

        def conv(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            return ring_conv2d(x, w, stride, padding)

        if isinstance(weight, SharedTensor):
            return self._beaver(weight, conv, "conv2d")
        public = self._encode_public(weight, self.session.precision_bits)
        return self._public_product(lambda s: conv(s, public), self.session.precision_bits)

    def _public_product(self, op: Callable[[torch.Tensor], torch.Tensor], extra_bits: int):
        shares = torch.stack([op(s) for s in self._shares])
        return self._new(shares, self.scale_bits + extra_bits)._truncate_to_precision()

    def _beaver(self, other: SharedTensor, op: RingOp, name: str) -> SharedTensor:
        """``op(self, other)`` for bilinear ``op`` with a Beaver triple (one round + truncation)."""
        self._check_compatible(other)
        session = self.session
        with session.log.operation(name):
            a, b, c = session.dealer.beaver_triple(op, tuple(self.shape), tuple(other.shape))
            eps, delta = session.open(self._shares - a, other._shares - b)
            z = c  # the dealer's fresh shares of op(a, b), completed in place (no copies)
            for i in range(self.n_parties):
                b_i = b[i] + delta if i == 0 else b[i]  # party 0 also adds ε∘δ
                z[i] += op(eps, b_i)
                z[i] += op(a[i], delta)
            product = self._new(z, self.scale_bits + other.scale_bits)
            return product._truncate_to_precision()

    # -- truncation -------------------------------------------------------------------------------
    def _truncate_to_precision(self) -> SharedTensor:
        excess = self.scale_bits - self.session.precision_bits
        return self.truncate(excess) if excess > 0 else self

    def truncate(self, bits: int) -> SharedTensor:
        """Divide by ``2^bits`` (drop fractional bits): error ≤ 1 ulp, see the module docstring."""
        bits = as_integer(bits, "truncate's number of bits")
        if not 0 < bits <= self.scale_bits:
            raise ValueError(
                f"can truncate by 1 to scale_bits = {self.scale_bits} bits (the fractional bits "
                f"this tensor has), got {bits}"
            )
        session = self.session
        with session.log.operation("truncate"):
            r, r_high, r_msb = session.dealer.truncation_mask(tuple(self.shape), bits)
            masked = self._shares + r
            masked[0] += 1 << 62  # party 0 adds the public 2^62: shares of x + 2^62 + r
            (c,) = session.open(masked)
            c_high = (c >> bits) & ((1 << (64 - bits)) - 1)  # logical shift of c
            wrapped = r_msb * (c >= 0)  # shares of msb(r)·(1 − msb(c)): did x + r wrap?
            out = (wrapped << (64 - bits)) - r_high
            out[0] += c_high - (1 << (62 - bits))
        return self._new(out, self.scale_bits - bits)

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
