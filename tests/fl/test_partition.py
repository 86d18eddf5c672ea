"""Partitions of a dataset into federated clients: sizes, label skew, nothing lost or duplicated."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from course_lib.fl.partition import (
    client_subsets,
    label_counts,
    partition_dirichlet,
    partition_iid,
    partition_shards,
)

LABELS = torch.arange(1000) % 10  # 100 samples of each of 10 classes


def assert_exact_cover(parts, n):
    """Every index 0..n-1 appears in exactly one part."""
    merged = torch.cat(parts)
    assert len(merged) == n
    assert torch.equal(merged.sort().values, torch.arange(n))


@settings(deadline=None, max_examples=40)
@given(n=st.integers(1, 300), clients=st.integers(1, 20), seed=st.integers(0, 2**16))
def test_iid_is_an_exact_cover_with_balanced_sizes(n, clients, seed):
    clients = min(clients, n)
    labels = torch.randint(0, 5, (n,), generator=torch.Generator().manual_seed(seed))
    parts = partition_iid(labels, clients, seed=seed)
    assert len(parts) == clients
    assert_exact_cover(parts, n)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert all(p.dtype == torch.int64 for p in parts)


@settings(deadline=None, max_examples=30)
@given(clients=st.integers(1, 30), alpha=st.floats(0.05, 100.0), seed=st.integers(0, 2**16))
def test_dirichlet_is_an_exact_cover_without_empty_clients(clients, alpha, seed):
    parts = partition_dirichlet(LABELS, clients, alpha=alpha, seed=seed)
    assert len(parts) == clients
    assert_exact_cover(parts, len(LABELS))
    assert min(len(p) for p in parts) >= 1


@settings(deadline=None, max_examples=30)
@given(clients=st.integers(1, 50), shards=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_shards_is_an_exact_cover_with_equal_sizes(clients, shards, seed):
    parts = partition_shards(LABELS, clients, shards_per_client=shards, seed=seed)
    assert_exact_cover(parts, len(LABELS))
    shard_size = len(LABELS) / (clients * shards)
    for p in parts:  # array_split shards differ by at most one sample
        assert abs(len(p) - shards * shard_size) <= shards


def _classes_per_client(parts, labels=LABELS):
    return (label_counts(labels, parts, 10) > 0).sum(1)


def test_shards_limit_each_client_to_few_classes():
    # 100 shards of 10 samples never straddle a class boundary: exactly <= 2 classes per client
    parts = partition_shards(LABELS, 50, shards_per_client=2, seed=3)
    assert _classes_per_client(parts).max() <= 2
    # 10 clients x 2 shards of 50: a shard is half a class, so at most 2 classes per client
    assert _classes_per_client(partition_shards(LABELS, 10, seed=1)).max() <= 2


def test_iid_clients_see_every_class_and_dirichlet_skews_with_small_alpha():
    iid = label_counts(LABELS, partition_iid(LABELS, 10, seed=0), 10).float()
    assert (_classes_per_client(partition_iid(LABELS, 10, seed=0)) == 10).all()

    def mean_top_class_share(counts):
        return (counts.max(1).values / counts.sum(1)).mean().item()

    skewed = label_counts(LABELS, partition_dirichlet(LABELS, 10, alpha=0.1, seed=0), 10).float()
    near_iid = label_counts(LABELS, partition_dirichlet(LABELS, 10, alpha=1000.0, seed=0), 10)
    # IID: the most common class is ~10% of a client (100 samples, sd ≈ 3 per class)
    assert mean_top_class_share(iid) < 0.2
    assert mean_top_class_share(near_iid.float()) < 0.2
    # alpha = 0.1: most clients are dominated by one or two classes
    assert mean_top_class_share(skewed) > 0.5


def test_partitions_are_reproducible_and_seed_dependent():
    a = partition_dirichlet(LABELS, 5, alpha=0.5, seed=7)
    b = partition_dirichlet(LABELS, 5, alpha=0.5, seed=7)
    c = partition_dirichlet(LABELS, 5, alpha=0.5, seed=8)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_client_subsets_index_the_dataset():
    dataset = torch.utils.data.TensorDataset(torch.arange(20).float(), LABELS[:20])
    subsets = client_subsets(dataset, partition_iid(LABELS[:20], 4))
    assert sum(len(s) for s in subsets) == 20
    assert sorted(int(s[i][0]) for s in subsets for i in range(len(s))) == list(range(20))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: partition_iid(LABELS, 0), "at least one client"),
        (lambda: partition_iid(LABELS[:3], 4), "empty dataset"),
        (lambda: partition_dirichlet(LABELS, 3, alpha=0.0), "alpha must be > 0"),
        (lambda: partition_dirichlet(LABELS, 3, alpha=-1.0), "alpha must be > 0"),
        (lambda: partition_dirichlet(LABELS, 3, alpha=float("nan")), "positive finite"),
        (lambda: partition_dirichlet(LABELS, 200, alpha=1.0, min_samples=10), "exceeds"),
        (lambda: partition_dirichlet(LABELS, 500, alpha=0.01, max_tries=3), "larger alpha"),
        (lambda: partition_shards(LABELS, 10, shards_per_client=0), "positive"),
        (lambda: partition_shards(LABELS, 600, shards_per_client=2), "shards"),
        (lambda: partition_iid(LABELS.reshape(10, 100), 2), "1-D"),
    ],
)
def test_bad_input_gives_a_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_float_labels_are_a_type_error():
    with pytest.raises(TypeError, match="integer"):
        partition_iid(torch.rand(10), 2)


def test_client_subsets_accept_any_map_style_dataset_and_refuse_the_rest():
    dataset = torch.utils.data.TensorDataset(torch.arange(20.0), LABELS[:20])
    nested = client_subsets(
        torch.utils.data.Subset(dataset, range(10)), partition_iid(LABELS[:10], 2)
    )
    assert sum(len(s) for s in nested) == 10
    assert sorted(float(s[i][0]) for s in nested for i in range(len(s))) == list(range(10))
    with pytest.raises(TypeError, match="must be a map-style torch Dataset"):
        client_subsets(torch.arange(20.0), partition_iid(LABELS[:20], 2))
    with pytest.raises(ValueError, match="outside the dataset's 10 samples"):
        client_subsets(torch.utils.data.Subset(dataset, range(10)), partition_iid(LABELS[:20], 2))
