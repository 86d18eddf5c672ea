"""Checkers for lessons 12–14: attacks on federated learning, secure aggregation and DP-FL, split
learning.

Each checker runs the learner's function on its own seeded inputs and names them in every ✗
message, so the learner can reproduce the failing case.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from course_lib.exercises._registry import (
    exercise,
    expect,
    expect_callable,
    expect_close,
    expect_equal,
    expect_not_none,
)
from course_lib.fl.gradient_inversion import LeNetSigmoid, client_gradient, output_layer, psnr
from course_lib.fl.secure_aggregation import shamir_split
from course_lib.randomness import InsecureSeededRandom

# -- lesson 12: attacks on federated learning --------------------------------------------------


@exercise(
    "12.psnr",
    task="write my_psnr(reconstruction, original): the PSNR in decibels of two images with "
    "pixels in [0, 1]",
    nudge="PSNR is built on the mean squared error between the two images, on a log scale",
    hint="mse = ((a - b) ** 2).mean(); return 10 * log10(1 / mse) (images in [0, 1])",
)
def _(psnr_fn) -> None:
    expect_callable(psnr_fn, "my_psnr", "12.psnr")
    g = torch.Generator().manual_seed(12)
    for noise in (0.01, 0.1, 0.3):
        a = torch.rand(1, 28, 28, generator=g)
        b = (a + noise * torch.randn(1, 28, 28, generator=g)).clamp(0, 1)
        expect_close(
            psnr_fn(b, a),
            psnr(b, a),
            rtol=1e-4,
            what=f"my_psnr(b, a) for a random 1×28×28 image a and b = a + {noise}·N(0, 1) noise "
            "clamped to [0, 1]",
        )


@exercise(
    "12.idlg_label",
    task="write label_from_gradient(last_layer_weight_grad): the label of the one image whose "
    "last-layer weight gradient (classes × features) you are given, as an int",
    nudge="with softmax and cross-entropy one row of that gradient differs in sign from all the "
    "others: which one, and why?",
    hint="the true class's row of the last layer's weight gradient is the only negative one: "
    "take the row with the smallest sum (argmin over dim=1 of grad.sum(dim=1))",
)
def _(label_fn) -> None:
    expect_callable(label_fn, "label_from_gradient", "12.idlg_label")
    model = LeNetSigmoid(seed=3)
    g = torch.Generator().manual_seed(12)
    for label in (0, 3, 7, 9):
        x = torch.rand(1, 1, 28, 28, generator=g)
        _, index = output_layer(model)
        grad_w = client_gradient(model, x, torch.tensor([label]))[index]
        expect_equal(
            label_fn(grad_w.clone()),
            label,
            what=f"label_from_gradient(grad) for a random image of class {label} "
            "(LeNetSigmoid(seed=3), last layer's weight gradient)",
        )


@exercise(
    "12.bias_trick",
    task="write reconstruct_from_first_layer(weight_grad, bias_grad): the 784 pixels of the one "
    "image behind the gradients of a first nn.Linear(784, 32) layer",
    nudge="write out the chain rule for z = W x + b: how do ∂L/∂W[i] and ∂L/∂b[i] differ?",
    hint="for y = W x + b, ∂L/∂W[i] = ∂L/∂b[i] · x: divide a row of the weight gradient by the "
    "matching bias gradient (pick a row whose bias gradient is not ~0, e.g. the largest in size)",
)
def _(reconstruct_fn) -> None:
    expect_callable(reconstruct_fn, "reconstruct_from_first_layer", "12.bias_trick")
    g = torch.Generator().manual_seed(12)
    torch.manual_seed(12)
    layer = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
    x = torch.rand(1, 1, 28, 28, generator=g)
    loss = F.cross_entropy(layer(x), torch.tensor([4]))
    first = layer[1]
    assert isinstance(first, nn.Linear)
    grad_w, grad_b = torch.autograd.grad(loss, [first.weight, first.bias])
    inputs = (
        "reconstruct_from_first_layer(weight_grad, bias_grad) for a random 28×28 image of label 4 "
        "through Linear(784, 32) → ReLU → Linear(32, 10)"
    )
    got = reconstruct_fn(grad_w.clone(), grad_b.clone())
    expect_not_none(got, inputs)
    answer = torch.as_tensor(got)
    expect(
        answer.numel() == 784,
        f"return the 784 pixels of the input, got {answer.numel()} values from {inputs}",
    )
    expect_close(answer.reshape(-1), x.reshape(-1), rtol=1e-3, atol=1e-4, what=inputs)


# -- lesson 13: secure aggregation and DP-FL ---------------------------------------------------


@exercise(
    "13.pairwise_mask",
    task="write mask_update(i, x, pair_masks, n): client i's update x plus its masks towards "
    "higher ids minus those towards lower ids",
    nudge="each mask pair_masks[(a, b)] must cancel in the sum: one of the two clients adds it, "
    "the other subtracts it",
    hint="start from x; for every other client j add pair_masks[(i, j)] when i < j and subtract "
    "pair_masks[(j, i)] when j < i",
)
def _(mask_fn) -> None:
    expect_callable(mask_fn, "mask_update", "13.pairwise_mask")
    rng = InsecureSeededRandom(13)
    n = 4
    updates = [rng.int64(6) for _ in range(n)]
    pair_masks = {(i, j): rng.int64(6) for i in range(n) for j in range(i + 1, n)}
    on = f"for {n} clients, random int64 updates and masks of length 6"
    masked = []
    for i in range(n):
        got = mask_fn(i, updates[i].clone(), dict(pair_masks), n)
        expect_not_none(got, f"mask_update({i}, x, pair_masks, {n}) {on}")
        masked.append(torch.as_tensor(got))
    for i, m in enumerate(masked):
        expect(m.dtype == torch.int64, f"client {i}'s masked update should stay int64 (Z_2^64)")
        expect(not torch.equal(m, updates[i]), f"client {i}'s update is not masked at all ({on})")
    total = sum(masked[1:], masked[0])
    expect_equal(total, sum(updates[1:], updates[0]), what=f"the sum of the masked updates {on}")
    expected0 = updates[0] + pair_masks[(0, 1)] + pair_masks[(0, 2)] + pair_masks[(0, 3)]
    expect_equal(masked[0], expected0, what=f"client 0's masked update {on}")


@exercise(
    "13.shamir_reconstruct",
    task="write reconstruct(points, prime): the secret rebuilt from t points (x, y) on the "
    "polynomial modulo prime, by Lagrange interpolation at 0",
    nudge="the secret is the polynomial's value at x = 0; Lagrange's formula gives it from t "
    "points, and dividing modulo a prime means multiplying by an inverse",
    hint="secret = Σ_i y_i · Π_{j≠i} x_j / (x_j − x_i) mod p; divide with pow(d, -1, p)",
)
def _(reconstruct_fn) -> None:
    expect_callable(reconstruct_fn, "reconstruct", "13.shamir_reconstruct")
    prime = 2**61 - 1
    rng = InsecureSeededRandom(13)
    for secret, t, n in ((42, 2, 3), (123_456_789, 3, 5), (prime - 1, 4, 4)):
        shares = shamir_split(secret, threshold=t, num_shares=n, rng=rng, prime=prime)
        points = [(s.x, s.y) for s in shares[n - t :]]
        call = f"reconstruct(points, 2**61 - 1) with the last {t} of {n} shares, points = {points}"
        got = reconstruct_fn(points, prime)
        expect_not_none(got, call)
        expect(
            got == secret,
            f"with threshold {t} you rebuilt {got}, the secret was {secret} ({call})",
        )


@exercise(
    "13.dp_noise_std",
    task="write noise_std(sigma, clip_norm, sample_rate, num_clients): the standard deviation of "
    "the noise on each coordinate of the averaged DP-FedAvg update",
    nudge="follow the noise through the steps: what std is added to the sum, and what is the sum "
    "divided by?",
    hint="the sum gets noise σ·C; the server divides the sum by the expected number of clients q·K",
)
def _(std_fn) -> None:
    expect_callable(std_fn, "noise_std", "13.dp_noise_std")
    for sigma, clip, q, k in ((1.0, 1.0, 0.1, 100), (0.8, 0.5, 0.25, 200), (2.0, 3.0, 1.0, 10)):
        expect_close(
            std_fn(sigma, clip, q, k), sigma * clip / (q * k), rtol=1e-9,
            what=f"the std for σ={sigma}, C={clip}, q={q}, K={k}",
        )  # fmt: skip


# -- lesson 14: split learning -----------------------------------------------------------------


@exercise(
    "14.wire_bytes",
    task="write wire_bytes(batch_size, activation_shape): the bytes that cross the wire for one "
    "batch — activations, their gradients and the int64 labels",
    nudge="count what goes each way per batch: the activations go up, something of the same size "
    "comes back, and the labels travel too",
    hint="per batch: activations forward and their gradient back, each batch × features × 4 bytes "
    "(float32), plus the labels, batch × 8 bytes (int64)",
)
def _(bytes_fn) -> None:
    expect_callable(bytes_fn, "wire_bytes", "14.wire_bytes")
    for batch, shape in ((32, (8, 14, 14)), (1, (64,)), (100, (16, 7, 7))):
        expected = 2 * batch * math.prod(shape) * 4 + batch * 8
        got = bytes_fn(batch, shape)
        expect_not_none(got, f"wire_bytes({batch}, {shape})")
        expect(got == expected, f"for a batch of {batch} with activations {shape}: {got}, "
               f"expected {expected}")  # fmt: skip


_SERVER_INPUTS = (
    "server_step(server_part, activations, labels) for server_part = Linear(12, 8) → Tanh → "
    "Linear(8, 5), 6 random activations of 12 features and labels [0, 1, 2, 3, 4, 0]"
)


@exercise(
    "14.server_step",
    task="write server_step(server_part, activations, labels): backpropagate the server's loss "
    "and return the gradient with respect to the received activations",
    nudge="the activations arrive as plain numbers: make them a leaf that records its gradient "
    "before the server's forward pass",
    hint="received = activations.detach().requires_grad_(); loss = cross_entropy(server_part("
    "received), labels); loss.backward(); return received.grad",
)
def _(step_fn) -> None:
    expect_callable(step_fn, "server_step", "14.server_step")
    torch.manual_seed(14)
    server_part = nn.Sequential(nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 5))
    activations = torch.randn(6, 12)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    received = activations.clone().requires_grad_(True)
    F.cross_entropy(server_part(received), labels).backward()
    assert received.grad is not None
    expected = received.grad.clone()
    server_part.zero_grad()
    got = step_fn(server_part, activations.clone(), labels.clone())
    expect_not_none(got, f"the gradient sent back by {_SERVER_INPUTS}")
    expect_close(
        got, expected, rtol=1e-5, atol=1e-7, what=f"the gradient sent back by {_SERVER_INPUTS}"
    )


@exercise(
    "14.labels_from_gradients",
    task="write labels_from_gradients(logit_grads): the labels of a batch, given the gradients "
    "of the loss with respect to its logits (batch × classes)",
    nudge="the gradient of cross-entropy with respect to the logits is softmax − one_hot(label): "
    "where is it negative?",
    hint="∂loss/∂logits = softmax(logits) − one_hot(label): the one negative entry per row is the "
    "label, so take argmin over dim=1",
)
def _(labels_fn) -> None:
    expect_callable(labels_fn, "labels_from_gradients", "14.labels_from_gradients")
    g = torch.Generator().manual_seed(14)
    logits = torch.randn(20, 10, generator=g, requires_grad=True)
    labels = torch.randint(0, 10, (20,), generator=g)
    (grad,) = torch.autograd.grad(F.cross_entropy(logits, labels), logits)
    expect_equal(
        labels_fn(grad.clone()),
        labels,
        what="labels_from_gradients(grad) for 20 random rows of 10 logits with random labels",
    )
