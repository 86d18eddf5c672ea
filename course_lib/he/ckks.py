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
the cost. Both layers use the same pattern — replicate, multiply slot-wise, rotate-and-sum in
``log2`` steps:

* *first layer* — the client encrypts its input *tiled*: ``hidden`` copies of
  ``[x, 1, 0, …]`` (the 1 carries the bias) interleaved so that slot ``c · hidden + h`` holds
  input ``c`` for every hidden unit ``h`` and the ``hidden × columns`` grid fills all ``N/2``
  slots (``ts.enc_matmul_encoding``). The server multiplies slot-wise by its weights laid out the
  same way (slot ``c · hidden + h`` = ``W1[h, c]``) and rotates-and-sums by ``hidden``,
  ``2 · hidden``, …, ``N/4``: ``log2(columns)`` rotations (8 for a 14×14 image, instead of one per
  input pixel, 196, with ``CKKSVector.mm``). The sum is cyclic over the whole ring, so every slot
  ``k`` ends up holding hidden unit ``k mod hidden``: the hidden layer comes out *replicated*.
* *second layer* — laid out like the first: slot ``hidden · j + h`` = ``W2[j, h]``, one slot-wise
  product with the replicated (squared) hidden units, then a rotate-and-sum by 1, 2, …,
  ``hidden/2``: ``log2(hidden)`` rotations (4), after which slot ``hidden · j`` holds logit ``j``.
  A 0/1 mask keeps those 10 slots, then the bias is added, and every other slot value (and
  every imaginary part) is overwritten with fresh random noise, see *What the client learns*
  below. :meth:`EncryptedMLP.decrypt` reads slots ``0, hidden, 2 · hidden, …``.

Before issue 26 the second layer was TenSEAL's ``CKKSVector.mm`` (the diagonal method): one
rotation per non-zero diagonal of the ``hidden × 10`` matrix, ``hidden − 1`` = 15
(:func:`diagonal_rotations`), about twice the time per image; ``benchmarks/he.py`` keeps that
recipe as the baseline. :attr:`EncryptedMLP.rotations` counts the rotations of each layer.

**TenSEAL outside, SEAL inside.** TenSEAL's vector API cannot express the second layout: it has no
rotation by a chosen step, a ``CKKSVector`` of ``hidden`` values multiplies only by ``hidden``
values, and resizing costs a multiplication (a fifth level). So the learner-facing objects stay
TenSEAL's — ``ts.Context``, keys, ``CKKSVector``, ``serialize`` / ``ckks_vector_from`` — and the
server pass runs on the *same* ciphertext with SEAL's own API as TenSEAL ships it
(``tenseal.sealapi``): ``CKKSVector.ciphertext()`` is the SEAL ciphertext,
``Context.seal_context()``, ``galois_keys()`` and ``relin_keys()`` the SEAL objects of the
server's *public* context, and the result goes back into a ``CKKSVector`` through TenSEAL's
serialisation format. The server never needs, and under :func:`public_context` never has, the
secret key.

Depth used: first-layer weights, square, second-layer weights, answer mask = 4.

**Threat model.** The client owns the image and the secret key; the server owns the weights and
gets only :func:`public_context` (evaluation keys, no secret key).

* *Image and logits vs the server*: the server is assumed **semi-honest** (it runs
  :meth:`EncryptedMLP.forward` as written but may look at everything it receives). It sees only
  CKKS ciphertexts, which are IND-CPA secure under the ring-LWE assumption at these parameters
  (128-bit security, :func:`check_parameters`): it learns neither the image nor the logits.
* *No integrity*: a **malicious** server can return anything — other weights, a constant, a
  ciphertext crafted to probe the client. :meth:`EncryptedMLP.decrypt` accepts any ciphertext of
  the right size; nothing here proves the answer was computed honestly (that needs verifiable
  computation). And a decrypted result must never go back to the server: CKKS decryptions leak
  the secret key's noise (Li & Micciancio 2021).
* *Weights vs the client*: the client learns the 10 logits of every query it sends — enough, over
  many queries, to start copying the model. Beyond the logits, the server's partial sums must stay
  hidden, and here the protection is **partial**, see below.

**What the client learns beyond the logits.** After the rotate-and-sum, the slots between the
logits hold partial sums of the server's weighted hidden units. The 0/1 mask zeroes them only
approximately: the encoded mask carries a deterministic rounding error ``ρ`` of about ``2e-9`` per
slot, so a zeroed slot holds ``partial sum · ρ`` (plus noise). Nothing on the server bounds the
query (the [0, 1] check is in the *client's* :meth:`EncryptedMLP.encode_input`), so a client that
encrypts pixels × 100 itself and decrypts *all* 4,096 slots (``tenseal.sealapi``) reads the
partial sums back to a few per cent from one query. :meth:`EncryptedMLP.forward` therefore adds,
after the bias, fresh uniform noise in ``±fill_bound`` from a cryptographically secure source
(:class:`course_lib.randomness.SecureRandom`) to the real part of every non-logit slot and to the
imaginary part of every slot; it costs no level. ``fill_bound`` is as large as the answer's room
allows (:func:`fill_bound`: 197 with the default parameters): the fill takes the half of the
output headroom that the logits leave free, and by Hoeffding's inequality its coefficients exceed
that half with probability below ``2^-64`` per answer, so the logits never wrap because of it.
Measured on an untrained ``HEFriendlyMLP(14, 16)`` (``torch.manual_seed(0)``), one query each: an
honest query's largest ``|partial sum · ρ|`` is ~10⁻⁹, 2 · 10¹¹ below the fill. A dishonest query
gets the same cover as long as its own answer still decodes: with pixels × 100 the largest
``|partial sum · ρ|`` is 1.3·10⁻⁵, with pixels × 1,000 (logits ~2·10⁵, already 1 % wrong)
1.3·10⁻³, still 10⁵ below the fill; the ``ρ`` term reaches the fill's size only at pixels × ~10⁶
(partial sums ~10¹¹), where the logits are just as large and the whole answer wraps around modulo
``q0``.

This is **not circuit privacy**. The fill hides the partial sums from the decoded answer in the
regime above; it does not cover (i) a client that drives its answer into wrap-around on purpose
(then it sees every coefficient modulo ``q0``, where the fill is only ~``fill_bound / √(3N)`` per
coefficient), nor one that learns enough of the weights to cancel the logits while keeping the
partial sums large; (ii) many repetitions of one query, which average the fill down by ``√n``; and
(iii) the CKKS *noise* in the logit slots, which comes from the server's computation and can in
principle depend on its weights. Full protection needs *noise flooding* ("circuit privacy",
"sanitisation": add an encryption of zero whose noise is ``2^σ`` times the computation's, for a
statistical distance of about ``2^-σ``, or re-randomise by bootstrapping), which costs about ``σ``
(e.g. 40) extra bits of modulus, beyond the 218 that ``N = 8192`` allows here.

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
import os
import struct
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import tenseal as ts
import tenseal.sealapi as sa  # type: ignore[import-untyped]  # (the override names "tenseal" only)
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from course_lib.randomness import RandomSource, resolve_random_source
from course_lib.training import fit, make_loader, seed_everything
from course_lib.validation import as_integer, check_positive

__all__ = [
    "DEFAULT_COEFF_MOD_BIT_SIZES",
    "MAX_COEFF_MODULUS_BITS",
    "check_parameters",
    "diagonal_rotations",
    "fill_bound",
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


#: The fill may push a coefficient of the answer past the room left for it with probability at
#: most ``2^-FILL_FAILURE_BITS`` per answer (:func:`fill_bound`).
FILL_FAILURE_BITS = 64


def fill_bound(slots: int, headroom: float | None = None) -> float:
    """The largest ``B`` such that uniform noise in ``±B`` in the real and imaginary parts of all
    ``slots`` slots keeps every coefficient of the answer within ``headroom / 2`` (the half of
    :func:`output_headroom` the logits leave free) except with probability ``2^-64``.

    A slot vector ``z`` is the polynomial with coefficients
    ``m_i = (2/N) Σ_j (Re z_j cos φ_ij + Im z_j sin φ_ij)`` (``N = 2 · slots``): a sum of
    independent terms of range ``4B|cos φ_ij| / N`` and ``4B|sin φ_ij| / N``, whose squares add up
    to ``8B²/N``. Hoeffding: ``P(|m_i| ≥ t) ≤ 2 exp(−t² N / (4B²))``; a union bound over the ``N``
    coefficients and ``t = headroom / 2`` give
    ``B = (headroom / 2) · √(N / (4 ln(2N · 2^64)))``: 197 for ``N = 8192``, headroom 64."""
    slots = as_integer(slots, "slots")
    if slots < 1:
        raise ValueError(f"slots must be positive, got {slots}")
    headroom = output_headroom() if headroom is None else check_positive(headroom, "headroom")
    n = 2 * slots
    log_failures = math.log(2 * n) + FILL_FAILURE_BITS * math.log(2)
    return headroom / 2 * math.sqrt(n / (4 * log_failures))


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


def diagonal_rotations(matrix: torch.Tensor, slots: int) -> int:
    """Rotations TenSEAL's ``CKKSVector.mm(matrix)`` performs (the layout before issue 26, kept in
    ``benchmarks/he.py`` as the baseline): its diagonal ``i`` (``0 ≤ i < rows``) holds
    ``matrix[(i + k) mod rows, k mod cols]`` for ``k < min(slots, rows · cols)``; it is skipped
    when all zero, and diagonal 0 needs no rotation."""
    rows, cols = matrix.shape
    k = torch.arange(min(slots, rows * cols), device=matrix.device)
    return sum(1 for i in range(1, rows) if bool(matrix[(i + k) % rows, k % cols].ne(0).any()))


def _varint(value: int) -> bytes:
    """``value`` as a protobuf varint (7 bits per byte, low bits first)."""
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | 0x80 if value else low)
        if not value:
            return bytes(out)


#: Where :func:`_seal_bytes` puts its temporary file when it can (a RAM-backed file system).
_SHM = "/dev/shm"


def _seal_bytes(ciphertext: sa.Ciphertext) -> bytes:
    """SEAL's own serialisation of ``ciphertext`` (``tenseal.sealapi`` only saves to a path, so
    through a temporary file: in memory where ``/dev/shm`` is writable, else — or if using it
    fails — in the default temporary directory)."""
    if os.access(_SHM, os.W_OK | os.X_OK):
        try:
            return _save_and_read(ciphertext, _SHM)
        except (OSError, RuntimeError):
            # /dev/shm full or otherwise unusable (SEAL's save reports it as RuntimeError "I/O
            # error"): the same save in the default directory, which raises if the fault is real
            pass
    return _save_and_read(ciphertext, None)


def _save_and_read(ciphertext: sa.Ciphertext, directory: str | None) -> bytes:
    with tempfile.TemporaryDirectory(dir=directory) as d:
        path = os.path.join(d, "ciphertext")
        ciphertext.save(path)
        with open(path, "rb") as file:
            return file.read()


def _ckks_vector_bytes(ciphertext: sa.Ciphertext, size: int, scale: float) -> bytes:
    """The bytes ``CKKSVector.serialize`` would give for a one-ciphertext vector of ``size``
    slots: TenSEAL's ``CKKSVectorProto`` (``sizes = 1``, packed; ``ciphertexts = 2``, SEAL's
    serialisation; ``scale = 3``, a double), written field by field."""
    sizes = _varint(size)
    body = _seal_bytes(ciphertext)
    return (
        b"\x0a" + _varint(len(sizes)) + sizes
        + b"\x12" + _varint(len(body)) + body
        + b"\x19" + struct.pack("<d", scale)
    )  # fmt: skip


def _rotate_and_sum(
    evaluator: sa.Evaluator, ciphertext: sa.Ciphertext, steps: list[int], galois: sa.GaloisKeys
) -> None:
    """``ciphertext += rotate(ciphertext, step)`` for each step, largest first: with steps
    ``s, 2s, …, 2^(k−1)s`` slot ``i`` ends up holding the sum of slots ``i, i + s, …,
    i + (2^k − 1)s`` (cyclically), ``k`` rotations."""
    for step in reversed(steps):
        rotated = sa.Ciphertext()
        evaluator.rotate_vector(ciphertext, step, galois, rotated)
        evaluator.add_inplace(ciphertext, rotated)


class _Plaintexts:
    """The server's weights encoded once for one set of SEAL parameters, each at the level where
    it meets the ciphertext (SEAL multiplies only operands at the same level)."""

    def __init__(self, mlp: EncryptedMLP, seal_context: sa.SEALContext, scale: float) -> None:
        self.encoder = sa.CKKSEncoder(seal_context)
        self.evaluator = sa.Evaluator(seal_context)
        levels, data = [], seal_context.first_context_data()
        while data is not None:
            levels.append(data.parms_id())
            data = data.next_context_data()
        self.scale = scale
        self.w1 = self.encode(mlp._w1, levels[0])
        self.w2 = self.encode(mlp._w2, levels[2])
        self.mask = self.encode(mlp._mask, levels[3])

    def encode(
        self, values: list[float] | list[complex], parms_id: list[int], scale: float | None = None
    ) -> Any:
        plain = sa.Plaintext()
        self.encoder.encode(values, parms_id, self.scale if scale is None else scale, plain)
        return plain


class EncryptedMLP:
    """The server's half: an :class:`HEFriendlyMLP`'s weights, applied to CKKS ciphertexts.

    :meth:`encrypt` and :meth:`decrypt` are the client's half (they only need the public layout:
    ``side``, ``hidden``, ``columns``, ``output_scale``). ``slots`` is ``poly_modulus_degree / 2``
    of the context that will be used and ``headroom`` its :func:`output_headroom`.

    ``logit_bound`` bounds ``|logit|`` over every image with pixels in [0, 1] (interval
    arithmetic through both layers); when it exceeds half the headroom the last layer is scaled
    by ``1 / output_scale`` (a power of two) so that the encrypted result cannot wrap around.
    """

    #: multiplications in a row: first-layer weights, square, second-layer weights, answer mask
    depth = 4

    def __init__(
        self,
        model: HEFriendlyMLP,
        slots: int = 4096,
        headroom: float | None = None,
        rng: RandomSource | None = None,
    ) -> None:
        if not isinstance(model, HEFriendlyMLP):
            raise TypeError(f"expected an HEFriendlyMLP, got {type(model).__name__}")
        for name, parameter in model.named_parameters():
            if not bool(torch.isfinite(parameter).all()):
                raise ValueError(
                    f"the model's {name} holds NaN or infinite values: train or load a finite "
                    "model before serving it (its logit bound and output scale would be NaN)"
                )
        slots = as_integer(slots, "slots")
        if slots < 1 or slots & (slots - 1):
            raise ValueError(
                f"slots must be a power of two (poly_modulus_degree / 2: slot_count), got {slots}"
            )
        headroom = output_headroom() if headroom is None else check_positive(headroom, "headroom")
        self._rng = resolve_random_source(rng)
        #: the random fill of the answer's non-logit slots is uniform in ``±fill_bound``
        self.fill_bound = fill_bound(slots, headroom)
        self.side, self.hidden, self.slots = model.side, model.hidden, slots
        inputs = self.side * self.side
        if self.hidden & (self.hidden - 1):
            raise ValueError(
                f"hidden must be a power of two for the tiled packing, got {self.hidden}"
            )
        self.num_classes = model.fc2.out_features
        self.columns = slots // self.hidden
        if self.columns < max(inputs + 1, self.num_classes):
            raise ValueError(
                f"{inputs} inputs (+1 for the bias) × {self.hidden} hidden units do not fit in "
                f"{slots} slots: use a smaller side or hidden size, or a larger poly_modulus_degree"
            )
        with torch.no_grad():
            # CPU by design: SEAL's encoder reads the weights as Python lists (.tolist() below)
            w1 = torch.zeros(self.columns, self.hidden, dtype=torch.float64)
            w1[:inputs] = model.fc1.weight.T.double()
            w1[inputs] = model.fc1.bias.double()
            self._w1 = w1.reshape(-1).tolist()  # slot c·hidden + h = W1[h, c]: meets x_c
            self.logit_bound = _logit_bound(model)
            self.output_scale = 2.0 ** max(0, math.ceil(math.log2(2 * self.logit_bound / headroom)))
            # CPU by design: read as a list
            w2 = torch.zeros(self.columns, self.hidden, dtype=torch.float64)
            w2[: self.num_classes] = model.fc2.weight.double() / self.output_scale
            self._w2 = w2.reshape(-1).tolist()  # slot hidden·j + h = W2[j, h]: meets unit h
            # CPU by design: read as a list
            answer = torch.zeros(self.columns, self.hidden, dtype=torch.float64)
            answer[: self.num_classes, 0] = 1.0  # logit j lands in slot hidden·j
            self._mask = answer.reshape(-1).tolist()
            self._logit_slots = answer.reshape(-1).bool()
            answer[: self.num_classes, 0] = model.fc2.bias.double() / self.output_scale
            self._bias = answer.reshape(-1)
        #: rotation steps of each layer's rotate-and-sum (all powers of two: TenSEAL's
        #: ``generate_galois_keys()`` makes a key for each)
        self.steps = {
            "first layer": [self.hidden << k for k in range(self.columns.bit_length() - 1)],
            "second layer": [1 << k for k in range(self.hidden.bit_length() - 1)],
        }
        #: rotations per image and layer: ``log2(columns)`` and ``log2(hidden)``
        self.rotations = {layer: len(steps) for layer, steps in self.steps.items()}
        self._plaintexts: dict[tuple[tuple[int, ...], float], _Plaintexts] = {}

    def _bias_and_fill(self) -> list[complex]:
        """The bias in the logit slots' real parts and fresh uniform noise in ``±fill_bound``
        everywhere else (all other real parts, every imaginary part), from ``self._rng``."""
        noise = (self._rng.uniform(2 * self.slots) * 2 - 1) * self.fill_bound
        real = torch.where(self._logit_slots, self._bias, noise[: self.slots])
        return torch.complex(real, noise[self.slots :]).tolist()

    @property
    def answer_size(self) -> int:
        """Slots of the answer vector: logit ``j`` sits in slot ``hidden · j``, zeros between."""
        return self.hidden * (self.num_classes - 1) + 1

    def _check_context(self, context: ts.Context) -> None:
        if not isinstance(context, ts.Context):
            raise TypeError(f"expected a tenseal Context, got {type(context).__name__}")
        if slot_count(context) != self.slots:
            raise ValueError(
                f"the context has {slot_count(context)} slots but this EncryptedMLP was laid out "
                f"for {self.slots}: build it with EncryptedMLP(model, slot_count(context))"
            )

    def encode_input(self, image: torch.Tensor) -> list[list[float]]:
        """The client's tiled plaintext: ``hidden`` identical rows ``[pooled pixels, 1, 0, …]``."""
        if not isinstance(image, torch.Tensor):
            raise TypeError(f"expected the image as a torch.Tensor, got {type(image).__name__}")
        if image.dim() == 3:
            image = image.unsqueeze(0)
        if image.shape[0] != 1:
            raise ValueError(f"encrypt one image at a time, got a batch of {image.shape[0]}")
        pooled = downsample(image, self.side)[0].double()
        if not bool(torch.isfinite(pooled).all()):
            raise ValueError(
                "the image holds NaN or infinite pixels: pixels must be finite values in [0, 1]"
            )
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
        """Client: encrypt one ``(1, 28, 28)`` image in the tiled layout (slot ``c · hidden + h``
        holds input ``c`` for every hidden unit ``h``: ``ts.enc_matmul_encoding``)."""
        self._check_context(context)
        return ts.enc_matmul_encoding(context, self.encode_input(image))

    def decrypt(self, answer: ts.CKKSVector) -> list[float]:
        """Client: the logits from the server's answer (decrypted, read from slots
        ``0, hidden, 2·hidden, …`` and multiplied by ``output_scale``)."""
        if not isinstance(answer, ts.CKKSVector):
            raise TypeError(f"expected a tenseal CKKSVector, got {type(answer).__name__}")
        if answer.size() != self.answer_size:
            raise ValueError(
                f"the answer holds {answer.size()} slots, expected {self.answer_size}: decrypt "
                "what this model's EncryptedMLP.forward returned"
            )
        values = answer.decrypt()
        return [values[self.hidden * j] * self.output_scale for j in range(self.num_classes)]

    def forward(self, encrypted: ts.CKKSVector) -> ts.CKKSVector:
        """Server: encrypted logits divided by ``output_scale``, computed without the secret key;
        the client reads them with :meth:`decrypt`. Every other slot, and every imaginary part,
        holds fresh uniform noise in ``±fill_bound`` (module docstring: what the client learns).

        The pass runs on the vector's own SEAL ciphertext (``encrypted.ciphertext()``) with its
        context's SEAL objects (``seal_context()``, ``galois_keys()``, ``relin_keys()``), then
        wraps the result back into a :class:`tenseal.CKKSVector` under the same context."""
        if not isinstance(encrypted, ts.CKKSVector):
            raise TypeError(f"expected a tenseal CKKSVector, got {type(encrypted).__name__}")
        if encrypted.size() != self.hidden * self.columns:
            raise ValueError(
                f"the ciphertext holds {encrypted.size()} slots, expected "
                f"{self.hidden * self.columns}: encrypt the image with this model's "
                "EncryptedMLP.encrypt"
            )
        context = encrypted.context()
        self._check_context(context)
        seal_context = context.seal_context().data
        (ct,) = encrypted.ciphertext()
        levels = seal_context.get_context_data(ct.parms_id()).chain_index()
        if levels < self.depth:
            raise ValueError(
                f"the ciphertext ran out of levels: this network needs {self.depth} "
                f"multiplications in a row but the ciphertext has {levels} left, so the context "
                f"needs at least {self.depth} middle primes in coeff_mod_bit_sizes"
            )
        if not (context.has_galois_keys() and context.has_relin_keys()):
            raise ValueError(
                "the server's context needs the Galois (rotation) and relinearisation keys: "
                "make the client's context with make_context() and send public_context(context)"
            )
        galois, relin = context.galois_keys().data, context.relin_keys().data
        key = (tuple(seal_context.first_parms_id()), context.global_scale)
        if key not in self._plaintexts:
            self._plaintexts[key] = _Plaintexts(self, seal_context, context.global_scale)
        plain = self._plaintexts[key]
        ev = plain.evaluator
        # first layer: weights slot-wise, then a cyclic rotate-and-sum over the columns leaves
        # hidden unit h in every slot k with k mod hidden = h
        ev.multiply_plain_inplace(ct, plain.w1)
        ev.rescale_to_next_inplace(ct)
        _rotate_and_sum(ev, ct, self.steps["first layer"], galois)
        ev.square_inplace(ct)
        ev.relinearize_inplace(ct, relin)
        ev.rescale_to_next_inplace(ct)
        # second layer, laid out like the first: slot hidden·j + h = W2[j, h], then a
        # rotate-and-sum by 1, 2, …, hidden/2 puts logit j in slot hidden·j
        ev.multiply_plain_inplace(ct, plain.w2)
        ev.rescale_to_next_inplace(ct)
        _rotate_and_sum(ev, ct, self.steps["second layer"], galois)
        # keep only the logits: the other slots hold partial sums of the server's weights, which
        # the mask zeroes only up to its encoding error ρ (~2e-9) — and a dishonest client can make
        # partial sum · ρ readable: so add the bias and fresh random noise in every other slot
        ev.multiply_plain_inplace(ct, plain.mask)
        ev.rescale_to_next_inplace(ct)
        fill = plain.encode(self._bias_and_fill(), ct.parms_id(), ct.scale)
        ev.add_plain_inplace(ct, fill)
        answer = _ckks_vector_bytes(ct, self.answer_size, context.global_scale)
        return ts.ckks_vector_from(context, answer)

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
