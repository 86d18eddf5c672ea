"""Federated learning (Part III of the course): train on data that never leaves its owners.

Modules, in the order the lessons use them:

- :mod:`course_lib.fl.syft_bridge` — a federation of data owners and a data scientist on syft 0.10
  (lessons 09 and 11): the scientist submits code, each owner reviews and approves it, runs it on
  private data and shares back only its outputs (``federation``), and FedAvg rounds made of such
  jobs (``training``). The job scripts themselves are modules of :mod:`course_lib.fl.jobs`.
- :mod:`course_lib.fl.partition` — split a dataset into clients: IID, Dirichlet label skew,
  pathological shards (lesson 10).
- :mod:`course_lib.fl.fedavg` — local training, federated averaging weighted by sample count,
  FedProx, and an in-process simulation of many rounds (lesson 10 onwards);
  :mod:`course_lib.fl.seeding` — the one per-client seed rule they all share.
- :mod:`course_lib.fl.flower` — the course's FedAvg as a Flower App (``flower_app/``): simulation
  runtime and Deployment Engine via ``flwr run`` (lesson 10).
- :mod:`course_lib.fl.deployment` — a local SuperLink + SuperNodes as OS processes, stopped by PID.
- :mod:`course_lib.fl.gradient_inversion` — recovering training images from a shared gradient
  (lesson 12).
- :mod:`course_lib.fl.secure_aggregation`, :mod:`course_lib.fl.dp_fedavg` — hiding individual
  updates from the server, and client-level differential privacy (lesson 13).
- :mod:`course_lib.fl.split_learning` — a network split between client and server (lesson 14).

Import what you need from the module itself, e.g. ``from course_lib.fl.fedavg import run_fedavg``;
this package imports nothing, so importing one part never pulls in syft or Flower.
"""
