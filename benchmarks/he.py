"""Benchmark of course_lib.he and course_lib.psi: CKKS inference, Paillier aggregation, PSI, PIR.

Run from the repository root:  COURSE_OFFLINE=1 .venv/bin/python benchmarks/he.py
(``--only-ckks`` for the CKKS part alone; ``--images``, ``--rounds``).

- CKKS: the lesson-18 network (14×14 pooled MNIST, 16 hidden units, x²) on test images, one image
  at a time, encrypt + serialise + server forward + serialise + decrypt, CPU and wall seconds per
  image, median [min–max] over interleaved rounds (alternating order), with the rotations of each
  layer and the largest logit error against the plaintext model. Two layouts in the same rounds,
  same parameters (N = 8192, 128-bit security) and depth: course_lib's ``EncryptedMLP`` (issue 26
  §4: both layers replicate, multiply, rotate-and-sum; TenSEAL objects, the server pass in SEAL
  through ``tenseal.sealapi``; 8 + 4 rotations; its time includes drawing and encoding the random
  fill that hides the partial sums in the answer's other slots) and the layout before it
  (:class:`VectorAPIMLP`: TenSEAL's vector API, ``enc_matmul_plain`` then ``CKKSVector.mm``;
  8 + 15 rotations; no fill). Then the CPU time of each step of course_lib's pass, and one image
  through ``CKKSVector.mm`` on the plain (untiled) input (one rotation per input: TenSEAL's
  tutorial recipe).

  Measured with the fill (``COURSE_OFFLINE=1 OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python
  benchmarks/he.py --only-ckks --rounds 5``, 2-core shared AMD EPYC VM): course_lib 0.055 s/image
  CPU vs 0.103 before (1.84× in paired rounds), max logit error 7.6e-4 vs 1.2e-2; the fill itself
  costs about 1 % of the time per image (paired A/B against the bias alone).
- Paillier: encrypt / aggregate / decrypt a 7,850-weight update (a 784→10 logistic regression) from
  3 clients at 2,048 bits, packed, and 500 weights unpacked for comparison.
- PSI: 1,000 × 1,000 identifiers (half shared), both parties' work, ristretto255.
- PIR: one lookup in a 1,024-record table with a 2,048-bit Paillier key.

Paillier, PSI and PIR times are medians over ``--repeats`` runs (key generation and training
excluded).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import tenseal as ts
import torch

from course_lib.data import load_mnist
from course_lib.he.ckks import (
    EncryptedMLP,
    HEFriendlyMLP,
    diagonal_rotations,
    downsample,
    make_context,
    public_context,
    slot_count,
    train_he_mlp,
)
from course_lib.he.paillier import (
    FixedPointEncoding,
    aggregate,
    decrypt_sum,
    encrypt_update,
    generate_keypair,
)
from course_lib.psi import PIRClient, PIRServer, private_set_intersection


def median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class VectorAPIMLP:
    """The layout before issue 26, for comparison: TenSEAL's vector API only.

    The same tiled query as :class:`EncryptedMLP`; the first layer is a slot-wise product and
    ``enc_matmul_plain`` (a mask and ``log2(columns)`` rotations), the second TenSEAL's
    ``CKKSVector.mm`` (one rotation per non-zero diagonal after the first: 15 for a dense
    16 × 10 matrix). Same parameters, depth 4 (weights, mask, square, second layer) and output
    scaling.
    """

    def __init__(self, model: HEFriendlyMLP, slots: int) -> None:
        self.layout = EncryptedMLP(model, slots)
        self.hidden, self.columns = self.layout.hidden, self.layout.columns
        inputs = model.side * model.side
        with torch.no_grad():
            w1 = torch.zeros(self.columns, self.hidden, dtype=torch.float64)
            w1[:inputs] = model.fc1.weight.T.double()
            w1[inputs] = model.fc1.bias.double()
            w2 = model.fc2.weight.T.double() / self.layout.output_scale
            self.w1 = w1.reshape(-1).tolist()
            self.w2 = w2.tolist()
            self.b2 = (model.fc2.bias.double() / self.layout.output_scale).tolist()
        self.ones = [1.0] * self.columns
        self.rotations = {
            "first layer": self.columns.bit_length() - 1,
            "second layer": diagonal_rotations(w2, slots),
        }

    def encrypt(self, context: ts.Context, image: torch.Tensor) -> ts.CKKSVector:
        return self.layout.encrypt(context, image)

    def forward(self, encrypted: ts.CKKSVector) -> ts.CKKSVector:
        hidden = (encrypted * self.w1).enc_matmul_plain(self.ones, self.hidden)
        hidden.square_()
        return hidden.mm(self.w2) + self.b2

    def decrypt(self, answer: ts.CKKSVector) -> list[float]:
        return [value * self.layout.output_scale for value in answer.decrypt()]


def ckks_round(
    server: EncryptedMLP | VectorAPIMLP,
    context: ts.Context,
    server_context: ts.Context,
    images: torch.Tensor,
) -> tuple[float, float, list[list[float]]]:
    """One pass over ``images`` as encrypted_inference does it (encrypt, serialise, server
    forward under the public context, serialise, decrypt): CPU and wall seconds per image."""
    outputs = []
    cpu, wall = time.process_time(), time.perf_counter()
    for image in images:
        query = server.encrypt(context, image).serialize()
        answer = server.forward(ts.ckks_vector_from(server_context, query)).serialize()
        outputs.append(server.decrypt(ts.ckks_vector_from(context, answer)))
    n = len(images)
    return (time.process_time() - cpu) / n, (time.perf_counter() - wall) / n, outputs


def ckks_stages(
    server: EncryptedMLP, context: ts.Context, server_context: ts.Context, image: torch.Tensor
) -> dict[str, float]:
    """CPU milliseconds of each step of one encrypted inference with course_lib (median of 5)."""
    times: dict[str, list[float]] = {}

    def timed(name: str, fn: Callable[..., Any], *args: Any) -> Any:
        start = time.process_time()
        result = fn(*args)
        times.setdefault(name, []).append((time.process_time() - start) * 1e3)
        return result

    def client_query() -> bytes:
        return server.encrypt(context, image).serialize()

    rotations = sum(server.rotations.values())
    for _ in range(5):
        query = timed("client: encrypt + serialise", client_query)
        x = timed("server: deserialise", ts.ckks_vector_from, server_context, query)
        x = timed(f"server: forward ({rotations} rotations)", server.forward, x)
        answer = timed("server: serialise", x.serialize)
        timed("client: decrypt", server.decrypt, ts.ckks_vector_from(context, answer))
    return {name: statistics.median(values) for name, values in times.items()}


def spread(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    """``median [min–max]``."""
    low, mid, high = (scale * v for v in (min(values), statistics.median(values), max(values)))
    return f"{mid:.{digits}f} [{low:.{digits}f}–{high:.{digits}f}]"


def ckks_rows(images: int, rounds: int) -> list[tuple[str, str]]:
    train, test = load_mnist(train=True), load_mnist(train=False)
    model = train_he_mlp(train)
    context = make_context()
    server_context = public_context(context)
    slots = slot_count(context)
    server = EncryptedMLP(model, slots)
    batch = test.images[:images]
    with torch.no_grad():
        plain = model(batch).double()
    before = VectorAPIMLP(model, slots)
    servers: dict[str, EncryptedMLP | VectorAPIMLP] = {
        "course_lib EncryptedMLP (both layers rotate-and-sum, SEAL pass)": server,
        "before: TenSEAL vector API (enc_matmul_plain + CKKSVector.mm)": before,
    }
    variants = list(servers)
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    wall: dict[str, list[float]] = {name: [] for name in variants}
    errors: dict[str, float] = dict.fromkeys(variants, 0.0)
    agree: dict[str, bool] = dict.fromkeys(variants, True)
    for name in variants:  # warm-up: encodes the course's plaintexts once, outside the rounds
        ckks_round(servers[name], context, server_context, batch[:1])
    for r in range(rounds):  # interleaved, alternating order: a noisy machine hits both alike
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in order:
            c, w, outputs = ckks_round(servers[name], context, server_context, batch)
            cpu[name].append(c)
            wall[name].append(w)
            logits = torch.tensor(outputs, dtype=torch.float64)
            errors[name] = max(errors[name], (logits - plain).abs().max().item())
            agree[name] &= bool(torch.equal(logits.argmax(1), plain.argmax(1)))
    ratio = [a / b for a, b in zip(cpu[variants[1]], cpu[variants[0]], strict=True)]
    rows = [
        (
            f"CKKS inference, {name} ({images} images × {rounds} rounds)",
            f"CPU {spread(cpu[name])} s/image, wall {spread(wall[name])} s/image; "
            f"max abs logit error {errors[name]:.1e}; arg-max equal on every image: {agree[name]}",
        )
        for name in variants
    ]
    rows.append(
        (
            "CKKS inference, speed-up of course_lib over before (CPU, paired rounds)",
            f"{spread(ratio, 1, 2)}×; goal ≤ 0.07 s/image: "
            f"{statistics.median(cpu[variants[0]]) <= 0.07}",
        )
    )
    for name in variants:
        rotations = servers[name].rotations
        counts = ", ".join(f"{layer} {count}" for layer, count in rotations.items())
        rows.append(
            (f"CKKS rotations per image, {name}", f"{counts} (total {sum(rotations.values())})")
        )
    stages = ckks_stages(server, context, server_context, batch[0])
    rows.append(
        (
            "CKKS stages, CPU ms (median of 5)",
            "; ".join(f"{name} {ms:.1f}" for name, ms in stages.items()),
        )
    )
    x = downsample(test.images[:1], model.side)[0].tolist() + [1.0]
    w1 = torch.cat([model.fc1.weight.T, model.fc1.bias[None]]).tolist()
    w2, b2 = model.fc2.weight.T.tolist(), model.fc2.bias.tolist()
    start = time.perf_counter()
    naive = (ts.ckks_vector(context, x).mm(w1).square().mm(w2) + b2).decrypt()
    seconds = time.perf_counter() - start
    error = max(abs(a - b) for a, b in zip(naive, plain[0].tolist(), strict=True))
    rows.append(
        (
            "CKKS inference, CKKSVector.mm on plain layout (1 image)",
            f"{seconds:.3f} s/image; max abs logit error {error:.1e}",
        )
    )
    return rows


def paillier_rows(repeats: int) -> list[tuple[str, str]]:
    public_key, private_key = generate_keypair(2048)
    gen = torch.Generator().manual_seed(0)
    updates = [
        {
            "weight": torch.randn(10, 784, generator=gen) * 0.01,
            "bias": torch.randn(10, generator=gen),
        }
        for _ in range(3)
    ]
    encrypted = [encrypt_update(public_key, u) for u in updates]
    t_enc = median_time(lambda: encrypt_update(public_key, updates[0]), repeats)
    t_add = median_time(lambda: aggregate(encrypted), repeats)
    total = aggregate(encrypted)
    t_dec = median_time(lambda: decrypt_sum(private_key, total), repeats)
    got = decrypt_sum(private_key, total)
    error = max((got[k] - sum(u[k].double() for u in updates)).abs().max().item() for k in got)
    single = FixedPointEncoding(pack=False)
    part = torch.randn(500, generator=gen) * 0.01
    t_single = median_time(lambda: encrypt_update(public_key, part, encoding=single), 1)
    return [
        (
            "Paillier 2048, encrypt 7,850 weights (packed)",
            f"{t_enc:.2f} s/client; {encrypted[0].nbytes / 1e3:.0f} kB "
            f"({len(encrypted[0].ciphertexts)} ciphertexts) vs 31 kB float32",
        ),
        ("Paillier 2048, aggregate 3 clients", f"{t_add * 1e3:.1f} ms"),
        ("Paillier 2048, decrypt the sum", f"{t_dec:.2f} s; max error {error:.1e}"),
        (
            "Paillier 2048, encrypt 500 weights unpacked",
            f"{t_single:.2f} s ({t_single / 500 * 7850:.0f} s extrapolated to 7,850)",
        ),
    ]


def psi_rows(repeats: int) -> list[tuple[str, str]]:
    a = [f"id-{i}" for i in range(1000)]
    b = [f"id-{i}" for i in range(500, 1500)]
    result = private_set_intersection(a, b)
    assert len(result.intersection) == 500
    seconds = median_time(lambda: private_set_intersection(a, b), repeats)
    pk, sk = generate_keypair(2048)
    server = PIRServer([f"record {i}" for i in range(1024)])
    client = PIRClient(pk, sk)

    def lookup() -> bytes:
        return client.decode(server.answer(client.query(777, 1024)))

    assert lookup() == b"record 777"
    t_pir = median_time(lookup, 1)
    query_kb = client.query(0, 1024).nbytes / 1e3
    wire_kb = (result.bytes_to_server + result.bytes_to_client) / 1e3
    return [
        (
            "DH-PSI (ristretto255), 1,000 × 1,000 items",
            f"{seconds:.2f} s; 2 messages, {wire_kb:.0f} kB",
        ),
        (
            "PIR (Paillier 2048), 1 of 1,024 records",
            f"{t_pir:.2f} s; {query_kb:.0f} kB up, {query_kb:.0f} kB down",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=20, help="CKKS: test images per round")
    parser.add_argument("--rounds", type=int, default=5, help="CKKS: interleaved rounds")
    parser.add_argument("--only-ckks", action="store_true", help="skip Paillier, PSI and PIR")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = ckks_rows(args.images, args.rounds)
    if not args.only_ckks:
        rows += paillier_rows(args.repeats) + psi_rows(args.repeats)
    print("| measurement | result |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
