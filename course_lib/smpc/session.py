"""A secure-computation session: who takes part and what they share.

A :class:`Session` fixes the number of parties, the fixed-point precision, the source of randomness,
the trusted dealer and the communication log. Every :class:`~course_lib.smpc.tensor.SharedTensor`
belongs to one session; tensors from different sessions (or different party counts) cannot be mixed.

All parties are simulated in one Python process: ``shares[i]`` is what party ``i`` holds, and
:meth:`Session.open` is the only place where shares are combined — the moment the protocol *allows*
a value to become public. It is also where the network cost is counted.

**Threat model.** The protocols are secure against *semi-honest* (honest-but-curious) parties: each
follows the protocol exactly but may study everything it receives. Any ``n − 1`` of the ``n``
parties together learn nothing about the inputs beyond what is revealed to them. The dealer is
trusted and **must not collude** with any party (its triples unmask every opened value). There is
**no integrity**: a party that adds a number to its share shifts the opened result and nobody can
tell (lesson 16 shows it); protocols with information-theoretic MACs on the shares, such as SPDZ
(Damgård et al., CRYPTO 2012), detect that.

**Who receives what.** :meth:`share` takes an ``owner`` (the party index, or a name for someone
outside the computation, such as ``"patient"``), and :meth:`SharedTensor.reveal
<course_lib.smpc.tensor.SharedTensor.reveal>` a receiver ``to``; both are charged in the log.
"""

from __future__ import annotations

import math

import torch

from course_lib.fixed_point import check_ring_tensor
from course_lib.randomness import RandomSource, resolve_random_source
from course_lib.smpc.communication import CommunicationLog
from course_lib.smpc.dealer import Dealer
from course_lib.smpc.encoding import FixedPoint
from course_lib.smpc.sharing import check_party_count, reconstruct, reconstruct_xor, share
from course_lib.validation import as_integer

__all__ = ["Participant", "Session"]

#: Who sends an input or receives an output: ``None`` (see each method), a party index, or a name.
Participant = int | str | None


def _shapes(stacked_shares: tuple[torch.Tensor, ...]) -> tuple[tuple[int, ...], ...]:
    """The shape of each opened value (dimension 0 of the stacked shares is the party)."""
    return tuple(tuple(s.shape[1:]) for s in stacked_shares)


class Session:
    """``n_parties`` parties, ``precision_bits`` fractional bits, a dealer and a communication log.

    ``rng`` defaults to :class:`~course_lib.randomness.SecureRandom`; pass
    ``InsecureSeededRandom(seed)`` only to make a lesson reproducible.
    """

    def __init__(
        self, n_parties: int = 2, precision_bits: int = 16, rng: RandomSource | None = None
    ) -> None:
        self.n_parties = check_party_count(n_parties)
        self.encoder = FixedPoint(precision_bits)
        self.rng = resolve_random_source(rng)
        self.log = CommunicationLog(self.n_parties)
        self.dealer = Dealer(self.n_parties, self.rng, self.log)

    @property
    def precision_bits(self) -> int:
        return self.encoder.precision_bits

    def share(self, values: torch.Tensor | float, owner: Participant = None):  # -> SharedTensor
        """Encode real ``values`` in fixed point and secret-share them among the parties.

        ``owner`` sends the shares: ``None`` (an unnamed data owner outside the computation) or a
        name for one (``"patient"``) sends ``n`` shares per value, a party index ``i`` keeps its
        own and sends ``n − 1``. Charged to the log as one round (operation ``"share"``).
        """
        from course_lib.smpc.tensor import SharedTensor

        messages, sender = self.participant(owner, "owner")
        encoded = self.encoder.encode(values)
        shares = share(encoded, self.n_parties, self.rng)
        with self.log.operation("share"):
            self.log.record_messages(encoded.numel(), messages)
            self.log.record_input(sender, encoded.numel())
        return SharedTensor(shares, self, self.precision_bits)

    def share_integers(self, values: torch.Tensor, owner: Participant = None):
        """Secret-share int64 ``values`` as integers (scale 0); ``owner`` as in :meth:`share`."""
        from course_lib.smpc.tensor import SharedTensor

        values = check_ring_tensor(values, "the integers to share").cpu()  # shares live on the CPU
        messages, sender = self.participant(owner, "owner")
        shares = share(values, self.n_parties, self.rng)
        with self.log.operation("share"):
            self.log.record_messages(values.numel(), messages)
            self.log.record_input(sender, values.numel())
        return SharedTensor(shares, self, 0)

    def participant(self, who: Participant, role: str = "receiver") -> tuple[int, str]:
        """Messages per value to deliver to (or collect from) ``who``, and ``who``'s name.

        ``None`` means every party (for a receiver: ``n·(n−1)`` messages; for an owner: an unnamed
        outside owner, ``n``); ``i`` is party ``i`` (``n − 1``: it holds one share itself); a
        non-empty string names someone outside the computation (``n``).
        """
        n = self.n_parties
        if who is None:
            return (n * (n - 1), "all parties") if role == "receiver" else (n, "data owner")
        if not isinstance(who, str):
            try:
                who = as_integer(who, f"the {role}")  # NumPy integers count, bools do not
            except TypeError:
                raise TypeError(
                    f"the {role} must be a party index (0 to {n - 1}), a name such as 'patient', "
                    f"or None, got {type(who).__name__}"
                ) from None
            if not 0 <= who < n:
                raise ValueError(f"the {role} must be a party index from 0 to {n - 1}, got {who}")
            return n - 1, f"party {who}"
        if not who.strip():
            raise ValueError(f"the {role}'s name must not be empty")
        return n, who

    def deliver(self, stacked_shares: torch.Tensor, to: Participant = None) -> torch.Tensor:
        """Reconstruct an output for ``to`` only (see :meth:`participant`), in one round.

        The cost is charged to the log and the receiver is listed in ``log.outputs``.
        """
        messages, receiver = self.participant(to)
        check_ring_tensor(stacked_shares, "the shares")
        self.log.record_messages(stacked_shares[0].numel(), messages)
        self.log.record_output(receiver, stacked_shares[0].numel())
        return reconstruct(stacked_shares)

    def open(self, *stacked_shares: torch.Tensor) -> list[torch.Tensor]:
        """Reconstruct several additively shared values in one round of communication.

        Charged to the log and listed in ``log.openings`` with the shape of each value."""
        opened = [reconstruct(s) for s in stacked_shares]  # checks the shares before charging
        shapes = _shapes(stacked_shares)
        self.log.record_open(sum(math.prod(shape) for shape in shapes), shapes, "additive")
        return opened

    def open_xor(self, *stacked_shares: torch.Tensor) -> list[torch.Tensor]:
        """Reconstruct several XOR-shared values in one round (listed in ``log.openings``)."""
        opened = [reconstruct_xor(s) for s in stacked_shares]  # checks the shares first
        shapes = _shapes(stacked_shares)
        self.log.record_open(sum(math.prod(shape) for shape in shapes), shapes, "xor")
        return opened

    def __repr__(self) -> str:
        return (
            f"Session(n_parties={self.n_parties}, precision_bits={self.precision_bits}, "
            f"rng={self.rng!r})"
        )
