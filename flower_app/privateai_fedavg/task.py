"""privateai_fedavg: the model, the data and the training, all from course_lib.

Flower's examples keep their model, data loading and training loop in ``task.py``. This app
imports them from the course's own package instead of copying them, so the app trains exactly what
the lessons train (see ``course_lib.fl.flower``).
"""

from course_lib.fl.flower import (
    AppConfig,
    RoundClock,
    claim_result_dir,
    initial_state,
    make_model,
    node_partition,
    save_result,
    train_on_partition,
)

__all__ = [
    "AppConfig",
    "RoundClock",
    "claim_result_dir",
    "initial_state",
    "make_model",
    "node_partition",
    "save_result",
    "train_on_partition",
]
