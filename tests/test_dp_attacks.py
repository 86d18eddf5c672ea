"""Membership inference: chance on a model that never saw the members, better on an overfit one."""

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from course_lib.data import load_mnist
from course_lib.dp.attacks import (
    dp_tpr_bound,
    evaluate_attack,
    lira_offline,
    loss_threshold_attack,
    train_shadow_models,
)
from course_lib.models import MLP
from course_lib.training import fit, make_loader

N = 200  # members and non-members each


@pytest.fixture(scope="module")
def setup():
    data = load_mnist(train=True, max_samples=4 * N)
    x, y = data.images, data.labels
    members, non_members, other = slice(0, N), slice(N, 2 * N), slice(2 * N, 4 * N)
    candidates_x = torch.cat([x[members], x[non_members]])
    candidates_y = torch.cat([y[members], y[non_members]])
    is_member = torch.cat([torch.ones(N), torch.zeros(N)]).bool()

    def trained(inputs, labels, seed):
        torch.manual_seed(seed)
        model = MLP(hidden=(64,))
        fit(
            model,
            make_loader(TensorDataset(inputs, labels), 32, seed=seed),
            epochs=30,
            lr=0.1,
            progress=False,
        )
        return model

    overfit = trained(x[members], y[members], 0)  # 100% train accuracy on 200 images
    never_saw = trained(x[other][:N], y[other][:N], 1)  # trained on data outside the candidates
    shadows = train_shadow_models(
        TensorDataset(x[other], y[other]),
        3,
        lambda: MLP(hidden=(64,)),
        size=N,
        epochs=30,
        lr=0.1,
        batch_size=32,
        seed=10,
    )
    return candidates_x, candidates_y, is_member, overfit, never_saw, shadows


def test_attacks_fail_on_a_model_that_never_saw_the_members(setup):
    x, y, is_member, _, never_saw, shadows = setup
    # 200 vs 200 examples: the AUC of a useless score has standard error ≈ 0.029
    assert abs(loss_threshold_attack(never_saw, x, y, is_member).auc - 0.5) < 0.12
    assert abs(lira_offline(never_saw, x, y, is_member, shadows).auc - 0.5) < 0.12


def test_attacks_succeed_on_an_overfit_model(setup):
    x, y, is_member, overfit, _, shadows = setup
    loss = loss_threshold_attack(overfit, x, y, is_member)
    lira = lira_offline(overfit, x, y, is_member, shadows)
    assert loss.auc > 0.62  # ≥ 4 standard errors above chance
    assert lira.auc > 0.7
    assert lira.tpr_at_low_fpr > 0.05  # confident hits, well above the 1% of a coin flip


def test_evaluate_attack_by_hand():
    perfect = evaluate_attack([3.0, 2.0, 1.0, 0.0], [1, 1, 0, 0])
    assert perfect.auc == 1.0 and perfect.tpr_at_low_fpr == 1.0
    inverted = evaluate_attack([0.0, 1.0, 2.0, 3.0], [1, 1, 0, 0])
    assert inverted.auc == 0.0 and inverted.tpr_at_low_fpr == 0.0
    assert "AUC" in str(perfect)


def test_dp_bound():
    np.testing.assert_allclose(
        dp_tpr_bound(np.array([0.0, 0.01, 0.5]), 1.0, 1e-5), [1e-5, np.e * 0.01 + 1e-5, 1.0]
    )


@pytest.mark.parametrize(
    "args",
    [([1.0, 2.0], [1, 1]), ([1.0, 2.0, 3.0], [1, 0]), ([1.0, float("nan")], [1, 0])],
)
def test_bad_input_raises_value_error(args):
    with pytest.raises(ValueError):
        evaluate_attack(*args)
