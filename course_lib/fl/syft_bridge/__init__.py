"""A federation of data owners and one data scientist on syft 0.10, and federated learning on it.

Two modules, one front door (``from course_lib.fl import syft_bridge as sb``):

- :mod:`course_lib.fl.syft_bridge.federation` — the parties (mock or real), publishing datasets,
  submitting jobs, the owner's review, running jobs and sharing their outputs, the leak check
  (lessons 09 and 11). What review does and does not protect is in its docstring.
- :mod:`course_lib.fl.syft_bridge.training` — private shards, the local-training job
  (:mod:`course_lib.fl.jobs.local_training`) and one FedAvg round of reviewed jobs (lesson 11).
"""

from course_lib.fl.syft_bridge import federation, training
from course_lib.fl.syft_bridge.federation import *  # noqa: F403 (the front door re-exports both)
from course_lib.fl.syft_bridge.training import *  # noqa: F403

__all__ = federation.__all__ + training.__all__
