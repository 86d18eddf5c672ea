"""Secure multi-party computation (SMPC) from first principles — Part IV of the course.

Several parties hold *additive secret shares* of every value: random-looking numbers modulo 2^64
that add up to the (fixed-point encoded) secret. They compute on the shares — additions locally,
multiplications with Beaver triples from a trusted dealer, comparisons with a binary adder circuit —
and only the final result is ever reconstructed. Every exchange of messages is counted.

>>> import torch
>>> from course_lib.smpc import Session
>>> from course_lib.randomness import InsecureSeededRandom
>>> s = Session(n_parties=2, rng=InsecureSeededRandom(0))  # seeded: INSECURE, for teaching
>>> x, y = s.share(torch.tensor([1.5, -2.0])), s.share(torch.tensor([4.0, 0.25]))
>>> (x * y).reveal()
tensor([ 6.0000, -0.5000], dtype=torch.float64)

**Device: the CPU, by design.** Shares are int64 ring elements and the protocols' core is the
int64 matrix product (:mod:`.ring`), which CUDA lacks (cuBLAS multiplies only floating point;
pytorch/pytorch#44428). Emulating it with float64 limbs was slower even on the CPU (see
:mod:`.ring`), and the course's networks are small, so every share lives on the CPU whatever
:func:`course_lib.lesson_device` returns. Real values entering the engine — :meth:`Session.share`,
public operands, :class:`EncryptedModel`'s weights, :func:`encrypted_predict`'s images — are
copied to the CPU there (a model or batch on a GPU just works, and stays where it is); revealed
results are CPU tensors. Ring-level functions (:func:`share`, :func:`ring_matmul`, a
``SharedTensor`` built from raw shares) refuse a tensor on another device with a ``ValueError``
that says so, never a device-mismatch crash.

Modules: :mod:`.encoding` (fixed point), :mod:`.sharing` (additive / XOR shares), :mod:`.dealer`
(correlated randomness), :mod:`.session`, :mod:`.tensor` (``SharedTensor``: +, −, ×, @, conv2d,
truncation), :mod:`.comparison` (compare, ReLU, max-pool, argmax), :mod:`.communication`
(rounds and bytes), :mod:`.inference` (encrypted inference of torch models), :mod:`.training`
(encrypted logistic regression), :mod:`.mlp_training` (encrypted training of a one-hidden-layer
ReLU network: backward and SGD on shares), :mod:`.database` (a secret-shared key–value
store looked up by secure equality), :mod:`.ring` (matmul / convolution modulo 2^64).
Not imported here because it is slow to import: ``course_lib.smpc.distributed`` (the parties as
separate processes talking over ``torch.distributed``).
"""

from course_lib.smpc.communication import CommunicationLog, Cost
from course_lib.smpc.comparison import argmax, less_than_zero, max_pool2d, maximum, relu
from course_lib.smpc.dealer import Dealer
from course_lib.smpc.encoding import FixedPoint
from course_lib.smpc.inference import EncryptedModel, encrypted_predict
from course_lib.smpc.ring import ring_conv2d, ring_matmul
from course_lib.smpc.session import Session
from course_lib.smpc.sharing import reconstruct, reconstruct_xor, share, share_xor
from course_lib.smpc.tensor import SharedTensor
from course_lib.smpc.training import EncryptedLogisticRegression, hard_sigmoid

__all__ = [
    "CommunicationLog",
    "Cost",
    "Dealer",
    "EncryptedLogisticRegression",
    "EncryptedModel",
    "FixedPoint",
    "Session",
    "SharedTensor",
    "argmax",
    "encrypted_predict",
    "hard_sigmoid",
    "less_than_zero",
    "max_pool2d",
    "maximum",
    "reconstruct",
    "reconstruct_xor",
    "relu",
    "ring_conv2d",
    "ring_matmul",
    "share",
    "share_xor",
]
