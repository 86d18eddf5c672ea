"""Federated learning on top of a syft federation: private shards, the local-training job, one
FedAvg round whose every local step is a reviewed job (lesson 11; the second half of
:mod:`course_lib.fl.syft_bridge`).

The job that runs on each owner's private shard is the ordinary module
:mod:`course_lib.fl.jobs.local_training`; :func:`write_training_job` ships its exact source text
as ``main.py``, and the default review approves exactly that text.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from course_lib.fl.syft_bridge.federation import (
    Federation,
    Reviewer,
    approve_if_code_is,
    job_source,
    run_round,
)

__all__ = [
    "publish_shards",
    "LOCAL_TRAINING_SCRIPT",
    "TRAINING_JOB_DATA_FILES",
    "write_training_job",
    "write_model_job",
    "encode_state",
    "decode_state",
    "fedavg_round",
]


def publish_shards(
    federation: Federation,
    name: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    parts: Sequence[torch.Tensor],
    *,
    mock_size: int = 32,
    seed: int = 0,
    private_extras: Sequence[Mapping[str, str]] = (),
    mock_extras: Sequence[Mapping[str, str]] = (),
) -> list[Path]:
    """Each owner ``k`` publishes dataset ``name``: private ``shard.pt`` = its part ``parts[k]``
    of ``(images, labels)``; mock ``shard.pt`` = ``mock_size`` random-noise images with random
    labels (same shapes and dtypes, no real data). Returns the owners' private staging folders.

    ``private_extras[k]`` / ``mock_extras[k]`` (``{file name: text}``) add owner ``k``'s own text
    files to the private / mock part, e.g. a secret key a job will need / its public key.
    """
    if len(parts) != len(federation.owners):
        raise ValueError(f"{len(parts)} parts for {len(federation.owners)} data owners")
    no_extras: list[Mapping[str, str]] = [{} for _ in parts]
    private_extras, mock_extras = list(private_extras) or no_extras, list(mock_extras) or no_extras
    if len(private_extras) != len(parts) or len(mock_extras) != len(parts):
        raise ValueError("give extra files for every data owner (one mapping each), or none")
    if federation.root is None:
        raise ValueError("publish_shards needs a mock federation (it stages files under its root)")
    generator = torch.Generator().manual_seed(seed)
    private_dirs = []
    for owner, part, private_extra, mock_extra in zip(
        federation.owners, parts, private_extras, mock_extras, strict=True
    ):
        if len(part) == 0:
            raise ValueError(f"{owner.email} would get an empty shard")
        stage = federation.root / "staging" / owner.email.split("@")[0]
        (stage / "private").mkdir(parents=True, exist_ok=True)
        (stage / "mock").mkdir(parents=True, exist_ok=True)
        torch.save((images[part].clone(), labels[part].clone()), stage / "private" / "shard.pt")
        # CPU by design: mock data is saved to disk for the data owner's syft server
        fake_images = torch.rand((mock_size, *images.shape[1:]), generator=generator)
        # CPU by design: as above
        fake_labels = torch.randint(0, int(labels.max()) + 1, (mock_size,), generator=generator)
        torch.save(
            (fake_images.to(images.dtype), fake_labels.to(labels.dtype)),
            stage / "mock" / "shard.pt",
        )
        for folder, extra in (("private", private_extra), ("mock", mock_extra)):
            for file_name, text in extra.items():
                if file_name == "shard.pt" or Path(file_name).name != file_name:
                    raise ValueError(f"extra file name {file_name!r} must be a plain new name")
                (stage / folder / file_name).write_text(text)
        federation.publish(
            owner,
            name,
            mock_dir=stage / "mock",
            private_dir=stage / "private",
            summary=f"{len(part)} labelled images (mock: {mock_size} noise images)",
        )
        private_dirs.append(stage / "private")
    return private_dirs


def encode_state(state: dict[str, torch.Tensor]) -> str:
    """A state dict as base64 text (``torch.save`` bytes): syft 0.10 moves job files as text.
    Tensors are saved from the CPU, so a state trained on a GPU decodes anywhere."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state.items()}, buffer)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_state(text: str) -> dict[str, torch.Tensor]:
    """The inverse of :func:`encode_state` (tensors only: ``weights_only`` loading; on the CPU)."""
    return torch.load(io.BytesIO(base64.b64decode(text)), weights_only=True)


#: The job every owner runs in a syft FedAvg round: the source of
#: :mod:`course_lib.fl.jobs.local_training`, shipped as the job's ``main.py``.
LOCAL_TRAINING_SCRIPT = job_source("course_lib.fl.jobs.local_training")

#: Files of a training job besides ``main.py`` (what an owner expects to see in one).
TRAINING_JOB_DATA_FILES = ("params.json", "global_model.b64")


def write_training_job(
    folder: str | Path,
    model: nn.Module,
    *,
    dataset: str,
    epochs: int = 1,
    lr: float = 0.05,
    batch_size: int = 32,
    mu: float = 0.0,
    seed: int = 0,
) -> Path:
    """Write a job folder: ``main.py`` (:data:`LOCAL_TRAINING_SCRIPT`, the source of
    :mod:`course_lib.fl.jobs.local_training`), ``params.json`` and the current global weights
    ``global_model.b64``. ``model`` must be a class of course_lib.models.

    The owner's review checks ``main.py``; ``params.json`` and the weights are the scientist's
    inputs, which a code review does not vet (see :mod:`course_lib.fl.syft_bridge`)."""
    params = {"dataset": dataset, "epochs": epochs, "lr": lr, "batch_size": batch_size}
    params.update(mu=mu, seed=seed)
    return write_model_job(folder, LOCAL_TRAINING_SCRIPT, model, params)


def write_model_job(
    folder: str | Path, script: str, model: nn.Module, params: dict[str, Any]
) -> Path:
    """Write a job that continues training ``model``: ``main.py`` = ``script``, ``params.json`` =
    ``params`` plus ``"model"``, the model's class name, and ``global_model.b64`` = its current
    weights. The job rebuilds the model by name, so it must be a class of course_lib.models."""
    import course_lib.models

    model_name = type(model).__name__
    if getattr(course_lib.models, model_name, None) is not type(model):
        raise ValueError(
            f"the job rebuilds the model by name; {model_name} is not in course_lib.models"
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "main.py").write_text(script)
    (folder / "params.json").write_text(json.dumps({"model": model_name, **params}, indent=1))
    (folder / "global_model.b64").write_text(encode_state(model.state_dict()))
    return folder


def fedavg_round(
    federation: Federation,
    model: nn.Module,
    *,
    dataset: str,
    round_index: int,
    review: Reviewer | None = None,
    epochs: int = 1,
    lr: float = 0.05,
    batch_size: int = 32,
    mu: float = 0.0,
    seed: int = 0,
) -> tuple[list[dict[str, torch.Tensor]], list[float]]:
    """One FedAvg round where every owner's local training is a reviewed syft job.

    Writes the job (current weights of ``model``), runs :func:`run_round` with ``review``
    (default: approve only :data:`LOCAL_TRAINING_SCRIPT` from this federation's scientist) and
    returns the owners' new state dicts and sample counts, ready for
    :func:`course_lib.fl.fedavg.fedavg`.
    """
    if federation.root is None:
        raise ValueError("fedavg_round needs a mock federation")
    if review is None:
        review = approve_if_code_is(
            {"main.py": LOCAL_TRAINING_SCRIPT},
            data_files=TRAINING_JOB_DATA_FILES,
            scientist=federation._need_scientist().email,
        )
    job_name = f"fedavg-round-{round_index}"
    code = write_training_job(
        federation.root / "jobs" / job_name,
        model,
        dataset=dataset,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        mu=mu,
        seed=seed * 1_000 + round_index,
    )
    report = run_round(federation, code, job_name, review=review)
    states, weights = [], []
    for email in report.approved:
        files = report.outputs[email]
        states.append(decode_state(files["model.b64"].read_text()))
        weights.append(float(json.loads(files["num_samples.json"].read_text())))
    return states, weights
