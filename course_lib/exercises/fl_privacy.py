"""Checkers for lessons 12–14: attacks on federated learning, secure aggregation and DP-FL, split
learning."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from course_lib.exercises._registry import Incorrect, exercise, expect, expect_close, expect_equal
from course_lib.fl.gradient_inversion import LeNetSigmoid, client_gradient, output_layer, psnr
from course_lib.fl.secure_aggregation import shamir_split
from course_lib.randomness import InsecureSeededRandom

# -- lesson 12: attacks on federated learning --------------------------------------------------


@exercise(
    "12.psnr", hint="mse = ((a - b) ** 2).mean(); return 10 * log10(1 / mse) (images in [0, 1])"
)
def _(psnr_fn) -> None:
    g = torch.Generator().manual_seed(12)
    for noise in (0.01, 0.1, 0.3):
        a = torch.rand(1, 28, 28, generator=g)
        b = (a + noise * torch.randn(1, 28, 28, generator=g)).clamp(0, 1)
        expect_close(float(psnr_fn(b, a)), psnr(b, a), rtol=1e-4, what=f"PSNR (noise {noise})")


@exercise(
    "12.idlg_label",
    hint="the true class's row of the last layer's weight gradient is the only negative one: "
    "take the row with the smallest sum (argmin over dim=1 of grad.sum(dim=1))",
)
def _(label_fn) -> None:
    model = LeNetSigmoid(seed=3)
    g = torch.Generator().manual_seed(12)
    for label in (0, 3, 7, 9):
        x = torch.rand(1, 1, 28, 28, generator=g)
        _, index = output_layer(model)
        grad_w = client_gradient(model, x, torch.tensor([label]))[index]
        expect_equal(int(label_fn(grad_w.clone())), label, what="the label you inferred")


@exercise(
    "12.bias_trick",
    hint="for y = W x + b, ∂L/∂W[i] = ∂L/∂b[i] · x: divide a row of the weight gradient by the "
    "matching bias gradient (pick a row whose bias gradient is not ~0, e.g. the largest in size)",
)
def _(reconstruct_fn) -> None:
    g = torch.Generator().manual_seed(12)
    torch.manual_seed(12)
    layer = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
    x = torch.rand(1, 1, 28, 28, generator=g)
    loss = F.cross_entropy(layer(x), torch.tensor([4]))
    grad_w, grad_b = torch.autograd.grad(loss, [layer[1].weight, layer[1].bias])
    answer = torch.as_tensor(reconstruct_fn(grad_w.clone(), grad_b.clone()))
    expect(
        answer.numel() == 784, f"return the 784 pixels of the input, got {answer.numel()} values"
    )
    expect_close(
        answer.reshape(-1), x.reshape(-1), rtol=1e-3, atol=1e-4, what="your reconstruction"
    )


# -- lesson 13: secure aggregation and DP-FL ---------------------------------------------------


@exercise(
    "13.pairwise_mask",
    hint="start from x; for every other client j add pair_masks[(i, j)] when i < j and subtract "
    "pair_masks[(j, i)] when j < i",
)
def _(mask_fn) -> None:
    rng = InsecureSeededRandom(13)
    n = 4
    updates = [rng.int64(6) for _ in range(n)]
    pair_masks = {(i, j): rng.int64(6) for i in range(n) for j in range(i + 1, n)}
    masked = [
        torch.as_tensor(mask_fn(i, updates[i].clone(), dict(pair_masks), n)) for i in range(n)
    ]
    for i, m in enumerate(masked):
        expect(m.dtype == torch.int64, f"client {i}'s masked update should stay int64 (Z_2^64)")
        expect(not torch.equal(m, updates[i]), f"client {i}'s update is not masked at all")
    total = sum(masked[1:], masked[0])
    expect_equal(total, sum(updates[1:], updates[0]), what="the sum of the masked updates")
    expected0 = updates[0] + pair_masks[(0, 1)] + pair_masks[(0, 2)] + pair_masks[(0, 3)]
    expect_equal(masked[0], expected0, what="client 0's masked update")


@exercise(
    "13.shamir_reconstruct",
    hint="secret = Σ_i y_i · Π_{j≠i} x_j / (x_j − x_i) mod p; divide with pow(d, -1, p)",
)
def _(reconstruct_fn) -> None:
    prime = 2**61 - 1
    rng = InsecureSeededRandom(13)
    for secret, t, n in ((42, 2, 3), (123_456_789, 3, 5), (prime - 1, 4, 4)):
        shares = shamir_split(secret, threshold=t, num_shares=n, rng=rng, prime=prime)
        points = [(s.x, s.y) for s in shares[n - t :]]
        got = reconstruct_fn(points, prime)
        expect(got == secret, f"with threshold {t} you rebuilt {got}, the secret was {secret}")


@exercise(
    "13.dp_noise_std",
    hint="the sum gets noise σ·C; the server divides the sum by the expected number of clients q·K",
)
def _(std_fn) -> None:
    for sigma, clip, q, k in ((1.0, 1.0, 0.1, 100), (0.8, 0.5, 0.25, 200), (2.0, 3.0, 1.0, 10)):
        expect_close(
            float(std_fn(sigma, clip, q, k)), sigma * clip / (q * k), rtol=1e-9,
            what=f"the std for σ={sigma}, C={clip}, q={q}, K={k}",
        )  # fmt: skip


# -- lesson 14: split learning -----------------------------------------------------------------


@exercise(
    "14.wire_bytes",
    hint="per batch: activations forward and their gradient back, each batch × features × 4 bytes "
    "(float32), plus the labels, batch × 8 bytes (int64)",
)
def _(bytes_fn) -> None:
    for batch, shape in ((32, (8, 14, 14)), (1, (64,)), (100, (16, 7, 7))):
        expected = 2 * batch * math.prod(shape) * 4 + batch * 8
        got = bytes_fn(batch, shape)
        expect(got == expected, f"for a batch of {batch} with activations {shape}: {got}, "
               f"expected {expected}")  # fmt: skip


@exercise(
    "14.server_step",
    hint="received = activations.detach().requires_grad_(); loss = cross_entropy(server_part("
    "received), labels); loss.backward(); return received.grad",
)
def _(step_fn) -> None:
    torch.manual_seed(14)
    server_part = nn.Sequential(nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 5))
    activations = torch.randn(6, 12)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    received = activations.clone().requires_grad_(True)
    F.cross_entropy(server_part(received), labels).backward()
    expected = received.grad.clone()
    server_part.zero_grad()
    got = step_fn(server_part, activations.clone(), labels.clone())
    if got is None:
        raise Incorrect("return the gradient with respect to the activations (it goes back)")
    expect_close(
        torch.as_tensor(got), expected, rtol=1e-5, atol=1e-7, what="the gradient sent back"
    )


@exercise(
    "14.labels_from_gradients",
    hint="∂loss/∂logits = softmax(logits) − one_hot(label): the one negative entry per row is the "
    "label, so take argmin over dim=1",
)
def _(labels_fn) -> None:
    g = torch.Generator().manual_seed(14)
    logits = torch.randn(20, 10, generator=g, requires_grad=True)
    labels = torch.randint(0, 10, (20,), generator=g)
    (grad,) = torch.autograd.grad(F.cross_entropy(logits, labels), logits)
    expect_equal(torch.as_tensor(labels_fn(grad.clone())), labels, what="the labels you inferred")
