"""CKKS encrypted inference (course_lib.he.ckks): close to plaintext, same predictions, errors."""

import pytest
import tenseal as ts
import torch

from course_lib.he.ckks import (
    EncryptedMLP,
    HEFriendlyMLP,
    encrypted_inference,
    make_context,
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


def test_encrypted_logits_match_plaintext(model, context):
    images = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    report = encrypted_inference(model, images, context)
    scale = max(1.0, report.plain_logits.abs().max().item())
    assert report.max_abs_error <= RELATIVE_BOUND * scale
    # whenever the plaintext top-2 margin exceeds twice the error, the arg-max cannot flip
    top2 = report.plain_logits.topk(2, dim=1).values
    decisive = (top2[:, 0] - top2[:, 1]) > 2 * report.max_abs_error
    agree = report.encrypted_logits.argmax(1) == report.plain_logits.argmax(1)
    assert agree[decisive].all()
    assert report.seconds_per_image > 0 and report.query_bytes > 0 and report.answer_bytes > 0


def test_server_works_with_the_public_context_only(model, context):
    server_ctx = public_context(context)
    assert not server_ctx.is_private()
    server = EncryptedMLP(model, slot_count(context))
    image = torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(2))
    query = ts.ckks_vector_from(server_ctx, server.encrypt(context, image).serialize())
    answer = server(query)
    with pytest.raises(ValueError):
        answer.decrypt()  # no secret key on the server
    logits = torch.tensor(ts.ckks_vector_from(context, answer.serialize()).decrypt())
    expected = model(image.unsqueeze(0))[0].detach().double()
    assert (logits - expected).abs().max() <= RELATIVE_BOUND * max(1.0, expected.abs().max().item())


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
