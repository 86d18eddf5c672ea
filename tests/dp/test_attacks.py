"""Membership inference, played by the attacker: chance against a model that never saw the members
or one trained with strong DP, far better against an overfit one; and the attacks' input checks."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from torch import nn
from torch.utils.data import TensorDataset

from course_lib.data import load_mnist
from course_lib.dp.accounting import rdp_epsilon
from course_lib.dp.attacks import (
    dp_tpr_bound,
    evaluate_attack,
    lira_offline,
    loss_threshold_attack,
    per_example_losses,
    train_shadow_models,
    train_shadows,
)
from course_lib.dp.dpsgd import train_private
from course_lib.models import MLP
from course_lib.randomness import InsecureSeededRandom
from course_lib.training import fit, make_loader

N = 200  # members and non-members each
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# strong DP: σ = 4, q = 0.125, 5 epochs of 8 steps
DP = {"noise_multiplier": 4.0, "sample_rate": 0.125, "epochs": 5}
DP_EPSILON = rdp_epsilon(DP["noise_multiplier"], DP["sample_rate"], 40, 1e-5)


def overfit_recipe(data: TensorDataset, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = MLP(hidden=(64,))
    fit(model, make_loader(data, 32, seed=seed), epochs=30, lr=0.1, progress=False)
    return model


def dp_recipe(data: TensorDataset, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = MLP(hidden=(64,))
    train_private(model, data, lr=1.0, momentum=0.5, max_grad_norm=1.0, delta=1e-5,
                  rng=InsecureSeededRandom(seed), progress=False, **DP)  # fmt: skip
    return model


@pytest.fixture(scope="module")
def setup():
    data = load_mnist(train=True, max_samples=4 * N)
    x, y = data.images, data.labels
    members, non_members, other = slice(0, N), slice(N, 2 * N), slice(2 * N, 4 * N)
    candidates_x = torch.cat([x[members], x[non_members]])
    candidates_y = torch.cat([y[members], y[non_members]])
    is_member = torch.cat([torch.ones(N), torch.zeros(N)]).bool()
    population = TensorDataset(x[other], y[other])  # never a candidate: the offline attack
    member_data = TensorDataset(x[members], y[members])
    return {
        "candidates": (candidates_x, candidates_y, is_member),
        "overfit": overfit_recipe(member_data, 0),  # 100% train accuracy on 200 images
        "never_saw": overfit_recipe(TensorDataset(x[other][:N], y[other][:N]), 1),
        "shadows": train_shadows(overfit_recipe, population, 4, size=N, seed=10),
        "dp": dp_recipe(member_data, 0),
        "dp_shadows": train_shadows(dp_recipe, population, 4, size=N, seed=10),
    }


def test_attacks_fail_on_a_model_that_never_saw_the_members(setup):
    x, y, is_member = setup["candidates"]
    for result in (
        loss_threshold_attack(setup["never_saw"], x, y, is_member),
        lira_offline(setup["never_saw"], x, y, is_member, setup["shadows"]),
    ):
        # 200 vs 200 examples: the AUC of a useless score has standard error ≈ 0.029
        assert result.auc_ci[0] < 0.5 < result.auc_ci[1], result
        assert abs(result.auc - 0.5) < 0.08


def test_attacks_succeed_on_an_overfit_model(setup):
    x, y, is_member = setup["candidates"]
    loss = loss_threshold_attack(setup["overfit"], x, y, is_member)
    lira = lira_offline(setup["overfit"], x, y, is_member, setup["shadows"])
    assert 0.62 < loss.auc < 0.95 and loss.auc_ci[0] > 0.55  # ≥ 4 standard errors above chance
    assert 0.7 < lira.auc < 0.98 and lira.auc_ci[0] > 0.6
    assert lira.auc > loss.auc  # the per-example test beats the global threshold
    assert lira.tpr_ci[0] > 0.01  # confident hits, above the 1% of a coin flip, beyond doubt


def test_strong_dp_model_is_at_chance_and_under_its_bound(setup):
    """Shadows trained with the DP target's own recipe; the attack is at chance within its CI."""
    x, y, is_member = setup["candidates"]
    assert DP_EPSILON < 1.2
    for result in (
        loss_threshold_attack(setup["dp"], x, y, is_member),
        lira_offline(setup["dp"], x, y, is_member, setup["dp_shadows"]),
    ):
        assert result.auc_ci[0] < 0.5 < result.auc_ci[1], result
        # no attack beats TPR ≤ e^ε·FPR + δ (checked where the sample resolves it: 1% FPR)
        assert result.tpr_ci[0] <= dp_tpr_bound(result.low_fpr, DP_EPSILON, 1e-5)


def test_same_recipe_shadows_matter(setup):
    """Ordinary shadows misjudge a DP target: its confidence is far below theirs on every
    candidate, so the comparison says nothing; the DP-recipe shadows put it in the middle."""
    x, y, is_member = setup["candidates"]
    wrong = lira_offline(setup["dp"], x, y, is_member, setup["shadows"])
    right = lira_offline(setup["dp"], x, y, is_member, setup["dp_shadows"])
    assert np.median(wrong.scores) < -1 < np.median(right.scores) < 1


@pytest.mark.parametrize("device", DEVICES)
def test_attacks_follow_the_models_device(setup, device):
    x, y, is_member = setup["candidates"]
    target = MLP(hidden=(64,))
    target.load_state_dict(setup["overfit"].state_dict())
    target.to(device).train()
    shadows = [MLP(hidden=(64,)).to(device) for _ in range(2)]
    for shadow, trained in zip(shadows, setup["shadows"], strict=False):
        shadow.load_state_dict(trained.state_dict())
    on_device = lira_offline(target, x, y, is_member, shadows)
    losses = per_example_losses(target, x, y)
    assert target.training  # the attack restored the model's mode
    assert losses.device.type == "cpu"
    on_cpu = lira_offline(setup["overfit"], x, y, is_member, setup["shadows"][:2])
    np.testing.assert_allclose(on_device.scores, on_cpu.scores, rtol=1e-4, atol=1e-4)


def test_train_shadow_models_is_train_shadows_with_fit(setup):
    x, y, _ = setup["candidates"]
    population = TensorDataset(x, y)

    def recipe(data, seed):
        torch.manual_seed(seed)
        model = MLP(hidden=(8,))
        fit(model, make_loader(data, 16, seed=seed), epochs=1, lr=0.1, progress=False)
        return model

    a = train_shadow_models(population, 2, lambda: MLP(hidden=(8,)), size=50, epochs=1, lr=0.1,
                            batch_size=16, seed=3)  # fmt: skip
    b = train_shadows(recipe, population, 2, size=50, seed=3)
    for one, other in zip(a, b, strict=True):
        for p, q in zip(one.parameters(), other.parameters(), strict=True):
            assert torch.equal(p, q)


def test_evaluate_attack_by_hand():
    perfect = evaluate_attack([3.0, 2.0, 1.0, 0.0], [1, 1, 0, 0])
    assert perfect.auc == 1.0 and perfect.tpr_at_low_fpr == 1.0
    assert perfect.auc_ci == (1.0, 1.0)
    inverted = evaluate_attack([0.0, 1.0, 2.0, 3.0], [1, 1, 0, 0])
    assert inverted.auc == 0.0 and inverted.tpr_at_low_fpr == 0.0
    assert "AUC" in str(perfect) and "[" in str(perfect)


def test_auc_and_tpr_match_sklearn_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 20, 600).astype(float)  # many ties
    is_member = rng.random(600) < 0.5
    scores[is_member] += 2
    result = evaluate_attack(scores, is_member, low_fpr=0.05)
    assert result.auc == pytest.approx(roc_auc_score(is_member, scores), abs=1e-12)
    fpr, tpr, _ = roc_curve(is_member, scores, drop_intermediate=False)
    assert result.tpr_at_low_fpr == pytest.approx(tpr[fpr <= 0.05].max())
    assert result.auc_ci[0] < result.auc < result.auc_ci[1]
    assert result.tpr_ci[0] <= result.tpr_at_low_fpr <= result.tpr_ci[1]


def test_bootstrap_interval_covers_chance_at_its_level():
    """Random scores: the 90% interval should contain 0.5 in about 90% of 200 experiments."""
    rng = np.random.default_rng(1)
    covered = [
        evaluate_attack(
            rng.random(200), np.arange(200) < 100, confidence=0.9, num_resamples=300, seed=k
        ).auc_ci  # fmt: skip
        for k in range(200)
    ]
    rate = np.mean([low < 0.5 < high for low, high in covered])
    assert 0.82 < rate < 0.97
    width = np.mean([high - low for low, high in covered])
    assert 0.11 < width < 0.15  # ≈ 2 · 1.645 · 0.041, the standard error of a 100-vs-100 AUC


def test_dp_bound():
    np.testing.assert_allclose(
        dp_tpr_bound(np.array([0.0, 0.01, 0.5]), 1.0, 1e-5), [1e-5, np.e * 0.01 + 1e-5, 1.0]
    )
    assert dp_tpr_bound(0.1, np.float32(0.0), torch.tensor(0.0)) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        (([1.0, 2.0], [1, 1]), {}, ValueError),  # one class only
        (([1.0, 2.0, 3.0], [1, 0]), {}, ValueError),  # shapes differ
        (([1.0, float("nan")], [1, 0]), {}, ValueError),
        (([1.0, float("inf")], [1, 0]), {}, ValueError),
        (([1.0, 2.0], [1, 2]), {}, ValueError),  # a label that is not 0/1
        (([1.0, 2.0], [0.5, 0]), {}, ValueError),
        (([[1.0, 2.0]], [[1, 0]]), {}, ValueError),  # not one-dimensional
        (([1.0, 2.0], [1, 0]), {"low_fpr": 0.0}, ValueError),
        (([1.0, 2.0], [1, 0]), {"low_fpr": True}, TypeError),
        (([1.0, 2.0], [1, 0]), {"confidence": 1.0}, ValueError),
        (([1.0, 2.0], [1, 0]), {"num_resamples": 0}, ValueError),
        (([1.0, 2.0], [1, 0]), {"num_resamples": 2.5}, TypeError),
    ],
)
def test_evaluate_attack_refuses_bad_input(args, kwargs, error):
    with pytest.raises(error):
        evaluate_attack(*args, **kwargs)


@pytest.mark.parametrize(
    ("fpr", "epsilon", "delta", "error"),
    [(0.1, -1.0, 1e-5, ValueError), (0.1, float("inf"), 1e-5, ValueError),
     (0.1, 1.0, 1.0, ValueError), (1.5, 1.0, 1e-5, ValueError), (0.1, "1", 1e-5, TypeError)],
)  # fmt: skip
def test_dp_bound_refuses_bad_input(fpr, epsilon, delta, error):
    with pytest.raises(error):
        dp_tpr_bound(fpr, epsilon, delta)


def test_attacks_refuse_bad_candidates_and_shadows(setup):
    x, y, is_member = setup["candidates"]
    model, shadows = setup["overfit"], setup["shadows"]
    mode = model.training
    with pytest.raises(ValueError, match="inputs but"):
        loss_threshold_attack(model, x[:-1], y, is_member)
    with pytest.raises(ValueError, match="class indices"):
        loss_threshold_attack(model, x, y.float(), is_member)
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.9"):
        loss_threshold_attack(model, x, y + 10, is_member)
    with pytest.raises(TypeError, match="nn.Module"):
        loss_threshold_attack("model", x, y, is_member)
    with pytest.raises(ValueError, match="at least two shadow"):
        lira_offline(model, x, y, is_member, shadows[:1])
    with pytest.raises(TypeError, match="list of trained models"):
        lira_offline(model, x, y, is_member, shadows[0])
    assert model.training == mode  # refused before anything changed


def test_train_shadows_refuses_bad_input(setup):
    x, y, _ = setup["candidates"]
    population = TensorDataset(x, y)
    with pytest.raises(TypeError, match="recipe"):
        train_shadows("fit", population, 2, size=10)
    with pytest.raises(ValueError, match="num_shadows"):
        train_shadows(overfit_recipe, population, 0, size=10)
    with pytest.raises(ValueError, match="at most the population"):
        train_shadows(overfit_recipe, population, 2, size=len(y) + 1)
    with pytest.raises(TypeError, match="population"):
        train_shadows(overfit_recipe, x, 2, size=10)
    with pytest.raises(TypeError, match="must return the trained model"):
        train_shadows(lambda data, seed: None, population, 2, size=10)
