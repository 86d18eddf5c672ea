"""tools.gpu_check (``make gpu-check``): its no-CUDA path, its table and its training checks.

The training checks are the same code on any device, so they run here on the CPU; on a GPU,
``make gpu-check`` runs them on CUDA.
"""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

import pytest
import torch

from tools import gpu_check


def test_without_cuda_it_says_so_and_exits_2(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    assert gpu_check.main([]) == 2
    out = capsys.readouterr().out
    assert "gpu-check skipped: no CUDA device — PyTorch" in out
    assert "(built for CUDA 12.4) sees no GPU. Nothing was checked (exit 2)." in out
    assert "Runtime → Change runtime type → T4 GPU" in out


def _fake_gpus(monkeypatch, count: int) -> None:
    """Make PyTorch report ``count`` CUDA GPUs (only its answers: nothing runs on them)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")


@pytest.mark.parametrize(("count", "index"), [(1, 1), (2, 2), (2, 7)])
def test_a_gpu_number_beyond_the_machine_is_refused_cleanly(monkeypatch, capsys, count, index):
    _fake_gpus(monkeypatch, count)
    monkeypatch.setattr(gpu_check, "run_checks", lambda *args: pytest.fail("checks ran"))
    assert gpu_check.main(["--device", f"cuda:{index}"]) == 2
    assert capsys.readouterr().out == (
        f"gpu-check: --device cuda:{index} names GPU {index}, but PyTorch sees {count} GPU(s), "
        f"numbered 0 to {count - 1}. Nothing was checked (exit 2).\n"
    )


@pytest.mark.parametrize("name", ["gpu", "cuda:x"])
def test_a_device_that_is_no_device_name_is_refused_cleanly(monkeypatch, capsys, name):
    monkeypatch.setattr(gpu_check, "run_checks", lambda *args: pytest.fail("checks ran"))
    assert gpu_check.main(["--device", name]) == 2
    assert f"--device {name!r} is not a device name" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("visible", "index", "expected"),
    [(None, 1, "1"), ("4,6", 1, "6"), ("GPU-a, GPU-b", 0, "GPU-a"), (None, None, None)],
)
def test_the_device_tests_run_on_the_gpu_named(monkeypatch, visible, index, expected):
    """``cuda:N``: the pytest subprocess must see GPU N (and only it) as its ``cuda``."""
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    seen = {}

    def fake_run(command, env, **kwargs):
        seen.update(command=command, visible=env.get("CUDA_VISIBLE_DEVICES"))
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(gpu_check.subprocess, "run", fake_run)
    passed, detail = gpu_check._device_tests(torch.device("cuda", index))
    assert seen["visible"] == (visible if expected is None else expected)
    assert seen["command"][seen["command"].index("-k") + 1] == "cuda"
    assert (passed, detail) == (False, "pytest did not run (exit 0)")  # no report was written


def test_a_model_on_another_gpu_is_not_on_the_device_asked_for():
    class OnDevices:  # stands in for a model: only .parameters() and their .device are read
        def __init__(self, *devices):
            self.devices = devices

        def parameters(self):
            return [SimpleNamespace(device=torch.device(d)) for d in self.devices]

    assert gpu_check._on_device(OnDevices("cuda:1", "cuda:1"), torch.device("cuda", 1))
    assert gpu_check._on_device(OnDevices("cuda:1"), torch.device("cuda"))  # any GPU will do
    assert not gpu_check._on_device(OnDevices("cuda:1", "cuda:0"), torch.device("cuda", 1))
    assert not gpu_check._on_device(OnDevices("cpu"), torch.device("cuda", 0))


def test_a_cpu_only_build_is_named(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    assert gpu_check.cuda_problem().endswith("is a CPU-only build")


def test_the_table_lists_each_check_and_counts_failures():
    results = [
        gpu_check.Result("device tests", True, "12/12 passed", 3.0),
        gpu_check.Result("DP-SGD training", False, "RuntimeError: boom", 0.5),
    ]
    table = gpu_check.format_table(results, torch.device("cuda")).splitlines()
    assert table[1].split()[:3] == ["device", "tests", "passed"]
    assert table[2].split()[:3] == ["DP-SGD", "training", "FAILED"]
    assert table[-1] == "1 of 2 checks passed on cuda; 1 FAILED"


def test_a_crashing_check_fails_its_row_and_the_others_still_run(monkeypatch):
    def boom(device):
        raise RuntimeError("CUDA error: out of memory\nmore")

    monkeypatch.setitem(gpu_check.CHECKS, "DP-SGD training", boom)
    monkeypatch.setitem(gpu_check.CHECKS, "FedAvg training", lambda device: (True, "fine"))
    results = gpu_check.run_checks(torch.device("cpu"), ["DP-SGD training", "FedAvg training"])
    assert [(r.passed, r.detail) for r in results] == [
        (False, "RuntimeError: CUDA error: out of memory"),
        (True, "fine"),
    ]


@pytest.mark.parametrize("name", ["DP-SGD training", "FedAvg training"])
def test_the_training_checks_train_for_real(name):
    (result,) = gpu_check.run_checks(torch.device("cpu"), [name])
    assert result.passed, result.detail
    accuracy = float(result.detail.split("test accuracy ")[1].split("%")[0]) / 100
    assert accuracy > gpu_check.MIN_ACCURACY


def test_every_device_test_file_has_a_cuda_case():
    for path in gpu_check.DEVICE_TEST_FILES:
        assert '"cuda"' in (gpu_check.REPO_ROOT / path).read_text(), path
