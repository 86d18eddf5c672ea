"""Encrypted inference with CKKS (TenSEAL): a server classifies an image it cannot see.

CKKS encrypts a whole vector of real numbers into one ciphertext of ``N/2`` *slots* and supports
slot-wise addition and multiplication, plus *rotations* of the slots (the expensive operation). The
results are approximate: every value carries a small error, like floating point.

**Levels.** Each multiplication is followed by a *rescale* that drops one prime from the
ciphertext's coefficient modulus. With ``coeff_mod_bit_sizes = [41, 33, 33, 33, 33, 45]`` there are
four middle primes, so a ciphertext survives four multiplications in a row (multiplicative *depth*
4); a fifth fails with TenSEAL's ``scale out of bounds``. That is why the network uses ``x²`` as its
activation (one multiplication) instead of ReLU (no polynomial at all). ``N = 8192`` allows at most
218 bits of modulus for 128-bit security; these sizes use 218.

**The network** (:class:`HEFriendlyMLP`): average-pool the 28×28 image to ``side × side`` (public
pre-processing done by the client), ``Linear(side², hidden)``, ``x²``, ``Linear(hidden, 10)``.

**The packing** (:class:`EncryptedMLP`) is chosen to need few rotations, because rotations dominate
the cost:

* *first layer* — the client encrypts its input *tiled*: a ``hidden × columns`` matrix whose every
  row is ``[x, 1, 0, …]`` (the 1 carries the bias), stored column by column so it fills all
  ``N/2`` slots (``ts.enc_matmul_encoding``). The server multiplies slot-wise by its weight matrix
  laid out the same way and sums each row with ``enc_matmul_plain`` — ``log2(columns)`` rotations
  (8 for a 14×14 image) instead of one rotation per input pixel (196) with ``CKKSVector.mm``.
* *second layer* — ``CKKSVector.mm``, TenSEAL's diagonal method: one plaintext product and one
  rotation per diagonal of the ``hidden × 10`` weight matrix, ``hidden − 1`` rotations (15) for a
  dense matrix (the first diagonal needs none). It works because the row sum above leaves every
  hidden unit replicated all around the ring (slot ``k`` holds unit ``k mod hidden``).

  Why not lay layer 2 out like layer 1 (multiply, then ``log2(hidden)`` rotate-and-sum)? That needs
  a ``10 · hidden``-slot weight product on the replicated hidden units and then a sum over
  *consecutive* slots, and TenSEAL's vector API allows neither at this depth: a ``CKKSVector`` of
  ``hidden`` values multiplies only by ``hidden`` values (and zeroes the other slots), its only
  consecutive-slot sum is ``sum()`` over the whole vector, and resizing it (``pack_vectors``,
  ``enc_matmul_plain``) costs a multiplication, a fifth level. That layout needs SEAL's own
  rotations (``tenseal.sealapi``): ``benchmarks/he.py`` measures it at 8 + 4 rotations and about
  half the time per image. :attr:`EncryptedMLP.rotations` counts the rotations of each layer.

Depth used: weight product, row-sum mask, square, second layer = 4.

**Parameters that fit together** (:func:`check_parameters`, called by :func:`make_context`). A
rescale divides by the next middle prime, so every middle prime must be as large as the scale
(``2^scale_bits``): with a smaller scale each rescale shrinks it further and the result decrypts to
garbage; with a larger one the first rescale fails. The first prime must exceed the scale — its
extra bits are the room for the result's integer part — and the whole modulus must stay within the
128-bit-security budget of ``N`` (HomomorphicEncryption.org standard, as enforced by SEAL): 109 bits
for ``N = 4096``, 218 for 8192, 438 for 16384, 881 for 32768.

**Output headroom.** After the last rescale only the first prime ``q0`` is left, and a result
``y`` is stored as ``y · 2^scale`` modulo ``q0``: a ``|y|`` beyond about ``q0 / 2^(scale+1)`` *wraps
around silently* and decrypts to a wrong number. :func:`output_headroom` is that bound,
conservatively ``2^(bits(q0) − scale_bits − 2)`` (64 with the default parameters; measured: this
network's logits wrap between 2,000 and 4,000). :class:`EncryptedMLP` designs the problem away: it
bounds the logits over every input with pixels in [0, 1] (interval arithmetic), and if the
bound exceeds the headroom it folds a public factor ``2^-k`` into the last
layer, which the client multiplies back after decrypting (:meth:`EncryptedMLP.decrypt`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import tenseal as ts
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from course_lib.training import fit, make_loader, seed_everything
from course_lib.validation import as_integer, check_positive

__all__ = [
    "DEFAULT_COEFF_MOD_BIT_SIZES",
    "MAX_COEFF_MODULUS_BITS",
    "check_parameters",
    "output_headroom",
    "EncryptedMLP",
    "HEFriendlyMLP",
    "InferenceReport",
    "Square",
    "downsample",
    "encrypted_inference",
    "make_context",
    "public_context",
    "slot_count",
    "train_he_mlp",
]

#: Coefficient modulus for N = 8192: a 41-bit base prime, four 33-bit primes (one per
#: multiplication) and a 45-bit special prime for key switching — 218 bits, the cap for
#: 128-bit security.
DEFAULT_COEFF_MOD_BIT_SIZES = (41, 33, 33, 33, 33, 45)
DEFAULT_SCALE_BITS = 33


#: The largest total coefficient modulus (bits) for 128-bit security, per poly_modulus_degree
#: (HomomorphicEncryption.org security standard; SEAL's ``CoeffModulus::MaxBitCount``).
MAX_COEFF_MODULUS_BITS = {4096: 109, 8192: 218, 16384: 438, 32768: 881}


def check_parameters(
    poly_modulus_degree: int, coeff_mod_bit_sizes: Sequence[int], scale_bits: int
) -> tuple[int, list[int], int]:
    """The parameters as Python ints (NumPy integers accepted, bools refused), or ``ValueError``
    (``TypeError`` for non-integers) explaining why they cannot work together; see the module
    docstring for the rules."""
    poly_modulus_degree = as_integer(poly_modulus_degree, "poly_modulus_degree")
    scale_bits = as_integer(scale_bits, "scale_bits")
    if isinstance(coeff_mod_bit_sizes, str) or not isinstance(coeff_mod_bit_sizes, Sequence):
        raise TypeError(
            f"coeff_mod_bit_sizes must be a list of ints, got {type(coeff_mod_bit_sizes).__name__}"
        )
    sizes = [as_integer(v, "coeff_mod_bit_sizes") for v in coeff_mod_bit_sizes]
    if poly_modulus_degree not in MAX_COEFF_MODULUS_BITS:
        raise ValueError(
            f"poly_modulus_degree must be 4096, 8192, 16384 or 32768, got {poly_modulus_degree}"
        )
    if len(sizes) < 3:
        raise ValueError(
            "coeff_mod_bit_sizes needs a base prime, at least one middle prime and a special prime"
        )
    if not all(20 <= b <= 60 for b in sizes):
        raise ValueError(f"each prime must have 20 to 60 bits (SEAL's limits), got {sizes}")
    budget = MAX_COEFF_MODULUS_BITS[poly_modulus_degree]
    if sum(sizes) > budget:
        raise ValueError(
            f"poly_modulus_degree={poly_modulus_degree} allows at most {budget} bits of "
            f"coefficient modulus for 128-bit security, but coeff_mod_bit_sizes={sizes} total "
            f"{sum(sizes)}: "
            "use fewer or smaller primes (fewer multiplications), or a larger poly_modulus_degree"
        )
    if not 20 <= scale_bits <= 60:
        raise ValueError(f"scale_bits must lie in [20, 60], got {scale_bits}")
    middle = sizes[1:-1]
    if any(b != scale_bits for b in middle):
        raise ValueError(
            f"the scale 2^{scale_bits} does not match the middle primes {middle}: each "
            "multiplication is followed by a rescale that divides by the next middle prime, so "
            "every middle prime must have scale_bits bits (a smaller scale shrinks at each rescale "
            "until the result is garbage; a larger one makes the rescale fail). Set scale_bits "
            f"to {middle[0]} or the middle primes to {scale_bits} bits"
        )
    if sizes[0] <= scale_bits + 2:
        raise ValueError(
            f"the first prime ({sizes[0]} bits) must exceed the scale ({scale_bits} bits) by more "
            "than 2 bits: its extra bits are the only room left for the result's integer part "
            "(see output_headroom)"
        )
    if sizes[-1] < max(sizes[:-1]):
        raise ValueError(
            f"the special (last) prime of {sizes[-1]} bits must be at least as large as the others "
            f"(largest: {max(sizes[:-1])} bits) for key switching to keep its precision"
        )
    return poly_modulus_degree, sizes, scale_bits


def output_headroom(
    coeff_mod_bit_sizes: Sequence[int] = DEFAULT_COEFF_MOD_BIT_SIZES,
    scale_bits: int = DEFAULT_SCALE_BITS,
) -> float:
    """The largest ``|y|`` a fully rescaled result can hold without wrapping around:
    ``2^(bits(q0) − scale_bits − 2)`` (``q0 ≥ 2^(bits(q0) − 1)`` and ``|y| · 2^scale < q0 / 2``).
    64 for the default parameters."""
    return 2.0 ** (list(coeff_mod_bit_sizes)[0] - scale_bits - 2)


def make_context(
    poly_modulus_degree: int = 8192,
    coeff_mod_bit_sizes: Sequence[int] = DEFAULT_COEFF_MOD_BIT_SIZES,
    scale_bits: int = DEFAULT_SCALE_BITS,
) -> ts.Context:
    """A CKKS context holding the secret key, relinearisation and Galois (rotation) keys.

    This is the *client's* context. Send the server ``public_context(ctx)`` instead: the same
    evaluation keys without the secret key. Parameters that cannot work together raise a
    ``ValueError`` saying why (:func:`check_parameters`) before any key is generated; for
    ``poly_modulus_degree=4096`` pass smaller primes too, e.g. ``(30, 24, 24, 30)`` with
    ``scale_bits=24`` (less precision, fewer levels).
    """
    degree, primes, scale_bits = check_parameters(
        poly_modulus_degree, coeff_mod_bit_sizes, scale_bits
    )
    context = ts.context(
        ts.SCHEME_TYPE.CKKS, poly_modulus_degree=degree, coeff_mod_bit_sizes=primes
    )
    context.global_scale = 2.0**scale_bits
    context.generate_galois_keys()
    return context


def public_context(context: ts.Context) -> ts.Context:
    """A copy of ``context`` without the secret key: what the server gets."""
    public = context.copy()
    public.make_context_public()
    return public


def slot_count(context: ts.Context) -> int:
    """How many real numbers one ciphertext of ``context`` holds: ``poly_modulus_degree / 2``."""
    return context.seal_context().data.first_context_data().parms().poly_modulus_degree() // 2


def downsample(images: torch.Tensor, side: int) -> torch.Tensor:
    """Average-pool ``(N, 1, 28, 28)`` images to ``(N, side²)`` (client side, in the clear)."""
    if images.dim() != 4 or images.shape[1] != 1:
        raise ValueError(f"expected images of shape (N, 1, H, W), got {tuple(images.shape)}")
    return F.adaptive_avg_pool2d(images, side).flatten(1)


class Square(nn.Module):
    """The activation ``x ↦ x²``: one ciphertext multiplication, so CKKS can evaluate it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


class HEFriendlyMLP(nn.Module):
    """Pool to ``side × side`` → ``Linear(side², hidden)`` → ``x²`` → ``Linear(hidden, 10)``."""

    def __init__(self, side: int = 14, hidden: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        if side < 1 or hidden < 1:
            raise ValueError(f"side and hidden must be positive, got side={side}, hidden={hidden}")
        self.side, self.hidden = side, hidden
        self.fc1 = nn.Linear(side * side, hidden)
        self.act = Square()
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(downsample(images, self.side))))


def train_he_mlp(
    train_set: TensorDataset,
    *,
    side: int = 14,
    hidden: int = 16,
    epochs: int = 15,
    lr: float = 3e-3,
    seed: int = 0,
    progress: bool = False,
) -> HEFriendlyMLP:
    """Train an :class:`HEFriendlyMLP` in plaintext (Adam, batch 64) on ``(image, label)`` pairs.

    The images are pooled once up front and the layers after the pooling are trained on the
    result (same parameters, much less work per step).
    """
    if not isinstance(train_set, TensorDataset):
        raise TypeError(
            f"train_set must be a TensorDataset of (images, labels), got {type(train_set).__name__}"
        )
    images, labels = train_set.tensors
    seed_everything(seed)
    model = HEFriendlyMLP(side, hidden)
    layers = nn.Sequential(model.fc1, model.act, model.fc2)
    pooled = TensorDataset(downsample(images, side), labels)
    optimizer = torch.optim.Adam(layers.parameters(), lr=lr)
    fit(
        layers,
        make_loader(pooled, 64, seed=seed),
        epochs=epochs,
        optimizer=optimizer,
        progress=progress,
    )
    return model.eval()


def _logit_bound(model: HEFriendlyMLP) -> float:
    """Largest ``|logit|`` over pooled inputs in [0, 1]^(side²), by interval arithmetic."""
    w1, b1 = model.fc1.weight.double(), model.fc1.bias.double()
    h_low, h_high = w1.clamp(max=0).sum(1) + b1, w1.clamp(min=0).sum(1) + b1
    sq_high = torch.maximum(h_low**2, h_high**2)
    sq_low = torch.where((h_low <= 0) & (h_high >= 0), 0.0, torch.minimum(h_low**2, h_high**2))
    w2, b2 = model.fc2.weight.double(), model.fc2.bias.double()
    y_high = torch.maximum(w2 * sq_low, w2 * sq_high).sum(1) + b2
    y_low = torch.minimum(w2 * sq_low, w2 * sq_high).sum(1) + b2
    return float(torch.maximum(y_high.abs(), y_low.abs()).max())


def _diagonal_rotations(matrix: torch.Tensor, slots: int) -> int:
    """Rotations ``CKKSVector.mm(matrix)`` performs: TenSEAL's diagonal ``i`` (``0 ≤ i < rows``)
    holds ``matrix[(i + k) mod rows, k mod cols]`` for ``k < min(slots, rows · cols)``; it is
    skipped when all zero, and diagonal 0 needs no rotation."""
    rows, cols = matrix.shape
    k = torch.arange(min(slots, rows * cols), device=matrix.device)
    return sum(1 for i in range(1, rows) if bool(matrix[(i + k) % rows, k % cols].ne(0).any()))


class EncryptedMLP:
    """The server's half: an :class:`HEFriendlyMLP`'s weights, applied to CKKS ciphertexts.

    :meth:`encrypt` and :meth:`decrypt` are the client's half (they only need the public layout:
    ``side``, ``hidden``, ``columns``, ``output_scale``). ``slots`` is ``poly_modulus_degree / 2``
    of the context that will be used and ``headroom`` its :func:`output_headroom`.

    ``logit_bound`` bounds ``|logit|`` over every image with pixels in [0, 1] (interval
    arithmetic through both layers); when it exceeds half the headroom the last layer is scaled
    by ``1 / output_scale`` (a power of two) so that the encrypted result cannot wrap around.
    """

    #: multiplications in a row: weight product, row-sum mask, square, second layer
    depth = 4

    def __init__(
        self, model: HEFriendlyMLP, slots: int = 4096, headroom: float | None = None
    ) -> None:
        if not isinstance(model, HEFriendlyMLP):
            raise TypeError(f"expected an HEFriendlyMLP, got {type(model).__name__}")
        slots = as_integer(slots, "slots")
        if slots < 1 or slots & (slots - 1):
            raise ValueError(
                f"slots must be a power of two (poly_modulus_degree / 2: slot_count), got {slots}"
            )
        headroom = output_headroom() if headroom is None else check_positive(headroom, "headroom")
        self.side, self.hidden = model.side, model.hidden
        inputs = self.side * self.side
        if self.hidden & (self.hidden - 1):
            raise ValueError(
                f"hidden must be a power of two for the tiled packing, got {self.hidden}"
            )
        self.columns = slots // self.hidden
        if self.columns < inputs + 1:
            raise ValueError(
                f"{inputs} inputs (+1 for the bias) × {self.hidden} hidden units do not fit in "
                f"{slots} slots: use a smaller side or hidden size, or a larger poly_modulus_degree"
            )
        with torch.no_grad():
            # CPU by design: TenSEAL reads the weights as Python lists (.tolist() below)
            w1 = torch.zeros(self.columns, self.hidden, dtype=torch.float64)
            w1[:inputs] = model.fc1.weight.T.double()
            w1[inputs] = model.fc1.bias.double()
            self._w1 = w1.reshape(-1).tolist()  # column c of the tiled input meets row c of W1ᵀ
            self.logit_bound = _logit_bound(model)
            self.output_scale = 2.0 ** max(0, math.ceil(math.log2(2 * self.logit_bound / headroom)))
            w2 = model.fc2.weight.T.double() / self.output_scale
            self._w2 = w2.tolist()
            self._b2 = (model.fc2.bias.double() / self.output_scale).tolist()
        self._ones = [1.0] * self.columns
        #: rotations per layer: the row sum's ``log2(columns)``, and one per non-zero diagonal of
        #: the second layer's matrix after the first (TenSEAL skips zero diagonals)
        self.rotations = {
            "first layer": self.columns.bit_length() - 1,
            "second layer": _diagonal_rotations(w2, slots),
        }

    def encode_input(self, image: torch.Tensor) -> list[list[float]]:
        """The client's tiled plaintext: ``hidden`` identical rows ``[pooled pixels, 1, 0, …]``."""
        if not isinstance(image, torch.Tensor):
            raise TypeError(f"expected the image as a torch.Tensor, got {type(image).__name__}")
        if image.dim() == 3:
            image = image.unsqueeze(0)
        if image.shape[0] != 1:
            raise ValueError(f"encrypt one image at a time, got a batch of {image.shape[0]}")
        pooled = downsample(image, self.side)[0].double()
        if pooled.min() < 0 or pooled.max() > 1:
            raise ValueError(
                "pixels must lie in [0, 1] (the range the output headroom is guaranteed for), got "
                f"[{pooled.min():.3g}, {pooled.max():.3g}]"
            )
        row = torch.zeros(self.columns, dtype=torch.float64)  # CPU by design: TenSEAL reads lists
        row[: self.side * self.side] = pooled
        row[self.side * self.side] = 1.0
        return row.expand(self.hidden, -1).tolist()

    def encrypt(self, context: ts.Context, image: torch.Tensor) -> ts.CKKSVector:
        """Client: encrypt one ``(1, 28, 28)`` image in the tiled layout."""
        return ts.enc_matmul_encoding(context, self.encode_input(image))

    def decrypt(self, answer: ts.CKKSVector) -> list[float]:
        """Client: the logits from the server's answer (decrypted and multiplied by
        ``output_scale``)."""
        return [value * self.output_scale for value in answer.decrypt()]

    def forward(self, encrypted: ts.CKKSVector) -> ts.CKKSVector:
        """Server: encrypted logits divided by ``output_scale`` (10 slots), computed without the
        secret key; the client reads them with :meth:`decrypt`."""
        if not isinstance(encrypted, ts.CKKSVector):
            raise TypeError(f"expected a tenseal CKKSVector, got {type(encrypted).__name__}")
        if encrypted.size() != self.hidden * self.columns:
            raise ValueError(
                f"the ciphertext holds {encrypted.size()} slots, expected "
                f"{self.hidden * self.columns}: encrypt the image with this model's "
                "EncryptedMLP.encrypt"
            )
        try:
            hidden = (encrypted * self._w1).enc_matmul_plain(self._ones, self.hidden)
            hidden.square_()
            return hidden.mm(self._w2) + self._b2
        except ValueError as error:
            if "scale out of bounds" in str(error):
                raise ValueError(
                    f"the ciphertext ran out of levels: this network needs {self.depth} "
                    "multiplications in a row, so the context needs at least that many middle "
                    "primes in coeff_mod_bit_sizes"
                ) from error
            raise

    __call__ = forward


@dataclass(frozen=True)
class InferenceReport:
    """Encrypted vs plaintext logits for a batch of images, with cost."""

    encrypted_logits: torch.Tensor
    plain_logits: torch.Tensor
    seconds_per_image: float
    query_bytes: int
    answer_bytes: int

    @property
    def abs_errors(self) -> torch.Tensor:
        """Per-image largest ``|encrypted − plaintext|`` over the 10 logits."""
        return (self.encrypted_logits - self.plain_logits).abs().amax(dim=1)

    @property
    def max_abs_error(self) -> float:
        return self.abs_errors.max().item()

    @property
    def agreement(self) -> float:
        """Fraction of images whose encrypted arg-max equals the plaintext arg-max."""
        return (
            (self.encrypted_logits.argmax(1) == self.plain_logits.argmax(1)).double().mean().item()
        )

    def __str__(self) -> str:
        return (
            f"{len(self.plain_logits)} images: max |error| {self.max_abs_error:.2e}, "
            f"arg-max agreement {self.agreement:.0%}, {self.seconds_per_image:.3f} s/image, "
            f"query {self.query_bytes / 1e3:.0f} kB, answer {self.answer_bytes / 1e3:.0f} kB"
        )


def encrypted_inference(
    model: HEFriendlyMLP,
    images: torch.Tensor,
    context: ts.Context | None = None,
    headroom: float | None = None,
) -> InferenceReport:
    """Classify ``images`` one by one under encryption and compare with the plaintext model.

    Per image: the client encrypts and serialises its query, the server deserialises it under the
    *public* context, evaluates :class:`EncryptedMLP` and serialises the answer, the client
    decrypts. ``seconds_per_image`` covers all of that (not key generation). ``headroom`` is the
    context's :func:`output_headroom` (default: that of :func:`make_context`'s defaults).
    """
    if images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(
            f"expected a non-empty batch of shape (N, 1, 28, 28), got {tuple(images.shape)}"
        )
    if context is None:
        context = make_context()
    if not context.is_private():
        raise ValueError("the client's context must hold the secret key to decrypt the answers")
    server_context = public_context(context)
    server = EncryptedMLP(model, slot_count(context), headroom)
    with torch.no_grad():
        plain = model(images).double().cpu()  # compared with the decrypted (CPU) logits
    outputs, query_bytes, answer_bytes = [], 0, 0
    start = time.perf_counter()
    for image in images:
        query = server.encrypt(context, image).serialize()
        answer = server(ts.ckks_vector_from(server_context, query)).serialize()
        outputs.append(server.decrypt(ts.ckks_vector_from(context, answer)))
        query_bytes, answer_bytes = len(query), len(answer)
    seconds = (time.perf_counter() - start) / len(images)
    encrypted = torch.tensor(outputs, dtype=torch.float64)  # CPU by design: decrypted floats
    return InferenceReport(encrypted, plain, seconds, query_bytes, answer_bytes)
