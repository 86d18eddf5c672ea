"""course_lib.lesson_device and env_report's device line (issue 16).

Which device the lessons train on is decided from ``torch.cuda.is_available()`` and
``COURSE_DEVICE``. The CUDA branch is tested on this GPU-less machine by patching PyTorch's answers
(``is_available``, ``device_count``, ``get_device_name``): that tests the *choice*, which is all
``lesson_device`` does; whether training then works on a real GPU is ``make gpu-check``'s job.
"""

from __future__ import annotations

import re

import pytest
import torch

from course_lib import env_report, lesson_device
from course_lib.environment import DEVICE_VARIABLE

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")


@pytest.fixture(autouse=True)
def _no_override(monkeypatch):
    monkeypatch.delenv(DEVICE_VARIABLE, raising=False)


def _fake_gpus(monkeypatch, count: int = 1) -> None:
    """Make PyTorch report ``count`` CUDA GPUs (only its answers: nothing runs on them)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")


@NO_CUDA
def test_without_cuda_the_lessons_train_on_the_cpu():
    assert lesson_device() == torch.device("cpu")


def test_with_cuda_the_lessons_train_on_the_gpu(monkeypatch):
    _fake_gpus(monkeypatch)
    assert lesson_device() == torch.device("cuda")


@pytest.mark.parametrize("name", ["cpu", "CPU", " cpu "])
def test_course_device_cpu_is_honoured_even_with_a_gpu(monkeypatch, name):
    _fake_gpus(monkeypatch)
    monkeypatch.setenv(DEVICE_VARIABLE, name)
    assert lesson_device() == torch.device("cpu")


def test_course_device_picks_one_of_several_gpus(monkeypatch):
    _fake_gpus(monkeypatch, count=2)
    monkeypatch.setenv(DEVICE_VARIABLE, "cuda:1")
    assert lesson_device() == torch.device("cuda", 1)


def test_a_gpu_number_the_machine_lacks_is_refused(monkeypatch):
    _fake_gpus(monkeypatch, count=2)
    monkeypatch.setenv(DEVICE_VARIABLE, "cuda:2")
    with pytest.raises(ValueError, match=r"has 2 CUDA GPU\(s\), numbered 0 to 1"):
        lesson_device()


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "CUDA"])
def test_asking_for_cuda_without_a_gpu_is_a_clear_error(monkeypatch, name):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv(DEVICE_VARIABLE, name)
    with pytest.raises(ValueError, match=rf"COURSE_DEVICE='{name}', but .*(CPU-only|no usable)"):
        lesson_device()


def test_a_cpu_only_torch_build_is_named_as_the_cause(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setenv(DEVICE_VARIABLE, "cuda")
    with pytest.raises(ValueError, match="this PyTorch is a CPU-only build; unset COURSE_DEVICE"):
        lesson_device()


@pytest.mark.parametrize("name", ["gpu", "garbage", "cuda:x", "cuda:-1", "0"])
def test_a_name_that_is_no_device_is_a_clear_error(monkeypatch, name):
    monkeypatch.setenv(DEVICE_VARIABLE, name)
    with pytest.raises(ValueError, match=r"is not a device name; use cpu, cuda, cuda:0 or mps"):
        lesson_device()


@pytest.mark.parametrize("name", ["meta", "xla"])
def test_a_device_kind_the_course_does_not_train_on_is_refused(monkeypatch, name):
    monkeypatch.setenv(DEVICE_VARIABLE, name)
    with pytest.raises(ValueError, match="the lessons train on the CPU or a GPU"):
        lesson_device()


def test_mps_is_used_only_when_available(monkeypatch):
    monkeypatch.setenv(DEVICE_VARIABLE, "mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match="Apple's mps is not available here"):
        lesson_device()
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert lesson_device() == torch.device("mps")
    monkeypatch.delenv(DEVICE_VARIABLE)
    assert lesson_device().type != "mps"  # never chosen by default


@NO_CUDA
def test_env_report_says_the_lessons_train_on_the_cpu_and_why():
    assert env_report(show=False)["device"].startswith("lessons train on cpu (no CUDA GPU found;")


def test_env_report_names_the_gpu_the_lessons_use(monkeypatch):
    _fake_gpus(monkeypatch)
    assert env_report(show=False)["device"] == (
        "lessons train on cuda (Tesla T4; a CUDA GPU was found)"
    )


def test_env_report_says_when_course_device_chose(monkeypatch):
    _fake_gpus(monkeypatch)
    monkeypatch.setenv(DEVICE_VARIABLE, "cpu")
    assert env_report(show=False)["device"].startswith(
        "lessons train on cpu (set by COURSE_DEVICE;"
    )


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("gpu", "COURSE_DEVICE='gpu' is not a device name; use cpu, cuda, cuda:0 or mps"),
        ("meta", "COURSE_DEVICE='meta': the lessons train on the CPU or a GPU"),
    ],
)
def test_env_report_shows_a_bad_course_device_instead_of_crashing(
    monkeypatch, capsys, name, message
):
    monkeypatch.setenv(DEVICE_VARIABLE, name)
    report = env_report()  # lesson 00's call: prints, and must not raise
    assert report["device"].startswith(f"not chosen: {message}")
    assert {"python", "offline mode", "MNIST source", "torch"} <= set(report)  # the rest is made
    assert f"device : not chosen: {message}" in capsys.readouterr().out
    with pytest.raises(ValueError, match=re.escape(message)):  # lesson_device still raises
        lesson_device()
