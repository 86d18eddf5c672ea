"""A secure-computation session: who takes part and what they share.

A :class:`Session` fixes the number of parties, the fixed-point precision, the source of randomness,
the trusted dealer and the communication log. Every :class:`~course_lib.smpc.tensor.SharedTensor`
belongs to one session; tensors from different sessions (or different party counts) cannot be mixed.

All parties are simulated in one Python process: ``shares[i]`` is what party ``i`` holds, and
:meth:`Session.open` is the only place where shares are combined — the moment the protocol *allows*
a value to become public. It is also where the network cost is counted.
"""

from __future__ import annotations

import torch

from course_lib.randomness import RandomSource, resolve_random_source
from course_lib.smpc.communication import CommunicationLog
from course_lib.smpc.dealer import Dealer
from course_lib.smpc.encoding import FixedPoint, check_ring_tensor
from course_lib.smpc.sharing import check_party_count, reconstruct, reconstruct_xor, share

__all__ = ["Session"]


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

    def share(self, values: torch.Tensor | float):  # -> SharedTensor (import cycle)
        """Encode real ``values`` in fixed point and secret-share them among the parties."""
        from course_lib.smpc.tensor import SharedTensor

        encoded = self.encoder.encode(values)
        return SharedTensor(share(encoded, self.n_parties, self.rng), self, self.precision_bits)

    def share_integers(self, values: torch.Tensor):
        """Secret-share int64 ``values`` as plain integers (scale 0, no fractional bits)."""
        from course_lib.smpc.tensor import SharedTensor

        check_ring_tensor(values, "the integers to share")
        return SharedTensor(share(values, self.n_parties, self.rng), self, 0)

    def open(self, *stacked_shares: torch.Tensor) -> list[torch.Tensor]:
        """Reconstruct several additively shared values in one round of communication."""
        self.log.record_open(sum(s[0].numel() for s in stacked_shares))
        return [reconstruct(s) for s in stacked_shares]

    def open_xor(self, *stacked_shares: torch.Tensor) -> list[torch.Tensor]:
        """Reconstruct several XOR-shared values in one round of communication."""
        self.log.record_open(sum(s[0].numel() for s in stacked_shares))
        return [reconstruct_xor(s) for s in stacked_shares]

    def __repr__(self) -> str:
        return (
            f"Session(n_parties={self.n_parties}, precision_bits={self.precision_bits}, "
            f"rng={self.rng!r})"
        )
