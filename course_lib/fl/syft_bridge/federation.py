"""A federation of data owners and one data scientist on syft 0.10 (``syft`` + ``syft-rds``).

(The first half of :mod:`course_lib.fl.syft_bridge`: parties, jobs and review. Federated
training on top of it lives in :mod:`course_lib.fl.syft_bridge.training`.)

syft's *remote data science* workflow has two roles:

- a **data owner** (a hospital, say) publishes a dataset in two parts: a *mock* part with the same
  format but fake values, which peers may download, and a *private* part that never leaves the
  owner's machine;
- a **data scientist** explores the mock, writes a Python script and *submits* it as a job. Each
  owner reads the code, approves (or rejects) it, runs it on the private data, and shares back
  only the job's ``outputs/`` folder. A job is a plain subprocess on the owner's machine, not a
  sandbox: the owner's code review is the only guard.

Parties talk through Google Drive. Offline (the default here, and what the tests use) syft's own
in-memory *mock Drive* stands in for it: the same transport code runs, only the Drive API calls are
answered from memory. :func:`create_federation` builds N owners + 1 scientist on one mock Drive in
a temporary directory. ``mode="real"`` signs in to Google Drive with ``syft_rds.login_do`` /
``login_ds`` instead; one Google account signs in per Colab session, so there a learner plays
*one* role and pairs with a partner who plays the other.

What the owner's review does and does not protect
    The owner reviews the job's *code*. It does not review the scientist's *inputs* that travel
    with it (``params.json``, model weights): the same reviewed code can be steered by them — a
    threshold set absurdly high, an index chosen to single someone out, weights crafted so that
    the trained model memorises its data. And whatever a job prints, including a traceback that
    quotes a private value, lands in its logs. So the logs stay with the owner by default
    (:func:`use_owner_python` writes them to the owner's ``private/`` folder: syft itself puts
    them in the review folder, which the scientist always reads); the owner reads them
    (:func:`owner_logs`) and passes them on with :func:`share_logs` only when they hold nothing
    private. Neither choice bounds what the
    outputs themselves reveal: that takes differential privacy.

Running a job with the owner's own interpreter
    ``submit_python_job`` writes a ``run.sh`` that builds a fresh virtual environment with ``uv``
    and installs syft into it. Offline that cannot work (no package index), and even online the
    new environment has no PyTorch. The owner decides what runs on their machine, so before
    approving, the owner rewrites ``run.sh`` to run the reviewed ``main.py`` with the interpreter
    that already has torch and course_lib (:func:`use_owner_python`). The job's
    ``dependencies=`` are then ignored.

What exactly is reviewed and run
    :func:`approve_if_code_is` approves a job only if its code folder holds exactly the expected
    files, at the top (no subfolders, no links), the code byte for byte, and its declared
    entrypoint is ``main.py``; :func:`use_owner_python` only ever runs the top-level ``main.py``
    (the entrypoint in ``config.yaml`` is the scientist's to write, so any other is refused).
    :func:`review_private_copy` (what :func:`run_round` does) reviews and runs the owner's own copy
    of the job's code, so a file changed in the job's folder after the review never runs.

Pinned: this module uses a few underscore APIs of syft 0.10.0 / syft-rds 0.6.1 to build more than
two parties (syft only ships a two-party helper). ``tests/fl/test_syft_bridge.py`` exercises every
one, so an upgrade that breaks them fails loudly.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from course_lib.paths import offline
from course_lib.validation import as_integer

if TYPE_CHECKING:  # syft is an optional extra (`pip install course_lib[fl]`)
    from syft_job.job import JobInfo
    from syft_rds.client import SyftRDSClient

__all__ = [
    "SCIENTIST_EMAIL",
    "owner_email",
    "Federation",
    "RoundReport",
    "JobFailedError",
    "create_federation",
    "login",
    "use_owner_python",
    "review_private_copy",
    "private_code_dir",
    "approve_if_code_is",
    "job_code_files",
    "JOB_ENTRYPOINT",
    "pending_jobs",
    "run_approved_jobs",
    "share_logs",
    "private_log_dir",
    "owner_logs",
    "collect_outputs",
    "run_round",
    "private_files_seen_by",
    "job_source",
    "Reviewer",
]

SCIENTIST_EMAIL = "scientist@research-lab.example"
Reviewer = Callable[["JobInfo"], bool]


class JobFailedError(RuntimeError):
    """A job was rejected by its owner or exited with an error (the message has its stderr only
    if the owner shared the job's logs)."""


def owner_email(i: int) -> str:
    """The mock email address of the ``i``-th data owner (0-based): ``hospital1@...``."""
    return f"hospital{i + 1}@health.example"


@contextlib.contextmanager
def _maybe_quiet(quiet: bool) -> Iterator[None]:
    """syft narrates every step with prints; hide them when ``quiet`` (they name temp paths)."""
    if quiet:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    else:
        yield


@dataclass
class Federation:
    """The parties of one federation: data owners and (at most) one data scientist.

    In mock mode all parties live in this process, each with its own folder under ``root`` (a
    temporary directory deleted by :meth:`close`, or on leaving a ``with`` block). In real mode
    only the party you signed in as is set.
    """

    owners: list[SyftRDSClient]
    scientist: SyftRDSClient | None
    mode: Literal["mock", "real"]
    root: Path | None = None
    quiet: bool = True
    _tmp: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    @property
    def owner_emails(self) -> list[str]:
        return [o.email for o in self.owners]

    def owner(self, email_or_index: str | int) -> SyftRDSClient:
        """An owner's client, by email or position (a Python or NumPy integer; not a bool)."""
        if isinstance(email_or_index, str):
            for o in self.owners:
                if o.email == email_or_index:
                    return o
            raise ValueError(f"no data owner {email_or_index!r}; owners are {self.owner_emails}")
        index = as_integer(email_or_index, "the owner (an email or a position)")
        if not -len(self.owners) <= index < len(self.owners):
            raise IndexError(f"no data owner at position {index}; there are {len(self.owners)}")
        return self.owners[index]

    def _need_scientist(self) -> SyftRDSClient:
        if self.scientist is None:
            raise ValueError(
                "this federation has no data scientist client (you signed in as an owner)"
            )
        return self.scientist

    def publish(
        self,
        owner: str | int | SyftRDSClient,
        name: str,
        *,
        mock_dir: str | Path,
        private_dir: str | Path,
        summary: str = "",
        readme: str | Path | None = None,
    ):
        """``owner`` publishes dataset ``name``: the mock files are shared with the scientist, the
        private files stay in the owner's own folder (:meth:`SyftRDSClient.create_dataset`)."""
        # a client is used as it is; anything else (an email, a position) is looked up, and refused
        client = owner if hasattr(owner, "create_dataset") else self.owner(owner)
        users = [self.scientist.email] if self.scientist is not None else []
        with _maybe_quiet(self.quiet):
            return client.create_dataset(
                name=name,
                mock_path=Path(mock_dir),
                private_path=Path(private_dir),
                summary=summary,
                readme_path=Path(readme) if readme else None,
                users=users,
            )

    def mock_files(self, name: str, owner: str | int) -> list[Path]:
        """The scientist's local copies of ``owner``'s *mock* files of dataset ``name``."""
        import syft as sy

        scientist = self._need_scientist()
        with _maybe_quiet(self.quiet):
            scientist.sync()
            return sy.resolve_dataset_files_path(
                name, client=scientist, owner_email=self.owner(owner).email
            )

    def close(self) -> None:
        """Delete the mock federation's folders."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Federation:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _mock_party(store: Any, email: str, folder: Path, *, owner: bool) -> SyftRDSClient:
    """Build one party on the shared in-memory Drive ``store``, the way syft's own two-party
    helper ``SyftboxManager.pair_with_mock_drive_service_connection`` builds each of its two."""
    from syft.sync.connections.drive.gdrive_transport import GDriveConnection
    from syft.sync.connections.drive.mock_drive_service import MockDriveService
    from syft.sync.syftbox_manager import SyftboxManager, SyftboxManagerConfig
    from syft_datasets.dataset_manager import SyftDatasetManager
    from syft_job.client import JobClient
    from syft_job.job_runner import SyftJobRunner
    from syft_rds.client import SyftRDSClient
    from syft_rds.config import DATASET_COLLECTION_SPECS, SyftRDSClientConfig

    config = SyftboxManagerConfig._base_config_for_testing(
        email=email,
        syftbox_folder=folder,
        has_do_role=owner,
        has_ds_role=not owner,
        use_in_memory_cache=False,
        collection_specs=DATASET_COLLECTION_SPECS,
    )
    manager = SyftboxManager.from_config(config)
    manager._add_connection(GDriveConnection.from_service(email, MockDriveService(store, email)))
    if owner:  # the owner reacts to incoming job files
        manager.datasite_owner_syncer.event_cache.add_callback(
            "on_event_local_write", manager.job_file_change_handler._handle_file_change
        )
    else:  # the scientist's local writes are proposed to the owners
        manager.file_writer.add_callback(
            "write_file", manager.datasite_watcher_syncer.on_file_change
        )
    manager.peer_manager.write_own_version()
    rds = SyftRDSClientConfig._compose(config)
    return SyftRDSClient(
        sync_engine=manager,
        job_client=JobClient.from_config(rds.job),
        job_runner=SyftJobRunner.from_config(rds.job) if owner else None,
        dataset_manager=SyftDatasetManager.from_config(rds.dataset),
    )


def login(
    role: Literal["owner", "scientist"], email: str, *, token_path: str | Path | None = None
) -> SyftRDSClient:
    """Real mode: sign in to Google Drive as a data owner or data scientist.

    On Colab, syft uses Colab's Google sign-in (one account per session: one role per learner).
    In a local Jupyter, pass ``token_path`` (an OAuth token file, see syft's docs).
    """
    if role not in ("owner", "scientist"):
        raise ValueError(f"role must be 'owner' or 'scientist', got {role!r}")
    if offline():
        raise RuntimeError(
            "real-mode syft talks to Google Drive, but COURSE_OFFLINE=1 forbids network access. "
            "Use create_federation() (mock mode) offline, or unset COURSE_OFFLINE on Colab."
        )
    from syft_rds import login_do, login_ds

    sign_in = login_do if role == "owner" else login_ds
    try:
        return sign_in(email=email, token_path=token_path)
    except (NotImplementedError, FileNotFoundError, ValueError) as error:
        raise RuntimeError(
            f"could not sign in to Google Drive as {email!r} ({type(error).__name__}: {error}). "
            "Real mode needs a Google account: run on Colab (it signs you in), or pass "
            "token_path= to an OAuth token file. Offline, use mode='mock'."
        ) from error


def create_federation(
    num_owners: int = 3,
    *,
    mode: Literal["mock", "real"] = "mock",
    owner_emails: Sequence[str] | None = None,
    scientist_email: str = SCIENTIST_EMAIL,
    root: str | Path | None = None,
    quiet: bool = True,
    role: Literal["owner", "scientist"] | None = None,
    email: str | None = None,
    token_path: str | Path | None = None,
) -> Federation:
    """Build a federation: ``num_owners`` data owners and one data scientist, already peered.

    Mock mode (default, offline): every party gets its own folder under ``root`` (default: a new
    temporary directory, deleted by :meth:`Federation.close`) and they share one in-memory Drive.
    The scientist sends each owner a peer request and each owner approves it.

    Real mode: signs in as ``role`` with Google account ``email`` (see :func:`login`) and returns a
    federation holding just that party; pair with your partner with ``client.add_peer(...)``
    (scientist) and ``client.approve_peer_request(...)`` (owner), as in syft's docs.
    """
    if mode == "real":
        if role is None or email is None:
            raise ValueError("mode='real' needs role='owner' or 'scientist' and your Google email")
        client = login(role, email, token_path=token_path)
        return Federation(
            owners=[client] if role == "owner" else [],
            scientist=client if role == "scientist" else None,
            mode="real",
            quiet=quiet,
        )
    if mode != "mock":
        raise ValueError(f"mode must be 'mock' or 'real', got {mode!r}")
    num_owners = as_integer(num_owners, "num_owners")
    if num_owners < 1:
        raise ValueError(f"a federation needs at least one data owner, got num_owners={num_owners}")
    emails = (
        list(owner_emails)
        if owner_emails is not None
        else [owner_email(i) for i in range(num_owners)]
    )
    if len(emails) < 1 or len(set(emails + [scientist_email])) != len(emails) + 1:
        raise ValueError("owner and scientist emails must be distinct, with at least one owner")

    from syft.sync.connections.drive.mock_drive_service import MockDriveBackingStore

    tmp: tempfile.TemporaryDirectory[str] | None = None
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="syft_federation_")
        base = Path(tmp.name)
    else:
        base = Path(root)
    store = MockDriveBackingStore()  # the one shared "Google Drive"
    with _maybe_quiet(quiet):
        owners = [_mock_party(store, e, base / e.split("@")[0], owner=True) for e in emails]
        scientist = _mock_party(store, scientist_email, base / "scientist", owner=False)
        for owner in owners:
            scientist.add_peer(owner.email, sync=False)  # peer request ...
            owner.load_peers()
            owner.approve_peer_request(scientist.email)  # ... approved by the owner
        scientist.load_peers()
    return Federation(
        owners=owners, scientist=scientist, mode="mock", root=base, quiet=quiet, _tmp=tmp
    )


# -- the owner's side -------------------------------------------------------------------------


def pending_jobs(owner: SyftRDSClient, *, quiet: bool = True) -> list[JobInfo]:
    """Jobs waiting for ``owner``'s review (after pulling new submissions)."""
    with _maybe_quiet(quiet):
        owner.sync()
        return [job for job in owner.job_client.jobs if job.status == "pending"]


def private_log_dir(job: JobInfo) -> Path:
    """Where :func:`use_owner_python` keeps a job's stdout and stderr: under the owner's
    ``private/`` folder, which syft never shares (``<datasite>/private/job_logs/<scientist>/
    <job name>/``)."""
    review = Path(job.job_review_path)  # <datasite>/app_data/job/review/<scientist>/v<n>/<job>
    datasite = next(p for p in review.parents if p.name == job.datasite_owner_email)
    return datasite / "private" / "job_logs" / job.submitted_by / job.name


#: The only entrypoint an owner runs: the reviewed top-level ``main.py`` of the job's code folder.
JOB_ENTRYPOINT = "main.py"

#: syft's own permission file, which syft (not the scientist's code) may place in a job folder.
_SYFT_METADATA_FILES = frozenset({"syft.pub.yaml"})


def _entrypoint_problem(job: JobInfo) -> str | None:
    """Why ``job``'s declared entrypoint is not the reviewed top-level ``main.py`` (or None)."""
    entrypoint = job.job_metadata.entrypoint
    if entrypoint is None or entrypoint == JOB_ENTRYPOINT:
        return None
    return (
        f"the job names entrypoint {entrypoint!r}: an owner runs only the reviewed top-level "
        f"{JOB_ENTRYPOINT!r}"
    )


def use_owner_python(
    job: JobInfo,
    python: str | Path | None = None,
    *,
    private_logs: bool = True,
    code_dir: str | Path | None = None,
) -> str:
    """The owner replaces the job's ``run.sh`` so it runs the job's top-level ``main.py`` with
    ``python`` (default: this kernel's interpreter, which has torch and course_lib) instead of
    building a fresh virtual environment. Returns the new script. Call it *before* approving.

    The script always runs the literal ``main.py``, the file the review compared: the
    ``entrypoint`` of a job's ``config.yaml`` is written by the scientist, so a job naming any
    other entrypoint (``aa/main.py``, ``../x.py``) is refused with ``ValueError`` — otherwise a
    reviewed ``main.py`` could ride along while an unreviewed file runs.

    ``private_logs=True`` (the default) sends the job's stdout and stderr to
    :func:`private_log_dir` instead of syft's logs. syft 0.10 writes a job's logs into the review
    folder, which the scientist can always read (the job's state lives there), whatever
    ``share_logs_with_submitter`` says: a traceback quoting private data would reach the
    scientist. The owner reads the private logs with :func:`owner_logs` and passes them on with
    :func:`share_logs` when they reveal nothing.

    ``code_dir`` (default: the job's own ``code/`` folder) runs another folder instead: the
    owner's private copy that it reviewed (:func:`review_private_copy`); its ``outputs/`` is
    pointed at the job's, where syft collects the results.
    """
    problem = _entrypoint_problem(job)
    if problem is not None:
        raise ValueError(f"refusing to run this job: {problem}")
    python = str(python or sys.executable)
    run = f"exec {shlex.quote(python)} {shlex.quote(JOB_ENTRYPOINT)}"
    if private_logs:
        logs = private_log_dir(job)
        run = (
            f"mkdir -p {shlex.quote(str(logs))}\n"
            f"{run} >{shlex.quote(str(logs / 'stdout.txt'))} "
            f"2>{shlex.quote(str(logs / 'stderr.txt'))}"
        )
    script = (
        "#!/bin/bash\n"
        "# run.sh rewritten by the data owner: use the owner's Python, install nothing"
        + (", keep the logs private" if private_logs else "")
        + "\nset -euo pipefail\n"
        + _cd_into(job, code_dir)
        + run
        + "\n"
    )
    (Path(job.job_submission_path) / "run.sh").write_text(script)
    return script


def _cd_into(job: JobInfo, code_dir: str | Path | None) -> str:
    if code_dir is None:
        return "cd code\n"
    outputs = Path(job.code_dir) / "outputs"  # syft creates it before the run, collects it after
    return (
        f"cd {shlex.quote(str(code_dir))}\n"
        f"rm -rf outputs\nln -s {shlex.quote(str(outputs))} outputs\n"
    )


def private_code_dir(job: JobInfo) -> Path:
    """Where :func:`review_private_copy` keeps the owner's copy of a job's code: under the owner's
    ``private/`` folder, which neither syft nor the scientist writes."""
    return private_log_dir(job).parent.parent.parent / "job_code" / job.submitted_by / job.name


class _PrivateCopy:
    """``job`` as its reviewer sees it: every attribute the job's, ``code_dir`` the owner's copy."""

    def __init__(self, job: JobInfo, code_dir: Path) -> None:
        self._job = job
        self.code_dir = code_dir

    def __getattr__(self, name: str) -> Any:
        return getattr(self._job, name)


def review_private_copy(
    job: JobInfo, review: Reviewer, *, python: str | Path | None = None
) -> bool:
    """The owner's whole check of one job, closing the window between review and run.

    Copies the job's code folder (links as links, which the review refuses) to
    :func:`private_code_dir`, runs ``review`` on that copy, and — if it approves and the job names
    no other entrypoint than ``main.py`` — writes the job's ``run.sh`` to run the *copy* with the
    owner's Python (:func:`use_owner_python`). The job's own folder is one the scientist's side
    can write in real mode; whatever lands there after this call is never run. Returns the
    verdict; the caller then approves or rejects the job.
    """
    copy = private_code_dir(job)
    if copy.exists():
        shutil.rmtree(copy)
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(Path(job.code_dir), copy, symlinks=True)
    if not review(cast("JobInfo", _PrivateCopy(job, copy))) or _entrypoint_problem(job):
        return False
    use_owner_python(job, python, code_dir=copy)
    return True


def owner_logs(job: JobInfo) -> dict[str, str]:
    """The owner reads a job's private logs: ``{"stdout": ..., "stderr": ...}`` (empty strings if
    the job wrote nothing, or has not run with :func:`use_owner_python`'s private logs)."""
    logs = private_log_dir(job)
    return {
        name: (logs / f"{name}.txt").read_text() if (logs / f"{name}.txt").is_file() else ""
        for name in ("stdout", "stderr")
    }


def job_code_files(job: JobInfo) -> dict[str, Path] | None:
    """Every file of ``job``'s code folder, by its relative POSIX path (syft's own
    ``syft.pub.yaml`` at the top left out), or ``None`` when the folder holds anything a review
    cannot vouch for: a subfolder, a symbolic link, or something that is not a regular file."""
    code_dir = Path(job.code_dir)
    if not code_dir.is_dir() or code_dir.is_symlink():
        return None
    files: dict[str, Path] = {}
    for path in code_dir.iterdir():
        if path.is_symlink() or not path.is_file():
            return None  # a subfolder, a link (perhaps to a private file), a device, ...
        if path.name not in _SYFT_METADATA_FILES:
            files[path.relative_to(code_dir).as_posix()] = path
    return files


def approve_if_code_is(
    expected: dict[str, str], *, data_files: Sequence[str] = (), scientist: str | None = None
) -> Reviewer:
    """A reviewer that approves a pending job only if

    - its code folder holds exactly the files ``expected`` and ``data_files`` (relative paths, all
      at the top: no subfolders, no links; syft's own ``syft.pub.yaml`` aside),
    - each ``expected`` file (``{"main.py": source}``) equals its source **byte for byte**,
    - its declared entrypoint is ``main.py`` (or unset) — :func:`use_owner_python` runs only that,
    - and (optionally) it comes from ``scientist``.

    It replaces syft-rds' ``job_matches_criteria``, which compares file *names* found anywhere in
    the folder as a set, checks the first file called ``main.py`` it meets, ignores blank lines and
    leaves the entrypoint alone: a reviewed ``main.py`` plus ``aa/main.py`` with
    ``entrypoint="aa/main.py"`` passed it, and the owner ran the unreviewed file.
    """
    if not isinstance(expected, dict) or JOB_ENTRYPOINT not in expected:
        raise ValueError(f"expected must map {JOB_ENTRYPOINT!r} (the entrypoint) to its source")
    wanted = {name: source.encode("utf-8") for name, source in expected.items()}
    allowed = {*wanted, *data_files}
    for name in allowed:
        if (
            not isinstance(name, str)
            or not name
            or "/" in name
            or "\\" in name
            or name in {".", ".."}
        ):
            raise ValueError(f"a reviewed job's files sit at the top of its folder, got {name!r}")
    if len(allowed) != len(wanted) + len(tuple(data_files)):
        raise ValueError("data_files repeats a file or names one of the expected code files")

    def review(job: JobInfo) -> bool:
        if job.status != "pending" or (scientist is not None and job.submitted_by != scientist):
            return False
        if _entrypoint_problem(job) is not None:
            return False
        files = job_code_files(job)
        if files is None or set(files) != allowed:
            return False
        return all(files[name].read_bytes() == source for name, source in wanted.items())

    return review


def run_approved_jobs(owner: SyftRDSClient, *, timeout: int = 300, quiet: bool = True) -> None:
    """Run every approved job of ``owner`` and share its ``outputs/`` with the submitter.

    Logs are not shared; with :func:`use_owner_python`'s private logs they are not even written
    where the scientist can read them. :func:`share_logs` passes them on after the owner's review.
    """
    with _maybe_quiet(quiet):
        owner.job_runner.process_approved_jobs(
            stream_output=False,
            timeout=timeout,
            share_outputs_with_submitter=True,
            share_logs_with_submitter=False,
        )
        owner.sync()


def share_logs(owner: SyftRDSClient, job_name: str, *, quiet: bool = True) -> None:
    """The owner, having read a job's private logs (:func:`owner_logs`) and found nothing private
    in them, passes them to the scientist: they are copied into the job's review folder (which
    the scientist reads) and synced."""
    job = next((j for j in owner.job_client.jobs if j.name == job_name), None)
    if job is None:
        raise ValueError(f"{owner.email} has no job {job_name!r}")
    review = Path(job.job_review_path)
    for name, text in owner_logs(job).items():
        (review / f"{name}.txt").write_text(text)
    with _maybe_quiet(quiet):
        owner.job_runner.share_job_results(job_name, share_outputs=False, share_logs=True)
        owner.sync()


# -- the scientist's side ---------------------------------------------------------------------


def _submit(federation: Federation, code_dir: Path, job_name: str, owners: Sequence[str]) -> None:
    scientist = federation._need_scientist()
    if not (code_dir / "main.py").is_file():
        raise ValueError(f"{code_dir} must contain the job's entrypoint main.py")
    with _maybe_quiet(federation.quiet):
        for email in owners:
            scientist.submit_python_job(
                user=email, code_path=str(code_dir), job_name=job_name, entrypoint="main.py"
            )


def collect_outputs(
    federation: Federation, job_name: str, owners: Sequence[str] | None = None
) -> dict[str, dict[str, Path]]:
    """The scientist pulls results: ``{owner email: {output file name: local path}}``.

    Raises :class:`JobFailedError` if a job failed or was rejected; the message quotes the job's
    stderr only if the owner shared its logs.
    """
    scientist = federation._need_scientist()
    owners = list(owners) if owners is not None else federation.owner_emails
    with _maybe_quiet(federation.quiet):
        scientist.sync()
        jobs = {(j.datasite_owner_email, j.name): j for j in scientist.job_client.jobs}
    results: dict[str, dict[str, Path]] = {}
    for email in owners:
        job = jobs.get((email, job_name))
        if job is None:
            raise JobFailedError(f"no job {job_name!r} at {email}: was it submitted?")
        if job.status != "done":
            detail = _shared_stderr(job) if job.status == "failed" else ""
            raise JobFailedError(f"job {job_name!r} at {email} is {job.status!r}. {detail}")
        with _maybe_quiet(True):
            results[email] = {p.name: p for p in job.output_paths}
    return results


def _shared_stderr(job: JobInfo) -> str:
    """The end of a failed job's stderr as the scientist sees it, or a note that the owner kept
    the logs."""
    path = Path(job.job_review_path) / "stderr.txt"
    if not path.is_file() or not path.read_text().strip():
        return (
            "Its logs stay with the owner (they may quote private data); ask the owner to read "
            "them and share them (share_logs)."
        )
    return path.read_text()[-2000:]


@dataclass
class RoundReport:
    """What happened in one :func:`run_round`: who approved, and the outputs that came back."""

    job_name: str
    approved: list[str]
    outputs: dict[str, dict[str, Path]]


def run_round(
    federation: Federation,
    code_dir: str | Path,
    job_name: str,
    *,
    review: Reviewer,
    owners: Sequence[str] | None = None,
    timeout: int = 300,
) -> RoundReport:
    """One full remote-execution round across the owners (mock mode):

    the scientist submits ``code_dir`` (with ``main.py``) to each owner → each owner reviews the
    job with ``review`` — on the owner's private copy of its code (:func:`review_private_copy`) —
    and rejects it if the reviewer says no → approves it, with the job's run.sh running that copy
    with the owner's Python (:func:`use_owner_python`) → runs it on the private data → shares the
    outputs → the scientist collects them.
    """
    if federation.mode != "mock":
        raise ValueError(
            "run_round drives every party, so it needs a mock federation; in real mode "
            "each party runs its own half (submit / pending_jobs + approve)"
        )
    owners = list(owners) if owners is not None else federation.owner_emails
    _submit(federation, Path(code_dir), job_name, owners)
    approved = []
    for email in owners:
        owner = federation.owner(email)
        job = next(
            (j for j in pending_jobs(owner, quiet=federation.quiet) if j.name == job_name), None
        )
        if job is None:
            raise JobFailedError(f"{email} did not receive job {job_name!r}")
        with _maybe_quiet(federation.quiet):
            if not review_private_copy(job, review):
                job.reject(reason="the code is not what this owner reviewed and agreed to run")
                owner.sync()  # tell the scientist
                raise JobFailedError(
                    f"{email} rejected job {job_name!r}: it did not pass the owner's review"
                )
            job.approve(reason="code reviewed")
        approved.append(email)
        run_approved_jobs(owner, timeout=timeout, quiet=federation.quiet)
    return RoundReport(job_name, approved, collect_outputs(federation, job_name, owners))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def private_files_seen_by(client: SyftRDSClient, private_dirs: Sequence[str | Path]) -> list[Path]:
    """Files under ``client``'s folder whose *contents* equal a file in ``private_dirs``.

    The check behind "no private file reached the scientist": it compares SHA-256 digests, so a
    renamed copy would be caught too. Returns the offending paths (empty when nothing leaked).
    """
    private = {_digest(p) for d in private_dirs for p in Path(d).rglob("*") if p.is_file()}
    seen = [p for p in Path(client.syftbox_folder).rglob("*") if p.is_file()]
    return sorted(p for p in seen if _digest(p) in private)


def job_source(module_name: str) -> str:
    """The source text of a job module (e.g. ``"course_lib.fl.jobs.local_training"``): what a job
    folder's ``main.py`` holds and what the owner's review compares against, byte for byte.

    Job scripts are ordinary modules, so ruff, the tests and an editor read them as Python; the
    bridge ships their exact text into each job. The module is located, not imported.
    """
    if not module_name.startswith("course_lib.fl.jobs."):
        raise ValueError(f"{module_name!r} is not a job module of course_lib.fl.jobs")
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        raise ValueError(f"no job module {module_name!r}")
    return Path(spec.origin).read_text()
