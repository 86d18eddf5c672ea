"""Benchmark of course_lib.he and course_lib.psi: CKKS inference, Paillier aggregation, PSI, PIR.

Run from the repository root:  COURSE_OFFLINE=1 .venv/bin/python benchmarks/he.py

- CKKS: the lesson-18 network (14×14 pooled MNIST, 16 hidden units, x²) on test images, one image
  at a time, encrypt + serialise + server forward + decrypt; the comparison row evaluates the same
  network with TenSEAL's ``CKKSVector.mm`` on the plain (untiled) input (one rotation per input).
- Paillier: encrypt / aggregate / decrypt a 7,850-weight update (a 784→10 logistic regression) from
  3 clients at 2,048 bits, packed, and 500 weights unpacked for comparison.
- PSI: 1,000 × 1,000 identifiers (half shared), both parties' work, ristretto255.
- PIR: one lookup in a 1,024-record table with a 2,048-bit Paillier key.

Times are medians over ``--repeats`` runs (key generation and training excluded).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import tenseal as ts
import torch

from course_lib.data import load_mnist
from course_lib.he.ckks import downsample, encrypted_inference, make_context, train_he_mlp
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


def ckks_rows(images: int) -> list[tuple[str, str]]:
    train, test = load_mnist(train=True), load_mnist(train=False)
    model = train_he_mlp(train)
    context = make_context()
    report = encrypted_inference(model, test.images[:images], context)
    rows = [
        (
            f"CKKS inference, tiled packing ({images} images)",
            f"{report.seconds_per_image:.3f} s/image; "
            f"max abs logit error {report.max_abs_error:.1e}; "
            f"arg-max agreement {report.agreement:.0%}; query {report.query_bytes / 1e3:.0f} kB",
        )
    ]
    x = downsample(test.images[:1], model.side)[0].tolist() + [1.0]
    w1 = torch.cat([model.fc1.weight.T, model.fc1.bias[None]]).tolist()
    w2, b2 = model.fc2.weight.T.tolist(), model.fc2.bias.tolist()
    start = time.perf_counter()
    naive = (ts.ckks_vector(context, x).mm(w1).square().mm(w2) + b2).decrypt()
    seconds = time.perf_counter() - start
    error = max(abs(a - b) for a, b in zip(naive, report.plain_logits[0].tolist(), strict=True))
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
    parser.add_argument("--images", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = ckks_rows(args.images) + paillier_rows(args.repeats) + psi_rows(args.repeats)
    print("| measurement | result |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
