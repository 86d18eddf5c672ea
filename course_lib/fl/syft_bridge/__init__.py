"""A federation of data owners and one data scientist on syft 0.10, and federated learning on it.

Two modules, one front door (``from course_lib.fl import syft_bridge as sb``):

- :mod:`course_lib.fl.syft_bridge.federation` — the parties (mock or real), publishing datasets,
  submitting jobs, the owner's review, running jobs and sharing their outputs, the leak check
  (lessons 09 and 11). What review does and does not protect is in its docstring.
- :mod:`course_lib.fl.syft_bridge.training` — private shards, the local-training job
  (:mod:`course_lib.fl.jobs.local_training`) and one FedAvg round of reviewed jobs (lesson 11).
"""

from course_lib.fl.syft_bridge.federation import (
    SCIENTIST_EMAIL,
    Federation,
    JobFailedError,
    Reviewer,
    RoundReport,
    approve_if_code_is,
    collect_outputs,
    create_federation,
    job_source,
    login,
    owner_email,
    owner_logs,
    pending_jobs,
    private_files_seen_by,
    private_log_dir,
    run_approved_jobs,
    run_round,
    share_logs,
    use_owner_python,
)
from course_lib.fl.syft_bridge.training import (
    LOCAL_TRAINING_SCRIPT,
    TRAINING_JOB_DATA_FILES,
    decode_state,
    encode_state,
    fedavg_round,
    publish_shards,
    write_model_job,
    write_training_job,
)

__all__ = [
    "SCIENTIST_EMAIL",
    "owner_email",
    "Federation",
    "RoundReport",
    "JobFailedError",
    "Reviewer",
    "create_federation",
    "login",
    "use_owner_python",
    "approve_if_code_is",
    "pending_jobs",
    "run_approved_jobs",
    "share_logs",
    "private_log_dir",
    "owner_logs",
    "collect_outputs",
    "run_round",
    "private_files_seen_by",
    "job_source",
    "publish_shards",
    "LOCAL_TRAINING_SCRIPT",
    "TRAINING_JOB_DATA_FILES",
    "write_training_job",
    "write_model_job",
    "encode_state",
    "decode_state",
    "fedavg_round",
]
