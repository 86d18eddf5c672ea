"""Benchmark of course_lib.he and course_lib.psi: CKKS inference, Paillier aggregation, PSI, PIR.

Run from the repository root:  COURSE_OFFLINE=1 .venv/bin/python benchmarks/he.py
(``--only-ckks`` for the CKKS part alone; ``--images``, ``--rounds``).

- CKKS: the lesson-18 network (14×14 pooled MNIST, 16 hidden units, x²) on test images, one image
  at a time, encrypt + serialise + server forward + serialise + decrypt, CPU and wall seconds per
  image, median [min–max] over interleaved rounds (alternating order), with the rotations of each
  layer and the largest logit error against the plaintext model. Two layouts in the same rounds:
  course_lib's (TenSEAL ``CKKSVector``: tiled first layer, ``CKKSVector.mm`` second layer) and
  issue 26 §4's goal layout, which TenSEAL's vector API cannot express, in raw SEAL
  (:class:`RawSealMLP`, ``tenseal.sealapi``, same parameters and depth). Then the CPU time of each
  step of course_lib's pass, and one image through ``CKKSVector.mm`` on the plain (untiled) input
  (one rotation per input: TenSEAL's tutorial recipe).
- Paillier: encrypt / aggregate / decrypt a 7,850-weight update (a 784→10 logistic regression) from
  3 clients at 2,048 bits, packed, and 500 weights unpacked for comparison.
- PSI: 1,000 × 1,000 identifiers (half shared), both parties' work, ristretto255.
- PIR: one lookup in a 1,024-record table with a 2,048-bit Paillier key.

Paillier, PSI and PIR times are medians over ``--repeats`` runs (key generation and training
excluded).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import tenseal as ts
import tenseal.sealapi as sa
import torch

from course_lib.data import load_mnist
from course_lib.he.ckks import (
    DEFAULT_COEFF_MOD_BIT_SIZES,
    DEFAULT_SCALE_BITS,
    EncryptedMLP,
    HEFriendlyMLP,
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


class RawSealMLP:
    """The goal's layout, for measurement only: layer 2 laid out like layer 1, in raw SEAL.

    TenSEAL's ``CKKSVector`` API cannot express it (see course_lib.he.ckks's docstring), so this
    uses ``tenseal.sealapi`` (SEAL's own API, shipped with TenSEAL) with the same parameters
    (N = 8192, DEFAULT_COEFF_MOD_BIT_SIZES, scale 2^33, 128-bit security), the same tiled query
    and the same depth 4: weight product; ``log2(columns)`` rotate-and-sum by multiples of
    ``hidden`` (a full cyclic sum, so no mask: every slot ``k`` holds hidden unit
    ``k mod hidden``); square; the second layer's weights laid out ``slot hidden·j + h =
    W2[j, h]``; ``log2(hidden)`` rotate-and-sum by 1, 2, 4, 8 (slot ``hidden·j`` = logit ``j``);
    a mask so that the answer holds the 10 logits and nothing else; the bias.
    """

    def __init__(self, model: HEFriendlyMLP, degree: int = 8192) -> None:
        parms = sa.EncryptionParameters(sa.SCHEME_TYPE.CKKS)
        parms.set_poly_modulus_degree(degree)
        parms.set_coeff_modulus(sa.CoeffModulus.Create(degree, list(DEFAULT_COEFF_MOD_BIT_SIZES)))
        self.context = sa.SEALContext(parms, True, sa.SEC_LEVEL_TYPE.TC128)
        keygen = sa.KeyGenerator(self.context)
        public_key, self.relin_keys, self.galois_keys = (
            sa.PublicKey(),
            sa.RelinKeys(),
            sa.GaloisKeys(),
        )
        keygen.create_public_key(public_key)
        keygen.create_relin_keys(self.relin_keys)
        keygen.create_galois_keys(self.galois_keys)  # power-of-two steps, as TenSEAL makes them
        self.encoder = sa.CKKSEncoder(self.context)
        self.encryptor = sa.Encryptor(self.context, public_key)
        self.decryptor = sa.Decryptor(self.context, keygen.secret_key())
        self.evaluator = sa.Evaluator(self.context)
        self.scale = 2.0**DEFAULT_SCALE_BITS
        slots = degree // 2
        layout = EncryptedMLP(model, slots)  # same columns, hidden and output_scale
        self.side, self.hidden, self.columns = layout.side, layout.hidden, layout.columns
        self.output_scale = layout.output_scale
        self.steps = {
            "first layer": [self.hidden << k for k in range(self.columns.bit_length() - 1)],
            "second layer": [1 << k for k in range(self.hidden.bit_length() - 1)],
        }
        inputs = self.side * self.side
        with torch.no_grad():
            w1 = torch.zeros(self.columns, self.hidden, dtype=torch.float64)
            w1[:inputs] = model.fc1.weight.T.double()
            w1[inputs] = model.fc1.bias.double()
            w2 = torch.zeros(slots // self.hidden, self.hidden, dtype=torch.float64)
            w2[:10] = model.fc2.weight.double() / self.output_scale
            logits = torch.zeros(slots, dtype=torch.float64)
            logits[: 10 * self.hidden : self.hidden] = 1.0
            bias = torch.zeros(slots, dtype=torch.float64)
            bias[: 10 * self.hidden : self.hidden] = model.fc2.bias.double() / self.output_scale
        self.bias = bias.tolist()
        levels, data = [], self.context.first_context_data()
        while data is not None:
            levels.append(data.parms_id())
            data = data.next_context_data()
        self.first = levels[0]
        self.w1 = self._encode(w1.reshape(-1).tolist(), levels[0])
        self.w2 = self._encode(w2.reshape(-1).tolist(), levels[2])
        self.mask = self._encode(logits.tolist(), levels[3])

    def _encode(self, values: list[float], parms_id: Any, scale: float | None = None) -> Any:
        plain = sa.Plaintext()
        self.encoder.encode(values, parms_id, self.scale if scale is None else scale, plain)
        return plain

    def _rotate_and_sum(self, ct: Any, steps: list[int]) -> None:
        for step in reversed(steps):
            rotated = sa.Ciphertext(self.context)
            self.evaluator.rotate_vector(ct, step, self.galois_keys, rotated)
            self.evaluator.add_inplace(ct, rotated)

    def encrypt(self, image: torch.Tensor, path: str) -> None:
        """Client: the same tiled query as EncryptedMLP.encrypt, saved to ``path``."""
        row = torch.zeros(self.columns, dtype=torch.float64)
        row[: self.side * self.side] = downsample(image.unsqueeze(0), self.side)[0].double()
        row[self.side * self.side] = 1.0
        ct = sa.Ciphertext(self.context)
        tile = row.repeat_interleave(self.hidden).tolist()  # slot c·hidden + h = x_c
        self.encryptor.encrypt(self._encode(tile, self.first), ct)
        ct.save(path)

    def forward(self, query: str, answer: str) -> None:
        """Server: read the query from a file, write the answer to another."""
        ev, ct = self.evaluator, sa.Ciphertext(self.context)
        ct.load(self.context, query)
        ev.multiply_plain_inplace(ct, self.w1)
        ev.rescale_to_next_inplace(ct)
        self._rotate_and_sum(ct, self.steps["first layer"])
        ev.square_inplace(ct)
        ev.relinearize_inplace(ct, self.relin_keys)
        ev.rescale_to_next_inplace(ct)
        ev.multiply_plain_inplace(ct, self.w2)
        ev.rescale_to_next_inplace(ct)
        self._rotate_and_sum(ct, self.steps["second layer"])
        ev.multiply_plain_inplace(ct, self.mask)
        ev.rescale_to_next_inplace(ct)
        ev.add_plain_inplace(ct, self._encode(self.bias, ct.parms_id(), ct.scale))
        ct.save(answer)

    def decrypt(self, path: str) -> list[float]:
        ct, plain = sa.Ciphertext(self.context), sa.Plaintext()
        ct.load(self.context, path)
        self.decryptor.decrypt(ct, plain)
        values = self.encoder.decode_double(plain)
        return [values[self.hidden * j] * self.output_scale for j in range(10)]


def raw_seal_round(
    server: RawSealMLP, images: torch.Tensor
) -> tuple[float, float, list[list[float]]]:
    """One pass of :class:`RawSealMLP` over ``images`` (query and answer through files in a
    temporary directory, as serialised bytes): CPU and wall seconds per image."""
    outputs = []
    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as d:
        query, answer = os.path.join(d, "query"), os.path.join(d, "answer")
        cpu, wall = time.process_time(), time.perf_counter()
        for image in images:
            server.encrypt(image, query)
            server.forward(query, answer)
            outputs.append(server.decrypt(answer))
        n = len(images)
        return (time.process_time() - cpu) / n, (time.perf_counter() - wall) / n, outputs


def ckks_round(
    server: EncryptedMLP,
    forward: Callable[[ts.CKKSVector], ts.CKKSVector],
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
        answer = forward(ts.ckks_vector_from(server_context, query)).serialize()
        outputs.append(server.decrypt(ts.ckks_vector_from(context, answer)))
    n = len(images)
    return (time.process_time() - cpu) / n, (time.perf_counter() - wall) / n, outputs


def ckks_stages(
    server: EncryptedMLP, context: ts.Context, server_context: ts.Context, image: torch.Tensor
) -> dict[str, float]:
    """CPU milliseconds of each step of one encrypted inference (median of 5)."""
    times: dict[str, list[float]] = {}

    def timed(name: str, fn: Callable[..., Any], *args: Any) -> Any:
        start = time.process_time()
        result = fn(*args)
        times.setdefault(name, []).append((time.process_time() - start) * 1e3)
        return result

    def client_query() -> bytes:
        return server.encrypt(context, image).serialize()

    for _ in range(5):
        query = timed("client: encrypt + serialise", client_query)
        x = timed("server: deserialise", ts.ckks_vector_from, server_context, query)
        x = timed("layer 1: weight product", x.mul, server._w1)
        x = timed(
            "layer 1: row sum (mask + rotations)", x.enc_matmul_plain, server._ones, server.hidden
        )
        x = timed("square", x.square)
        x = timed("layer 2: CKKSVector.mm", x.mm, server._w2)
        x = timed("bias", x.add, server._b2)
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
    raw = RawSealMLP(model)

    def run(name: str) -> tuple[float, float, list[list[float]]]:
        if name == "course_lib (TenSEAL CKKSVector)":
            return ckks_round(server, server.forward, context, server_context, batch)
        return raw_seal_round(raw, batch)

    variants = ["course_lib (TenSEAL CKKSVector)", "raw SEAL, layer 2 laid out like layer 1"]
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    wall: dict[str, list[float]] = {name: [] for name in variants}
    errors: dict[str, float] = dict.fromkeys(variants, 0.0)
    agree: dict[str, bool] = dict.fromkeys(variants, True)
    for r in range(rounds):  # interleaved, alternating order: a noisy machine hits both alike
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in order:
            c, w, outputs = run(name)
            cpu[name].append(c)
            wall[name].append(w)
            logits = torch.tensor(outputs, dtype=torch.float64)
            errors[name] = max(errors[name], (logits - plain).abs().max().item())
            agree[name] &= bool(torch.equal(logits.argmax(1), plain.argmax(1)))
    ratio = [a / b for a, b in zip(cpu[variants[0]], cpu[variants[1]], strict=True)]
    rows = [
        (
            f"CKKS inference, {name} ({images} images × {rounds} rounds)",
            f"CPU {spread(cpu[name])} s/image, wall {spread(wall[name])} s/image; "
            f"max abs logit error {errors[name]:.1e}; arg-max equal on every image: {agree[name]}",
        )
        for name in variants
    ]
    rows.append(
        ("CKKS inference, course_lib ÷ raw SEAL (CPU, paired rounds)", f"{spread(ratio, 1, 2)}×")
    )
    for name, rotations in (
        (variants[0], server.rotations),
        (variants[1], {layer: len(steps) for layer, steps in raw.steps.items()}),
    ):
        counts = ", ".join(f"{layer} {count}" for layer, count in rotations.items())
        rows.append((f"CKKS rotations per image, {name}", counts))
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
