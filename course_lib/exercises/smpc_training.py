"""Checkers for encrypted training of a neural network (lesson 17, section 6).

The checker runs the learner's function on its own seeded shares and names them in every ✗
message, so the learner can reproduce the failing case.
"""

from __future__ import annotations

import torch

from course_lib.exercises._registry import (
    exercise,
    expect,
    expect_callable,
    expect_close,
    expect_not_none,
)
from course_lib.exercises._smpc_audit import (
    expect_nothing_but_openings,
    expect_opened_count,
    opened_so_far,
    protocol_opened_elements,
)
from course_lib.randomness import InsecureSeededRandom
from course_lib.smpc import Session, SharedTensor, less_than_zero

#: Operations that would mean the answer ran a new secure comparison (or opened a value).
_FORBIDDEN = {"compare": "a new secure comparison", "relu": "a secure ReLU", "reveal": "a reveal"}


@exercise(
    "17.hidden_backward",
    task="write hidden_backward(x, grad_a, active): the shared gradients (grad_weight (H, d), "
    "grad_bias (H,)) of the first layer from the shared inputs x (B, d), the shared gradient "
    "grad_a (B, H) of the loss with respect to the ReLU's output, and the forward pass's shared "
    "ReLU derivative bits active (B, H) — with no new comparison and nothing revealed",
    nudge="first go back through the ReLU: its derivative is 1 where the unit was active and 0 "
    "elsewhere, and the forward pass already gave you those bits; then it is a linear layer",
    hint="grad_h = grad_a * active (a product by shared bits); grad_weight = grad_h.T @ x and "
    "grad_bias = grad_h.sum(0)",
)
def _(hidden_backward) -> None:
    expect_callable(hidden_backward, "hidden_backward", "17.hidden_backward")
    session = Session(2, rng=InsecureSeededRandom(17))
    generator = torch.Generator().manual_seed(17)
    x_plain = torch.rand(4, 5, generator=generator, dtype=torch.float64)
    hidden = torch.randn(4, 3, generator=generator, dtype=torch.float64)
    grad_a_plain = torch.randn(4, 3, generator=generator, dtype=torch.float64)
    on = (
        "for 2 parties' shares of x = torch.rand(4, 5), grad_a = torch.randn(4, 3) and the "
        "ReLU bits of hidden = torch.randn(4, 3) (torch.Generator().manual_seed(17), drawn in "
        "that order)"
    )
    x, grad_a = session.share(x_plain), session.share(grad_a_plain)
    active = 1 - less_than_zero(session.share(hidden))

    def protocol() -> object:  # the reference: one product by the bits, one matmul
        grad_h = grad_a * active
        return grad_h.T @ x, grad_h.sum(0)

    session.log.reset()
    expected_openings = protocol_opened_elements(session, protocol)
    session.log.reset()
    result = hidden_backward(x, grad_a, active)
    expect_not_none(result, f"hidden_backward(x, grad_a, active) {on}")
    expect(
        isinstance(result, tuple | list)
        and len(result) == 2
        and all(isinstance(r, SharedTensor) for r in result),
        f"return two SharedTensors, (grad_weight, grad_bias), without revealing them; {on}",
    )
    used = [what for name, what in _FORBIDDEN.items() if name in session.log.by_operation]
    expect(
        not used and not session.log.outputs,
        f"your function ran {' and '.join(used) or 'a reveal'}: the forward pass's bits `active` "
        f"already are the ReLU's derivative — multiply by them, on shares; {on}",
    )
    expect_nothing_but_openings(session, on)
    opened = opened_so_far(session)  # before the reveals below add to the log
    grad_h = grad_a_plain * (hidden >= 0)
    for got, want, what in zip(
        result, (grad_h.T @ x_plain, grad_h.sum(0)), ("grad_weight", "grad_bias"), strict=True
    ):
        expect(
            tuple(got.shape) == tuple(want.shape),
            f"{what} should have shape {tuple(want.shape)}, got {tuple(got.shape)}; {on}",
        )
        # a few truncations of 2^-16 each: 1e-3 is far below any wrong formula's error here
        expect_close(got.reveal(), want, rtol=0, atol=1e-3, what=f"{what}.reveal() {on}")
    # a wrong formula is told by its values first; a right one must open what the protocol opens
    expect_opened_count(opened, expected_openings, on)
