from collections import Counter

import pytest

from common.data import RandomIdentitySampler

# 10 identities with 1..10 images each.
PIDS = [pid for pid in range(10) for _ in range(pid + 1)]


def test_batches_hold_p_distinct_identities_times_k():
    sampler = RandomIdentitySampler(PIDS, batch_size=12, num_instances=4, seed=0)
    batches = sampler.batches()
    assert batches
    for batch in batches:
        counts = Counter(PIDS[i] for i in batch)
        assert len(batch) == 12 and len(counts) == 3 and set(counts.values()) == {4}
    assert len(list(sampler)) == len(sampler) == 12 * len(batches)


def test_identities_with_few_images_are_drawn_with_replacement():
    sampler = RandomIdentitySampler(PIDS, batch_size=40, num_instances=4, seed=1)
    first = [i for i in sampler.batches()[0] if PIDS[i] == 0]
    assert first == [0, 0, 0, 0]  # identity 0 has one image


def test_deterministic_per_epoch_and_different_across_epochs():
    a = RandomIdentitySampler(PIDS, 8, 4, seed=5)
    b = RandomIdentitySampler(PIDS, 8, 4, seed=5)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)


def test_distributed_ranks_split_whole_batches():
    world = [RandomIdentitySampler(PIDS, 8, 4, seed=3, num_replicas=3, rank=r) for r in range(3)]
    everything = world[0].batches()
    per_rank = [list(s) for s in world]
    assert len({len(x) for x in per_rank}) == 1 and len(per_rank[0]) % 8 == 0
    for rank, indices in enumerate(per_rank):
        expected = [i for batch in everything[rank::3] for i in batch]
        assert indices == expected


def test_bad_arguments():
    with pytest.raises(ValueError, match="multiple of num_instances"):
        RandomIdentitySampler(PIDS, 10, 4)
    with pytest.raises(ValueError, match="needs 4 identities but the data has only 2"):
        RandomIdentitySampler([0, 0, 1, 1], 16, 4)
