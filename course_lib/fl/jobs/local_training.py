"""One round of federated local training, run by a data owner on its private shard (a syft job).

The data scientist ships this file's text as the job's ``main.py``, next to ``params.json`` and
``global_model.b64`` (:func:`course_lib.fl.syft_bridge.write_training_job`); the owner reviews
it and runs it. Inside a job, ``resolve_dataset_files_path`` returns the owner's PRIVATE shard;
only the new weights and the shard's size are written to ``outputs/``.
"""

import json
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

import course_lib.models
from course_lib.fl.fedavg import local_train
from course_lib.fl.syft_bridge import decode_state, encode_state
from course_lib.training import make_loader


def train_on_shard(shard: Path, params: dict, global_model: str) -> tuple[str, int]:
    """Train the global model (base64 text) on the shard's ``(images, labels)`` as ``params``
    say; return the new weights as base64 text and the number of samples."""
    images, labels = torch.load(shard, weights_only=True)
    model = getattr(course_lib.models, params["model"])()
    model.load_state_dict(decode_state(global_model))
    loader = make_loader(TensorDataset(images, labels), params["batch_size"], seed=params["seed"])
    state = local_train(model, loader, epochs=params["epochs"], lr=params["lr"], mu=params["mu"])
    return encode_state(state), len(labels)


def main() -> None:
    import syft as sy

    torch.set_num_threads(1)  # a small model: one thread is as fast and shares the machine better
    params = json.loads(Path("params.json").read_text())
    (shard,) = sy.resolve_dataset_files_path(params["dataset"])  # the private shard, in a job
    weights, num_samples = train_on_shard(shard, params, Path("global_model.b64").read_text())
    Path("outputs").mkdir(exist_ok=True)
    Path("outputs/model.b64").write_text(weights)  # only the new weights leave ...
    Path("outputs/num_samples.json").write_text(json.dumps(num_samples))  # ... and the count


if __name__ == "__main__":
    main()
