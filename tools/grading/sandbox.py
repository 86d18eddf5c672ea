"""The OS-level sandbox every piece of student code runs in: bubblewrap (``bwrap``) + ``prlimit``.

A sandboxed command sees a minimal, read-only view of the machine — the system's programs and
libraries (``/usr``, ``/etc``), the Python installation, the course's virtualenv, ``course_lib``,
``data/``, ``flower_app/`` and the grader's in-sandbox runtime (:mod:`tools.grading.codec` and
:mod:`tools.grading.execute`, which hold no secrets) — and one writable folder, its own scratch,
at ``/scratch``. Not there: ``notebooks/`` (the solutions), ``tools/grading``'s judge, hidden
cases and references, the other submissions, the grades, ``/root``, ``/home``, the real ``/tmp``.

- new network, PID, IPC, UTS and cgroup namespaces (and a user namespace when the grader is not
  root): no network, and the
  sandbox's processes cannot see or signal the grader's; ``--die-with-parent`` and the PID
  namespace mean that when the command's first process ends (or the grader kills it), *every*
  process it started ends too — a ``setsid``/double-forked process included;
- ``--new-session`` (no terminal to inject keystrokes into);
- run as root, bwrap sets up the mounts and then ``setpriv`` makes the command an unprivileged user
  (``nobody``, uid 65534) with no capabilities and ``no_new_privs`` before anything else runs, so
  even a mistakenly bound file of the instructor's (mode 600) stays unreadable and the process
  limit applies; run as another user, bwrap drops every capability in a user namespace;
- ``prlimit``: address space (``--memory`` GiB), CPU seconds, processes, open files, file size.

Bubblewrap is what Flatpak builds on (Debian/Ubuntu package ``bubblewrap``).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from course_lib.paths import REPO_ROOT

__all__ = [
    "SANDBOX_SCRATCH",
    "Sandbox",
    "SandboxUnavailable",
    "UnsafeFile",
    "read_scratch_file",
    "require_bwrap",
]

#: Where a submission's scratch folder appears inside the sandbox.
SANDBOX_SCRATCH = Path("/scratch")
#: The unprivileged user a root grader drops to (nobody).
_NOBODY = 65534
#: Files of the grader that the sandbox needs (its in-sandbox runtime); nothing else of tools/.
_RUNTIME = ("tools/__init__.py", "tools/grading/__init__.py", "tools/grading/codec.py",
            "tools/grading/execute.py")  # fmt: skip
#: Folders of the repository the lessons read (never written).
_COURSE = (".venv", "course_lib", "data", "flower_app")
_INSTALL_HINT = (
    "grading runs student code in a bubblewrap sandbox, and `bwrap` {problem}. Install it "
    "(Debian/Ubuntu: `sudo apt-get install bubblewrap`; Fedora: `sudo dnf install bubblewrap`) "
    "and make sure unprivileged user namespaces are enabled (`sysctl user.max_user_namespaces` "
    "> 0)."
)


def _matplotlib_cache() -> Path:
    """Where this process's matplotlib keeps its cache (without importing matplotlib)."""
    if "MPLCONFIGDIR" in os.environ:
        return Path(os.environ["MPLCONFIGDIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "matplotlib"


class UnsafeFile(ValueError):
    """A file the sandbox left that the judge will not read: a symbolic link (also on the way to
    it), a FIFO, a device or a folder, or one larger than the judge reads."""


def read_scratch_file(scratch: Path, relative: str, limit: int) -> bytes | None:
    """The bytes of ``scratch/relative``, a file written inside the sandbox, read as every judge-
    side read of one must be: each folder on the way and the file itself opened relative to the
    one before with ``O_NOFOLLOW`` (a symbolic link is refused, not followed), the file opened
    non-blocking (a FIFO cannot hang the judge) and accepted only as a regular file of at most
    ``limit`` bytes, and no more than ``limit`` bytes read (it cannot grow past it while read).
    None when it does not exist; :class:`UnsafeFile` for anything else. ``scratch`` itself is the
    judge's own folder and is trusted."""
    if not isinstance(relative, str) or not relative or relative.startswith("/"):
        raise ValueError(f"relative must be a relative path inside the scratch, got {relative!r}")
    if type(limit) is not int or limit < 0:
        raise ValueError(f"limit must be a non-negative int, got {limit!r}")
    parts = relative.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"relative must name a path below the scratch, got {relative!r}")
    nofollow = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    opened = [os.open(scratch, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)]
    try:
        for part in parts[:-1]:
            try:
                opened.append(os.open(part, nofollow | os.O_DIRECTORY, dir_fd=opened[-1]))
            except FileNotFoundError:
                return None
            except OSError as error:  # ELOOP: a link; ENOTDIR: not a folder
                raise UnsafeFile(f"{part} is not a folder (it is a link or a file)") from error
        try:
            fd = os.open(parts[-1], nofollow | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=opened[-1])
        except FileNotFoundError:
            return None
        except OSError as error:
            raise UnsafeFile(f"{relative} is a symbolic link or cannot be opened") from error
        opened.append(fd)
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise UnsafeFile(f"{relative} is not a regular file")
        if status.st_size > limit:
            raise UnsafeFile(f"{relative} is larger than the grader reads ({limit:,} bytes)")
        chunks, size = [], 0
        while chunk := os.read(fd, min(2**20, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise UnsafeFile(f"{relative} is larger than the grader reads ({limit:,} bytes)")
        return b"".join(chunks)
    finally:
        for fd in reversed(opened):
            os.close(fd)


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot start a sandbox on this machine."""


def require_bwrap() -> str:
    """The path of a working ``bwrap``. SandboxUnavailable (with how to install it) otherwise."""
    path = shutil.which("bwrap")
    if path is None:
        raise SandboxUnavailable(_INSTALL_HINT.format(problem="is not installed"))
    probe = Sandbox(Path("/nonexistent"), bwrap=path).wrap(["/bin/true"], scratch=False)
    result = subprocess.run(probe, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        problem = f"cannot start a sandbox here ({result.stderr.strip() or result.returncode})"
        raise SandboxUnavailable(_INSTALL_HINT.format(problem=problem))
    return path


@dataclass(frozen=True)
class Sandbox:
    """How to run a command inside the sandbox with ``scratch`` (a host folder) as ``/scratch``.

    ``memory_gib``: address-space limit per process; ``cpu_seconds``: CPU-time limit per process;
    ``processes``: most processes of the sandbox's user at once.
    """

    scratch: Path
    bwrap: str = "bwrap"
    memory_gib: int = 8
    cpu_seconds: int = 3600
    processes: int = 512

    def wrap(self, command: list[str], *, scratch: bool = True) -> list[str]:
        """``command`` wrapped: setpriv (when root) + prlimit + bwrap with the view described in the
        module docstring, run with a clean environment in ``/scratch``."""
        base = Path(sys.base_prefix).resolve()
        binds = ["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
        for link in ("bin", "sbin", "lib", "lib64", "lib32"):
            path = Path("/") / link
            if path.is_symlink():
                binds += ["--symlink", os.readlink(path), str(path)]
            elif path.is_dir():
                binds += ["--ro-bind", str(path), str(path)]
        for prefix in {base, Path(sys.prefix).resolve()}:
            if not prefix.is_relative_to("/usr") and not prefix.is_relative_to(REPO_ROOT):
                for parent in reversed(prefix.parents[:-1]):  # traversable, even under /root
                    binds += ["--perms", "0755", "--dir", str(parent)]
                binds += ["--ro-bind", str(prefix), str(prefix)]
        binds += ["--tmpfs", str(REPO_ROOT)]
        for folder in ("tools", "tools/grading"):  # made by hand: bwrap would make them 0700
            binds += ["--perms", "0755", "--dir", str(REPO_ROOT / folder)]
        for relative in (*_COURSE, *_RUNTIME):
            if (REPO_ROOT / relative).exists():
                bound = str(REPO_ROOT / relative)
                binds += ["--ro-bind", bound, bound]
        if scratch:
            binds += ["--bind", str(self.scratch), str(SANDBOX_SCRATCH)]
        home = SANDBOX_SCRATCH / "home"
        environment = {
            "PATH": f"{REPO_ROOT / '.venv' / 'bin'}:/usr/bin:/bin",
            "HOME": str(home),
            "MPLCONFIGDIR": str(home / ".matplotlib"),
            "MPLBACKEND": "Agg",
            "PYTHONPATH": str(REPO_ROOT),
            "COURSE_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "LANG": "C.UTF-8",
        }
        env: list[str] = ["--clearenv"]
        for key, value in environment.items():
            env += ["--setenv", key, value]
        namespaces = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
        namespaces += ["--unshare-cgroup-try"]
        drop: list[str] = []
        if os.geteuid() == 0:
            # bwrap mounts as root; inside, before any student code, setpriv becomes nobody
            # for good (no capabilities, no new privileges), so the process limit applies.
            drop = ["setpriv", f"--reuid={_NOBODY}", f"--regid={_NOBODY}", "--clear-groups"]
            drop += ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
        else:  # an unprivileged user: bwrap needs a user namespace of its own
            namespaces += ["--unshare-user", "--cap-drop", "ALL"]
        isolation = [
            *namespaces,
            "--die-with-parent",
            "--new-session",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--perms",
            "1777",
            "--tmpfs",
            "/tmp",
            "--chdir",
            str(SANDBOX_SCRATCH) if scratch else "/",
        ]
        limits = [
            "prlimit",
            f"--as={self.memory_gib * 2**30}",
            f"--cpu={self.cpu_seconds}",
            f"--nproc={self.processes}",
            "--nofile=1024",
            f"--fsize={2**30}",
            "--",
        ]
        return [self.bwrap, *isolation, *binds, *env, "--", *drop, *limits, *command]

    def prepare(self) -> None:
        """Create the scratch folder (and its ``home``), writable by the sandbox's user only."""
        (self.scratch / "home").mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            for path in (self.scratch, self.scratch / "home"):
                os.chown(path, _NOBODY, _NOBODY)
        # matplotlib's font list, as the grader's own matplotlib built it: saves rebuilding it
        config = self.scratch / "home" / ".matplotlib"
        config.mkdir(exist_ok=True)
        for cached in _matplotlib_cache().glob("fontlist-*.json"):
            shutil.copyfile(cached, config / cached.name)
        if os.geteuid() == 0:
            os.chown(config, _NOBODY, _NOBODY)
        self.scratch.chmod(0o700)
