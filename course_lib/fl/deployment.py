"""A local Flower federation as real OS processes: start, stream a run, stop every process.

Flower's Deployment Engine runs one **SuperLink** (the server side: it receives runs from the
``flwr`` CLI, starts the ServerApp and relays messages) and one **SuperNode** per data holder
(each starts a fresh ``flwr-clientapp`` process per task). :class:`LocalFederation` starts them on
127.0.0.1 the way Flower's "Run Flower using the Deployment Engine" guide does by hand::

    flower-superlink --insecure --disable-runtime-dependency-installation --port P
    flower-supernode --insecure --superlink 127.0.0.1:P --port Q_i \\
                     --node-config "partition-id=i num-partitions=N"
    flwr run flower_app local --stream          # FLWR_HOME/config.toml names the SuperLink

With ``simulation=True`` it starts a SuperLink with ``--simulation`` instead (no SuperNodes: the
SuperLink runs ``N`` virtual ones on Ray) — the same as ``flwr run .``'s managed local SuperLink,
except that this one is stopped afterwards (the managed one keeps running in the background).

Every process gets its own session (process group), ``FLWR_HOME`` in a temporary folder (state,
installed apps, CLI config, the course app's data cache) and ``FLWR_TELEMETRY_ENABLED=0``; ports
are picked free. For the course's own app, :meth:`LocalFederation.run` saves the run's MNIST
splits into the cache from the calling process first
(:func:`course_lib.fl.flower.fill_data_cache`). Start-up is most of a small run's cost, so the
simulation's Ray processes skip an import they never use (:data:`SKIPPED_IMPORTS`) and Ray starts
no default worker, which the ClientApp actor (it runs in the app's runtime environment) could not
use. With the data cache filled, the Flower and Ray processes of lesson 13's simulation run use
about half the CPU time they did without these (~19 s instead of ~38 s, measured on 2 cores).

Leaving the ``with`` block — normally, on an exception or a KeyboardInterrupt — sends SIGTERM to
each process group, SIGKILL to whatever is left after a grace period, and removes the folder.
:func:`flower_processes` lists the Flower processes still alive for a given ``FLWR_HOME``, which
is how the tests check that nothing was left behind.

Offline and localhost only: by default ``--insecure`` (no TLS); ``tls=True`` serves the SuperLink
over TLS with a throw-away CA (:func:`make_tls_files`), as between machines.
``--disable-runtime-dependency-installation`` stops the SuperLink from running ``uv sync`` for the
app's dependencies. Across machines see ``flower_app/README.md`` (real addresses, TLS
certificates, SuperNode authentication, what the SuperLink's port exposes).

**Across machines, one role per command** (:func:`main`)::

    python -m course_lib.fl.deployment tls --out tls --hosts 10.0.0.1       # operator, once
    python -m course_lib.fl.deployment key --out keys --name node1          # each hospital
    python -m course_lib.fl.deployment superlink --host 0.0.0.0 --port 9093 --tls-dir tls --auth
    python -m course_lib.fl.deployment register --superlink 10.0.0.1:9093 --ca tls/ca.crt \\
        node1.pub
    python -m course_lib.fl.deployment supernode --superlink 10.0.0.1:9093 --ca ca.crt \\
        --key keys/node1.key --partition 0/2
    python -m course_lib.fl.deployment run --superlink 10.0.0.1:9093 --ca tls/ca.crt --rounds 2

Each role checks every argument before anything starts (a missing file, a bad address or
partition: one line, exit status 2), prints the Flower command it runs — the one
``flower_app/README.md`` gives — and stops its Flower process on SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # deployment imports nothing heavy at run time (Flower's processes import it)
    from course_lib.fl import flower as _flower

__all__ = [
    "FEDERATION",
    "SKIPPED_IMPORTS",
    "LocalFederation",
    "check_port_free",
    "flower_processes",
    "free_port",
    "main",
    "make_supernode_key",
    "make_tls_files",
    "stop_on_sigterm",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_port_free(port: int, host: str = "127.0.0.1") -> None:
    """Raise ``OSError`` naming ``host:port`` if a listening socket can't be bound there.

    The SuperLink would exit on it ("address already in use") while whatever holds the port
    answers connections — SuperNodes then report "SuperLink unavailable" tens of seconds later.
    ``SO_REUSEADDR`` as uvicorn (the SuperLink's server) sets it: a port left in TIME_WAIT by an
    earlier federation is fine, one with a live listener is not.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as error:
            raise OSError(
                error.errno,
                f"the SuperLink cannot listen on {host}:{port} ({error.strerror}): another "
                f"program (an earlier federation?) holds that port. Pick another port, or find "
                f"the program with `ss -ltnp 'sport = :{port}'`.",
            ) from None


def flower_processes(flwr_home: str | Path) -> list[tuple[int, str]]:
    """``(pid, command line)`` of every live process whose ``FLWR_HOME`` is ``flwr_home``: the
    SuperLink, SuperNodes, SuperExecs, ClientApp/ServerApp processes and the simulation's Ray
    processes all inherit it (read from ``/proc``; Linux only — elsewhere ``[]``)."""
    wanted = f"FLWR_HOME={os.fspath(flwr_home)}".encode()
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            if wanted not in environ:
                continue
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if "State:\tZ" not in status:  # a zombie is already dead (waiting for its parent)
            found.append((int(entry.name), cmdline))
    return found


def _program(name: str) -> str:
    """The console script ``name`` next to this Python (the venv's), else on ``PATH``."""
    local = Path(sys.executable).with_name(name)
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(
            f"{name} not found: install Flower (pip install 'flwr[simulation]')"
        )
    return found


#: Optional modules that no Flower or Ray process uses but whose import is slow. jsonschema
#: (>= 4.25) imports ``rfc3987_syntax`` whenever it is installed — Jupyter's
#: ``jsonschema[format-nongpl]`` installs it — and that module builds an Earley parser at import:
#: ~1.3 s of CPU in every process that imports Ray (Ray's runtime-env schemas import jsonschema),
#: seven or more per simulation run (python-jsonschema/jsonschema#1392, #1521). jsonschema only
#: needs it to check the "iri" string format, and neither Flower nor Ray checks formats. The
#: federation's processes get a module of that name that raises ``ImportError`` (as if it were
#: not installed) ahead of the real one on ``PYTHONPATH``; the calling process is unchanged.
SKIPPED_IMPORTS = ("rfc3987_syntax",)


def _write_import_shims(folder: Path, names: Sequence[str] = SKIPPED_IMPORTS) -> None:
    """One module per name in ``folder`` (created owner-only) whose import raises ImportError."""
    folder.mkdir(mode=0o700)
    for name in names:
        (folder / f"{name}.py").write_text(
            f"raise ImportError(\"{name} is left out of the course's Flower processes "
            '(slow to import, never used there): see course_lib.fl.deployment.SKIPPED_IMPORTS")\n'
        )


class LocalFederation:
    """One SuperLink and ``num_supernodes`` SuperNodes (or a simulation SuperLink) on 127.0.0.1.

    Args:
        num_supernodes: SuperNodes to start; node ``i`` gets ``--node-config
            "partition-id=i num-partitions=num_supernodes"``. With ``simulation=True`` it is the
            number of virtual SuperNodes instead.
        simulation: start ``flower-superlink --simulation`` (Ray) rather than SuperNodes.
        echo: called with each line ``flwr run --stream`` prints (the ServerApp's log; ``None``:
            keep quiet). The last lines of every process are kept in :attr:`log` either way.
        echo_all: also echo the SuperLink's and SuperNodes' own (verbose) logs.
        grace: seconds between SIGTERM and SIGKILL when stopping (the SuperLink's interpreter
            can linger for seconds after its server has shut down; the run's result is saved
            before anything is stopped).
        simulation_cpus: with ``simulation=True``, the CPUs Ray may use, hence the number of
            ClientApp actors (one per CPU; each is a Python process importing PyTorch). 1 by
            default: the course's models are small, and on a small machine start-up dominates.
        port: the SuperLink's port on 127.0.0.1 (default: a free one). A port another program
            holds is refused at once (``OSError`` naming it), before any process starts.
        tls: serve the SuperLink over TLS instead of ``--insecure``: a throw-away CA and a
            certificate for ``127.0.0.1``/``localhost`` are made in ``FLWR_HOME/tls``
            (:func:`make_tls_files`); the SuperNodes (``--root-certificates``) and the ``flwr``
            CLI (``root-certificates`` in ``config.toml``) trust that CA only. The commands are
            the ones ``flower_app/README.md`` gives for machines that talk over a network.
        skip_imports: with ``simulation=True``, modules the simulation's processes (Ray and the
            apps it runs) see as not installed (:data:`SKIPPED_IMPORTS` by default; ``()`` keeps
            every module importable). An app that needs one of them, or jsonschema's "iri"
            format check, which needs ``rfc3987_syntax``, passes ``skip_imports=()``. The
            Deployment Engine's processes are never affected.
    """

    def __init__(
        self,
        num_supernodes: int = 2,
        *,
        simulation: bool = False,
        echo: Callable[[str], None] | None = print,
        echo_all: bool = False,
        grace: float = 2.0,
        simulation_cpus: int = 1,
        port: int | None = None,
        tls: bool = False,
        skip_imports: Sequence[str] = SKIPPED_IMPORTS,
    ) -> None:
        # imported here: the module itself stays free of torch/NumPy (Flower's processes import it)
        from course_lib.validation import as_integer, check_nonnegative

        num_supernodes = as_integer(num_supernodes, "num_supernodes")
        if num_supernodes <= 0:
            raise ValueError(f"a federation needs at least one SuperNode, got {num_supernodes}")
        if port is not None:
            port = as_integer(port, "port")
            if not 1 <= port <= 65535:
                raise ValueError(f"port must lie in 1..65535, got {port}")
        grace = check_nonnegative(grace, "grace (seconds between SIGTERM and SIGKILL)")
        simulation_cpus = as_integer(simulation_cpus, "simulation_cpus")
        if simulation_cpus <= 0:
            raise ValueError(f"simulation_cpus must be at least 1, got {simulation_cpus}")
        self.simulation_cpus = simulation_cpus
        if not isinstance(tls, bool):
            raise TypeError(f"tls must be True or False, got {tls!r}")
        if isinstance(skip_imports, str) or not all(
            isinstance(name, str) and name.isidentifier() for name in skip_imports
        ):
            raise TypeError(
                f"skip_imports must be a sequence of module names, got {skip_imports!r}"
            )
        self.skip_imports = tuple(skip_imports) if simulation else ()
        self.requested_port = port
        self.tls = tls
        self.tls_files: dict[str, Path] = {}
        self.num_supernodes = num_supernodes
        self.simulation = simulation
        self.echo = echo
        self.echo_all = echo_all
        self.grace = grace
        self.log: list[str] = []
        self.processes: list[subprocess.Popen] = []
        self._pumps: dict[int, threading.Thread] = {}  # each process's output reader, by PID
        self.flwr_home: Path | None = None
        self.port: int | None = None
        self._lock = threading.Lock()

    # -- processes --------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            FLWR_HOME=str(self.flwr_home),
            FLWR_TELEMETRY_ENABLED="0",
            FLWR_DISABLE_UPDATE_CHECK="1",
            PYTHONUNBUFFERED="1",
            OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
            # how often each SuperExec looks for a task to start (a ServerApp, a ClientApp);
            # Flower's default is 1 s, a wait paid by every ClientApp of every round
            FLWR_SUPEREXEC_TASK_POLL_INTERVAL=env.get("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.1"),
            # the simulation's one ClientApp actor needs a worker with the app's runtime
            # environment: Ray's default worker, started for the first driver, would go unused
            RAY_prestart_worker_first_driver=env.get("RAY_prestart_worker_first_driver", "0"),
            # the course app's data, loaded once per federation (course_lib.fl.flower)
            COURSE_FLOWER_DATA_CACHE=os.path.join(str(self.flwr_home), "course-data"),
            # skip_imports: the simulation's processes skip slow imports they never use. Ray
            # hands the simulation's sys.path (this entry included) on to its workers.
            PYTHONPATH=os.pathsep.join(
                ([os.path.join(str(self.flwr_home), "import-shims")] if self.skip_imports else [])
                + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
            ),
            # the SuperLink/SuperNodes start flower-superexec, flwr-serverapp... by name
            PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        )
        return env

    def _say(self, line: str) -> None:
        with self._lock:
            self.log.append(line)
            del self.log[:-400]
            if self.echo is not None and (self.echo_all or line.startswith("[flwr run]")):
                self.echo(line)

    def _pump(self, stream, prefix: str) -> None:
        for raw in iter(stream.readline, ""):
            self._say(prefix + raw.rstrip())
        stream.close()

    def _start(self, name: str, args: list[str]) -> subprocess.Popen:
        process = subprocess.Popen(
            [_program(args[0]), *args[1:]],
            env=self._env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: stopped together with its children
            preexec_fn=_die_with_parent,
        )
        self.processes.append(process)
        pump = threading.Thread(target=self._pump, args=(process.stdout, f"[{name}] "), daemon=True)
        pump.start()
        self._pumps[process.pid] = pump
        return process

    def _drain(self, process: subprocess.Popen, timeout: float = 10.0) -> None:
        """Wait until every line ``process`` printed has been logged (and echoed): its reader
        thread ends when the process's output closes. Without this, a late line could be echoed
        into whatever the caller prints next (a later notebook cell)."""
        pump = self._pumps.pop(process.pid, None)
        if pump is not None:
            pump.join(timeout)

    def _wait_listening(self, port: int, process: subprocess.Popen, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{_program_name(process)} exited with code {process.returncode}:\n"
                    + "\n".join(self.log[-20:])
                )
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"nothing listened on 127.0.0.1:{port} after {timeout:.0f} s")

    def __enter__(self) -> LocalFederation:
        if self.requested_port is not None:
            check_port_free(self.requested_port)
        self.flwr_home = Path(tempfile.mkdtemp(prefix="course-flwr-home-"))
        try:
            (self.flwr_home / "course-data").mkdir(mode=0o700)
            if self.skip_imports:
                _write_import_shims(self.flwr_home / "import-shims", self.skip_imports)
            self.port = self.requested_port if self.requested_port is not None else free_port()
            check_port_free(self.port)
            if self.tls:
                self.tls_files = make_tls_files(self.flwr_home / "tls")
                security = [
                    "--ssl-ca-certfile",
                    str(self.tls_files["ca"]),
                    "--ssl-certfile",
                    str(self.tls_files["cert"]),
                    "--ssl-keyfile",
                    str(self.tls_files["key"]),
                ]
                node_security = ["--root-certificates", str(self.tls_files["ca"])]
                cli_security = f"root-certificates = {json.dumps(str(self.tls_files['ca']))}\n"
            else:
                security = node_security = ["--insecure"]
                cli_security = "insecure = true\n"
            superlink = [
                "flower-superlink",
                *security,
                "--disable-runtime-dependency-installation",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ]
            if self.simulation:
                superlink.append("--simulation")
            link = self._start("superlink", superlink)
            self._wait_listening(self.port, link, timeout=120)
            (self.flwr_home / "config.toml").write_text(
                "[superlink]\n"
                'default = "local"\n\n'
                "[superlink.local]\n"
                f'address = "127.0.0.1:{self.port}"\n' + cli_security
            )
            if not self.simulation:
                for i in range(self.num_supernodes):
                    self._start(
                        f"supernode {i}",
                        [
                            "flower-supernode",
                            *node_security,
                            "--superlink",
                            f"127.0.0.1:{self.port}",
                            "--port",
                            str(free_port()),
                            "--node-config",
                            f"partition-id={i} num-partitions={self.num_supernodes}",
                        ],
                    )
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pids(self) -> list[int]:
        """PIDs of the SuperLink and SuperNodes this federation started."""
        return [p.pid for p in self.processes]

    def close(self) -> None:
        """Stop every process group (SIGTERM, then SIGKILL after ``grace`` s); remove FLWR_HOME."""
        for process in self.processes:
            _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
        for process in self.processes:
            _signal_group(process.pid, signal.SIGKILL)  # the group: clientapps, Ray workers...
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - a process ignoring SIGKILL
                self._say(f"[federation] process {process.pid} did not stop")
            self._drain(process)
        if self.flwr_home is not None:
            # whatever left its group (Ray starts its own sessions): stop it by PID, twice in
            # case a dying process just started another
            for _ in range(3):
                stragglers = flower_processes(self.flwr_home)
                for pid, _ in stragglers:
                    _signal_pid(pid, signal.SIGKILL)
                if stragglers:
                    time.sleep(0.5)
            shutil.rmtree(self.flwr_home, ignore_errors=True)
        self.processes = []

    # -- runs -------------------------------------------------------------------------------
    def _check_course_app(
        self, app_dir: str | Path, run_config: Mapping[str, object]
    ) -> _flower.AppConfig | None:
        """For the course's own app: every run-config key (``AppConfig``) and ``num-nodes`` =
        this federation's SuperNodes, checked before ``flwr run`` starts. Returns the checked
        ``AppConfig``, or ``None`` for another app."""
        from course_lib.fl.flower import APP_DIR, AppConfig

        if Path(app_dir).resolve() != APP_DIR.resolve():
            return None
        config = AppConfig.from_run_config(run_config)
        if config.num_nodes != self.num_supernodes:
            raise ValueError(
                f"run-config key 'num-nodes' is {config.num_nodes} but this federation has "
                f"{self.num_supernodes} SuperNodes: the ServerApp would wait for nodes that never "
                "come (or leave partitions untrained)"
            )
        return config

    def run(
        self,
        app_dir: str | Path,
        run_config: Mapping[str, object] | None = None,
        *,
        timeout: float = 600.0,
    ) -> float:
        """``flwr run app_dir local --stream`` with ``run_config`` overrides; returns its wall time
        in seconds. Raises ``RuntimeError`` (log tail included) if it fails or times out."""
        if self.flwr_home is None:
            raise RuntimeError("start the federation first: `with LocalFederation(...) as fed:`")
        config = self._check_course_app(app_dir, run_config or {})
        if config is not None:  # the course app's data, saved once for every Flower process
            from course_lib.fl.flower import fill_data_cache

            fill_data_cache(self.flwr_home / "course-data", config)
        command = ["flwr", "run", str(app_dir), "local", "--stream"]
        if run_config:
            command += ["--run-config", " ".join(_toml_pair(k, v) for k, v in run_config.items())]
        if self.simulation:
            command += [
                "--federation-config",
                f"num-supernodes={self.num_supernodes} client-resources-num-cpus=1 "
                "client-resources-num-gpus=0.0 "
                f"init-args-num-cpus={self.simulation_cpus}",
            ]
        started = time.perf_counter()
        cli = self._start("flwr run", command)
        try:
            code = cli.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(
                f"flwr run took longer than {timeout:.0f} s:\n" + "\n".join(self.log[-30:])
            ) from None
        finally:
            _signal_group(cli.pid, signal.SIGKILL)
        wall = time.perf_counter() - started
        self._drain(cli)  # every line it printed is in the log before the log is read
        # the run's own stream carries the ServerApp's errors (a SuperNode may log a transient
        # error, e.g. a late heartbeat, in a run that still succeeds: the result decides that)
        failed = [
            line
            for line in self.log
            if line.startswith("[flwr run]") and ("ERROR" in line or "Traceback" in line)
        ]
        if code != 0 or failed:
            raise RuntimeError(f"flwr run failed (exit code {code}):\n" + "\n".join(self.log[-40:]))
        return wall


def _key_usage(x509: Any, *, ca: bool) -> Any:
    """keyUsage of the test CA (signs certificates) or of the server (signs TLS handshakes).
    With the key identifiers, what Python 3.13's default ``VERIFY_X509_STRICT`` asks of a chain
    (RFC 5280 §4.2.1)."""
    return x509.KeyUsage(
        digital_signature=not ca, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip


#: What :func:`make_tls_files` writes: the CA's certificate, the server's certificate and key.
_TLS_FILES = {"ca": "ca.crt", "cert": "server.pem", "key": "server.key"}


def make_tls_files(
    folder: str | Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")
) -> dict[str, Path]:
    """A throw-away certificate authority and a server certificate it signed, for testing TLS.

    Writes ``ca.crt``, ``server.pem`` and ``server.key`` (PEM; ECDSA P-256; valid for 30 days)
    into ``folder`` and returns their paths as ``{"ca", "cert", "key"}``. ``hosts``: the names and
    IP addresses the certificate is valid for — every address clients dial must be one of them.
    For anything beyond a test, use your organisation's CA.

    Files already at those paths are replaced (each written fresh, never through a symlink):
    meant for a new folder. The ``tls`` role refuses existing files unless ``--force``.
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    if isinstance(hosts, str) or not hosts or not all(isinstance(h, str) and h for h in hosts):
        raise ValueError(f"hosts must be a non-empty tuple of names or addresses, got {hosts!r}")
    alt_names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "course test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(x509, ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(x509, ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = {k: folder / name for k, name in _TLS_FILES.items()}
    _write_fresh(files["ca"], ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write_fresh(files["cert"], cert.public_bytes(serialization.Encoding.PEM), 0o644)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_fresh(files["key"], pem, 0o600)
    return files


def make_supernode_key(folder: str | Path, name: str = "node") -> dict[str, Path]:
    """An ECDSA P-384 key pair for SuperNode authentication (Flower docs: *Authenticate
    SuperNodes*; what ``ssh-keygen -t ecdsa -b 384 -N "" -f node`` makes).

    Writes ``<name>.key`` (OpenSSH private key, owner-only) and ``<name>.pub`` (OpenSSH public
    key) into ``folder`` and returns their paths as ``{"private", "public"}``. The operator
    registers the public key (``flwr supernode register node.pub <federation>``); the SuperNode
    starts with ``--auth-supernode-private-key node.key``; a SuperLink started with
    ``--enable-supernode-auth`` refuses nodes whose key was not registered.

    Files already at those paths are replaced (each written fresh, never through a symlink):
    meant for a new key. The ``key`` role refuses existing files unless ``--force``.

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: ``name`` is empty or not a plain file name.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if not isinstance(name, str):
        raise TypeError(f"name must be a string such as 'node1', got {type(name).__name__}")
    if not name or Path(name).name != name or name.startswith("."):
        raise ValueError(f"name must be a plain file name such as 'node1', got {name!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    files = {"private": folder / f"{name}.key", "public": folder / f"{name}.pub"}
    _write_fresh(
        files["private"],
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
        0o600,
    )
    _write_fresh(
        files["public"],
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        + b"\n",
        0o644,
    )
    return files


def _write_fresh(path: Path, data: bytes, mode: int) -> None:
    """Write a key or certificate file created fresh (``O_EXCL``, after removing what was at the
    path) with ``mode``, whatever the umask: a symlink planted at the path is replaced, never
    written through, and a private key (0600) is never readable by others, not even briefly."""
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    os.fchmod(descriptor, mode)  # O_CREAT applies the umask; 0644 must not become 0600 or 0666
    with os.fdopen(descriptor, "wb") as key_file:
        key_file.write(data)


def _program_name(process: subprocess.Popen) -> str:
    """The program a process runs (the first word of its command line), for error messages."""
    args = process.args
    if isinstance(args, (str, bytes, os.PathLike)):
        return os.fsdecode(args).split()[0] if os.fsdecode(args).split() else "?"
    return os.fsdecode(args[0]) if args else "?"


def _toml_pair(key: str, value: object) -> str:
    """``key=value`` in TOML, as ``flwr run --run-config`` parses it (strings JSON-escaped, which
    TOML's basic strings accept). NumPy scalars are written as the Python values they hold."""
    import numpy as np

    from course_lib.validation import is_integer

    if isinstance(value, bool | np.bool_):
        return f"{key}={'true' if value else 'false'}"
    if is_integer(value):
        return f"{key}={int(value)}"
    if isinstance(value, float | np.floating):
        return f"{key}={float(value)!r}"
    if isinstance(value, str):
        return f"{key}={json.dumps(value)}"
    raise TypeError(f"run-config key {key!r}: a bool, number or string, got {value!r}")


@contextlib.contextmanager
def stop_on_sigterm():
    """While active (main thread only), SIGTERM raises ``SystemExit(143)`` instead of killing
    Python outright, so ``with LocalFederation(...)`` blocks and temporary folders are unwound:
    every Flower process is stopped and every folder removed before the program exits (what
    ``kill`` and ``timeout`` send). The previous handler comes back afterwards."""

    def _exit(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _sigterm_deferred():
    """While active (main thread only), a SIGTERM is held back; on leaving, the previous handler
    comes back and a SIGTERM that arrived raises ``SystemExit(143)`` (what
    :func:`stop_on_sigterm` raises) — so a block that starts or stops a process is never cut in
    two."""
    received: list[int] = []

    def _hold(signum: int, frame: object) -> None:
        received.append(signum)

    previous = signal.signal(signal.SIGTERM, _hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if received:
            raise SystemExit(128 + received[0])


def _die_with_parent() -> None:
    """In the child, before exec: on Linux ask the kernel to SIGTERM it when the Python that
    started it dies (a killed Jupyter kernel, ``timeout``), so no Flower process outlives it."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)  # the process started its own session, so pgid == pid


def _signal_pid(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


# -- across machines: one role per command (python -m course_lib.fl.deployment ROLE ...) ---------

#: The federation's name in the operator's ``config.toml``: ``flwr run flower_app hospitals``.
FEDERATION = "hospitals"
#: The SuperNode's own local port (its ClientApp API; flwr's default), not reachable from outside.
SUPERNODE_PORT = 9094


def _address(text: str, option: str) -> str:
    """``HOST:PORT`` (``[IPv6]:PORT`` too), port in 1..65535; ``ValueError`` naming ``option``."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(
            f"{option} must be HOST:PORT with a port in 1..65535 (the SuperLink's address, "
            f"e.g. 10.0.0.1:9093), got {text!r}"
        )
    return text


def _port(value: int, option: str) -> int:
    if not 1 <= value <= 65535:
        raise ValueError(f"{option} must lie in 1..65535, got {value}")
    return value


def _existing_file(path: str | Path, what: str) -> Path:
    """``path`` made absolute (the printed command works from any folder); ``FileNotFoundError``
    naming ``what`` if it is not a file."""
    found = Path(path).expanduser().absolute()
    if not found.is_file():
        raise FileNotFoundError(f"{what}: no file {found}")
    return found


def _partition(text: str) -> tuple[int, int]:
    """``I/N`` with ``0 <= I < N``: this SuperNode's part of the data (``partition-id=I
    num-partitions=N``)."""
    match = re.fullmatch(r"(\d+)/(\d+)", text)
    if match is None or not int(match[1]) < int(match[2]):
        raise ValueError(
            f"--partition must be I/N with 0 <= I < N (this node's partition-id and the number "
            f"of SuperNodes), e.g. 0/2; got {text!r}"
        )
    return int(match[1]), int(match[2])


def _public_key(path: str | Path) -> Path:
    """A SuperNode's public key file as ``flwr supernode register`` loads it (OpenSSH EC)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_ssh_public_key

    found = _existing_file(path, "the SuperNode's public key")
    try:
        key = load_ssh_public_key(found.read_bytes())
    except (ValueError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError(
            f"{found} is not an OpenSSH ECDSA public key (make one with `python -m "
            "course_lib.fl.deployment key`; register the .pub file, never the private .key)"
        )
    return found


def superlink_command(host: str, port: int, tls_dir: str | Path, auth: bool) -> list[str]:
    """``flower-superlink`` over TLS with the files :func:`make_tls_files` wrote to ``tls_dir``
    (``ca.crt``, ``server.pem``, ``server.key``), SuperNode authentication if ``auth``."""
    folder = Path(tls_dir).expanduser().absolute()
    if not folder.is_dir():
        raise FileNotFoundError(f"--tls-dir: no folder {folder} (make it with the `tls` role)")
    files = {
        name: _existing_file(folder / name, f"--tls-dir {folder}")
        for name in ("ca.crt", "server.pem", "server.key")
    }
    if not host:
        raise ValueError("--host must be an address of this machine, e.g. 0.0.0.0 (all)")
    return [
        "flower-superlink",
        "--ssl-ca-certfile", str(files["ca.crt"]),
        "--ssl-certfile", str(files["server.pem"]),
        "--ssl-keyfile", str(files["server.key"]),
        *(["--enable-supernode-auth"] if auth else []),
        "--disable-runtime-dependency-installation",
        "--host", host,
        "--port", str(_port(port, "--port")),
    ]  # fmt: skip


def supernode_command(
    superlink: str,
    ca: str | Path,
    partition: str,
    key: str | Path | None = None,
    port: int = SUPERNODE_PORT,
) -> list[str]:
    """``flower-supernode`` that trusts only ``ca``, signs in with the private ``key`` (if any)
    and trains on partition ``I/N`` of the course's data."""
    partition_id, partitions = _partition(partition)
    auth = []
    if key is not None:
        private = _existing_file(key, "--key (the SuperNode's private key)")
        if private.suffix == ".pub":
            raise ValueError(f"--key takes the private key (node.key), not {private.name}")
        auth = ["--auth-supernode-private-key", str(private)]
    return [
        "flower-supernode",
        "--root-certificates", str(_existing_file(ca, "--ca (the federation's CA certificate)")),
        "--superlink", _address(superlink, "--superlink"),
        "--port", str(_port(port, "--port")),
        *auth,
        "--node-config", f"partition-id={partition_id} num-partitions={partitions}",
    ]  # fmt: skip


def operator_config(superlink: str, ca: str | Path) -> str:
    """The operator's ``FLWR_HOME/config.toml``: the SuperLink :data:`FEDERATION` at
    ``superlink``, verified with ``ca``."""
    ca_file = _existing_file(ca, "--ca (the federation's CA certificate)")
    return (
        f'[superlink]\ndefault = "{FEDERATION}"\n\n[superlink.{FEDERATION}]\n'
        f"address = {json.dumps(_address(superlink, '--superlink'))}\n"
        f"root-certificates = {json.dumps(str(ca_file))}\n"
    )


def register_command(public_key: str | Path) -> list[str]:
    """``flwr supernode register node.pub hospitals`` (the operator's ``flwr`` CLI)."""
    return ["flwr", "supernode", "register", str(_public_key(public_key)), FEDERATION]


def run_command(run_config: Mapping[str, object]) -> list[str]:
    """``flwr run flower_app hospitals --stream --run-config ...`` for the course's app, every
    key checked by :class:`~course_lib.fl.flower.AppConfig` first."""
    from course_lib.fl.flower import APP_DIR, AppConfig

    config = AppConfig.from_run_config(run_config)
    pairs = " ".join(_toml_pair(k, v) for k, v in config.to_run_config().items())
    return ["flwr", "run", str(APP_DIR), FEDERATION, "--stream", "--run-config", pairs]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m course_lib.fl.deployment",
        description="One role of a Flower federation across machines (flower_app/README.md).",
    )
    roles = parser.add_subparsers(dest="role", required=True, metavar="ROLE")
    tls = roles.add_parser("tls", help="operator: a throw-away CA and the SuperLink's certificate")
    tls.add_argument("--out", required=True, type=Path, help="folder for ca.crt, server.*")
    tls.add_argument(
        "--hosts", required=True, help="ADDR[,ADDR]: the SuperLink's addresses nodes dial"
    )
    key = roles.add_parser("key", help="hospital: a SuperNode's key pair (NAME.key, NAME.pub)")
    key.add_argument("--out", required=True, type=Path)
    key.add_argument("--name", required=True)
    for maker in (tls, key):
        maker.add_argument(
            "--force", action="store_true", help="replace files already there (default: refuse)"
        )
    link = roles.add_parser("superlink", help="server: the SuperLink, over TLS")
    link.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all)")
    link.add_argument("--port", type=int, default=9093)
    link.add_argument("--tls-dir", required=True, type=Path, help="what the tls role wrote")
    link.add_argument("--auth", action="store_true", help="only registered SuperNodes may join")
    node = roles.add_parser("supernode", help="hospital: a SuperNode")
    node.add_argument("--superlink", required=True, help="HOST:PORT of the SuperLink")
    node.add_argument("--ca", required=True, type=Path, help="the federation's ca.crt")
    node.add_argument("--key", type=Path, help="this node's private key (with --auth)")
    node.add_argument("--partition", required=True, help="I/N: partition-id I of N")
    node.add_argument("--port", type=int, default=SUPERNODE_PORT, help="local ClientApp port")
    for name, text in (("register", "operator: register a SuperNode's public key"),
                       ("run", "operator: run the course's app on the federation")):  # fmt: skip
        operator = roles.add_parser(name, help=text)
        operator.add_argument("--superlink", required=True, help="HOST:PORT of the SuperLink")
        operator.add_argument("--ca", required=True, type=Path, help="the federation's ca.crt")
        operator.add_argument(
            "--flwr-home",
            type=Path,
            help="keep the operator's config.toml here (default: a temporary folder)",
        )
    register = roles.choices["register"]
    register.add_argument("public_key", type=Path, help="the SuperNode's NAME.pub")
    run = roles.choices["run"]
    run.add_argument("--rounds", type=int, default=2)
    run.add_argument("--nodes", type=int, default=2, help="SuperNodes (= their N)")
    run.add_argument("--mode", default="fedavg")
    run.add_argument(
        "--result-dir",
        help="where the ServerApp saves the result, on the SuperLink's machine: a new folder, "
        "created owner-only (default: one with a random name in /tmp)",
    )
    run.add_argument(
        "--run-config",
        default="",
        help='other app settings as flwr run takes them, e.g. "train-samples=200 lr=0.1"',
    )
    run.add_argument("--timeout", type=float, default=900.0, help="seconds (default 900)")
    return parser


class _Plan:
    """What a role does, decided (and every argument checked) before anything starts."""

    def __init__(self, command: list[str] | None = None, config: str | None = None) -> None:
        self.command = command
        self.config = config  # the operator's config.toml, for register / run


def plan(argv: Sequence[str]) -> tuple[argparse.Namespace, _Plan]:
    """Parse ``argv`` and check every argument; returns the command the role would run (``None``
    for ``tls`` and ``key``, which only write files). Nothing is started or written."""
    args = _parser().parse_args(list(argv))
    if args.role == "tls":
        hosts = [h.strip() for h in args.hosts.split(",")]
        if not all(hosts):
            raise ValueError(f"--hosts must be ADDR[,ADDR...], got {args.hosts!r}")
        # the SuperLink's own SuperExec dials it on 127.0.0.1 to start the ServerApp
        args.hosts = tuple(dict.fromkeys([*hosts, "127.0.0.1"]))
        _refuse_existing([args.out / name for name in _TLS_FILES.values()], args.force)
        return args, _Plan()
    if args.role == "key":
        if not args.name or Path(args.name).name != args.name or args.name.startswith("."):
            raise ValueError(f"--name must be a plain file name such as node1, got {args.name!r}")
        _refuse_existing([args.out / f"{args.name}.{ext}" for ext in ("key", "pub")], args.force)
        return args, _Plan()
    if args.role == "superlink":
        return args, _Plan(superlink_command(args.host, args.port, args.tls_dir, args.auth))
    if args.role == "supernode":
        return args, _Plan(
            supernode_command(args.superlink, args.ca, args.partition, args.key, args.port)
        )
    config = operator_config(args.superlink, args.ca)
    if args.flwr_home is not None:
        existing = args.flwr_home / "config.toml"
        if existing.exists() and existing.read_text() != config:
            raise FileExistsError(
                f"{existing} exists with another configuration: pick another --flwr-home "
                "(or remove that file)"
            )
    if args.role == "register":
        return args, _Plan(register_command(args.public_key), config)
    if args.timeout <= 0:
        raise ValueError(f"--timeout must be > 0 seconds, got {args.timeout}")
    if args.result_dir is None:  # unguessable: no other user can make it first (save_result)
        args.result_dir = f"{tempfile.gettempdir()}/course-flower-result-{secrets.token_hex(8)}"
    run_config = {
        **_run_config_pairs(args.run_config),
        "num-server-rounds": args.rounds,
        "num-nodes": args.nodes,
        "mode": args.mode,
        "result-dir": args.result_dir,
    }
    from course_lib.fl.flower import AppConfig

    args.app_config = AppConfig.from_run_config(run_config)
    return args, _Plan(run_command(run_config), config)


def _refuse_existing(paths: list[Path], force: bool) -> None:
    """``FileExistsError`` naming the first of ``paths`` already there (a symlink too), unless
    ``force``: a live CA, server key or registered node key is never replaced by mistake."""
    existing = [path for path in paths if os.path.lexists(path)]
    if existing and not force:
        raise FileExistsError(
            f"{existing[0]} exists: it may be in use (a live CA or key); give another --out, "
            "or --force to replace it"
        )


#: Run-config keys the ``run`` role sets with options of their own.
_OWN_OPTIONS = {"num-server-rounds": "--rounds", "num-nodes": "--nodes", "mode": "--mode",
                "result-dir": "--result-dir"}  # fmt: skip


def _run_config_pairs(text: str) -> dict[str, object]:
    """``key=value`` pairs (TOML values, space-separated) as ``flwr run --run-config`` reads them
    (flwr's own pattern); keys the role has options for are refused."""
    import tomllib

    pairs = re.findall(r"(\S+?)=('[^']*'|\"[^\"]*\"|\S+)", text)
    if " ".join(f"{k}={v}" for k, v in pairs) != " ".join(text.split()):
        raise ValueError(f'--run-config must be key=value pairs such as "lr=0.1", got {text!r}')
    values: dict[str, object] = {}
    for key, value in pairs:
        if key in _OWN_OPTIONS:
            raise ValueError(f"--run-config: set {key} with {_OWN_OPTIONS[key]}")
        try:
            values[key] = tomllib.loads(f"{json.dumps(key)} = {value}")[key]
        except tomllib.TOMLDecodeError:
            raise ValueError(
                f"--run-config: {key}={value} is not a TOML value (strings in double quotes)"
            ) from None
    return values


def _role_env(flwr_home: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    if flwr_home is not None:
        env["FLWR_HOME"] = str(flwr_home)
    env.update(
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        PYTHONUNBUFFERED="1",
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    )
    return env


def _run_child(
    command: list[str],
    env: Mapping[str, str],
    grace: float = 10.0,
    timeout: float | None = None,
    echo: Callable[[str], None] | None = None,
) -> int:
    """Run ``command`` in its own process group; print it first. SIGTERM, Ctrl-C or ``timeout``
    stop its group (SIGTERM, then SIGKILL after ``grace`` s). With ``echo``, its output is read
    line by line and passed on (stdout otherwise goes straight to ours)."""
    print("$ " + shlex.join(command), flush=True)
    process: subprocess.Popen | None = None
    # SIGTERM raises SystemExit(143) from before the child exists (nothing to stop then) until
    # it is stopped; while Popen runs, one is held back and raised once `process` is set, so the
    # finally clause below always knows the group it must stop.
    with stop_on_sigterm():
        try:
            program = _program(command[0])
            with _sigterm_deferred():
                process = subprocess.Popen(
                    [program, *command[1:]],
                    env=dict(env),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE if echo is not None else None,
                    stderr=subprocess.STDOUT if echo is not None else None,
                    text=True,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            if echo is not None and process.stdout is not None:
                stdout = process.stdout
                reader = threading.Thread(
                    target=lambda: [echo(line.rstrip("\n")) for line in stdout],
                    daemon=True,
                )
                reader.start()
            try:
                code = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                print(f"error: {command[0]} took longer than {timeout:.0f} s", file=sys.stderr)
                code = 1
            if echo is not None:
                reader.join(timeout=5)
            return code
        finally:
            if process is not None:  # a second SIGTERM waits until the group is stopped
                with _sigterm_deferred():
                    _signal_group(process.pid, signal.SIGTERM)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        process.wait(timeout=grace)
                    _signal_group(process.pid, signal.SIGKILL)
                    process.wait()


def _report_result(args: argparse.Namespace) -> None:
    """Print the run's result like ``make federation``, if its folder is on this machine."""
    from course_lib.fl.flower import AppConfig, load_result, reference_fedavg

    if not (Path(args.result_dir) / "history.json").exists():
        print(
            f"\nThe ServerApp saved its result on the SuperLink's machine, in {args.result_dir} "
            "(not on this one)."
        )
        return
    result = load_result(args.result_dir)
    config: AppConfig = args.app_config
    print(f"\nacross machines ({args.mode}, TLS), {args.nodes} nodes x {args.rounds} rounds")
    print(f"  result: {args.result_dir}")
    print("  round seconds, Flower:", [round(s, 2) for s in result.round_seconds])
    print("  test accuracy, Flower:", result.test_acc)
    if args.mode == "fedavg":
        reference = reference_fedavg(config, args.nodes)
        assert reference.model is not None
        gap = max(
            (result.state[k] - v).abs().max().item()
            for k, v in reference.model.state_dict().items()
        )
        print("  test accuracy, course_lib:", reference.test_acc)
        print(f"  largest weight difference to course_lib's FedAvg: {gap:.2e}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m course_lib.fl.deployment ROLE ...`` (module docstring; ``--help`` per role).
    Returns the exit status: 2 for bad arguments (nothing started), else the Flower command's."""
    try:
        args, role = plan(sys.argv[1:] if argv is None else argv)
        if role.command is not None:
            _program(role.command[0])  # installed?
        if args.role == "superlink":
            check_port_free(args.port, args.host)
    except (ValueError, TypeError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.role == "tls":
        files = make_tls_files(args.out, hosts=args.hosts)
        print(f"for {', '.join(args.hosts)}: " + ", ".join(str(p) for p in files.values()))
        print(f"give {files['ca']} (public) to every SuperNode; keep server.key on the server")
        return 0
    if args.role == "key":
        files = make_supernode_key(args.out, args.name)
        print(f"private (stays on this machine): {files['private']}")
        print(f"public (send to the operator to register): {files['public']}")
        return 0
    assert role.command is not None
    if role.config is None:  # superlink, supernode: in the caller's FLWR_HOME
        return _run_child(role.command, _role_env(None))
    with contextlib.ExitStack() as stack:
        home = args.flwr_home or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="course-flwr-operator-"))
        )
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(role.config)
        print(f"# {home / 'config.toml'}:\n" + role.config.rstrip())
        if args.role == "register":
            return _run_child(role.command, _role_env(home))
        errors: list[str] = []

        def echo(line: str) -> None:
            print(line, flush=True)
            if "ERROR" in line or "Traceback" in line:
                errors.append(line)

        code = _run_child(role.command, _role_env(home), timeout=args.timeout, echo=echo)
        if code != 0 or errors:
            print(f"error: flwr run failed (exit code {code})", file=sys.stderr)
            return code or 1
        _report_result(args)
        return 0


if __name__ == "__main__":
    sys.exit(main())
