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

from course_lib.fl import deployment
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
    """flower_app/README.md's walkthrough across machines, half through the role commands
    (`python -m course_lib.fl.deployment ROLE`) and half through the raw flwr commands they
    stand for, in one federation: the operator makes the TLS files (`tls` role) and starts the
    SuperLink on host 0 (10.123.0.1; `superlink --auth` role: TLS with a CA only the federation
    trusts, SuperNode authentication); registers node 1's public key with raw `flwr supernode
    register` and node 2's with the `register` role; SuperNode 1 on host 1 is raw
    `flower-supernode`, SuperNode 2 on host 2 the `supernode` role; the `run` role runs the app
    from host 0 and prints the comparison with the course FedAvg. The weights equal the course
    FedAvg's. Two intruders on host 2 that hold the CA certificate and can reach the port (one
    with a key nobody registered, one with none) are refused, and never appear among the
    federation's nodes. SIGTERM to the SuperLink's and node 2's roles stops their Flower
    processes (exit 143); afterwards nothing runs in the namespaces and they are gone. Needs root
    (network namespaces); skipped otherwise."""
    import re

    import torch

    from course_lib.fl import deployment
    from course_lib.fl.deployment import make_supernode_key
    from course_lib.fl.flower import APP_DIR, AppConfig, load_result, reference_fedavg
    from course_lib.smpc.emulated_hosts import EmulatedHosts, namespaces_unavailable

    reason = namespaces_unavailable()
    if reason is not None:
        pytest.skip(f"no network namespaces: {reason}")
    config = AppConfig(num_server_rounds=1, num_nodes=2, train_samples=200, hidden_units=16)
    result_dir = tmp_path / "result"
    run_config = AppConfig.checked({**config.__dict__, "result_dir": str(result_dir)})
    # the `tls` role adds 127.0.0.1: the SuperLink's own SuperExec (which starts the ServerApp)
    # dials it there, so the certificate must name that address too, or the run never starts
    assert deployment.main(["tls", "--out", str(tmp_path / "tls"), "--hosts", "10.123.0.1"]) == 0
    tls = {"ca": tmp_path / "tls" / "ca.crt"}
    bin_dir = os.path.dirname(sys.executable)
    role = [sys.executable, "-m", "course_lib.fl.deployment"]

    def env(name: str) -> dict[str, str]:
        home = tmp_path / name
        home.mkdir()
        return {**os.environ, "FLWR_HOME": str(home), "FLWR_TELEMETRY_ENABLED": "0",
                "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
                "COURSE_OFFLINE": "1", "OMP_NUM_THREADS": "1"}  # fmt: skip

    def started(hosts, host, argv, name):
        log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 — closed with the process
        return hosts.start(host, argv, env=env(name), stdout=log, stderr=subprocess.STDOUT)

    keys = {name: make_supernode_key(tmp_path / "keys", name) for name in ("node1", "intruder")}
    assert deployment.main(["key", "--out", str(tmp_path / "keys"), "--name", "node2"]) == 0
    keys["node2"] = {"private": tmp_path / "keys" / "node2.key",
                     "public": tmp_path / "keys" / "node2.pub"}  # fmt: skip
    with EmulatedHosts(3) as hosts:
        superlink = started(hosts, 0, [*role, "superlink", "--host", "0.0.0.0", "--port", "9093",
                                       "--tls-dir", str(tmp_path / "tls"), "--auth"],
                            "superlink")  # fmt: skip
        probe = hosts.start(1, [sys.executable, "-c", WAIT_LISTENING, "10.123.0.1", "9093"])
        assert probe.wait(180) == 0, (tmp_path / "superlink.log").read_text()[-2000:]
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

        answer = flwr("supernode", "register", str(keys["node1"]["public"]), "hospitals")
        registered = {str(answer["node-id"])}
        register = hosts.start(0, [*role, "register", "--superlink", "10.123.0.1:9093", "--ca",
                                   str(tls["ca"]), str(keys["node2"]["public"])],
                               env=env("register"), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)  # fmt: skip
        out, _ = register.communicate(timeout=120)
        assert register.returncode == 0, out
        assert f"$ flwr supernode register {keys['node2']['public']} hospitals" in out, out
        registered |= set(re.findall(r"SuperNode (\d+) registered", out))
        assert len(registered) == 2, out
        started(hosts, 1, [f"{bin_dir}/flower-supernode", "--root-certificates", str(tls["ca"]),
                           "--superlink", "10.123.0.1:9093", "--port", "9094",
                           "--auth-supernode-private-key", str(keys["node1"]["private"]),
                           "--node-config", "partition-id=0 num-partitions=2"],
                "supernode1")  # fmt: skip
        node2 = started(hosts, 2, [*role, "supernode", "--superlink", "10.123.0.1:9093",
                                   "--ca", str(tls["ca"]), "--key", str(keys["node2"]["private"]),
                                   "--partition", "1/2"], "supernode2")  # fmt: skip
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
        settings = run_config.to_run_config()
        run = started(hosts, 0, [*role, "run", "--superlink", "10.123.0.1:9093", "--ca",
                                 str(tls["ca"]), "--rounds", "1", "--nodes", "2",
                                 "--result-dir", str(result_dir), "--run-config",
                                 "train-samples=200 hidden-units=16"], "run")  # fmt: skip
        try:
            code = run.wait(300)  # `flwr run --stream` returns when the run has finished
        except subprocess.TimeoutExpired:
            code = None
        run_log = (tmp_path / "run.log").read_text()
        assert code == 0, run_log[-3000:]
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
        # SIGTERM to a role stops the Flower process it started before the role exits
        for name, process in (("supernode2", node2), ("superlink", superlink)):
            process.send_signal(signal.SIGTERM)  # to `ip netns exec`, which exec'd the role
            assert process.wait(60) == 128 + signal.SIGTERM, name
            assert flower_processes(tmp_path / name) == [], name
    assert hosts.exist() == []
    assert all(process.poll() is not None for process in hosts.processes)
    logs = {p.name: p.read_text()[-2000:] for p in tmp_path.glob("*.log")}
    # each role printed the command the README gives, with the app config it validated
    superlink_log = (tmp_path / "superlink.log").read_text()
    assert superlink_log.startswith("$ flower-superlink --ssl-ca-certfile "), superlink_log[:300]
    assert "--enable-supernode-auth" in superlink_log.splitlines()[0]
    node2_log = (tmp_path / "supernode2.log").read_text()
    assert node2_log.startswith("$ flower-supernode --root-certificates "), node2_log[:300]
    assert "--node-config 'partition-id=1 num-partitions=2'" in node2_log.splitlines()[0]
    assert f"$ flwr run {APP_DIR} hospitals --stream --run-config " in run_log
    assert all(_toml_pair(k, v) in run_log for k, v in settings.items()), run_log[:3000]
    assert "largest weight difference to course_lib's FedAvg" in run_log, run_log[-2000:]
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


def test_simulation_cpus_is_checked_and_reaches_ray(monkeypatch):
    """Ray gets ``simulation_cpus`` CPUs (so as many ClientApp actors); bad values are refused
    before anything starts. Every process gets the federation's data cache and a short SuperExec
    poll interval."""
    with pytest.raises(ValueError, match="simulation_cpus"):
        LocalFederation(2, simulation=True, simulation_cpus=0)
    with pytest.raises(TypeError, match="simulation_cpus"):
        LocalFederation(2, simulation=True, simulation_cpus=1.5)
    federation = LocalFederation(3, simulation=True, simulation_cpus=np.int64(2), echo=None)
    assert federation.simulation_cpus == 2
    federation.flwr_home = Path("/nonexistent/home")
    started = []
    monkeypatch.setattr(federation, "_start", lambda name, args: started.append(args) or _Done())
    monkeypatch.setattr(federation, "_check_course_app", lambda *a: None)
    signalled = []
    monkeypatch.setattr(deployment, "_signal_group", lambda pid, sig: signalled.append(pid))
    federation.run("app", {})
    assert signalled == [None]  # the fake `flwr run` (no real process is signalled)
    (command,) = started
    assert command[command.index("--federation-config") + 1].split() == [
        "num-supernodes=3", "client-resources-num-cpus=1", "client-resources-num-gpus=0.0",
        "init-args-num-cpus=2",
    ]  # fmt: skip
    env = federation._env()
    assert env["COURSE_FLOWER_DATA_CACHE"] == "/nonexistent/home/course-data"
    assert env["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] == "0.1"


class _Done:
    """A finished ``flwr run``: exit status 0."""

    pid = None

    def wait(self, timeout=None):
        return 0


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
    ("maker", "field", "file_name", "mode"),
    [
        ("make_tls_files", "key", "server.key", 0o600),
        ("make_tls_files", "cert", "server.pem", 0o644),
        ("make_tls_files", "ca", "ca.crt", 0o644),
        ("make_supernode_key", "private", "node1.key", 0o600),
        ("make_supernode_key", "public", "node1.pub", 0o644),
    ],
)
@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_key_files_are_created_fresh_with_their_mode_whatever_the_umask(
    tmp_path: Path, maker: str, field: str, file_name: str, mode: int, umask: int
) -> None:
    """Every file the two makers write (a private key: 0600, never readable by others even
    briefly; a certificate or public key: 0644) is created with its mode whatever the umask, and
    a file an attacker planted at its path (here a symlink) is replaced, not written through."""
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
    old = os.umask(umask)
    try:
        files = make(folder)
    finally:
        os.umask(old)
    assert files[field] == folder / file_name
    assert files[field].stat().st_mode & 0o777 == mode
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


# -- python -m course_lib.fl.deployment ROLE: the commands each role builds, bad arguments -------


def _role_files(tmp_path: Path) -> dict[str, Path]:
    """What the `tls` and `key` roles write: a CA and certificate for 10.0.0.1, node1's keys."""
    from course_lib.fl import deployment

    assert deployment.main(["tls", "--out", str(tmp_path / "tls"), "--hosts", "10.0.0.1"]) == 0
    assert deployment.main(["key", "--out", str(tmp_path / "keys"), "--name", "node1"]) == 0
    return {
        "tls": tmp_path / "tls",
        "ca": tmp_path / "tls" / "ca.crt",
        "key": tmp_path / "keys" / "node1.key",
        "pub": tmp_path / "keys" / "node1.pub",
    }


def test_the_tls_role_always_certifies_127_0_0_1_and_the_key_role_writes_a_pair(tmp_path, capsys):
    """The SuperLink's own SuperExec dials it on 127.0.0.1 (or the run never starts), so the
    `tls` role adds that address to the ones given; `key` writes node1.key / node1.pub."""
    import ipaddress

    from cryptography import x509

    files = _role_files(tmp_path)
    cert = x509.load_pem_x509_certificate((files["tls"] / "server.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.1"),
        ipaddress.ip_address("127.0.0.1"),
    ]
    assert (files["tls"] / "server.key").stat().st_mode & 0o777 == 0o600
    assert files["key"].stat().st_mode & 0o777 == 0o600 and files["pub"].exists()
    assert "for 10.0.0.1, 127.0.0.1:" in capsys.readouterr().out


def test_each_role_builds_the_flower_command_the_readme_gives(tmp_path):
    """The exact commands (flower_app/README.md, "Run it across machines"), with every path
    absolute so the printed command works from any folder. Nothing is started."""
    from course_lib.fl.deployment import plan
    from course_lib.fl.flower import APP_DIR

    files = _role_files(tmp_path)
    tls, ca, key, pub = (str(files[k]) for k in ("tls", "ca", "key", "pub"))
    _, role = plan(["superlink", "--host", "0.0.0.0", "--port", "9093", "--tls-dir", tls, "--auth"])
    assert role.command == [
        "flower-superlink", "--ssl-ca-certfile", ca, "--ssl-certfile", f"{tls}/server.pem",
        "--ssl-keyfile", f"{tls}/server.key", "--enable-supernode-auth",
        "--disable-runtime-dependency-installation", "--host", "0.0.0.0", "--port", "9093",
    ]  # fmt: skip
    _, role = plan(["superlink", "--tls-dir", tls])  # defaults: all addresses, 9093, no auth
    assert role.command is not None and "--enable-supernode-auth" not in role.command
    assert role.command[-4:] == ["--host", "0.0.0.0", "--port", "9093"]
    _, role = plan(["supernode", "--superlink", "10.0.0.1:9093", "--ca", ca, "--key", key,
                    "--partition", "1/3"])  # fmt: skip
    assert role.command == [
        "flower-supernode", "--root-certificates", ca, "--superlink", "10.0.0.1:9093",
        "--port", "9094", "--auth-supernode-private-key", key,
        "--node-config", "partition-id=1 num-partitions=3",
    ]  # fmt: skip
    _, role = plan(["supernode", "--superlink", "[::1]:9093", "--ca", ca, "--partition", "0/1",
                    "--port", "9200"])  # fmt: skip
    assert role.command is not None and "--auth-supernode-private-key" not in role.command
    assert role.command[4:7] == ["[::1]:9093", "--port", "9200"]
    config = (
        '[superlink]\ndefault = "hospitals"\n\n[superlink.hospitals]\n'
        f'address = "10.0.0.1:9093"\nroot-certificates = "{ca}"\n'
    )
    _, role = plan(["register", "--superlink", "10.0.0.1:9093", "--ca", ca, pub])
    assert role.command == ["flwr", "supernode", "register", pub, "hospitals"]
    assert role.config == config
    args, role = plan(["run", "--superlink", "10.0.0.1:9093", "--ca", ca, "--rounds", "3",
                       "--nodes", "2", "--result-dir", "/tmp/out"])  # fmt: skip
    assert role.config == config and role.command is not None
    app = str(APP_DIR)
    assert role.command[:6] == ["flwr", "run", app, "hospitals", "--stream", "--run-config"]
    pairs = dict(pair.split("=", 1) for pair in role.command[6].split(" "))
    assert pairs["num-server-rounds"] == "3" and pairs["num-nodes"] == "2"
    assert pairs["mode"] == '"fedavg"' and pairs["result-dir"] == '"/tmp/out"'
    assert len(pairs) == 22  # every AppConfig key, defaults included
    assert pairs["train-samples"] == "4000" and pairs["lr"] == "0.05"  # AppConfig's defaults
    args, role = plan(["run", "--superlink", "10.0.0.1:9093", "--ca", ca, "--run-config",
                       'train-samples=200 lr=0.1 partitioning="dirichlet"'])  # fmt: skip
    assert role.command is not None
    pairs = dict(pair.split("=", 1) for pair in role.command[6].split(" "))
    assert (pairs["train-samples"], pairs["lr"]) == ("200", "0.1")
    assert pairs["partitioning"] == '"dirichlet"' and pairs["num-server-rounds"] == "2"
    assert (args.app_config.train_samples, args.app_config.partitioning) == (200, "dirichlet")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["supernode", "--superlink", "10.0.0.1", "--ca", "{ca}", "--partition", "0/2"],
         "--superlink must be HOST:PORT"),
        (["supernode", "--superlink", "10.0.0.1:70000", "--ca", "{ca}", "--partition", "0/2"],
         "port in 1..65535"),
        (["supernode", "--superlink", "10.0.0.1:9093", "--ca", "{ca}", "--partition", "2/2"],
         "--partition must be I/N with 0 <= I < N"),
        (["supernode", "--superlink", "10.0.0.1:9093", "--ca", "{ca}", "--partition", "x"],
         "--partition must be I/N"),
        (["supernode", "--superlink", "10.0.0.1:9093", "--ca", "{tls}/none.crt",
          "--partition", "0/2"], "--ca (the federation's CA certificate): no file"),
        (["supernode", "--superlink", "10.0.0.1:9093", "--ca", "{ca}", "--key", "{pub}",
          "--partition", "0/2"], "--key takes the private key"),
        (["supernode", "--superlink", "10.0.0.1:9093", "--ca", "{ca}", "--partition", "0/2",
          "--port", "0"], "--port must lie in 1..65535"),
        (["superlink", "--tls-dir", "{tls}/none"], "--tls-dir: no folder"),
        (["superlink", "--tls-dir", "{keys}"], "no file"),
        (["superlink", "--tls-dir", "{tls}", "--port", "99999"], "--port must lie in 1..65535"),
        (["register", "--superlink", "10.0.0.1:9093", "--ca", "{ca}", "{key}"],
         "is not an OpenSSH ECDSA public key"),
        (["register", "--superlink", "10.0.0.1:9093", "--ca", "{ca}", "{keys}/none.pub"],
         "public key: no file"),
        (["run", "--superlink", "10.0.0.1:9093", "--ca", "{ca}", "--mode", "magic"],
         "run-config key 'mode'"),
        (["run", "--superlink", "10.0.0.1:9093", "--ca", "{ca}", "--rounds", "0"],
         "num-server-rounds"),
        (["run", "--superlink", "10.0.0.1:9093", "--ca", "{ca}", "--timeout", "0"],
         "--timeout must be > 0"),
        (["run", "--superlink", "10.0.0.1:9093", "--ca", "{ca}", "--run-config", "lr=0"],
         "run-config key 'lr'"),
        (["run", "--superlink", "10.0.0.1:9093", "--ca", "{ca}", "--run-config", "lr=fast"],
         "lr=fast is not a TOML value"),
        (["run", "--superlink", "10.0.0.1:9093", "--ca", "{ca}", "--run-config", "lr"],
         "--run-config must be key=value pairs"),
        (["run", "--superlink", "10.0.0.1:9093", "--ca", "{ca}", "--run-config",
          "num-server-rounds=3"], "set num-server-rounds with --rounds"),
        (["run", "--superlink", "10.0.0.1:9093", "--ca", "{ca}", "--run-config", "wings=2"],
         "unknown run-config keys ['wings']"),
        (["tls", "--out", "{tmp}/t2", "--hosts", "10.0.0.1,"], "--hosts must be ADDR"),
        (["key", "--out", "{tmp}/k2", "--name", "../node"], "--name must be a plain file name"),
    ],
)  # fmt: skip
def test_bad_arguments_are_one_line_and_exit_2_before_anything_starts(
    tmp_path, monkeypatch, capsys, argv, message
):
    from course_lib.fl import deployment

    files = _role_files(tmp_path)
    capsys.readouterr()
    given = {"ca": files["ca"], "tls": files["tls"], "key": files["key"], "pub": files["pub"],
             "keys": files["key"].parent, "tmp": tmp_path}  # fmt: skip
    argv = [part.format(**given) for part in argv]

    def no_processes(*args, **kwargs):
        raise AssertionError("a process was started")

    monkeypatch.setattr(subprocess, "Popen", no_processes)
    assert deployment.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("error: "), err
    assert message in err, err
    assert not (tmp_path / "t2").exists() and not (tmp_path / "k2").exists()


def test_an_operator_config_of_another_federation_is_not_overwritten(tmp_path, monkeypatch):
    from course_lib.fl import deployment

    files = _role_files(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text("[superlink]\ndefault = 'mine'\n")
    argv = ["run", "--superlink", "10.0.0.1:9093", "--ca", str(files["ca"]), "--flwr-home",
            str(home)]  # fmt: skip
    monkeypatch.setattr(subprocess, "Popen", None)  # nothing may start
    assert deployment.main(argv) == 2
    assert (home / "config.toml").read_text() == "[superlink]\ndefault = 'mine'\n"


def test_sigterm_to_a_role_stops_its_flower_process(tmp_path):
    """`kill` (SIGTERM) to a role's Python: it stops the process group it started (here a
    stand-in `sh` that records its PID and sleeps) before it exits with 143."""
    script = (
        "import sys\n"
        "from course_lib.fl.deployment import _role_env, _run_child\n"
        f"sys.exit(_run_child(['sh', '-c', 'echo $$ > {tmp_path}/pid; exec sleep 60'], "
        "_role_env(None), grace=2))\n"
    )
    role = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "pid").exists() or not (tmp_path / "pid").read_text().strip():
            assert time.monotonic() < deadline, "the child did not start"
            time.sleep(0.05)
        child = int((tmp_path / "pid").read_text())
        role.send_signal(signal.SIGTERM)
        assert role.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        if role.poll() is None:
            role.kill()
    assert role.stdout is not None and role.stdout.read().startswith("$ sh -c ")
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)


# -- the tls and key roles never replace a live CA or key by mistake ------------------------------


@pytest.mark.parametrize(
    ("argv", "planted", "replaced"),
    [
        (["tls", "--out", "{tmp}/tls", "--hosts", "10.0.0.1"], "tls/server.key", "tls/ca.crt"),
        (["tls", "--out", "{tmp}/tls", "--hosts", "10.0.0.1"], "tls/ca.crt", "tls/server.key"),
        (["key", "--out", "{tmp}/keys", "--name", "node1"], "keys/node1.key", "keys/node1.pub"),
        (["key", "--out", "{tmp}/keys", "--name", "node1"], "keys/node1.pub", "keys/node1.key"),
    ],
)  # fmt: skip
def test_the_tls_and_key_roles_refuse_existing_files_unless_forced(
    tmp_path, capsys, argv, planted, replaced
):
    """One file of the set already there (a live CA, a server key, a registered node key — or a
    dangling symlink): the role says so in one `error:` line, exits 2 and writes nothing; with
    --force it replaces every file of the set, each fresh with its mode."""
    from course_lib.fl import deployment

    argv = [part.format(tmp=tmp_path) for part in argv]
    (tmp_path / planted).parent.mkdir()
    (tmp_path / planted).write_bytes(b"live key")
    assert deployment.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    assert err.startswith(f"error: {tmp_path / planted} exists") and "--force" in err, err
    assert (tmp_path / planted).read_bytes() == b"live key"
    assert sorted(p.name for p in (tmp_path / planted).parent.iterdir()) == [Path(planted).name]
    # a dangling symlink at a target is refused too (never written through)
    (tmp_path / planted).unlink()
    (tmp_path / planted).symlink_to(tmp_path / "nowhere")
    assert deployment.main(argv) == 2
    assert not (tmp_path / "nowhere").exists() and not (tmp_path / replaced).exists()
    capsys.readouterr()
    assert deployment.main([*argv, "--force"]) == 0
    assert not (tmp_path / planted).is_symlink() and not (tmp_path / "nowhere").exists()
    assert b"live key" not in (tmp_path / planted).read_bytes()
    private = "server.key" if argv[0] == "tls" else "node1.key"
    assert (tmp_path / planted).parent.joinpath(private).stat().st_mode & 0o777 == 0o600
    assert (tmp_path / replaced).exists()
    # and a second run on the set it wrote is refused again
    before = (tmp_path / planted).read_bytes()
    assert deployment.main(argv) == 2
    assert (tmp_path / planted).read_bytes() == before


def test_the_run_roles_default_result_folder_is_unguessable(tmp_path):
    """No other local user can make the default result folder first: its name is random (not
    the operator's PID), new at each run; save_result then creates it owner-only."""
    import re

    from course_lib.fl import deployment

    files = _role_files(tmp_path)
    argv = ["run", "--superlink", "10.0.0.1:9093", "--ca", str(files["ca"])]
    names = [deployment.plan(argv)[0].result_dir for _ in range(2)]
    pattern = re.escape(tempfile.gettempdir()) + r"/course-flower-result-[0-9a-f]{16}"
    assert all(re.fullmatch(pattern, name) for name in names), names
    assert names[0] != names[1] and all(str(os.getpid()) not in n[-16:] for n in names)
    assert not any(Path(name).exists() for name in names)
    explicit = deployment.plan([*argv, "--result-dir", str(tmp_path / "out")])[0]
    assert explicit.app_config.result_dir == str(tmp_path / "out")


# -- _run_child: no moment where a SIGTERM kills Python and leaves a process running -------------


def test_a_sigterm_while_the_child_starts_still_stops_it(monkeypatch, tmp_path):
    """SIGTERM arriving while Popen runs (the child exists, Popen has not returned): it is held
    back, then raised as SystemExit(143) once the child is known, and the child's group is
    stopped. The SIGTERM handler is the previous one again afterwards."""
    from course_lib.fl import deployment

    real_popen = subprocess.Popen
    started: list[subprocess.Popen] = []

    def popen_then_sigterm(args, **kwargs):
        handler = signal.getsignal(signal.SIGTERM)
        if handler in (signal.SIG_DFL, signal.SIG_IGN, None) or handler is before:
            raise AssertionError(f"SIGTERM is not handled while Popen runs ({handler!r})")
        started.append(real_popen(args, **kwargs))
        os.kill(os.getpid(), signal.SIGTERM)  # lands before Popen returns
        time.sleep(0.2)
        return started[0]

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(subprocess, "Popen", popen_then_sigterm)
    with pytest.raises(SystemExit) as exit_:
        deployment._run_child(["sleep", "60"], deployment._role_env(None), grace=5)
    assert exit_.value.code == 128 + signal.SIGTERM
    assert len(started) == 1 and started[0].poll() == -signal.SIGTERM  # stopped and reaped
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_sigterm_before_the_child_exists_exits_143_and_starts_nothing(monkeypatch):
    """SIGTERM after the role printed its command but before Popen: nothing to stop, exit 143,
    and no process is started afterwards."""
    from course_lib.fl import deployment

    def program_then_sigterm(name: str) -> str:
        handler = signal.getsignal(signal.SIGTERM)
        if handler in (signal.SIG_DFL, signal.SIG_IGN, None) or handler is before:
            raise AssertionError(f"SIGTERM is not handled before Popen ({handler!r})")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)
        raise AssertionError("the SIGTERM did not stop _run_child")

    def no_processes(*args, **kwargs):
        raise AssertionError("a process was started")

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(deployment, "_program", program_then_sigterm)
    monkeypatch.setattr(subprocess, "Popen", no_processes)
    with pytest.raises(SystemExit) as exit_:
        deployment._run_child(["sleep", "60"], deployment._role_env(None))
    assert exit_.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before
