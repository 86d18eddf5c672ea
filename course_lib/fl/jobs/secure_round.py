"""One round of secure, differentially private training, run by a hospital on its own data.

This file is the job of lesson 20: :func:`course_lib.fl.secure_syft.write_secure_job` ships its
text, unchanged, as the job's ``main.py``, and each hospital's reviewer approves a job only if its
``main.py`` is exactly this text. Inside a job ``resolve_dataset_files_path`` returns the hospital's
PRIVATE files (its shard and its secret key); only ``outputs/masked_update.b64`` leaves. The masks
are keyed to the digest of this job's files (:func:`~course_lib.fl.secure_syft.job_digest_of`), so
they cancel only if every hospital ran the same job.

The job reads each of its files once, at the start, and both digests and parses those bytes: a
file rewritten while it trains changes neither the settings it uses nor the digest its masks are
keyed to. What the job cannot close itself is the window between the owner's review and this
start: in real mode the job's folder lies where the scientist can write, so a file replaced (or
added, e.g. a module that shadows an import) after the review would run unreviewed. The owner
closes it by reviewing and running its own private copy of the job's code
(:func:`course_lib.fl.syft_bridge.review_private_copy`, which ``run_round`` uses).
"""

import json
from pathlib import Path

import syft as sy
import torch
from torch.nn.utils import parameters_to_vector
from torch.utils.data import TensorDataset

import course_lib.models
from course_lib.dp.dpsgd import train_private
from course_lib.fl.secure_syft import job_digest_of, job_random_source, mask_update, read_job_files
from course_lib.fl.syft_bridge import decode_state, encode_state


def main() -> None:
    torch.set_num_threads(1)  # a small model: one thread is as fast and shares the machine better
    # every file of the job, read ONCE: the digest and the settings and weights come from the
    # same bytes, so the masks describe exactly the job that trains
    job_files = read_job_files(Path("."))
    job = job_digest_of(job_files)
    params = json.loads(job_files["params.json"])
    files = {path.name: path for path in sy.resolve_dataset_files_path(params["dataset"])}
    images, labels = torch.load(files["shard.pt"], weights_only=True)  # this hospital's patients
    secret_key = bytes.fromhex(files["secagg_secret_key.hex"].read_text())  # stays here
    model = getattr(course_lib.models, params["model"])()
    model.load_state_dict(decode_state(job_files["global_model.b64"].decode("ascii")))
    start = parameters_to_vector(model.parameters()).detach().clone()

    # 1. DP-SGD: each patient's gradient is clipped to max_grad_norm, then Gaussian noise is added
    train_private(
        model,
        TensorDataset(images, labels),
        epochs=params["epochs"],
        sample_rate=params["sample_rate"],
        lr=params["lr"],
        momentum=params["momentum"],
        noise_multiplier=params["noise_multiplier"],
        max_grad_norm=params["max_grad_norm"],
        delta=params["delta"],
        rng=job_random_source(params, secret_key),
        progress=False,
    )
    # 2. the update, masked so that only the sum over all hospitals can be read (mask_update
    #    refuses an update holding NaN or ±inf: the job then fails and nothing is uploaded). The
    #    masks are keyed to this job's digest: if another hospital got a different job (other
    #    lr, weights, ...), the masks do not cancel and the scientist's sum is random noise
    update = parameters_to_vector(model.parameters()).detach() - start
    keys, round_index = params["public_keys"], params["round"]
    masked = mask_update(update, secret_key, keys, round_index, params["frac_bits"], job=job)

    Path("outputs").mkdir(exist_ok=True)  # all that leaves the hospital: the masked update
    Path("outputs/masked_update.b64").write_text(encode_state({"masked": masked}))


if __name__ == "__main__":
    main()
