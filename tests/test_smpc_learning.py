"""Encrypted inference equals plaintext; encrypted logistic regression matches plaintext."""

import pytest
import torch
from torch import nn

from course_lib.models import MLP
from course_lib.randomness import InsecureSeededRandom
from course_lib.smpc import EncryptedLogisticRegression, EncryptedModel, Session, encrypted_predict
from course_lib.smpc.training import fit_plain_logistic_regression, hard_sigmoid


def separated(model: nn.Module) -> nn.Module:
    """Scale the last layer up so that no two logits are within fixed-point error of each other."""
    with torch.no_grad():
        last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        last.weight *= 20
    return model.eval()


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 5, stride=2, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(4 * 7 * 7, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 10),
    )  # fmt: skip


@pytest.mark.parametrize("n_parties", [2, 3])
@pytest.mark.parametrize("make_model", [MLP, small_cnn])
def test_encrypted_inference_equals_plaintext(n_parties, make_model):
    torch.manual_seed(0)
    model = separated(make_model())
    images = torch.rand(6, 1, 28, 28)
    s = Session(n_parties, rng=InsecureSeededRandom(1))
    encrypted = EncryptedModel(model, s)
    with torch.no_grad():
        logits = model(images).double()
    got = encrypted(s.share(images)).reveal()
    assert torch.allclose(got, logits, atol=5e-3)
    assert torch.equal(encrypted_predict(encrypted, images, s, batch_size=4), logits.argmax(1))


def test_unsupported_layers_and_inputs_are_rejected():
    s = Session(2, rng=InsecureSeededRandom(0))
    with pytest.raises(ValueError, match="Tanh"):
        EncryptedModel(nn.Sequential(nn.Linear(3, 3), nn.Tanh()), s)
    encrypted = EncryptedModel(nn.Linear(3, 2), s)
    with pytest.raises(TypeError, match="SharedTensor"):
        encrypted(torch.ones(1, 3))
    with pytest.raises(ValueError, match="different session"):
        encrypted(Session(2, rng=InsecureSeededRandom(1)).share(torch.ones(1, 3)))


def test_hard_sigmoid():
    z = torch.tensor([-10.0, -2.0, 0.0, 1.0, 2.0, 10.0])
    assert torch.equal(hard_sigmoid(z), torch.tensor([0.0, 0.0, 0.5, 0.75, 1.0, 1.0]))
    assert (hard_sigmoid(z) - torch.sigmoid(z)).abs().max() < 0.12


def test_encrypted_logistic_regression_matches_plaintext_training():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 4, generator=g, dtype=torch.float64)
    y = ((x @ torch.tensor([1.5, -2.0, 0.5, 0.0], dtype=torch.float64)) > 0.3).double()[:, None]
    s = Session(2, rng=InsecureSeededRandom(2))
    model = EncryptedLogisticRegression(s, 4).fit(s.share(x), s.share(y), epochs=3, batch_size=32)
    weight, bias = model.decrypt()
    plain_w, plain_b = fit_plain_logistic_regression(x, y, epochs=3, batch_size=32)
    assert torch.allclose(weight, plain_w, atol=2e-3) and torch.allclose(bias, plain_b, atol=2e-3)
    accuracy = (((x @ weight + bias) > 0).double() == y).double().mean().item()
    assert accuracy > 0.9
    with pytest.raises(ValueError, match="labels"):
        model.fit(s.share(x), s.share(y[:10]))
    with pytest.raises(ValueError, match="learning rate"):
        model.fit(s.share(x), s.share(y), lr=-1.0)
