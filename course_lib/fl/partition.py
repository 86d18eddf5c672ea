"""Splitting one dataset into the private datasets of many federated clients.

Real federations are never split at random: each hospital sees its own patients, each phone its
owner's handwriting. How *unlike* the clients' data are (their "heterogeneity") decides how well
federated averaging works, so experiments simulate it with three standard partitions:

- :func:`partition_iid` — shuffle, deal equal shares: every client looks like the whole dataset.
- :func:`partition_dirichlet` — for each class, draw the clients' shares of it from a Dirichlet
  distribution with concentration ``alpha`` (Hsu et al., 2019). Large ``alpha`` (say 100) is close
  to IID; small ``alpha`` (0.1) gives each client a few dominant classes and unequal sizes.
- :func:`partition_shards` — the "pathological" split of the FedAvg paper (McMahan et al., 2017):
  sort by label, cut into ``num_clients * shards_per_client`` equal shards, give each client
  ``shards_per_client`` of them, so a client sees at most that many digits.

Each function returns one 1-D ``int64`` tensor of dataset indices per client, sorted. Together they
cover every sample exactly once. Pass them to ``torch.utils.data.Subset`` or
:func:`client_subsets`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from course_lib.validation import as_integer, as_number, dataset_size

__all__ = [
    "partition_iid",
    "partition_dirichlet",
    "partition_shards",
    "client_subsets",
    "label_counts",
]


def _check_inputs(labels: torch.Tensor, num_clients: int) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.dim() != 1:
        raise ValueError(
            f"labels must be a 1-D tensor of class ids, got shape {tuple(labels.shape)}"
        )
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(f"labels must be integer class ids, got dtype {labels.dtype}")
    num_clients = as_integer(num_clients, "num_clients")
    if num_clients <= 0:
        raise ValueError(f"a federation needs at least one client, got num_clients={num_clients}")
    if num_clients > len(labels):
        raise ValueError(
            f"cannot give {num_clients} clients at least one sample each from "
            f"{len(labels)} samples "
            "(a client with an empty dataset cannot train)"
        )
    return labels


def _sorted_parts(parts: Sequence[np.ndarray]) -> list[torch.Tensor]:
    return [torch.as_tensor(np.sort(p), dtype=torch.int64) for p in parts]


def partition_iid(labels: torch.Tensor, num_clients: int, *, seed: int = 0) -> list[torch.Tensor]:
    """Shuffle the indices, deal them into ``num_clients`` near-equal shares (sizes differ by ≤ 1).

    Every client's label distribution then matches the whole dataset's, up to sampling noise.
    """
    labels = _check_inputs(labels, num_clients)
    order = np.random.default_rng(seed).permutation(len(labels))
    return _sorted_parts(np.array_split(order, num_clients))


def partition_dirichlet(
    labels: torch.Tensor,
    num_clients: int,
    *,
    alpha: float,
    seed: int = 0,
    min_samples: int = 1,
    max_tries: int = 100,
) -> list[torch.Tensor]:
    """Label-skewed split: client shares of each class drawn from ``Dirichlet(alpha, ..., alpha)``.

    For every class ``c`` a vector ``p_c ~ Dir(alpha · 1)`` over the clients is drawn and the
    class's (shuffled) samples are cut in those proportions. Small ``alpha`` concentrates each
    class on few clients. If some client ends up with fewer than ``min_samples`` samples the whole
    draw is repeated (as in the reference implementations), at most ``max_tries`` times.
    """
    labels = _check_inputs(labels, num_clients)
    alpha = as_number(alpha, "alpha (a positive finite number)")
    if alpha <= 0:
        raise ValueError(f"the Dirichlet concentration alpha must be > 0, got {alpha}")
    if min_samples < 1:
        raise ValueError(f"min_samples must be at least 1 (no empty clients), got {min_samples}")
    if num_clients * min_samples > len(labels):
        raise ValueError(
            f"{num_clients} clients × min_samples={min_samples} exceeds the {len(labels)} samples"
        )
    rng = np.random.default_rng(seed)
    y = labels.cpu().numpy()
    classes = np.unique(y)
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for c in classes:
            members = rng.permutation(np.flatnonzero(y == c))
            shares = rng.dirichlet(np.full(num_clients, float(alpha)))
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
            for client, chunk in enumerate(np.split(members, cuts)):
                parts[client].append(chunk)
        merged = [np.concatenate(p) for p in parts]
        if min(len(p) for p in merged) >= min_samples:
            return _sorted_parts(merged)
    raise ValueError(
        f"after {max_tries} draws some client still had fewer than {min_samples} samples; "
        f"use a larger alpha (got {alpha}), fewer clients or a smaller min_samples"
    )


def partition_shards(
    labels: torch.Tensor, num_clients: int, *, shards_per_client: int = 2, seed: int = 0
) -> list[torch.Tensor]:
    """The FedAvg paper's pathological non-IID split: each client gets ``shards_per_client``
    label-sorted shards, so it holds at most that many classes (more only where a shard straddles
    a class boundary)."""
    labels = _check_inputs(labels, num_clients)
    shards_per_client = as_integer(shards_per_client, "shards_per_client")
    if shards_per_client <= 0:
        raise ValueError(f"shards_per_client must be positive, got {shards_per_client}")
    num_shards = num_clients * shards_per_client
    if num_shards > len(labels):
        raise ValueError(
            f"{num_clients} clients × {shards_per_client} shards = {num_shards} shards, "
            f"more than the {len(labels)} samples: every shard would not get a sample"
        )
    rng = np.random.default_rng(seed)
    y = labels.cpu().numpy()
    shuffled = rng.permutation(len(y))  # random order inside each class ...
    by_label = shuffled[np.argsort(y[shuffled], kind="stable")]  # ... then sorted by label
    shards = np.array_split(by_label, num_shards)
    deal = rng.permutation(num_shards).reshape(num_clients, shards_per_client)
    return _sorted_parts([np.concatenate([shards[s] for s in row]) for row in deal])


def client_subsets(dataset: Dataset, parts: Sequence[torch.Tensor]) -> list[Subset]:
    """One :class:`~torch.utils.data.Subset` of ``dataset`` per client.

    ``dataset`` may be any map-style dataset (``len`` and indexing); anything else, or an index
    beyond its end, is refused with a ``TypeError`` / ``ValueError`` before any subset is built.
    """
    size = dataset_size(dataset)
    for k, part in enumerate(parts):
        if len(part) and (int(part.max()) >= size or int(part.min()) < 0):
            raise ValueError(f"part {k} indexes outside the dataset's {size} samples")
    return [Subset(dataset, part.tolist()) for part in parts]


def label_counts(
    labels: torch.Tensor, parts: Sequence[torch.Tensor], num_classes: int | None = None
) -> torch.Tensor:
    """A ``(num_clients, num_classes)`` table: how many samples of each class each client holds."""
    labels = torch.as_tensor(labels)
    num_classes = num_classes if num_classes is not None else int(labels.max()) + 1
    return torch.stack([torch.bincount(labels[p], minlength=num_classes) for p in parts])
