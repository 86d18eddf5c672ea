"""End-to-end checks of course_lib.fl.syft_bridge on syft's in-memory mock Drive.

Every syft / syft-rds API the bridge relies on (including the pinned underscore APIs that build a
federation of more than two parties) runs here, so an upgrade that breaks one fails loudly.
"""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from course_lib.fl import syft_bridge as sb
from course_lib.fl.fedavg import fedavg
from course_lib.models import MLP

SUM_JOB = """\
import csv
from pathlib import Path
from types import SimpleNamespace

import syft as sy

(path,) = sy.resolve_dataset_files_path("numbers")
total = sum(float(row["x"]) for row in csv.DictReader(open(path)))
Path("outputs").mkdir(exist_ok=True)
Path("outputs/total.json").write_text(str(total))
"""


@pytest.fixture(scope="module")
def federation():
    fed = sb.create_federation(2)
    yield fed
    root = fed.root
    fed.close()
    assert not root.exists()  # close() removes every party's folder


@pytest.fixture(scope="module")
def numbers(federation):
    """Each owner publishes a CSV: private values differ per owner, the mock is fake."""
    private_dirs = []
    for k, owner in enumerate(federation.owners):
        stage = federation.root / "numbers" / str(k)
        (stage / "mock").mkdir(parents=True)
        (stage / "private").mkdir(parents=True)
        (stage / "mock" / "values.csv").write_text("x\n0\n0\n")
        (stage / "private" / "values.csv").write_text(f"x\n{k + 1}\n{10 * (k + 1)}\n")
        federation.publish(
            owner,
            "numbers",
            mock_dir=stage / "mock",
            private_dir=stage / "private",
            summary="some numbers",
        )
        private_dirs.append(stage / "private")
    return private_dirs


def test_federation_is_built_and_peered(federation):
    assert federation.mode == "mock"
    assert federation.owner_emails == [sb.owner_email(0), sb.owner_email(1)]
    assert federation.scientist.email == sb.SCIENTIST_EMAIL
    assert federation.scientist.has_ds_role and not federation.scientist.has_do_role
    for owner in federation.owners:
        assert owner.has_do_role
        assert federation.scientist.email in [p.email for p in owner.peer_manager.approved_peers]
    assert federation.owner(1) is federation.owner(sb.owner_email(1))
    with pytest.raises(ValueError, match="no data owner"):
        federation.owner("nobody@example.org")


def test_scientist_sees_only_the_mock(federation, numbers):
    names = {d.name for d in federation.scientist.datasets.get_all()}
    assert "numbers" in names
    (mock,) = federation.mock_files("numbers", 0)
    assert mock.read_text() == "x\n0\n0\n"
    assert sb.private_files_seen_by(federation.scientist, numbers) == []
    # the check can fail: the owner's own folder does hold its private file
    assert len(sb.private_files_seen_by(federation.owner(0), numbers)) == 1


def test_a_reviewed_job_runs_on_private_data_and_only_outputs_come_back(
    federation, numbers, tmp_path
):
    (tmp_path / "main.py").write_text(SUM_JOB)
    review = sb.approve_if_code_is({"main.py": SUM_JOB}, scientist=sb.SCIENTIST_EMAIL)
    report = sb.run_round(federation, tmp_path, "sum-numbers", review=review)
    assert report.approved == federation.owner_emails
    totals = {e: float(files["total.json"].read_text()) for e, files in report.outputs.items()}
    assert totals == {sb.owner_email(0): 11.0, sb.owner_email(1): 22.0}
    # the outputs are the scientist's local copies, inside the scientist's folder
    scientist_root = Path(federation.scientist.syftbox_folder)
    assert all(scientist_root in p.parents for f in report.outputs.values() for p in f.values())
    # the owner ran its own Python: the run.sh it approved says so
    job = next(j for j in federation.owner(0).job_client.jobs if j.name == "sum-numbers")
    assert job.status == "done"
    assert sys.executable in job.run_script and "uv venv" not in job.run_script
    assert sb.private_files_seen_by(federation.scientist, numbers) == []


def test_changed_code_is_rejected(federation, numbers, tmp_path):
    (tmp_path / "main.py").write_text(SUM_JOB.replace("sum(", "max(") + "\n")
    review = sb.approve_if_code_is({"main.py": SUM_JOB})
    with pytest.raises(sb.JobFailedError, match="rejected"):
        sb.run_round(federation, tmp_path, "sneaky", review=review, owners=[sb.owner_email(0)])
    job = next(j for j in federation.owner(0).job_client.jobs if j.name == "sneaky")
    assert job.status == "rejected"
    with pytest.raises(sb.JobFailedError, match="rejected"):
        sb.collect_outputs(federation, "sneaky", owners=[sb.owner_email(0)])


def test_a_fedavg_round_through_syft_matches_local_training(federation):
    """Two owners with tiny MNIST-shaped shards; the syft round equals the same training here."""
    from torch.utils.data import TensorDataset

    from course_lib.fl.fedavg import local_train
    from course_lib.training import make_loader

    g = torch.Generator().manual_seed(0)
    images, labels = (
        torch.rand(40, 1, 28, 28, generator=g),
        torch.randint(0, 10, (40,), generator=g),
    )
    parts = [torch.arange(0, 15), torch.arange(15, 40)]
    private = sb.publish_shards(federation, "digits", images, labels, parts, mock_size=8)
    torch.manual_seed(0)
    model = MLP()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    states, weights = sb.fedavg_round(
        federation, model, dataset="digits", round_index=1, epochs=1, lr=0.1, batch_size=8, seed=0
    )
    assert weights == [15.0, 25.0]
    expected = []
    for part in parts:
        local = MLP()
        local.load_state_dict(start)
        loader = make_loader(TensorDataset(images[part], labels[part]), 8, seed=1)
        expected.append(local_train(local, loader, lr=0.1))
    for got, want in zip(states, expected, strict=True):
        for name in want:
            torch.testing.assert_close(got[name], want[name])
    assert fedavg(states, weights).keys() == start.keys()
    assert sb.private_files_seen_by(federation.scientist, private) == []


def test_state_encoding_round_trips():
    state = MLP().state_dict()
    decoded = sb.decode_state(sb.encode_state(state))
    assert all(torch.equal(decoded[k], state[k]) for k in state)
    assert isinstance(sb.encode_state(state), str)


def test_use_owner_python_rewrites_run_sh(federation, tmp_path):
    class FakeJob:  # just the two attributes use_owner_python reads
        job_submission_path = tmp_path

        class job_metadata:  # noqa: N801
            entrypoint = "main.py"

    script = sb.use_owner_python(FakeJob(), python="/opt/py/bin/python", private_logs=False)
    assert (tmp_path / "run.sh").read_text() == script
    assert script.splitlines()[-1] == "exec /opt/py/bin/python main.py"


def test_real_mode_fails_clearly_offline(monkeypatch):
    monkeypatch.setenv("COURSE_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="COURSE_OFFLINE"):
        sb.create_federation(mode="real", role="owner", email="me@gmail.com")
    # without the offline switch, syft itself refuses outside Colab without a token
    monkeypatch.setenv("COURSE_OFFLINE", "0")
    with pytest.raises(RuntimeError, match="needs a Google account"):
        sb.login("scientist", "me@gmail.com")
    with pytest.raises(RuntimeError, match="needs a Google account"):
        sb.login("owner", "me@gmail.com", token_path="/nonexistent/token.json")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_owners=0), "at least one data owner"),
        (dict(mode="cloud"), "mode must be"),
        (dict(mode="real"), "needs role"),
        (dict(owner_emails=["a@x.org", "a@x.org"]), "distinct"),
    ],
)
def test_bad_federation_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sb.create_federation(**kwargs)


def test_params_of_a_training_job(tmp_path):
    folder = sb.write_training_job(tmp_path / "job", MLP(), dataset="d", epochs=2, lr=0.3)
    assert sorted(p.name for p in folder.iterdir()) == [
        "global_model.b64",
        "main.py",
        "params.json",
    ]
    assert json.loads((folder / "params.json").read_text())["model"] == "MLP"
    with pytest.raises(ValueError, match="course_lib.models"):
        sb.write_training_job(tmp_path / "bad", torch.nn.Linear(2, 2), dataset="d")


#: Reviewed code that looks careful: it refuses to answer when a digit is rare. Its threshold is
#: the scientist's *input*, which the owner's code review does not vet.
LEAKY_ERROR_JOB = """\
import csv
import json
from pathlib import Path
from types import SimpleNamespace

import syft as sy

params = json.loads(Path("params.json").read_text())
(path,) = sy.resolve_dataset_files_path("numbers")
values = [float(row["x"]) for row in csv.DictReader(open(path))]
if len(values) < params["min_rows"]:
    raise ValueError(f"too few rows to answer safely: {values}")
Path("outputs").mkdir(exist_ok=True)
Path("outputs/count.json").write_text(str(len(values)))
"""


def _files_containing(client, text):
    return [
        p
        for p in Path(client.syftbox_folder).rglob("*")
        if p.is_file() and text in p.read_bytes().decode("utf-8", "replace")
    ]


def test_a_failing_jobs_traceback_stays_with_the_owner_unless_shared(federation, numbers, tmp_path):
    """The attack lesson 09 shows: same reviewed code, a hostile input (min_rows), and the
    traceback quotes the private values. By default only outputs/ go back, so it does not leak;
    once the owner shares the logs, it does."""
    (tmp_path / "main.py").write_text(LEAKY_ERROR_JOB)
    (tmp_path / "params.json").write_text(json.dumps({"min_rows": 10**9}))
    review = sb.approve_if_code_is(
        {"main.py": LEAKY_ERROR_JOB}, data_files=["params.json"], scientist=sb.SCIENTIST_EMAIL
    )
    owner = [sb.owner_email(1)]
    secret = "[2.0, 20.0]"  # owner 1's private values, as the traceback prints them
    with pytest.raises(sb.JobFailedError, match="logs stay with the owner") as failure:
        sb.run_round(federation, tmp_path, "leaky-error", review=review, owners=owner)
    assert secret not in str(failure.value)
    assert _files_containing(federation.scientist, secret) == []
    owner_job = next(j for j in federation.owner(1).job_client.jobs if j.name == "leaky-error")
    assert owner_job.status == "failed"
    assert secret in sb.owner_logs(owner_job)["stderr"]  # the owner can read it

    sb.share_logs(federation.owner(1), "leaky-error")
    with pytest.raises(sb.JobFailedError) as failure:
        sb.collect_outputs(federation, "leaky-error", owners=owner)
    assert secret in str(failure.value)  # the leak the default prevents
    assert _files_containing(federation.scientist, secret) != []


def test_the_shipped_job_is_the_modules_source_text(tmp_path):
    from course_lib.fl.jobs import local_training

    source = Path(local_training.__file__).read_text()
    assert source == sb.LOCAL_TRAINING_SCRIPT
    folder = sb.write_training_job(tmp_path / "job", MLP(), dataset="d")
    assert (folder / "main.py").read_text() == source
    assert sb.job_source("course_lib.fl.jobs.local_training") == source
    with pytest.raises(ValueError, match="not a job module"):
        sb.job_source("course_lib.fl.fedavg")


def test_the_training_job_trains_like_local_train(tmp_path):
    """The job module's own function, without syft: the shard in, the weights out."""
    from torch.utils.data import TensorDataset

    from course_lib.fl.fedavg import local_train
    from course_lib.fl.jobs.local_training import train_on_shard
    from course_lib.training import make_loader

    g = torch.Generator().manual_seed(0)
    images, labels = (
        torch.rand(12, 1, 28, 28, generator=g),
        torch.randint(0, 10, (12,), generator=g),
    )
    torch.save((images, labels), tmp_path / "shard.pt")
    torch.manual_seed(0)
    model = MLP()
    params = {"model": "MLP", "batch_size": 4, "seed": 3, "epochs": 1, "lr": 0.1, "mu": 0.0}
    weights, count = train_on_shard(
        tmp_path / "shard.pt", params, sb.encode_state(model.state_dict())
    )
    want = local_train(model, make_loader(TensorDataset(images, labels), 4, seed=3), lr=0.1)
    assert count == 12
    got = sb.decode_state(weights)
    for name in want:
        torch.testing.assert_close(got[name], want[name])


@pytest.mark.parametrize("flag", [True, np.bool_(True), 2.0])
def test_create_federation_refuses_a_num_owners_that_is_not_an_integer(flag, tmp_path):
    with pytest.raises(TypeError, match="num_owners"):
        sb.create_federation(flag, root=tmp_path / "fed")
    assert not (tmp_path / "fed").exists()  # refused before any folder is made


def test_create_federation_takes_a_numpy_integer(tmp_path):
    with pytest.raises(ValueError, match="at least one data owner"):
        sb.create_federation(np.int64(0))
    fed = sb.create_federation(np.int64(1), root=tmp_path / "fed")
    try:
        assert fed.owner_emails == [sb.owner_email(0)]
    finally:
        fed.close()


@pytest.mark.parametrize("flag", [True, np.bool_(True), 1.0])
def test_an_owner_is_not_picked_by_a_bool_or_a_float(federation, flag, tmp_path):
    with pytest.raises(TypeError, match="owner"):
        federation.owner(flag)  # True would silently be owner 1
    with pytest.raises(TypeError, match="owner"):
        federation.publish(flag, "never", mock_dir=tmp_path, private_dir=tmp_path)
    names = {d.name for d in federation.scientist.datasets.get_all()}
    assert "never" not in names


def test_an_owner_is_picked_by_a_numpy_integer(federation):
    assert federation.owner(np.int64(1)) is federation.owner(1) is federation.owners[1]
    assert federation.owner(np.int32(-1)) is federation.owners[-1]
    with pytest.raises(IndexError, match="position 2"):
        federation.owner(np.int64(2))


# -- the scientist against the owner's review: only the reviewed top-level main.py may run --------

HOSTILE_JOB = 'from pathlib import Path\nPath("outputs").mkdir(exist_ok=True)\n'


def _submit_raw(federation, code_dir: Path, job_name: str, entrypoint: str):
    """The scientist submits ``code_dir`` as it likes (any entrypoint), straight through syft-rds;
    returns the job as owner 0 sees it, pending review."""
    federation.scientist.submit_python_job(
        user=sb.owner_email(0), code_path=str(code_dir), job_name=job_name, entrypoint=entrypoint
    )
    owner = federation.owner(0)
    return next(j for j in sb.pending_jobs(owner) if j.name == job_name)


@pytest.mark.parametrize(
    ("layout", "entrypoint"),
    [
        ({"main.py": SUM_JOB, "aa/main.py": HOSTILE_JOB}, "aa/main.py"),  # the reported bypass
        ({"main.py": SUM_JOB, "aa/main.py": HOSTILE_JOB}, "main.py"),  # a subfolder at all
        ({"main.py": SUM_JOB, "aa/params.json": "{}"}, "main.py"),  # a data file in a subfolder
        ({"main.py": SUM_JOB + "\n\n"}, "main.py"),  # not byte for byte (blank lines)
    ],
    ids=["entrypoint", "subfolder", "nested-data", "blank-lines"],
)
def test_the_review_refuses_anything_but_the_reviewed_files_byte_for_byte(
    federation, tmp_path, layout, entrypoint
):
    for name, text in layout.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(text.encode())
    review = sb.approve_if_code_is(
        {"main.py": SUM_JOB},
        data_files=["params.json"] if "aa/params.json" in layout else [],
        scientist=sb.SCIENTIST_EMAIL,
    )
    job_name = f"attack-{tmp_path.name}"  # unique per case
    job = _submit_raw(federation, tmp_path, job_name, entrypoint)
    assert (Path(job.code_dir) / "main.py").read_bytes() == layout["main.py"].encode()
    assert not review(job)


def test_the_owner_never_runs_another_entrypoint(federation, tmp_path):
    """The bypass end to end: reviewed main.py + unreviewed aa/main.py, entrypoint aa/main.py. The
    production review refuses it, run.sh is not written for it, and run_round rejects it."""
    (tmp_path / "aa").mkdir()
    (tmp_path / "main.py").write_text(SUM_JOB)
    (tmp_path / "aa" / "main.py").write_text(HOSTILE_JOB)
    job = _submit_raw(federation, tmp_path, "entrypoint-attack", "aa/main.py")
    assert job.job_metadata.entrypoint == "aa/main.py"
    review = sb.approve_if_code_is({"main.py": SUM_JOB}, scientist=sb.SCIENTIST_EMAIL)
    assert not review(job)
    run_sh = Path(job.job_submission_path, "run.sh").read_text()
    with pytest.raises(ValueError, match="entrypoint 'aa/main.py'"):
        sb.use_owner_python(job)
    assert Path(job.job_submission_path, "run.sh").read_text() == run_sh  # nothing written


def test_the_honest_job_still_passes_the_review(federation, tmp_path):
    (tmp_path / "main.py").write_text(SUM_JOB)
    (tmp_path / "params.json").write_text("{}")
    job = _submit_raw(federation, tmp_path, "honest-review", "main.py")
    review = sb.approve_if_code_is(
        {"main.py": SUM_JOB}, data_files=["params.json"], scientist=sb.SCIENTIST_EMAIL
    )
    assert review(job)
    assert sb.job_code_files(job) == {
        "main.py": Path(job.code_dir) / "main.py",
        "params.json": Path(job.code_dir) / "params.json",
    }
    # the same job from someone else, or missing a data file, is refused
    assert not sb.approve_if_code_is(
        {"main.py": SUM_JOB}, data_files=["params.json"], scientist="other@lab.example"
    )(job)
    assert not sb.approve_if_code_is({"main.py": SUM_JOB})(job)


def test_approve_if_code_is_validates_its_terms():
    with pytest.raises(ValueError, match="main.py"):
        sb.approve_if_code_is({"run.py": SUM_JOB})
    with pytest.raises(ValueError, match="top of its folder"):
        sb.approve_if_code_is({"main.py": SUM_JOB}, data_files=["aa/params.json"])
    with pytest.raises(ValueError, match="repeats"):
        sb.approve_if_code_is({"main.py": SUM_JOB}, data_files=["main.py"])


def test_use_owner_python_runs_only_the_top_level_main_py(tmp_path):
    def fake_job(entrypoint):
        return SimpleNamespace(
            job_submission_path=tmp_path, job_metadata=SimpleNamespace(entrypoint=entrypoint)
        )

    for entrypoint in (None, "main.py"):
        script = sb.use_owner_python(fake_job(entrypoint), python="/p/python", private_logs=False)
        assert script.splitlines()[-1] == "exec /p/python main.py"
    for entrypoint in ("aa/main.py", "./main.py", "../main.py", "other.py"):
        with pytest.raises(ValueError, match="only the reviewed top-level"):
            sb.use_owner_python(fake_job(entrypoint), python="/p/python", private_logs=False)


def test_code_changed_after_the_review_is_not_what_runs(federation, numbers, tmp_path):
    """Time of check, time of use: right after the owner's review approves, the job's own folder
    (writable by the scientist's side in real mode) gets another main.py. run_round reviews and
    runs the owner's private copy, so the reviewed code is what runs."""
    (tmp_path / "main.py").write_text(SUM_JOB)
    approve = sb.approve_if_code_is({"main.py": SUM_JOB}, scientist=sb.SCIENTIST_EMAIL)
    reviewed_dirs = []

    def review_then_swap(job):
        verdict = approve(job)
        reviewed_dirs.append(Path(job.code_dir))
        inbox = next(
            j for j in federation.owner(0).job_client.jobs if j.name == "swapped-after-review"
        )
        (Path(inbox.code_dir) / "main.py").write_text(SUM_JOB.replace("sum(", "max("))
        return verdict

    report = sb.run_round(federation, tmp_path, "swapped-after-review", review=review_then_swap)
    totals = {e: float(files["total.json"].read_text()) for e, files in report.outputs.items()}
    assert totals == {sb.owner_email(0): 11.0, sb.owner_email(1): 22.0}  # sums, not max(...)
    job = next(j for j in federation.owner(0).job_client.jobs if j.name == "swapped-after-review")
    assert reviewed_dirs[0] == sb.private_code_dir(job)
    assert (sb.private_code_dir(job) / "main.py").read_text() == SUM_JOB
    assert f"cd {sb.private_code_dir(job)}" in job.run_script
    assert sb.private_files_seen_by(federation.scientist, numbers) == []
