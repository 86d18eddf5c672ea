"""Exercises of lessons 09–17 (federated learning, its privacy, SMPC) follow the convention of
tests/exercises/test_foundations_dp.py: a task for an untouched stub, a nudge then a hint, "did you
forget `return`?" for a function that returns nothing, the checker's inputs named in every ✗
message, and no lossy cast of the learner's answer before it is compared."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from course_lib.exercises import _registry, check, registered_exercises

LESSONS = ("09", "10", "11", "12", "13", "14", "15", "16", "17")
NAMES = [n for n in registered_exercises() if n[:2] in LESSONS]


@pytest.fixture(autouse=True)
def _fresh_attempts() -> None:
    _registry._WRONG_ATTEMPTS.clear()


def test_all_lessons_are_covered() -> None:
    assert {n[:2] for n in NAMES} == set(LESSONS)
    assert len(NAMES) == 26


@pytest.mark.parametrize("name", NAMES)
def test_every_exercise_has_its_own_task_nudge_and_hint(name: str) -> None:
    ex = _registry._EXERCISES[name]
    assert ex.task and ex.nudge != _registry.DEFAULT_NUDGE and ex.hint
    assert ex.nudge != ex.hint and ex.task != ex.hint


@pytest.mark.parametrize("name", NAMES)
def test_help_comes_in_steps(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    ex = _registry._EXERCISES[name]

    def stub(*args, **kwargs):
        raise NotImplementedError("your code here")

    assert not check(name, stub)
    out = capsys.readouterr().out
    assert f"your task: {ex.task}." in out and ex.hint not in out and "nudge" not in out
    assert not check(name, lambda *args, **kwargs: None)
    out = capsys.readouterr().out
    assert f"nudge: {ex.nudge}" in out and ex.hint not in out
    assert not check(name, lambda *args, **kwargs: None)
    assert f"hint: {ex.hint}" in capsys.readouterr().out


@pytest.mark.parametrize("name", NAMES)
def test_a_function_returning_nothing_is_told_it_forgot_return(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not check(name, lambda *args, **kwargs: None)
    out = capsys.readouterr().out
    assert out.startswith(f"✗ {name}: ") and _registry.FORGOT_RETURN in out, out


@pytest.mark.parametrize("name", NAMES)
def test_passing_a_result_instead_of_the_function_is_explained(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not check(name, 42)
    assert "pass your function itself" in capsys.readouterr().out


def _iid_split(n, num_clients, seed=0):
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return list(torch.tensor_split(perm, num_clients))


def _label(grad):
    return int(grad.sum(dim=1).argmin())


# Right answers in other types: a tensor for an int, lists for tensors, numpy for a float.
EQUIVALENT = [
    ("10.iid_split", lambda n, k, seed=0: [p.tolist() for p in _iid_split(n, k, seed)]),
    ("10.iid_split", lambda n, k, seed=0: [p.double() for p in _iid_split(n, k, seed)]),
    ("12.idlg_label", lambda grad: grad.sum(dim=1).argmin()),
    ("12.idlg_label", lambda grad: float(_label(grad))),
    ("12.psnr", lambda r, o: float(10 * torch.log10(1 / ((r - o) ** 2).mean()))),
    ("13.dp_noise_std", lambda s, c, q, k: np.float64(s * c / (q * k))),
    ("14.labels_from_gradients", lambda g: g.argmin(dim=1).tolist()),
    ("16.matmul_bytes", lambda n, m, k, p: float(8 * n * (n - 1) * (m * k + k * p + m * p))),
]


@pytest.mark.parametrize(
    ("name", "answer"), EQUIVALENT, ids=[f"{n}-{i}" for i, (n, _) in enumerate(EQUIVALENT)]
)
def test_equivalent_answers_pass(name: str, answer, capsys: pytest.CaptureFixture[str]) -> None:
    assert check(name, answer), capsys.readouterr().out
    assert capsys.readouterr().out == f"✓ {name}: correct!\n"


# Off by a fraction: a cast of the answer (int(...), .long()) would have made these pass.
LOSSY = [
    ("10.iid_split", lambda n, k, seed=0: [p + 0.25 for p in _iid_split(n, k, seed)]),
    ("12.idlg_label", lambda grad: _label(grad) + 0.5),
    ("14.labels_from_gradients", lambda g: g.argmin(dim=1) + 0.5),
    ("16.matmul_bytes", lambda n, m, k, p: 8 * n * (n - 1) * (m * k + k * p + m * p) + 0.5),
]


@pytest.mark.parametrize(
    ("name", "wrong"), LOSSY, ids=[f"{n}-{i}" for i, (n, _) in enumerate(LOSSY)]
)
def test_fractional_answers_are_not_rounded_into_right_ones(
    name: str, wrong, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not check(name, wrong)
    assert capsys.readouterr().out.startswith(f"✗ {name}")


# A wrong answer and a piece of the message that names the input the checker used.
NAMED_INPUTS = [
    ("09.find_leaks", lambda scientist, private: [], "deep/er/copy.dat (a renamed copy"),
    ("09.review_job", lambda code: "shutil" not in code, "requests.post('https://example.org'"),
    ("10.fedavg", lambda states, weights: states[0], "my_fedavg(states, [1, 1])"),
    ("10.iid_split", lambda n, k, seed=0: [list(range(n))] * k, "my_iid_split(10, 3, seed=0)"),
    ("10.proximal_term", lambda model, start, mu: torch.tensor(1.0), "nn.Linear(4, 3)"),
    ("11.aggregate_outputs", lambda outputs: {}, "[120, 30, 850] samples"),
    ("11.same_code", lambda a, b: a == b, "script = 'import syft as sy"),
    ("12.psnr", lambda r, o: 0.0, "b = a + 0.01·N(0, 1) noise"),
    ("12.idlg_label", lambda grad: 0, "image of class 3"),
    ("12.bias_trick", lambda w, b: w[0], "label 4 through Linear(784, 32)"),
    ("13.pairwise_mask", lambda i, x, masks, n: x + 1, "for 4 clients"),
    ("13.shamir_reconstruct", lambda points, prime: 0, "points = [("),
    ("13.dp_noise_std", lambda s, c, q, k: s * c, "σ=1.0, C=1.0, q=0.1, K=100"),
    ("14.wire_bytes", lambda b, shape: 0, "activations (8, 14, 14)"),
    ("14.server_step", lambda part, act, labels: act, "labels [0, 1, 2, 3, 4, 0]"),
    ("14.labels_from_gradients", lambda g: g.argmax(dim=1), "20 random rows of 10 logits"),
    ("15.share_secret", lambda s, n, rng: torch.stack([s] * n), "secret = [0, 42, -7"),
    ("15.encode", lambda x, bits: x.long(), "x = torch.tensor([0.0, 1.5"),
    ("15.decode", lambda ring, bits: ring.double(), "ring = torch.tensor([0, 98304"),
    ("16.beaver_multiply", lambda x, y, a, b, c: c, "for 2 parties"),
    ("16.matmul_bytes", lambda n, m, k, p: 0, "matmul_bytes(2, 4, 6, 3)"),
    ("16.secure_equal", lambda x, y: 1 - (x < y), "shares of x = [3, 7, -2, 0"),
    ("16.one_hot_select", lambda m, v: (v.sum(), m.sum()), "match = [0, 0, 1, 0, 0]"),
    ("17.hard_sigmoid", torch.sigmoid, "z = torch.tensor([-5.0"),
    ("17.secure_relu", lambda x: x, "shares of [-3.5"),
    ("17.hidden_backward", lambda x, g, a: (g.T @ x, g.sum(0)), "grad_a = torch.randn(4, 3)"),
]


def test_every_exercise_has_a_named_input_case() -> None:
    assert {n for n, _, _ in NAMED_INPUTS} == set(NAMES)


@pytest.mark.parametrize(
    ("name", "wrong", "named"),
    NAMED_INPUTS,
    ids=[n for n, _, _ in NAMED_INPUTS],
)
def test_wrong_answers_name_the_checkers_input(
    name: str, wrong, named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not check(name, wrong)
    out = capsys.readouterr().out
    assert out.startswith(f"✗ {name}: ") and named in out, out
