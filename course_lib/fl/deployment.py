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
installed apps, CLI config) and ``FLWR_TELEMETRY_ENABLED=0``; ports are picked free. Leaving the
``with`` block — normally, on an exception or a KeyboardInterrupt — sends SIGTERM to each process
group, SIGKILL to whatever is left after a grace period, and removes the folder.
:func:`flower_processes` lists the Flower processes still alive for a given ``FLWR_HOME``, which
is how the tests check that nothing was left behind.

Offline and localhost only: by default ``--insecure`` (no TLS); ``tls=True`` serves the SuperLink
over TLS with a throw-away CA (:func:`make_tls_files`), as between machines.
``--disable-runtime-dependency-installation`` stops the SuperLink from running ``uv sync`` for the
app's dependencies. Across machines see ``flower_app/README.md`` (real addresses, TLS
certificates, SuperNode authentication, what the SuperLink's port exposes).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "LocalFederation",
    "check_port_free",
    "flower_processes",
    "free_port",
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
        grace: seconds between SIGTERM and SIGKILL when stopping.
        port: the SuperLink's port on 127.0.0.1 (default: a free one). A port another program
            holds is refused at once (``OSError`` naming it), before any process starts.
        tls: serve the SuperLink over TLS instead of ``--insecure``: a throw-away CA and a
            certificate for ``127.0.0.1``/``localhost`` are made in ``FLWR_HOME/tls``
            (:func:`make_tls_files`); the SuperNodes (``--root-certificates``) and the ``flwr``
            CLI (``root-certificates`` in ``config.toml``) trust that CA only. The commands are
            the ones ``flower_app/README.md`` gives for machines that talk over a network.
    """

    def __init__(
        self,
        num_supernodes: int = 2,
        *,
        simulation: bool = False,
        echo: Callable[[str], None] | None = print,
        echo_all: bool = False,
        grace: float = 5.0,
        port: int | None = None,
        tls: bool = False,
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
        if not isinstance(tls, bool):
            raise TypeError(f"tls must be True or False, got {tls!r}")
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
        threading.Thread(
            target=self._pump, args=(process.stdout, f"[{name}] "), daemon=True
        ).start()
        return process

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
    def _check_course_app(self, app_dir: str | Path, run_config: Mapping[str, object]) -> None:
        """For the course's own app: every run-config key (``AppConfig``) and ``num-nodes`` =
        this federation's SuperNodes, checked before ``flwr run`` starts."""
        from course_lib.fl.flower import APP_DIR, AppConfig

        if Path(app_dir).resolve() != APP_DIR.resolve():
            return
        config = AppConfig.from_run_config(run_config)
        if config.num_nodes != self.num_supernodes:
            raise ValueError(
                f"run-config key 'num-nodes' is {config.num_nodes} but this federation has "
                f"{self.num_supernodes} SuperNodes: the ServerApp would wait for nodes that never "
                "come (or leave partitions untrained)"
            )

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
        self._check_course_app(app_dir, run_config or {})
        command = ["flwr", "run", str(app_dir), "local", "--stream"]
        if run_config:
            command += ["--run-config", " ".join(_toml_pair(k, v) for k, v in run_config.items())]
        if self.simulation:
            command += [
                "--federation-config",
                f"num-supernodes={self.num_supernodes} client-resources-num-cpus=1 "
                "client-resources-num-gpus=0.0",
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
        time.sleep(0.2)  # let the reader thread drain the last lines
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


def make_tls_files(
    folder: str | Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")
) -> dict[str, Path]:
    """A throw-away certificate authority and a server certificate it signed, for testing TLS.

    Writes ``ca.crt``, ``server.pem`` and ``server.key`` (PEM; ECDSA P-256; valid for 30 days)
    into ``folder`` and returns their paths as ``{"ca", "cert", "key"}``. ``hosts``: the names and
    IP addresses the certificate is valid for — every address clients dial must be one of them.
    For anything beyond a test, use your organisation's CA.
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
    files = {"ca": folder / "ca.crt", "cert": folder / "server.pem", "key": folder / "server.key"}
    files["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_owner_only(files["key"], pem)
    return files


def make_supernode_key(folder: str | Path, name: str = "node") -> dict[str, Path]:
    """An ECDSA P-384 key pair for SuperNode authentication (Flower docs: *Authenticate
    SuperNodes*; what ``ssh-keygen -t ecdsa -b 384 -N "" -f node`` makes).

    Writes ``<name>.key`` (OpenSSH private key, owner-only) and ``<name>.pub`` (OpenSSH public
    key) into ``folder`` and returns their paths as ``{"private", "public"}``. The operator
    registers the public key (``flwr supernode register node.pub <federation>``); the SuperNode
    starts with ``--auth-supernode-private-key node.key``; a SuperLink started with
    ``--enable-supernode-auth`` refuses nodes whose key was not registered.

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
    _write_owner_only(
        files["private"],
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    files["public"].write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        + b"\n"
    )
    return files


def _write_owner_only(path: Path, data: bytes) -> None:
    """Write a private key readable by its owner only, whatever the umask: created fresh with
    mode 0600 (``O_EXCL``), never widened after the fact."""
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
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
