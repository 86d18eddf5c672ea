"""The scientist as the adversary of secure aggregation over syft jobs (lesson 20).

Each hospital reviews only its *own* job. A scientist who sends the hospitals different jobs, each
of which passes its own hospital's review, must not learn one hospital's update from the "sum":
the masks are keyed to the job's digest, so they cancel only when every hospital ran the same job.
The jobs here run the real job script (:mod:`course_lib.fl.jobs.secure_round`) in this process,
with syft's dataset lookup pointed at each hospital's private files.
"""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.nn.utils import parameters_to_vector
from torch.utils.data import TensorDataset

from course_lib.dp.dpsgd import train_private
from course_lib.fl import secure_syft as ss
from course_lib.fl import syft_bridge as sb
from course_lib.fl.jobs import secure_round
from course_lib.fl.secure_aggregation import generate_key_pair
from course_lib.models import MLP
from course_lib.randomness import InsecureSeededRandom

POLICY = ss.PrivacyPolicy(
    epsilon_budget=3.0,
    delta=1e-5,
    noise_multiplier=1.5,
    max_grad_norm=1.0,
    sample_rate=0.125,
    allow_seeded_noise=True,  # so that the test can redo each hospital's training exactly
)
_PAIRS = [generate_key_pair(InsecureSeededRandom(k)) for k in range(3)]
SECRETS = [s for s, _ in _PAIRS]
ROSTER = [p.hex() for _, p in _PAIRS]
CONSORTIUM = ss.Consortium(public_keys=tuple(ROSTER), dataset="ward")
EMAILS = [f"hospital{k + 1}@health.example" for k in range(3)]
ROUND = 1


@pytest.fixture
def hospitals(tmp_path: Path) -> list[Path]:
    """Each hospital's private folder: its shard (80 images) and its secret key."""
    generator = torch.Generator().manual_seed(0)
    folders = []
    for k, secret in enumerate(SECRETS):
        images = torch.rand(80, 1, 28, 28, generator=generator)
        labels = torch.randint(0, 10, (80,), generator=generator)
        folder = tmp_path / f"private{k}"
        folder.mkdir()
        torch.save((images, labels), folder / "shard.pt")
        (folder / ss.SECRET_KEY_FILE).write_text(secret.hex())
        folders.append(folder)
    return folders


def _global_model(seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP()


def _write_job(folder: Path, model: MLP, **changes: object) -> Path:
    """The honest job of round 1, then whatever the scientist changes in its ``params.json``."""
    ss.write_secure_job(
        folder,
        model,
        dataset="ward",
        round_index=ROUND,
        public_keys=ROSTER,
        policy=POLICY,
        epochs=1,
        lr=0.5,
        noise_seed=3,
    )
    if changes:
        params = json.loads((folder / "params.json").read_text())
        params.update(changes)
        (folder / "params.json").write_text(json.dumps(params))
    return folder


def _review(reviewer: ss.BudgetReviewer, email: str, code_dir: Path) -> bool:
    job = SimpleNamespace(
        datasite_owner_email=email, name="round-1", code_dir=code_dir, submitted_by="sci@lab"
    )
    return reviewer(job)  # type: ignore[arg-type]


def _reviewer(monkeypatch: pytest.MonkeyPatch) -> ss.BudgetReviewer:
    """The hospitals' reviewer; its code check compares the job's files (the stand-in job has no
    syft metadata for syft-rds' own check)."""
    reviewer = ss.BudgetReviewer(POLICY, CONSORTIUM, scientist="sci@lab")

    def same_code(job: SimpleNamespace) -> bool:
        names = sorted(p.name for p in Path(job.code_dir).iterdir() if p.is_file())
        main = Path(job.code_dir, "main.py").read_text()
        return names == sorted(ss.SECURE_JOB_FILES) and main == ss.SECURE_DP_TRAINING_SCRIPT

    monkeypatch.setattr(reviewer, "_same_code", same_code)
    return reviewer


def _run_job(monkeypatch: pytest.MonkeyPatch, code_dir: Path, private: Path) -> torch.Tensor:
    """Run the job script as a hospital does: in the job's folder, on its private files."""
    files = [private / "shard.pt", private / ss.SECRET_KEY_FILE]
    with monkeypatch.context() as patch:
        patch.chdir(code_dir)
        patch.setattr(secure_round.sy, "resolve_dataset_files_path", lambda name: files)
        threads = torch.get_num_threads()
        try:
            secure_round.main()
        finally:
            torch.set_num_threads(threads)
    return sb.decode_state((code_dir / "outputs" / "masked_update.b64").read_text())["masked"]


def _true_update(code_dir: Path, private: Path) -> torch.Tensor:
    """What the hospital's job computed before masking, redone from its private files."""
    params = json.loads((code_dir / "params.json").read_text())
    model = MLP()
    model.load_state_dict(sb.decode_state((code_dir / "global_model.b64").read_text()))
    start = parameters_to_vector(model.parameters()).detach().clone()
    images, labels = torch.load(private / "shard.pt", weights_only=True)
    secret = bytes.fromhex((private / ss.SECRET_KEY_FILE).read_text())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the job does
    try:
        train_private(
            model,
            TensorDataset(images, labels),
            epochs=params["epochs"],
            sample_rate=params["sample_rate"],
            lr=params["lr"],
            momentum=params["momentum"],
            noise_multiplier=params["noise_multiplier"],
            max_grad_norm=params["max_grad_norm"],
            delta=params["delta"],
            rng=ss.job_random_source(params, secret),
            progress=False,
        )
    finally:
        torch.set_num_threads(threads)
    return parameters_to_vector(model.parameters()).detach() - start


def _ring_sum(uploads: list[torch.Tensor]) -> torch.Tensor:
    total = torch.zeros_like(uploads[0])
    for upload in uploads:
        total = total + upload  # wraps around: Z_2^64
    return total


def _looks_uniform(ring: torch.Tensor) -> bool:
    """The top 4 bits of uniformly random 64-bit values: each of the 16 patterns ≈ 1/16."""
    counts = torch.bincount((ring >> 60) & 0xF, minlength=16).double()
    expected = ring.numel() / 16
    return bool(counts.min() > 0.9 * expected and counts.max() < 1.1 * expected)


# -- the attack: hospital 1 gets the honest job, hospitals 2 and 3 a job that contributes ~nothing


@pytest.mark.parametrize(
    "forgery",
    [
        {"lr": 1e-12},  # updates far below the fixed-point step 2^-24: they encode to ~0
        {"lr": 1e-12, "momentum": 0.9, "epochs": 2},
    ],
)
def test_per_hospital_jobs_cannot_single_out_a_hospitals_update(
    tmp_path, monkeypatch, hospitals, forgery
) -> None:
    model = _global_model()
    jobs = [_write_job(tmp_path / "job1", model)]
    jobs += [_write_job(tmp_path / f"job{k + 1}", model, **forgery) for k in (1, 2)]
    reviewer = _reviewer(monkeypatch)
    # every job passes its own hospital's review: each hospital sees only its own job
    assert [_review(reviewer, e, j) for e, j in zip(EMAILS, jobs, strict=True)] == [True] * 3
    uploads = [_run_job(monkeypatch, j, p) for j, p in zip(jobs, hospitals, strict=True)]

    # the attack's premise: hospitals 2 and 3 contributed nothing, so an unbound sum would be
    # hospital 1's update alone (to within the fixed-point step)
    updates = [_true_update(j, p) for j, p in zip(jobs, hospitals, strict=True)]
    assert updates[0].abs().max() > 1e-3
    assert max(float(u.abs().max()) for u in updates[1:]) < 2**-26
    # ... but the masks were keyed to different jobs, so they do not cancel: what the scientist
    # reads off the sum is uniformly random, not hospital 1's update
    recovered = ss.unmask_average(uploads) * 3
    assert (recovered - updates[0]).abs().median() > 1e3
    assert _looks_uniform(_ring_sum(uploads))


def test_other_global_weights_for_some_hospitals_make_the_sum_random(
    tmp_path, monkeypatch, hospitals
) -> None:
    honest, other = _global_model(0), _global_model(1)
    jobs = [_write_job(tmp_path / "job1", honest)]
    jobs += [_write_job(tmp_path / f"job{k + 1}", other) for k in (1, 2)]
    reviewer = _reviewer(monkeypatch)
    assert [_review(reviewer, e, j) for e, j in zip(EMAILS, jobs, strict=True)] == [True] * 3
    uploads = [_run_job(monkeypatch, j, p) for j, p in zip(jobs, hospitals, strict=True)]
    updates = [_true_update(j, p) for j, p in zip(jobs, hospitals, strict=True)]
    assert (ss.unmask_average(uploads) - sum(updates) / 3).abs().median() > 1e3
    assert _looks_uniform(_ring_sum(uploads))


def test_an_honest_round_gives_exactly_the_unbound_fedavg(tmp_path, monkeypatch, hospitals) -> None:
    """The same job for all: the bound masks cancel exactly, so the average is bit for bit what
    masking without job binding gives, and the mean of the three DP updates."""
    model = _global_model()
    job = _write_job(tmp_path / "job", model)
    reviewer = _reviewer(monkeypatch)
    assert all(_review(reviewer, e, job) for e in EMAILS)
    uploads = [_run_job(monkeypatch, job, p) for p in hospitals]
    updates = [_true_update(job, p) for p in hospitals]
    unbound = [ss.mask_update(u, s, ROSTER, ROUND) for u, s in zip(updates, SECRETS, strict=True)]
    average = ss.unmask_average(uploads)
    assert torch.equal(average, ss.unmask_average(unbound))
    assert (average - sum(updates) / 3).abs().max() < 1e-6
    assert average.abs().max() > 1e-3  # a real update, not zeros
    # the uploads themselves differ from the unbound ones: the masks depend on the job
    assert not torch.equal(uploads[0], unbound[0])


# -- the digest and the review ------------------------------------------------------------------


def test_the_job_digest_covers_every_byte_of_every_job_file(tmp_path) -> None:
    job = _write_job(tmp_path / "job", _global_model())
    digest = ss.job_digest(job)
    assert len(digest) == 32 and ss.job_digest(job) == digest
    for name in ss.SECURE_JOB_FILES:
        original = (job / name).read_bytes()
        (job / name).write_bytes(original + b" ")  # one byte more, even meaningless whitespace
        assert ss.job_digest(job) != digest, name
        (job / name).write_bytes(original)
    assert ss.job_digest(job) == digest
    with pytest.raises(FileNotFoundError):
        ss.job_digest(tmp_path)  # not a job: nothing to bind the masks to, so no upload


def test_masks_depend_on_the_job_digest() -> None:
    update = torch.zeros(64)
    first = ss.mask_update(update, SECRETS[0], ROSTER, ROUND, job=bytes(32))
    second = ss.mask_update(update, SECRETS[0], ROSTER, ROUND, job=b"\x01" + bytes(31))
    assert not torch.equal(first, second)
    assert not torch.equal(first, ss.mask_update(update, SECRETS[0], ROSTER, ROUND))
    for bad in (b"short", "00" * 32, bytearray(32)):
        with pytest.raises(TypeError, match="32-byte SHA-256 digest"):
            ss.mask_update(update, SECRETS[0], ROSTER, ROUND, job=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"lr": 0}, "lr must be a finite number > 0, got 0"),
        ({"lr": -0.5}, "lr must be a finite number > 0, got -0.5"),
        ({"lr": True}, "lr must be a finite number > 0"),
        ({"momentum": 1.0}, "momentum must be a finite number in [0, 1), got 1.0"),
        ({"momentum": -0.1}, "momentum must be a finite number in [0, 1)"),
        ({"momentum": None}, "momentum must be a finite number in [0, 1), got None"),
    ],
)
def test_the_review_refuses_training_settings_out_of_range(
    tmp_path, monkeypatch, changes, reason
) -> None:
    job = _write_job(tmp_path / "job", _global_model(), **changes)
    reviewer = _reviewer(monkeypatch)
    assert not _review(reviewer, EMAILS[0], job)
    assert reason in reviewer.decisions[-1][3]
    assert reviewer.accountants == {}


# -- the scientist against the PRODUCTION reviewer (no stand-in code check) ---------------------


def _pending_job(code_dir: Path, *, entrypoint: str = "main.py", status: str = "pending"):
    """What the production reviewer reads of a syft job (see the syft-backed test below for a real
    submission): its owner, name, sender, status, declared entrypoint and code folder."""
    return SimpleNamespace(
        datasite_owner_email=EMAILS[0],
        name=f"job-{code_dir.parent.name}-{code_dir.name}",
        code_dir=code_dir,
        submitted_by="sci@lab",
        status=status,
        job_metadata=SimpleNamespace(entrypoint=entrypoint),
    )


def test_the_production_review_approves_the_honest_job(tmp_path) -> None:
    reviewer = ss.BudgetReviewer(POLICY, CONSORTIUM, scientist="sci@lab")
    job = _write_job(tmp_path / "job", _global_model())
    assert reviewer(_pending_job(job)), reviewer.decisions  # type: ignore[arg-type]
    assert reviewer.decisions[-1][3].startswith("within budget")


@pytest.mark.parametrize(
    "attack",
    ["entrypoint", "subfolder", "blank-line", "symlink"],
)
def test_the_production_review_refuses_unreviewed_code(tmp_path, attack) -> None:
    """The reviewed main.py, params.json and global_model.b64, plus unreviewed code the owner
    would run (``aa/main.py`` as the entrypoint), or files the review cannot vouch for."""
    job = _write_job(tmp_path / "job", _global_model())
    entrypoint = "main.py"
    if attack in ("entrypoint", "subfolder"):
        (job / "aa").mkdir()
        (job / "aa" / "main.py").write_text("import os\nprint(os.listdir('/'))\n")
        entrypoint = "aa/main.py" if attack == "entrypoint" else "main.py"
    elif attack == "blank-line":
        (job / "main.py").write_text(ss.SECURE_DP_TRAINING_SCRIPT + "\n\n")
    else:  # the weights as a link: the owner's review would read one file, the job another
        weights = tmp_path / "weights.b64"
        (job / "global_model.b64").rename(weights)
        (job / "global_model.b64").symlink_to(weights)
    reviewer = ss.BudgetReviewer(POLICY, CONSORTIUM, scientist="sci@lab")
    assert not reviewer(_pending_job(job, entrypoint=entrypoint))  # type: ignore[arg-type]
    assert reviewer.decisions[-1][2:] == (False, "the code is not the reviewed script")
    assert reviewer.accountants == {}


def test_the_entrypoint_bypass_through_real_syft_is_refused(tmp_path) -> None:
    """The reported bypass end to end through syft-rds: the scientist submits the reviewed job plus
    ``aa/main.py`` with ``entrypoint="aa/main.py"``; the hospital's production reviewer refuses it
    and the owner will not write a run.sh for it."""
    federation = sb.create_federation(2)
    try:
        job_dir = _write_job(tmp_path / "job", _global_model())
        (job_dir / "aa").mkdir()
        (job_dir / "aa" / "main.py").write_text("print('unreviewed code on private data')\n")
        owner_email = federation.owner_emails[0]
        federation.scientist.submit_python_job(
            user=owner_email, code_path=str(job_dir), job_name="bypass", entrypoint="aa/main.py"
        )
        job = next(j for j in sb.pending_jobs(federation.owner(0)) if j.name == "bypass")
        assert job.job_metadata.entrypoint == "aa/main.py"
        reviewer = ss.BudgetReviewer(POLICY, CONSORTIUM, scientist=federation.scientist.email)
        assert not reviewer(job)
        assert reviewer.decisions[-1][2:] == (False, "the code is not the reviewed script")
        with pytest.raises(ValueError, match="only the reviewed top-level 'main.py'"):
            sb.use_owner_python(job)
        # the same files without the extra folder pass the very same reviewer
        (job_dir / "aa" / "main.py").unlink()
        (job_dir / "aa").rmdir()
        federation.scientist.submit_python_job(
            user=owner_email, code_path=str(job_dir), job_name="honest", entrypoint="main.py"
        )
        honest = next(j for j in sb.pending_jobs(federation.owner(0)) if j.name == "honest")
        assert reviewer(honest), reviewer.decisions[-1]
    finally:
        federation.close()


@pytest.mark.parametrize(
    "raw, reason",
    [
        ('"lr": 1' + "0" * 400, "lr is too large for a float: a huge integer"),
        ('"epochs": 1' + "0" * 400, "missing or malformed parameters: epochs"),
        ('"noise_multiplier": 1' + "0" * 400, "missing or malformed parameters: noise_multiplier"),
        ('"epochs": 1' + "0" * 300, "ε would reach"),  # a float, but far over any budget
        ('"lr": 1' + "0" * 5000, "params.json or global_model.b64 cannot be read (ValueError)"),
    ],
    ids=["lr-1e400", "epochs-1e400", "noise-1e400", "epochs-1e300", "lr-5000-digits"],
)
def test_a_huge_json_integer_is_refused_not_raised(tmp_path, raw, reason) -> None:
    """JSON integers are unbounded: ``float(10**400)`` raises OverflowError. The review must
    record a refusal with a reason, never crash."""
    job = _write_job(tmp_path / "job", _global_model())
    text = (job / "params.json").read_text()
    key = raw.split(":")[0]
    params = json.loads(text)
    params.pop(key.strip('"'))
    body = json.dumps(params)
    (job / "params.json").write_text(body[:-1] + ", " + raw + "}")
    reviewer = ss.BudgetReviewer(POLICY, CONSORTIUM, scientist="sci@lab")
    assert not reviewer(_pending_job(job))  # type: ignore[arg-type]
    assert reason in reviewer.decisions[-1][3]
    assert len(reviewer.decisions[-1][3]) < 300  # no 400-digit number in the message
    assert reviewer.accountants == {}


# -- time of check, time of use: the job reads each file once -----------------------------------


def test_the_job_digests_and_uses_the_same_bytes(tmp_path, monkeypatch, hospitals) -> None:
    """Whoever can write the job's folder rewrites params.json and the weights while the job
    trains. The digest keying the masks must still be that of the bytes the job trained with (the
    old job re-read the files for the digest after training)."""
    job = _write_job(tmp_path / "job", _global_model())
    original = {name: (job / name).read_bytes() for name in ss.SECURE_JOB_FILES}
    digest_before = ss.job_digest(job)
    seen: dict[str, object] = {}
    real_train, real_mask = secure_round.train_private, secure_round.mask_update

    def train_then_tamper(model, dataset, **settings):
        seen["lr"] = settings["lr"]
        result = real_train(model, dataset, **settings)
        (job / "params.json").write_text(
            json.dumps({**json.loads(original["params.json"]), "lr": 9.0})
        )
        (job / "global_model.b64").write_text(sb.encode_state(_global_model(1).state_dict()))
        return result

    def capture_mask(*args, **kwargs):
        seen["job"] = kwargs["job"]
        return real_mask(*args, **kwargs)

    monkeypatch.setattr(secure_round, "train_private", train_then_tamper)
    monkeypatch.setattr(secure_round, "mask_update", capture_mask)
    _run_job(monkeypatch, job, hospitals[0])
    assert seen["lr"] == 0.5
    assert (job / "params.json").read_bytes() != original["params.json"]  # rewritten mid-run ...
    assert seen["job"] == digest_before  # ... but the masks bind the job that was trained
    assert seen["job"] != ss.job_digest(job)


def test_job_digest_of_checks_its_input(tmp_path) -> None:
    job = _write_job(tmp_path / "job", _global_model())
    files = ss.read_job_files(job)
    assert ss.job_digest_of(files) == ss.job_digest(job)
    with pytest.raises(ValueError, match="exactly"):
        ss.job_digest_of({"main.py": files["main.py"]})
    with pytest.raises(TypeError, match="bytes"):
        ss.job_digest_of({**files, "params.json": "{}"})  # type: ignore[dict-item]
