"""CKKS encrypted inference (course_lib.he.ckks): close to plaintext, same predictions, errors."""

import copy
import os

import numpy as np
import pytest
import tenseal as ts
import tenseal.sealapi as sa
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import course_lib.he.ckks as ckks
from course_lib.he.ckks import (
    EncryptedMLP,
    HEFriendlyMLP,
    _ckks_vector_bytes,
    _logit_bound,
    diagonal_rotations,
    encrypted_inference,
    fill_bound,
    make_context,
    output_headroom,
    public_context,
    slot_count,
    train_he_mlp,
)

# Error bound on the logits: CKKS at scale 2**33 keeps ~33 bits; rescaling noise, the square (which
# doubles relative error) and sums over 16 hidden units and 197 inputs cost a few bits each. A
# relative error of 2**-10 (one part in 1024 of the largest logit) leaves a wide safety margin.
RELATIVE_BOUND = 2.0**-10


@pytest.fixture(scope="module")
def context():
    return make_context()


@pytest.fixture(scope="module")
def model():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(256, 1, 28, 28, generator=gen)
    labels = torch.randint(0, 10, (256,), generator=gen)
    return train_he_mlp(torch.utils.data.TensorDataset(images, labels), epochs=2)


def _assert_matches_plaintext(report) -> None:
    """Encrypted logits within the relative bound of the plaintext ones, and the same arg-max
    wherever the plaintext top-2 margin exceeds twice the error (there it cannot flip)."""
    scale = max(1.0, report.plain_logits.abs().max().item())
    assert report.max_abs_error <= RELATIVE_BOUND * scale
    top2 = report.plain_logits.topk(2, dim=1).values
    decisive = (top2[:, 0] - top2[:, 1]) > 2 * report.max_abs_error
    agree = report.encrypted_logits.argmax(1) == report.plain_logits.argmax(1)
    assert agree[decisive].all()


def test_encrypted_logits_match_plaintext(model, context):
    images = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    report = encrypted_inference(model, images, context)
    _assert_matches_plaintext(report)
    assert report.seconds_per_image > 0 and report.query_bytes > 0 and report.answer_bytes > 0


def test_server_works_with_the_public_context_only(model, context):
    """The threat model: the server gets the public context *as bytes* (as over a network), which
    holds no secret key, and still computes the answer; only the client can read it."""
    server_ctx = ts.context_from(public_context(context).serialize())
    assert not server_ctx.is_private() and not server_ctx.has_secret_key()
    with pytest.raises(ValueError, match="doesn't hold a Secret key"):
        server_ctx.secret_key()
    assert server_ctx.has_galois_keys() and server_ctx.has_relin_keys()
    server = EncryptedMLP(model, slot_count(context))
    image = torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(2))
    query = ts.ckks_vector_from(server_ctx, server.encrypt(context, image).serialize())
    answer = server(query)
    assert not answer.context().has_secret_key()  # the answer lives under the server's context
    with pytest.raises(ValueError, match="secret_key"):
        answer.decrypt()  # no secret key on the server
    logits = torch.tensor(server.decrypt(ts.ckks_vector_from(context, answer.serialize())))
    expected = model(image.unsqueeze(0))[0].detach().double()
    assert (logits - expected).abs().max() <= RELATIVE_BOUND * max(1.0, expected.abs().max().item())


def test_the_lesson_layout_needs_12_rotations_and_does_12(model, context, monkeypatch):
    """8 for the first layer (log2 of 256 columns) and 4 for the second (log2 of 16 hidden units),
    counted on SEAL's evaluator during a real pass; TenSEAL's CKKSVector.mm needed 15 for the
    second layer."""
    calls: list[int] = []
    real = ckks.sa.Evaluator

    class CountingEvaluator:
        def __init__(self, seal_context):
            self._evaluator = real(seal_context)

        def __getattr__(self, name):
            return getattr(self._evaluator, name)

        def rotate_vector(self, ciphertext, step, keys, destination):
            calls.append(step)
            return self._evaluator.rotate_vector(ciphertext, step, keys, destination)

    monkeypatch.setattr(ckks.sa, "Evaluator", CountingEvaluator)
    server = EncryptedMLP(model, slot_count(context))
    assert server.rotations == {"first layer": 8, "second layer": 4}
    image = torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(3))
    logits = torch.tensor(server.decrypt(server(server.encrypt(context, image))))
    assert sorted(calls) == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048]
    expected = model(image.unsqueeze(0))[0].detach().double()
    assert (logits - expected).abs().max() <= RELATIVE_BOUND * max(1.0, expected.abs().max().item())
    dense = (
        model.fc2.weight.T.double()
    )  # the old second layer: a rotation per diagonal after the first
    assert diagonal_rotations(dense, slot_count(context)) == 15


def _emulated_partial_sums(server: EncryptedMLP, rows: list[list[float]]) -> torch.Tensor:
    """EncryptedMLP.forward in the clear up to the mask, on the tiled rows of a query: the same
    slot layout, products and rotations (a left rotation by s is torch.roll by -s)."""
    tile = torch.tensor(rows, dtype=torch.float64).T.reshape(-1)
    v = tile * torch.tensor(server._w1, dtype=torch.float64)
    for step in server.steps["first layer"]:
        v = v + v.roll(-step)
    v = v.square() * torch.tensor(server._w2, dtype=torch.float64)
    for step in server.steps["second layer"]:
        v = v + v.roll(-step)
    return v


def _emulated_pass(server: EncryptedMLP, image: torch.Tensor) -> torch.Tensor:
    """The whole pass in exact float64 arithmetic, so the layout itself is checked exactly. (In
    exact arithmetic the mask zeroes every other slot; under CKKS its rounding error leaves
    partial sum · ρ there, which the random fill covers: test_a_client_cannot_read_...)"""
    v = _emulated_partial_sums(server, server.encode_input(image))
    v = v * torch.tensor(server._mask, dtype=torch.float64) + server._bias
    rest = torch.ones_like(v, dtype=torch.bool)
    rest[: server.hidden * server.num_classes : server.hidden] = False
    assert v[rest].abs().max() == 0
    return v[: server.hidden * server.num_classes : server.hidden] * server.output_scale


@pytest.mark.parametrize(("side", "hidden"), [(14, 16), (7, 4), (10, 8), (15, 16), (3, 1)])
def test_the_layout_computes_the_network_exactly_in_the_clear(side, hidden):
    torch.manual_seed(side + hidden)
    model = HEFriendlyMLP(side, hidden).double().eval()
    server = EncryptedMLP(model, 4096)
    for seed in range(3):
        image = torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(seed)).double()
        expected = model(image.unsqueeze(0))[0].detach()
        assert torch.allclose(_emulated_pass(server, image), expected, rtol=1e-10, atol=1e-10)


def test_the_answer_is_wrapped_exactly_as_tenseal_serialises(context):
    """_ckks_vector_bytes writes TenSEAL's CKKSVectorProto by hand: byte-identical to serialize."""
    for values in ([1.5, -2.0], [float(i) for i in range(4096)]):
        vector = ts.ckks_vector(context, values)
        (ciphertext,) = vector.ciphertext()
        wrapped = _ckks_vector_bytes(ciphertext, vector.size(), context.global_scale)
        assert wrapped == vector.serialize()


def test_too_few_levels_is_a_clear_error(model):
    shallow = make_context(coeff_mod_bit_sizes=(41, 33, 33, 33, 45))  # depth 3 < 4
    server = EncryptedMLP(model, slot_count(shallow))
    with pytest.raises(ValueError, match="ran out of levels"):
        server(server.encrypt(shallow, torch.rand(1, 28, 28)))


def test_bad_shapes_and_sizes(model, context):
    with pytest.raises(ValueError, match="power of two"):
        EncryptedMLP(HEFriendlyMLP(side=7, hidden=12))
    with pytest.raises(ValueError, match="do not fit"):
        EncryptedMLP(HEFriendlyMLP(side=14, hidden=32))
    server = EncryptedMLP(model, slot_count(context))
    with pytest.raises(ValueError, match="expected"):
        server(ts.ckks_vector(context, [1.0, 2.0]))
    with pytest.raises(ValueError, match="one image at a time"):
        server.encrypt(context, torch.rand(2, 1, 28, 28))
    with pytest.raises(ValueError, match="N, 1, 28, 28"):
        encrypted_inference(model, torch.rand(0, 1, 28, 28), context)
    with pytest.raises(TypeError, match="TensorDataset"):
        train_he_mlp([(torch.zeros(1, 28, 28), 0)])
    with pytest.raises(ValueError, match="poly_modulus_degree"):
        make_context(poly_modulus_degree=1000)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scale_bits": 25}, r"scale 2\^25 does not match the middle primes \[33, 33, 33, 33\]"),
        ({"scale_bits": 36}, r"scale 2\^36 does not match"),
        ({"scale_bits": 40}, r"scale 2\^40 does not match"),
        ({"poly_modulus_degree": 4096}, "at most 109 bits .* total 218"),
        ({"coeff_mod_bit_sizes": (34, 33, 33, 45)}, "first prime"),
        ({"coeff_mod_bit_sizes": (41, 33, 33, 40)}, "special"),
        ({"coeff_mod_bit_sizes": (41, 33, 61)}, "20 to 60 bits"),
        ({"coeff_mod_bit_sizes": (41, 45)}, "middle prime"),
    ],
)
def test_parameters_that_cannot_work_are_explained(kwargs, match):
    """Old code accepted 2^25 / 2^36 (garbage after decryption) and gave SEAL's message for 4096."""
    with pytest.raises(ValueError, match=match):
        make_context(**kwargs)


def test_a_small_ring_works_with_matching_parameters():
    ctx = make_context(4096, (30, 24, 24, 30), scale_bits=24)
    vector = ts.ckks_vector(ctx, [1.5, -2.0]) * [2.0, 0.5]
    assert torch.allclose(torch.tensor(vector.decrypt()), torch.tensor([3.0, -1.0]), atol=1e-2)


def test_large_logits_do_not_wrap_around(model, context):
    """Attack on the headroom: logits in the thousands wrapped to wrong values in old code."""
    images = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    big = copy.deepcopy(model)
    with torch.no_grad():
        factor = 8_000 / model(images).abs().max()
        big.fc2.weight *= factor
        big.fc2.bias *= factor
    report = encrypted_inference(big, images, context)
    assert report.plain_logits.abs().max() > 7_000  # beyond the 64 (and the measured ~2^11) room
    assert EncryptedMLP(big, slot_count(context)).output_scale > 1
    scale = report.plain_logits.abs().max().item()
    assert report.max_abs_error <= RELATIVE_BOUND * scale
    assert report.agreement == 1.0


@settings(deadline=None, max_examples=30)
@given(seed=st.integers(0, 2**16))
def test_logit_bound_holds_for_every_image_with_pixels_in_0_1(model, seed):
    g = torch.Generator().manual_seed(seed)
    images = (
        torch.rand(64, 1, 28, 28, generator=g).round()
        if seed % 2
        else torch.rand(64, 1, 28, 28, generator=g)
    )  # corners of the box and interior points
    with torch.no_grad():
        assert model(images).abs().max().item() <= _logit_bound(model) + 1e-4
    assert output_headroom() == 64.0


def test_pixels_outside_0_1_are_refused(model, context):
    server = EncryptedMLP(model, slot_count(context))
    with pytest.raises(ValueError, match=r"pixels must lie in \[0, 1\]"):
        server.encrypt(context, torch.full((1, 28, 28), 2.0))


def test_parameters_follow_the_one_integer_rule():
    """Issue 23 §5: NumPy integers are integers, bools are not (course_lib.validation)."""
    from course_lib.he.ckks import check_parameters

    checked = check_parameters(np.int64(8192), (np.int64(40), 21, 21, 40), np.int32(21))
    assert checked == (8192, [40, 21, 21, 40], 21)
    assert all(type(v) is int for v in (checked[0], *checked[1], checked[2]))
    for kwargs in (
        {"poly_modulus_degree": True},
        {"scale_bits": np.bool_(True)},
        {"coeff_mod_bit_sizes": (40, True, 21, 40)},
        {"coeff_mod_bit_sizes": "40,21,21,40"},
        {"scale_bits": 21.0},
    ):
        arguments = {"poly_modulus_degree": 8192, "coeff_mod_bit_sizes": (40, 21, 21, 40)}
        arguments["scale_bits"] = 21
        with pytest.raises(TypeError, match=next(iter(kwargs))):
            check_parameters(**{**arguments, **kwargs})


@pytest.mark.parametrize(
    ("side", "hidden", "first_rotations"),
    [
        (7, 4, 10),  # 49 + 1 inputs (not a power of two) in 1,024 columns
        (10, 8, 9),  # 101 inputs in 512 columns
        (15, 16, 8),  # 226 inputs in 256 columns: the largest side that fits 16 hidden units
    ],
)
def test_encrypted_logits_match_plaintext_for_other_sizes(context, side, hidden, first_rotations):
    """The tiled layout for sizes that are not the lesson's: exact column count and padding."""
    torch.manual_seed(side)
    model = HEFriendlyMLP(side, hidden).eval()
    server = EncryptedMLP(model, slot_count(context))
    assert server.columns == 4096 // hidden
    assert server.rotations == {
        "first layer": first_rotations,
        "second layer": hidden.bit_length() - 1,
    }
    images = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(side))
    _assert_matches_plaintext(encrypted_inference(model, images, context))


def test_one_side_too_many_does_not_fit():
    """16² + 1 = 257 inputs need more than the 256 columns left by 16 hidden units."""
    with pytest.raises(ValueError, match="256 inputs .* do not fit in 4096 slots"):
        EncryptedMLP(HEFriendlyMLP(side=16, hidden=16), 4096)
    assert EncryptedMLP(HEFriendlyMLP(side=15, hidden=16), 4096).columns == 256


def _emulated_mm(vector: torch.Tensor, matrix: torch.Tensor, slots: int) -> torch.Tensor:
    """TenSEAL's diagonal method in the clear, using only the diagonals it does not skip."""
    rows, cols = matrix.shape
    k = torch.arange(min(slots, rows * cols))
    out = torch.zeros(len(k), dtype=matrix.dtype)
    for i in range(rows):
        diagonal = matrix[(i + k) % rows, k % cols]
        if diagonal.ne(0).any():
            out += diagonal * vector[(i + k) % rows]
    return out[:cols]


@pytest.mark.parametrize(
    ("nonzero", "expected"),
    [
        ("dense", 15),
        ("none", 0),
        ("one entry", 8),  # entry (3, 0) lies on the 8 odd diagonals of a 16 × 10 matrix
        ("diagonal 0", 7),  # entries (k mod 16, k mod 10): the 8 even diagonals, 0 rotation-free
        ("identity 16", 0),  # a square matrix's main diagonal: no rotation at all
    ],
)
def test_second_layer_rotation_count_is_exact(nonzero, expected):
    matrix = torch.rand(16, 16 if nonzero == "identity 16" else 10, dtype=torch.float64) + 0.5
    if nonzero == "none":
        matrix.zero_()
    elif nonzero == "one entry":
        matrix = torch.zeros_like(matrix)
        matrix[3, 0] = 1.0
    elif nonzero == "diagonal 0":
        keep = torch.zeros_like(matrix, dtype=torch.bool)
        k = torch.arange(160)
        keep[k % 16, k % 10] = True
        matrix = matrix * keep
    elif nonzero == "identity 16":
        matrix = torch.eye(16, dtype=torch.float64)
    assert diagonal_rotations(matrix, 4096) == expected
    # the diagonals counted are all the method needs: skipping the others loses nothing
    vector = torch.rand(16, dtype=torch.float64)
    assert torch.allclose(_emulated_mm(vector, matrix, 4096), vector @ matrix)


def test_encrypted_mm_agrees_with_the_diagonal_model(context):
    """The old second layer (benchmarks/he.py's baseline): TenSEAL's mm on a matrix with only the
    odd diagonals gives the plaintext product."""
    matrix = torch.zeros(16, 10, dtype=torch.float64)
    matrix[3, 0], matrix[8, 7] = 0.5, -2.0  # both on odd diagonals only
    assert diagonal_rotations(matrix, 4096) == 8
    vector = torch.rand(16, dtype=torch.float64)
    encrypted = ts.ckks_vector(context, vector.tolist()).mm(matrix.tolist())
    got = torch.tensor(encrypted.decrypt(), dtype=torch.float64)
    assert torch.allclose(got, vector @ matrix, atol=1e-4)


def test_bad_server_arguments_are_refused(model, context):
    with pytest.raises(ValueError, match="power of two"):
        EncryptedMLP(model, 3000)
    with pytest.raises(ValueError, match="power of two"):
        EncryptedMLP(model, 0)
    with pytest.raises(TypeError, match="slots"):
        EncryptedMLP(model, 4096.0)
    with pytest.raises(TypeError, match="slots"):
        EncryptedMLP(model, True)
    with pytest.raises(ValueError, match="headroom must be positive"):
        EncryptedMLP(model, 4096, headroom=0.0)
    with pytest.raises(TypeError, match="headroom"):
        EncryptedMLP(model, 4096, headroom="64")
    with pytest.raises(TypeError, match="HEFriendlyMLP"):
        EncryptedMLP(torch.nn.Linear(2, 2))
    server = EncryptedMLP(model, slot_count(context))
    with pytest.raises(TypeError, match="torch.Tensor"):
        server.encrypt(context, [[0.0] * 28] * 28)
    with pytest.raises(TypeError, match="CKKSVector"):
        server(server.encode_input(torch.rand(1, 28, 28)))


def test_contexts_that_do_not_fit_the_layout_are_refused(model, context):
    small = HEFriendlyMLP(side=7, hidden=4).eval()
    server = EncryptedMLP(small, 2048)  # laid out for N = 4096, used with N = 8192
    with pytest.raises(ValueError, match="laid out for 2048"):
        server.encrypt(context, torch.rand(1, 28, 28))
    with pytest.raises(TypeError, match="tenseal Context"):
        server.encrypt("context", torch.rand(1, 28, 28))
    no_rotations = ts.context(
        ts.SCHEME_TYPE.CKKS, poly_modulus_degree=8192, coeff_mod_bit_sizes=[41, 33, 33, 33, 33, 45]
    )
    no_rotations.global_scale = 2.0**33
    server = EncryptedMLP(model, slot_count(context))
    with pytest.raises(ValueError, match="Galois"):
        server(server.encrypt(no_rotations, torch.rand(1, 28, 28)))
    answer = server(server.encrypt(context, torch.rand(1, 28, 28)))
    assert answer.size() == server.answer_size == 16 * 9 + 1
    with pytest.raises(ValueError, match="answer holds 2 slots"):
        server.decrypt(ts.ckks_vector(context, [1.0, 2.0]))
    with pytest.raises(TypeError, match="CKKSVector"):
        server.decrypt(answer.decrypt())


def _attack(server: EncryptedMLP, context: ts.Context, rows: list[list[float]]):
    """The dishonest client: encrypt any tiled rows (no [0, 1] check: ts.enc_matmul_encoding
    directly), send them through the server under its public context, decrypt *all* the slots
    with SEAL (not just the answer's) and compare them with partial sum · ρ, where ρ is the
    mask's encoding error at the level where the server encodes it. Returns the correlation
    over the zeroed slots, the complex slot values, and ρ."""
    seal = context.seal_context().data
    encoder = sa.CKKSEncoder(seal)
    levels, data = [], seal.first_context_data()
    while data is not None:
        levels.append(data.parms_id())
        data = data.next_context_data()
    mask_plain = sa.Plaintext()
    encoder.encode(server._mask, levels[3], context.global_scale, mask_plain)
    rho = np.array(encoder.decode_complex(mask_plain)) - np.array(server._mask)
    query = ts.enc_matmul_encoding(context, rows).serialize()
    answer = server(ts.ckks_vector_from(public_context(context), query)).serialize()
    (ciphertext,) = ts.ckks_vector_from(context, answer).ciphertext()
    plain = sa.Plaintext()
    sa.Decryptor(seal, context.secret_key().data).decrypt(ciphertext, plain)
    slots = np.array(encoder.decode_complex(plain))
    zeroed = np.array(server._mask) == 0
    leaked = _emulated_partial_sums(server, rows).numpy() * rho.real
    correlation = float(np.corrcoef(slots.real[zeroed], leaked[zeroed])[0, 1])
    return correlation, slots, rho


def _scaled_query(server: EncryptedMLP, factor: float) -> list[list[float]]:
    """An honest image's tiled rows with the pixels multiplied by ``factor`` (the bias 1 kept)."""
    image = torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(7))
    inputs = server.side * server.side
    return [
        [v * factor if i < inputs else v for i, v in enumerate(row)]
        for row in server.encode_input(image)
    ]


def test_a_client_cannot_read_the_partial_sums_from_the_answer(model, context):
    """Reviewer's attack (pixels × 100, all 4,096 slots decrypted): on c599a9c the zeroed slots
    held partial sum · ρ, correlation 0.97 with the true partial sums. With the fill they hold
    uniform noise in ±fill_bound, uncorrelated with them (|r| < 0.1: 6σ for 4,086 slots), and an
    honest query's logits are still right."""
    server = EncryptedMLP(model, slot_count(context))
    assert server.fill_bound == pytest.approx(196.95, abs=0.01)
    correlation, slots, rho = _attack(server, context, _scaled_query(server, 100.0))
    assert abs(correlation) < 0.1
    zeroed = np.array(server._mask) == 0
    for part in (slots.real[zeroed], slots.imag):  # every imaginary part is filled too
        assert np.abs(part).max() <= server.fill_bound * (1 + 1e-6)
        assert np.std(part) == pytest.approx(server.fill_bound / np.sqrt(3), rel=0.06)
    assert np.median(np.abs(rho.real[zeroed])) > 1e-9  # ρ is there: it is the fill that hides it
    image = torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(8))
    logits = torch.tensor(server.decrypt(server(server.encrypt(context, image))))
    expected = model(image.unsqueeze(0))[0].detach().double()
    assert (logits - expected).abs().max() <= RELATIVE_BOUND * max(1.0, expected.abs().max().item())


def test_without_the_fill_the_same_attack_reads_the_partial_sums(model, context, monkeypatch):
    """The attack test is not vacuous: with the bias alone (c599a9c's answer), the zeroed slots
    correlate with partial sum · ρ and dividing by ρ gives the partial sums back."""
    monkeypatch.setattr(
        EncryptedMLP, "_bias_and_fill", lambda self: self._bias.to(torch.complex128).tolist()
    )
    server = EncryptedMLP(model, slot_count(context))
    rows = _scaled_query(server, 100.0)
    correlation, slots, rho = _attack(server, context, rows)
    assert correlation > 0.9
    partial = _emulated_partial_sums(server, rows).numpy()
    usable = (np.array(server._mask) == 0) & (np.abs(rho.real) > 2e-9) & (partial != 0)
    usable[server.hidden * server.num_classes :] = False  # the partial sums sit between logits
    recovered = slots.real[usable] / rho.real[usable]
    assert np.median(np.abs(recovered - partial[usable]) / np.abs(partial[usable])) < 0.2


def test_fill_bound_follows_the_hoeffding_formula():
    """B = (headroom / 2) · sqrt(N / (4 ln(2N · 2^64))), N = 2 · slots; scales with the headroom."""
    n = 8192
    assert fill_bound(4096) == pytest.approx(32 * np.sqrt(n / (4 * np.log(2 * n * 2.0**64))))
    assert fill_bound(4096, headroom=128.0) == pytest.approx(2 * fill_bound(4096))
    with pytest.raises(ValueError, match="slots must be positive"):
        fill_bound(0)
    with pytest.raises(ValueError, match="headroom must be positive"):
        fill_bound(4096, headroom=-1.0)


def test_the_fill_comes_from_the_random_source_given():
    """The default is course_lib's SecureRandom; anything else must be a RandomSource."""
    from course_lib.randomness import InsecureSeededRandom, SecureRandom

    model = HEFriendlyMLP(7, 4).eval()
    assert isinstance(EncryptedMLP(model, 4096)._rng, SecureRandom)
    first, second = (EncryptedMLP(model, 4096, rng=InsecureSeededRandom(1)) for _ in range(2))
    assert first._bias_and_fill() == second._bias_and_fill()
    assert EncryptedMLP(model, 4096)._bias_and_fill() != EncryptedMLP(model, 4096)._bias_and_fill()
    with pytest.raises(TypeError, match="RandomSource"):
        EncryptedMLP(model, 4096, rng=np.random.default_rng(0))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_pixels_are_refused(model, context, bad):
    """NaN < 0 and NaN > 1 are both False: the [0, 1] check alone let a NaN pixel through."""
    server = EncryptedMLP(model, slot_count(context))
    image = torch.rand(1, 28, 28)
    image[0, 3, 5] = bad
    with pytest.raises(ValueError, match="NaN or infinite pixels"):
        server.encrypt(context, image)


@pytest.mark.parametrize(
    ("name", "bad"), [("fc1.weight", float("nan")), ("fc2.bias", float("inf"))]
)
def test_non_finite_weights_are_refused(name, bad):
    model = HEFriendlyMLP(7, 4).eval()
    with torch.no_grad():
        model.get_parameter(name).view(-1)[0] = bad
    with pytest.raises(ValueError, match=rf"model's {name} holds NaN or infinite values"):
        EncryptedMLP(model, 4096)


def test_serialisation_falls_back_when_dev_shm_is_unusable(context, monkeypatch, tmp_path):
    """Not writable (os.access) → the default temporary directory; usable but failing (OSError,
    e.g. full) → the same fallback; the bytes are TenSEAL's either way."""
    vector = ts.ckks_vector(context, [1.5, -2.0])
    (ciphertext,) = vector.ciphertext()
    expected = vector.serialize()
    used: list[str | None] = []
    real_save = ckks._save_and_read

    def recording_save(ct, directory):
        used.append(directory)
        return real_save(ct, directory)

    monkeypatch.setattr(ckks, "_save_and_read", recording_save)
    monkeypatch.setattr(ckks, "_SHM", str(tmp_path / "missing"))
    assert _ckks_vector_bytes(ciphertext, 2, context.global_scale) == expected
    assert used == [None]

    monkeypatch.setattr(ckks, "_SHM", str(tmp_path))
    assert os.access(tmp_path, os.W_OK | os.X_OK)
    for error in (OSError(28, "No space left on device"), RuntimeError("I/O error")):

        def failing_shm(ct, directory, error=error):
            used.append(directory)
            if directory is not None:
                raise error  # OSError from the file system, RuntimeError from SEAL's save
            return real_save(ct, directory)

        used.clear()
        monkeypatch.setattr(ckks, "_save_and_read", failing_shm)
        assert _ckks_vector_bytes(ciphertext, 2, context.global_scale) == expected
        assert used == [str(tmp_path), None]
    assert not any(tmp_path.iterdir())  # nothing left behind
