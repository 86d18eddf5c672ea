"""course_lib.fl.deployment: a port that can't be bound is named at once; SIGTERM to
``python -m course_lib.fl.flower`` stops every Flower process and removes its temporary folders
before the program exits."""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from course_lib.fl.deployment import (
    LocalFederation,
    _toml_pair,
    check_port_free,
    flower_processes,
)


def test_an_occupied_port_is_named_before_anything_starts(monkeypatch, tmp_path):
    """Another program listens on the port: the SuperLink would exit ("address already in use")
    while that program answers the SuperNodes. The federation refuses at once, naming the port,
    with no folder made and no process started."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def no_processes(*args, **kwargs):
        raise AssertionError("a Flower process was started")

    monkeypatch.setattr(LocalFederation, "_start", no_processes)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
            check_port_free(port)
        federation = LocalFederation(1, echo=None, port=port)
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            federation.__enter__()
    assert list(tmp_path.iterdir()) == []
    assert federation.processes == []
    check_port_free(port)  # free again once the squatter is gone
    with pytest.raises(ValueError, match="port"):
        LocalFederation(1, port=70000)
    with pytest.raises(TypeError, match="port"):
        LocalFederation(1, port="9093")


def test_sigterm_stops_every_flower_process_and_removes_temp_folders(tmp_path):
    """`kill` (SIGTERM) during `python -m course_lib.fl.flower`: when the program has exited,
    no Flower process of its federation is alive and its temporary folders are gone — the
    clean-up ran before exit rather than being left to PR_SET_PDEATHSIG or to nobody."""
    env = {**os.environ, "TMPDIR": str(tmp_path), "COURSE_OFFLINE": "1"}
    program = subprocess.Popen(
        [sys.executable, "-m", "course_lib.fl.flower", "--nodes", "1", "--rounds", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    home = None
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and program.poll() is None:
            homes = list(tmp_path.glob("course-flwr-home-*"))
            if homes and len(flower_processes(homes[0])) >= 3:  # link, node, a SuperExec
                home = homes[0]
                break
            time.sleep(0.5)
        assert home is not None, "the federation did not start"
        assert list(tmp_path.glob("course-flower-result-*"))  # the run's result folder
        program.send_signal(signal.SIGTERM)
        code = program.wait(timeout=120)
    finally:
        if program.poll() is None:
            program.kill()
            program.wait()
    left = flower_processes(home)
    for pid, _ in left:  # never leave them to the next test, even when this one fails
        os.kill(pid, signal.SIGKILL)
    assert code == 128 + signal.SIGTERM
    assert left == []
    assert list(tmp_path.glob("course-*")) == []


def test_a_tls_federation_trains_like_course_fedavg_and_refuses_plaintext(tmp_path):
    """`LocalFederation(tls=True)`: the README's TLS commands (SuperLink --ssl-*, SuperNodes and
    the CLI trusting a CA) give the course FedAvg's weights; a client that skips TLS gets no
    answer in plaintext, and the certificate verifies only against the federation's CA."""
    import ssl

    import torch

    from course_lib.fl.flower import APP_DIR, AppConfig, load_result, reference_fedavg

    config = AppConfig(num_server_rounds=1, num_nodes=2, train_samples=200, hidden_units=16)
    run_config = AppConfig.checked({**config.__dict__, "result_dir": str(tmp_path)})
    with LocalFederation(2, echo=None, tls=True) as federation:
        files, port = federation.tls_files, federation.port
        toml = (federation.flwr_home / "config.toml").read_text()
        assert "insecure" not in toml and f'root-certificates = "{files["ca"]}"' in toml
        assert all("--insecure" not in p.args for p in federation.processes)
        # a plaintext HTTP request is not answered as HTTP
        with socket.create_connection(("127.0.0.1", port), timeout=10) as plain:
            plain.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            try:
                reply = plain.recv(64)
            except (ConnectionResetError, TimeoutError):
                reply = b""
        assert not reply.startswith(b"HTTP/")
        # TLS with the federation's CA verifies; with the system's CAs it does not
        trusted = ssl.create_default_context(cafile=str(files["ca"]))
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            trusted.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.version() is not None
        with (
            pytest.raises(ssl.SSLCertVerificationError),
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ):
            ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1")
        federation.run(APP_DIR, run_config.to_run_config(), timeout=600)
    result = load_result(tmp_path)
    reference = reference_fedavg(config, 2)
    assert reference.model is not None
    for name, value in reference.model.state_dict().items():
        assert torch.allclose(result.state[name], value, atol=1e-6), name
    with pytest.raises(TypeError, match="tls"):
        LocalFederation(1, tls="yes")


#: Exit 0 once something listens on argv[1]:argv[2] (run inside a host's namespace).
WAIT_LISTENING = """
import socket, sys, time
deadline = time.monotonic() + 170
while time.monotonic() < deadline:
    try:
        socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.3)
sys.exit(1)
"""


def test_a_federation_across_three_emulated_hosts_with_tls(tmp_path):
    """flower_app/README.md's commands across machines, as printed: the SuperLink on host 0
    (10.123.0.1, TLS with a CA only the federation trusts, SuperNode authentication), the
    operator registers two nodes' public keys, one SuperNode on each of hosts 1 and 2 signs in
    with its key, `flwr run` from host 0. The weights equal the course FedAvg's. Two intruders on
    host 2 that hold the CA certificate and can reach the port (one with a key nobody registered,
    one with none) are refused, and never appear among the federation's nodes. Afterwards nothing
    runs in the namespaces and they are gone. Needs root (network namespaces); skipped
    otherwise."""
    import torch

    from course_lib.fl.deployment import make_supernode_key, make_tls_files
    from course_lib.fl.flower import APP_DIR, AppConfig, load_result, reference_fedavg
    from course_lib.smpc.emulated_hosts import EmulatedHosts, namespaces_unavailable

    reason = namespaces_unavailable()
    if reason is not None:
        pytest.skip(f"no network namespaces: {reason}")
    config = AppConfig(num_server_rounds=1, num_nodes=2, train_samples=200, hidden_units=16)
    result_dir = tmp_path / "result"
    run_config = AppConfig.checked({**config.__dict__, "result_dir": str(result_dir)})
    # the SuperLink's own SuperExec (which starts the ServerApp) dials it on 127.0.0.1: the
    # certificate must name that address too, or the run never starts
    tls = make_tls_files(tmp_path / "tls", hosts=("10.123.0.1", "127.0.0.1"))
    bin_dir = os.path.dirname(sys.executable)

    def env(name: str) -> dict[str, str]:
        home = tmp_path / name
        home.mkdir()
        return {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0",
                "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
                "COURSE_OFFLINE": "1", "OMP_NUM_THREADS": "1"}  # fmt: skip

    def started(hosts, host, argv, name):
        log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 — closed with the process
        return hosts.start(host, argv, env=env(name), stdout=log, stderr=subprocess.STDOUT)

    keys = {
        name: make_supernode_key(tmp_path / "keys", name) for name in ("node1", "node2", "intruder")
    }
    with EmulatedHosts(3) as hosts:
        started(hosts, 0, [f"{bin_dir}/flower-superlink", "--ssl-ca-certfile", str(tls["ca"]),
                           "--ssl-certfile", str(tls["cert"]), "--ssl-keyfile", str(tls["key"]),
                           "--enable-supernode-auth", "--disable-runtime-dependency-installation",
                           "--host", "0.0.0.0", "--port", "9093"], "superlink")  # fmt: skip
        probe = hosts.start(1, [sys.executable, "-c", WAIT_LISTENING, "10.123.0.1", "9093"])
        assert probe.wait(180) == 0, "the SuperLink did not listen on 10.123.0.1:9093"
        operator = env("operator")
        Path(operator["FLWR_HOME"], "config.toml").write_text(
            '[superlink]\ndefault = "hospitals"\n\n[superlink.hospitals]\n'
            f'address = "10.123.0.1:9093"\nroot-certificates = "{tls["ca"]}"\n'
        )

        def flwr(*args: str) -> dict:
            """The operator's `flwr` command on host 0, its JSON answer."""
            argv = [f"{bin_dir}/flwr", *args, "--format", "json"]
            cli = hosts.start(0, argv, env=operator, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
            out, err = cli.communicate(timeout=120)
            assert cli.returncode == 0, out + err
            return json.loads(out)

        registered = set()
        for i in (1, 2):
            answer = flwr("supernode", "register", str(keys[f"node{i}"]["public"]), "hospitals")
            registered.add(str(answer["node-id"]))
        for i in (1, 2):
            started(hosts, i, [f"{bin_dir}/flower-supernode", "--root-certificates",
                               str(tls["ca"]), "--superlink", "10.123.0.1:9093", "--port", "9094",
                               "--auth-supernode-private-key", str(keys[f"node{i}"]["private"]),
                               "--node-config", f"partition-id={i - 1} num-partitions=2"],
                    f"supernode{i}")  # fmt: skip
        intruders = [
            started(hosts, 2, [f"{bin_dir}/flower-supernode", "--root-certificates",
                               str(tls["ca"]), "--superlink", "10.123.0.1:9093", "--port", port,
                               *key, "--node-config", "partition-id=0 num-partitions=2"], name)
            for name, port, key in [
                ("intruder", "9095", ["--auth-supernode-private-key",
                                      str(keys["intruder"]["private"])]),
                ("anonymous", "9096", []),
            ]
        ]  # fmt: skip
        pairs = " ".join(f"{k}={json.dumps(v)}" if isinstance(v, str) else
                         f"{k}={str(v).lower() if isinstance(v, bool) else v}"
                         for k, v in run_config.to_run_config().items())  # fmt: skip
        log = open(tmp_path / "run.log", "w")  # noqa: SIM115
        run = hosts.start(0, [f"{bin_dir}/flwr", "run", str(APP_DIR), "hospitals", "--stream",
                              "--run-config", pairs], env=operator, stdout=log,
                          stderr=subprocess.STDOUT)  # fmt: skip
        try:
            code = run.wait(300)  # `flwr run --stream` returns when the run has finished
        except subprocess.TimeoutExpired:
            code = None
        assert code == 0, (tmp_path / "run.log").read_text()[-3000:]
        # the federation's nodes are the two registered ones; both intruders were refused
        nodes = flwr("supernode", "ls", "hospitals")["nodes"]
        assert {str(node["node-id"]) for node in nodes} == registered, nodes
        for intruder in intruders:
            assert intruder.wait(60) != 0
        refusals = {  # flwr 1.42's words (exit code 305: no connection to the SuperLink)
            "intruder": "Failed to activate SuperNode",
            "anonymous": "SuperNode authentication is enabled. All SuperNodes must be registered",
        }
        for name, refusal in refusals.items():
            log_text = (tmp_path / f"{name}.log").read_text()
            assert "Exit Code: 305" in log_text and refusal in log_text, log_text[-2000:]
    assert hosts.exist() == []
    assert all(process.poll() is not None for process in hosts.processes)
    logs = {p.name: p.read_text()[-2000:] for p in tmp_path.glob("*.log")}
    assert (result_dir / "history.json").exists(), logs
    result = load_result(result_dir)
    reference = reference_fedavg(config, 2)
    assert reference.model is not None
    for name, value in reference.model.state_dict().items():
        assert torch.allclose(result.state[name], value, atol=1e-6), (name, logs)


# -- one rule for integers (course_lib.validation): fast checks, no process is started ----------


@pytest.mark.parametrize("flag", [True, np.bool_(True)])
@pytest.mark.parametrize("name", ["num_supernodes", "port", "grace"])
def test_bools_are_refused_before_anything_starts(monkeypatch, tmp_path, flag, name):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    kwargs = {"num_supernodes": 1, name: flag}
    with pytest.raises(TypeError, match=name):
        LocalFederation(**kwargs)
    assert list(tmp_path.iterdir()) == []


def test_numpy_integers_are_taken_as_python_ints():
    federation = LocalFederation(np.int64(3), echo=None, port=np.int32(9093), grace=np.float32(2))
    assert (federation.num_supernodes, federation.requested_port) == (3, 9093)
    assert type(federation.num_supernodes) is int and type(federation.requested_port) is int
    assert federation.grace == 2.0 and federation.processes == []
    with pytest.raises(ValueError, match="at least one SuperNode"):
        LocalFederation(np.int64(0))


def test_run_config_values_are_written_as_toml():
    assert _toml_pair("lr", np.float64(0.5)) == "lr=0.5"  # not "lr=np.float64(0.5)"
    assert _toml_pair("rounds", np.int64(3)) == "rounds=3"
    assert _toml_pair("dp", np.bool_(False)) == "dp=false"
    assert _toml_pair("dp", True) == "dp=true"  # a bool is not the integer 1
    assert _toml_pair("delta", 1e-5) == "delta=1e-05"
    assert _toml_pair("name", 'a "b"') == 'name="a \\"b\\""'
    with pytest.raises(TypeError, match="run-config key 'x'"):
        _toml_pair("x", [1])


def test_the_test_certificates_pass_python_313s_strict_verification(tmp_path: Path) -> None:
    """Python 3.13 verifies with ``VERIFY_X509_STRICT`` by default (a CA without key identifiers
    fails with "Missing Authority Key Identifier"); set the flag here, on any Python, and
    complete a real TLS handshake over loopback against the generated chain."""
    import ssl
    import threading

    from course_lib.fl.deployment import make_tls_files

    files = make_tls_files(tmp_path / "tls", hosts=("127.0.0.1",))
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(files["cert"], files["key"])
    client_context = ssl.create_default_context(cafile=str(files["ca"]))
    client_context.verify_flags |= ssl.VERIFY_X509_STRICT
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            connection, _ = listener.accept()
            with server_context.wrap_socket(connection, server_side=True) as tls:
                tls.sendall(b"ok")

        server = threading.Thread(target=serve, daemon=True)
        server.start()
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            client_context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.recv(2) == b"ok"
        server.join(timeout=10)


@pytest.mark.parametrize(
    ("maker", "file_name", "field"),
    [("make_tls_files", "server.key", "key"), ("make_supernode_key", "node1.key", "private")],
)
def test_a_private_key_is_owner_only_whatever_the_umask(
    tmp_path: Path, maker: str, file_name: str, field: str
) -> None:
    """A private key (the SuperLink's TLS key, a SuperNode's authentication key) is created with
    mode 0600 (not written under the umask and narrowed after), and a file an attacker planted at
    its path (here a symlink) is replaced, not written through."""
    from course_lib.fl import deployment

    make = {
        "make_tls_files": lambda folder: deployment.make_tls_files(folder, hosts=("127.0.0.1",)),
        "make_supernode_key": lambda folder: deployment.make_supernode_key(folder, "node1"),
    }[maker]
    folder = tmp_path / "keys"
    folder.mkdir()
    planted = tmp_path / "planted"
    planted.write_text("attacker's")
    (folder / file_name).symlink_to(planted)
    old = os.umask(0)
    try:
        files = make(folder)
    finally:
        os.umask(old)
    assert files[field] == folder / file_name
    assert files[field].stat().st_mode & 0o777 == 0o600
    assert not files[field].is_symlink() and planted.read_text() == "attacker's"


def test_supernode_keys_are_what_flower_loads_and_the_private_one_is_owner_only(tmp_path: Path):
    """make_supernode_key writes what `flower-supernode --auth-supernode-private-key` and `flwr
    supernode register` load (an EC key on a NIST curve, OpenSSH format; the two halves match),
    a new key for each node. Bad names are refused before anything is written."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        PublicFormat,
        load_ssh_private_key,
        load_ssh_public_key,
    )
    from flwr.supercore.primitives.asymmetric import uses_nist_ec_curve

    from course_lib.fl.deployment import make_supernode_key

    folder = tmp_path / "keys"
    files = make_supernode_key(folder, "node1")
    private = load_ssh_private_key(files["private"].read_bytes(), None)
    public = load_ssh_public_key(files["public"].read_bytes())
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert isinstance(public, ec.EllipticCurvePublicKey) and uses_nist_ec_curve(public)
    raw = (Encoding.OpenSSH, PublicFormat.OpenSSH)
    assert private.public_key().public_bytes(*raw) == public.public_bytes(*raw)
    # a second node gets another key
    other = make_supernode_key(folder, "node2")
    assert other["public"].read_bytes() != files["public"].read_bytes()
    for name in ["", "../node", ".hidden", "a/b"]:
        with pytest.raises(ValueError, match="plain file name"):
            make_supernode_key(tmp_path / "never", name)
    with pytest.raises(TypeError, match="must be a string"):
        make_supernode_key(tmp_path / "never", 3)  # type: ignore[arg-type]
    assert not (tmp_path / "never").exists()
