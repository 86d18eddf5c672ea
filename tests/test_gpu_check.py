"""tools.gpu_check (``make gpu-check``): its no-CUDA path, its table and its training checks.

The training checks are the same code on any device, so they run here on the CPU; on a GPU,
``make gpu-check`` runs them on CUDA.
"""

from __future__ import annotations

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
