"""Encrypted inference equals plaintext; encrypted logistic regression matches plaintext."""

import pytest
import torch
import torch.nn.functional as F
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


def test_predictions_can_be_delivered_to_one_receiver_only():
    torch.manual_seed(0)
    model = separated(MLP())
    images = torch.rand(5, 1, 28, 28)
    s = Session(2, rng=InsecureSeededRandom(1))
    encrypted = EncryptedModel(model, s)
    s.log.reset()
    with torch.no_grad():
        expected = model(images).argmax(1)
    assert torch.equal(
        encrypted_predict(encrypted, images, s, batch_size=2, to="patient"), expected
    )
    # the servers exchanged only masked values: the one plaintext output went to the patient
    assert {o.receiver for o in s.log.outputs} == {"patient"}
    assert sum(o.elements for o in s.log.outputs) == 5 * 10  # one one-hot row per image
    assert s.log.by_operation["reveal"].bytes == 8 * 2 * 5 * 10  # 2 servers → patient, 1 word
    assert s.log.by_operation["share"].bytes == 8 * 2 * 5 * 28 * 28  # patient → 2 servers
    assert torch.equal(encrypted_predict(encrypted, images, s, to=1), expected)
    assert s.log.outputs[-1].receiver == "party 1"
    with pytest.raises(ValueError, match="party index"):
        encrypted_predict(encrypted, images, s, to=2)


class TwoLayer(nn.Module):
    """Lesson 02's own network: functional ReLU and a flatten inside forward."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(784, 128)
        self.out = nn.Linear(128, 10)

    def forward(self, x):
        return self.out(torch.relu(self.hidden(x.flatten(1))))


class FunctionalCNN(nn.Module):
    """F.relu, F.max_pool2d, x.view(x.size(0), -1), torch.reshape, a residual + and .relu()."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 5, stride=2, padding=2)
        self.fc1, self.fc2 = nn.Linear(4 * 7 * 7, 16), nn.Linear(16, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv(x)), 2)
        x = torch.reshape(x.view(x.size(0), -1), (x.shape[0], 4 * 7 * 7))
        h = self.fc1(x)
        h = (h + F.relu(h)).relu()
        return self.fc2(F.dropout(h, 0.5, training=False))


@pytest.mark.parametrize("make_model", [TwoLayer, FunctionalCNN])
def test_models_written_with_functions_in_forward_run_as_in_plaintext(make_model):
    """Old code built the network from the children only and dropped torch.relu/flatten/view."""
    torch.manual_seed(0)
    model = separated(make_model())
    images = torch.rand(8, 1, 28, 28)
    s = Session(2, rng=InsecureSeededRandom(1))
    encrypted = EncryptedModel(model, s)
    with torch.no_grad():
        logits = model(images).double()
    assert torch.allclose(encrypted(s.share(images)).reveal(), logits, atol=5e-3)
    agree = (encrypted_predict(encrypted, images, s) == logits.argmax(1)).double().mean()
    sequential = separated(
        nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    )
    with torch.no_grad():
        seq_plain = sequential(images).argmax(1)
    seq_agree = (encrypted_predict(sequential, images, s) == seq_plain).double().mean()
    assert agree == 1.0 and agree >= seq_agree


class Sigmoid(nn.Module):
    def forward(self, x):
        return torch.sigmoid(x.flatten(1))


class Mean(nn.Module):
    def forward(self, x):
        return x.flatten(1).mean(dim=1)


class Branchy(nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x


class Indexing(nn.Module):
    def forward(self, x):
        return x[:, 0]


@pytest.mark.parametrize(
    ("model", "match"),
    [
        (nn.Sequential(nn.Linear(3, 3), nn.Tanh()), "Tanh"),
        (nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)), "BatchNorm1d"),
        (Sigmoid(), "torch.sigmoid"),
        (Mean(), r"\.mean\(\)"),
        (Branchy(), "could not trace Branchy"),
    ],
)
def test_unsupported_operations_are_refused_by_name(model, match):
    s = Session(2, rng=InsecureSeededRandom(0))
    with pytest.raises(ValueError, match=match):
        EncryptedModel(model, s)


def test_indexing_the_data_is_refused():
    s = Session(2, rng=InsecureSeededRandom(0))
    with pytest.raises(ValueError, match="getitem on a shared tensor"):
        EncryptedModel(Indexing(), s)(s.share(torch.ones(2, 3)))


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
    with pytest.raises(ValueError, match="every server"):
        model.decrypt(to=None)  # the trained weights never go to every party
    assert s.log.outputs == []  # refused before anything was revealed
    weight, bias = model.decrypt(to=0)
    plain_w, plain_b = fit_plain_logistic_regression(x, y, epochs=3, batch_size=32)
    assert torch.allclose(weight, plain_w, atol=2e-3) and torch.allclose(bias, plain_b, atol=2e-3)
    accuracy = (((x @ weight + bias) > 0).double() == y).double().mean().item()
    assert accuracy > 0.9
    with pytest.raises(ValueError, match="labels"):
        model.fit(s.share(x), s.share(y[:10]))
    with pytest.raises(ValueError, match="learning rate"):
        model.fit(s.share(x), s.share(y), lr=-1.0)
