"""Secure DP federated learning over syft jobs: masks cancel, budgets hold, nothing leaks."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.nn.utils import parameters_to_vector
from torch.utils.data import TensorDataset

from course_lib.dp.accounting import rdp_epsilon
from course_lib.dp.dpsgd import train_private
from course_lib.fl import secure_syft as ss
from course_lib.fl import syft_bridge as sb
from course_lib.fl.secure_aggregation import generate_key_pair
from course_lib.models import MLP
from course_lib.randomness import InsecureSeededRandom, SecureRandom

POLICY = ss.PrivacyPolicy(
    epsilon_budget=3.0,
    delta=1e-5,
    noise_multiplier=1.5,
    max_grad_norm=1.0,
    sample_rate=0.125,
    allow_seeded_noise=True,
)


def _keys(n, seed=0):
    rng = InsecureSeededRandom(seed)
    pairs = [generate_key_pair(rng) for _ in range(n)]
    return [s for s, _ in pairs], [p.hex() for _, p in pairs]


SECRETS, ROSTER = _keys(3)
CONSORTIUM = ss.Consortium(public_keys=tuple(ROSTER), dataset="ward")


# -- masking, without syft ----------------------------------------------------------------------


def test_masks_cancel_exactly_in_the_sum() -> None:
    secrets, publics = _keys(3)
    updates = [torch.randn(1000, generator=torch.Generator().manual_seed(k)) for k in range(3)]
    masked = [
        ss.mask_update(u, s, publics, round_index=1) for u, s in zip(updates, secrets, strict=True)
    ]
    average = ss.unmask_average(masked)
    exact = sum(torch.round(u.double() * 2**24) for u in updates) / 2**24 / 3
    assert torch.equal(average, exact.float())
    assert (average - sum(updates) / 3).abs().max() < 1e-6


def test_one_masked_upload_looks_uniformly_random() -> None:
    secrets, publics = _keys(3)
    update = torch.full((20_000,), 0.01)
    masked = ss.mask_update(update, secrets[0], publics, round_index=1)
    # the encoded update is the constant 167772; masked values spread over all of Z_2^64
    top_bits = (masked >> 60) & 0xF
    counts = torch.bincount(top_bits, minlength=16).double()
    assert counts.min() > 0.8 * 20_000 / 16 and counts.max() < 1.2 * 20_000 / 16
    assert len(masked.unique()) == 20_000


def test_masks_are_fresh_every_round() -> None:
    secrets, publics = _keys(3)
    update = torch.zeros(50)
    first = ss.mask_update(update, secrets[0], publics, round_index=1)
    second = ss.mask_update(update, secrets[0], publics, round_index=2)
    assert not torch.equal(first, second)


def test_a_missing_hospital_breaks_the_sum() -> None:
    secrets, publics = _keys(3)
    updates = [torch.ones(10) * k for k in range(3)]
    masked = [
        ss.mask_update(u, s, publics, round_index=1) for u, s in zip(updates, secrets, strict=True)
    ]
    assert (ss.unmask_average(masked[:2]) - 0.5).abs().min() > 1e3  # garbage, not 0.5


def test_a_job_without_the_hospitals_key_is_refused() -> None:
    secrets, publics = _keys(3)
    _, stranger = _keys(1, seed=9)
    with pytest.raises(ValueError, match="not in the job's key list"):
        ss.mask_update(torch.zeros(3), secrets[0], publics[1:] + stranger, round_index=1)
    with pytest.raises(ValueError, match="same public key twice"):
        ss.hospital_index(secrets[0], [publics[0], publics[0], publics[1]])
    with pytest.raises(ValueError, match="32 bytes"):
        ss.hospital_index(b"short", publics)


def test_bad_inputs_get_clear_errors() -> None:
    secrets, publics = _keys(2)
    with pytest.raises(TypeError, match="floating-point"):
        ss.mask_update(torch.arange(3), secrets[0], publics, round_index=1)
    with pytest.raises(ValueError, match="outside the range"):
        ss.mask_update(torch.tensor([1e15]), secrets[0], publics, round_index=1)
    with pytest.raises(ValueError, match="no masked uploads"):
        ss.unmask_average([])
    with pytest.raises(ValueError, match="one shape"):
        ss.unmask_average([torch.zeros(3, dtype=torch.int64), torch.zeros(4, dtype=torch.int64)])


def test_job_randomness_is_secure_unless_a_seed_is_named() -> None:
    secrets, publics = _keys(3)
    params = {"noise_seed": None, "public_keys": publics, "round": 1}
    assert isinstance(ss.job_random_source(params, secrets[0]), SecureRandom)
    seeded = dict(params, noise_seed=7)
    a, b = (ss.job_random_source(seeded, s).bytes(8) for s in secrets[:2])
    assert a != b  # each hospital gets its own stream ...
    assert ss.job_random_source(seeded, secrets[0]).bytes(8) == a  # ... which repeats
    assert ss.job_random_source(dict(seeded, round=2), secrets[0]).bytes(8) != a


# -- the policy and the reviewer -----------------------------------------------------------------


def test_policy_epsilon_matches_the_accountant() -> None:
    assert POLICY.epsilon(0) == 0.0
    assert POLICY.epsilon(8) == pytest.approx(rdp_epsilon(1.5, 0.125, 64, 1e-5))
    assert 3.9 < POLICY.epsilon(8) < 4.1  # the lesson's 4 rounds × 2 epochs (see 20)


@pytest.mark.parametrize(
    "field, value",
    [("epsilon_budget", 0), ("delta", 1.0), ("noise_multiplier", -1), ("sample_rate", 1.5)],
)
def test_policy_rejects_bad_terms(field, value) -> None:
    terms = dict(epsilon_budget=1.0, delta=1e-5, noise_multiplier=1.0, max_grad_norm=1.0)
    terms["sample_rate"] = 0.1
    terms[field] = value
    with pytest.raises(ValueError, match=field.split("_")[0]):
        ss.PrivacyPolicy(**terms)


def _job(tmp_path: Path, params: dict, code: str = ss.SECURE_DP_TRAINING_SCRIPT, weights=None):
    """A stand-in for syft's JobInfo with just what the reviewer reads."""
    code_dir = tmp_path / "code"
    code_dir.mkdir(exist_ok=True)
    (code_dir / "main.py").write_text(code)
    (code_dir / "params.json").write_text(json.dumps(params))
    state = MLP().state_dict() if weights is None else weights
    (code_dir / "global_model.b64").write_text(sb.encode_state(state))
    return SimpleNamespace(
        datasite_owner_email="hospital1@health.example",
        name="job",
        code_dir=code_dir,
        submitted_by="sci@lab",
    )


_next_round = iter(range(1, 10_000))


def _params(**changes):
    params = dict(noise_multiplier=1.5, max_grad_norm=1.0, sample_rate=0.125, delta=1e-5, epochs=2)
    params.update(noise_seed=None, public_keys=list(ROSTER), round=next(_next_round))
    params.update(dataset="ward", model="MLP", frac_bits=24, lr=0.5, momentum=0.0)
    params.update(changes)
    return params


def _reviewer(monkeypatch):
    """A reviewer whose code check only compares main.py (the stand-in job has no syft metadata)."""
    reviewer = ss.BudgetReviewer(POLICY, CONSORTIUM, scientist="sci@lab")
    monkeypatch.setattr(
        reviewer,
        "_same_code",
        lambda job: job.code_dir.joinpath("main.py").read_text() == ss.SECURE_DP_TRAINING_SCRIPT,
    )
    return reviewer


def test_reviewer_enforces_each_hospitals_budget(tmp_path, monkeypatch) -> None:
    reviewer = _reviewer(monkeypatch)
    hospital = "hospital1@health.example"
    assert reviewer(_job(tmp_path, _params()))  # 2 epochs: ε ≈ 1.9
    assert reviewer(_job(tmp_path, _params()))  # 4 epochs: ε ≈ 2.9
    assert reviewer.epsilon_spent(hospital) == pytest.approx(POLICY.epsilon(4))
    assert not reviewer(_job(tmp_path, _params()))  # 6 epochs would exceed 3.0
    assert reviewer.epsilon_spent(hospital) == pytest.approx(POLICY.epsilon(4))  # unchanged
    verdicts = [(ok, reason) for _, _, ok, reason in reviewer.decisions]
    assert verdicts[-1][0] is False and "budget 3.0" in verdicts[-1][1]
    assert reviewer.epsilon_spent("hospital2@health.example") == 0.0


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"noise_multiplier": 1.0}, "noise multiplier"),
        ({"max_grad_norm": 5.0}, "clipping bound"),
        ({"sample_rate": 0.5}, "sampling rate"),
        ({"delta": 1e-3}, "δ differs"),
    ],
)
def test_reviewer_refuses_weaker_privacy(tmp_path, monkeypatch, changes, reason) -> None:
    reviewer = _reviewer(monkeypatch)
    assert not reviewer(_job(tmp_path, _params(**changes)))
    assert reason in reviewer.decisions[-1][3]


@pytest.mark.parametrize(
    "changes",
    [
        {"epochs": 2.5},
        {"epochs": True},
        {"sample_rate": "0.1"},
        {"delta": None},
        {"epochs": 0},
        {"noise_multiplier": float("inf")},
        {"max_grad_norm": float("nan")},
    ],
)
def test_reviewer_refuses_malformed_parameters(tmp_path, monkeypatch, changes) -> None:
    reviewer = _reviewer(monkeypatch)
    assert not reviewer(_job(tmp_path, _params(**changes)))
    assert "missing or malformed parameters" in reviewer.decisions[-1][3]
    assert reviewer.accountants == {}


def test_seeded_noise_needs_an_explicit_insecure_policy() -> None:
    strict = ss.PrivacyPolicy(
        epsilon_budget=3.0, delta=1e-5, noise_multiplier=1.5, max_grad_norm=1.0, sample_rate=0.125
    )
    assert "seeded" in strict.problems_with(_params(noise_seed=0))[0]
    assert POLICY.problems_with(_params(noise_seed=0)) == []


# -- forged jobs: what the scientist writes into params.json is checked --------------------------


def test_a_key_list_with_an_attackers_key_would_unmask_the_hospital() -> None:
    """Why the roster matters: masked against the attacker alone, the update comes out in clear."""
    (attacker_secret,), (attacker_public,) = _keys(1, seed=9)
    forged = [ROSTER[0], attacker_public]
    update = torch.randn(100, generator=torch.Generator().manual_seed(0)) * 0.01
    upload = ss.mask_update(update, SECRETS[0], forged, round_index=1)
    cancel = ss.mask_update(torch.zeros(100), attacker_secret, forged, round_index=1)
    recovered = ss.unmask_average([upload, cancel]) * 2
    assert (recovered - update).abs().max() < 2**-23


@pytest.mark.parametrize(
    "forgery, reason",
    [
        ("attacker's key", "1 key(s) not in the roster"),
        ("only its own key", "only one key: the update would leave unmasked"),
        ("reused round", "round index 7 was already approved"),
    ],
)
def test_forged_jobs_are_refused_naming_the_problem(tmp_path, monkeypatch, forgery, reason):
    reviewer = _reviewer(monkeypatch)
    assert reviewer(_job(tmp_path, _params(round=7)))
    (_, (attacker,)) = _keys(1, seed=9)
    forged = {
        "attacker's key": _params(public_keys=[ROSTER[0], attacker]),
        "only its own key": _params(public_keys=[ROSTER[0]]),
        "reused round": _params(round=7),
    }[forgery]
    spent = reviewer.epsilon_spent("hospital1@health.example")
    assert not reviewer(_job(tmp_path, forged))
    assert reason in reviewer.decisions[-1][3]
    assert reviewer.epsilon_spent("hospital1@health.example") == spent  # nothing charged
    # another hospital has its own rounds: its round 7 is still new
    other = _job(tmp_path, _params(round=7))
    other.datasite_owner_email = "hospital2@health.example"
    assert reviewer(other)


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"public_keys": list(reversed(ROSTER))}, "another order"),
        ({"public_keys": ROSTER[:2]}, "1 roster key(s) left out"),
        ({"public_keys": "abc"}, "key list is missing or malformed"),
        ({"round": -1}, "not a non-negative integer"),
        ({"round": True}, "not a non-negative integer"),
        ({"dataset": "all_records"}, "dataset 'all_records' is not the agreed 'ward'"),
        ({"model": "SmallCNN"}, "model 'SmallCNN' is not the agreed 'MLP'"),
        ({"frac_bits": 0}, "frac_bits 0 is not the agreed 24"),
        ({"lr": float("nan")}, "lr must be a finite number"),
        ({"momentum": float("inf")}, "momentum must be a finite number"),
    ],
)
def test_reviewer_checks_every_job_setting(tmp_path, monkeypatch, changes, reason) -> None:
    reviewer = _reviewer(monkeypatch)
    assert not reviewer(_job(tmp_path, _params(**changes)))
    assert reason in reviewer.decisions[-1][3]
    assert reviewer.accountants == {}


def test_reviewer_checks_the_global_weights(tmp_path, monkeypatch) -> None:
    reviewer = _reviewer(monkeypatch)
    poisoned = MLP().state_dict()
    poisoned["net.1.weight"][0, 0] = float("nan")
    assert not reviewer(_job(tmp_path, _params(), weights=poisoned))
    assert "NaN or ±inf in net.1.weight" in reviewer.decisions[-1][3]
    assert not reviewer(_job(tmp_path, _params(), weights=MLP(hidden=(16,)).state_dict()))
    assert "not a MLP's" in reviewer.decisions[-1][3]


def test_consortium_terms_are_validated() -> None:
    with pytest.raises(ValueError, match="at least two"):
        ss.Consortium(public_keys=ROSTER[:1], dataset="ward")
    with pytest.raises(ValueError, match="same public key twice"):
        ss.Consortium(public_keys=[ROSTER[0], ROSTER[0]], dataset="ward")
    with pytest.raises(ValueError, match="not a model class"):
        ss.Consortium(public_keys=ROSTER, dataset="ward", model="torch")
    with pytest.raises(ValueError, match="frac_bits"):
        ss.Consortium(public_keys=ROSTER, dataset="ward", frac_bits=60)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", ["one", "all"])
def test_a_non_finite_update_is_not_uploaded(value, where) -> None:
    update = torch.randn(10)
    if where == "one":
        update[3] = value
    else:
        update[:] = value
    with pytest.raises(ValueError, match=r"hospital 2 of 3's update holds \d+ non-finite"):
        ss.mask_update(update, SECRETS[1], ROSTER, round_index=1)


def test_epsilon_is_infinite_with_a_teaching_seed(tmp_path, monkeypatch) -> None:
    assert ss.epsilon_label(3.641, seeded=False) == "ε = 3.64"
    assert ss.epsilon_label(3.641, seeded=True) == "ε = ∞ — teaching seed (3.64 with secure noise)"
    reviewer = _reviewer(monkeypatch)
    assert reviewer(_job(tmp_path, _params()))  # secure noise
    expected = POLICY.epsilon(2)
    assert reviewer.epsilon_report("hospital1@health.example") == f"ε = {expected:.2f}"
    assert reviewer(_job(tmp_path, _params(noise_seed=0, epochs=1)))  # one seeded job is enough
    assert reviewer.epsilon_report("hospital1@health.example").startswith("ε = ∞ — teaching seed")
    assert reviewer.epsilon_spent("hospital1@health.example") == pytest.approx(POLICY.epsilon(3))


def test_the_job_script_is_the_module_shipped_as_is(tmp_path) -> None:
    from course_lib.fl.jobs import secure_round

    source = Path(secure_round.__file__).read_text(encoding="utf-8")
    assert source == ss.SECURE_DP_TRAINING_SCRIPT
    job = ss.write_secure_job(
        tmp_path / "job",
        MLP(),
        dataset="ward",
        round_index=1,
        public_keys=ROSTER,
        policy=POLICY,
        epochs=1,
        lr=0.5,
    )
    assert (job / "main.py").read_text(encoding="utf-8") == source
    assert callable(secure_round.main)  # importing the module runs nothing


# -- a real round on syft's mock Drive -----------------------------------------------------------


@pytest.fixture(scope="module")
def federation():
    fed = sb.create_federation(3)
    yield fed
    fed.close()


def test_a_secure_round_through_syft_jobs(federation) -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(240, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (240,), generator=generator)
    parts = [torch.arange(k * 80, (k + 1) * 80) for k in range(3)]
    private_dirs = ss.publish_with_keys(
        federation, "ward", images, labels, parts, rng=InsecureSeededRandom(1)
    )
    keys = ss.read_public_keys(federation, "ward")
    roster = ss.exchange_public_keys(private_dirs)  # the hospitals' own set-up
    assert list(roster) == keys
    scientist = federation.scientist
    consortium = ss.Consortium(public_keys=roster, dataset="ward")
    reviewer = ss.BudgetReviewer(POLICY, consortium, scientist=scientist.email)
    torch.manual_seed(0)
    model = MLP()
    start = parameters_to_vector(model.parameters()).detach().clone()
    result = ss.secure_dp_round(
        federation,
        model,
        dataset="ward",
        round_index=1,
        public_keys=keys,
        policy=POLICY,
        review=reviewer,
        epochs=1,
        lr=0.5,
        noise_seed=3,
    )
    assert [ok for _, _, ok, _ in reviewer.decisions] == [True, True, True]

    # the same three local trainings, redone here from each hospital's private files
    expected = []
    for part, private in zip(parts, private_dirs, strict=True):
        secret = bytes.fromhex((private / ss.SECRET_KEY_FILE).read_text())
        local = MLP()
        local.load_state_dict(
            sb.decode_state(
                (
                    federation.root / "jobs" / "secure-dp-fedavg-round-1" / "global_model.b64"
                ).read_text()
            )
        )
        params = {"noise_seed": 3, "public_keys": keys, "round": 1}
        train_private(
            local,
            TensorDataset(images[part], labels[part]),
            epochs=1,
            sample_rate=0.125,
            lr=0.5,
            noise_multiplier=1.5,
            max_grad_norm=1.0,
            rng=ss.job_random_source(params, secret),
            progress=False,
        )
        expected.append(parameters_to_vector(local.parameters()).detach() - start)
    mean = sum(expected) / 3
    assert (result.average_update - mean).abs().max() < 1e-5
    new = parameters_to_vector(model.parameters()).detach()
    assert torch.allclose(new, start + result.average_update)
    # no upload on its own says anything about its hospital's update
    for masked, update in zip(result.masked_uploads.values(), expected, strict=True):
        assert masked.abs().float().mean() > 1e17 > update.abs().max() * 2**24
    # neither the shards nor the secret keys ever reached the scientist
    assert sb.private_files_seen_by(scientist, private_dirs) == []

    # a forged round through syft: the first hospital refuses before anything runs
    (_, (attacker,)) = _keys(1, seed=9)
    with pytest.raises(sb.JobFailedError, match="rejected"):
        ss.secure_dp_round(
            federation,
            model,
            dataset="ward",
            round_index=2,
            public_keys=[keys[0], attacker, keys[2]],
            policy=POLICY,
            review=reviewer,
            epochs=1,
            lr=0.5,
            noise_seed=3,
        )
    assert "1 key(s) not in the roster" in reviewer.decisions[-1][3]


def test_extra_files_must_match_the_owners(federation) -> None:
    images, labels = torch.zeros(6, 1, 28, 28), torch.zeros(6, dtype=torch.long)
    parts = [torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5])]
    with pytest.raises(ValueError, match="every data owner"):
        sb.publish_shards(federation, "x", images, labels, parts, private_extras=[{"a": "1"}])
    with pytest.raises(ValueError, match="plain new name"):
        sb.publish_shards(
            federation, "x", images, labels, parts, mock_extras=[{"../up": "1"}, {}, {}]
        )


# -- one rule for integers (course_lib.validation): NumPy integers are integers, bools are not ----


@pytest.mark.parametrize("flag", [True, np.bool_(True)])
def test_consortium_refuses_a_bool_frac_bits_and_takes_a_numpy_integer(flag) -> None:
    with pytest.raises(TypeError, match="frac_bits"):
        ss.Consortium(public_keys=ROSTER, dataset="ward", frac_bits=flag)
    terms = ss.Consortium(public_keys=ROSTER, dataset="ward", frac_bits=np.int64(20))
    assert terms.frac_bits == 20 and type(terms.frac_bits) is int


@pytest.mark.parametrize("flag", [True, np.bool_(True)])
@pytest.mark.parametrize("name", ["round_index", "frac_bits"])
def test_mask_update_refuses_bools(flag, name) -> None:
    kwargs = {"round_index": 1, name: flag}
    with pytest.raises(TypeError, match=name):
        ss.mask_update(torch.zeros(3), SECRETS[0], ROSTER, **kwargs)


def test_mask_update_takes_numpy_integers() -> None:
    update = torch.tensor([0.25, -1.0, 2.0])
    a = ss.mask_update(update, SECRETS[0], ROSTER, round_index=np.int64(1), frac_bits=np.int64(24))
    assert torch.equal(a, ss.mask_update(update, SECRETS[0], ROSTER, round_index=1))


@pytest.mark.parametrize("flag", [True, np.bool_(True)])
@pytest.mark.parametrize("name", ["epochs", "round_index", "frac_bits", "noise_seed", "lr"])
def test_write_secure_job_refuses_bools_before_writing(tmp_path, flag, name) -> None:
    kwargs = {"round_index": 1, "epochs": 1, "lr": 0.5, name: flag}
    with pytest.raises(TypeError, match=name):
        ss.write_secure_job(
            tmp_path / "job", MLP(), dataset="ward", public_keys=ROSTER, policy=POLICY, **kwargs
        )
    assert not (tmp_path / "job").exists()


def test_write_secure_job_writes_numpy_numbers_as_json_numbers(tmp_path) -> None:
    job = ss.write_secure_job(
        tmp_path / "job",
        MLP(),
        dataset="ward",
        round_index=np.int64(3),
        public_keys=ROSTER,
        policy=POLICY,
        epochs=np.int64(2),
        lr=np.float32(0.5),
        momentum=np.float64(0.9),
        frac_bits=np.int32(24),
        noise_seed=np.int64(7),
    )
    params = json.loads((job / "params.json").read_text())
    assert (params["round"], params["epochs"], params["frac_bits"]) == (3, 2, 24)
    assert (params["lr"], params["momentum"], params["noise_seed"]) == (0.5, 0.9, 7)
