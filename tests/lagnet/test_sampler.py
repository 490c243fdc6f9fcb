"""MGN's identity sampler (lagnet.md §2): every identity once per epoch, K images each."""

from collections import Counter

import pytest

from lagnet.sampler import IdentityGroupSampler

PIDS = [pid for pid in range(10) for _ in range(5)] + [10]  # identity 10 has a single image


def test_every_identity_once_with_k_images():
    sampler = IdentityGroupSampler(PIDS, batchid=4, batchimage=3, seed=0)
    batches = list(sampler)
    assert [len(b) for b in batches] == [12, 12, 9]  # 11 identities: 4 + 4 + 3, last one short
    assert len(sampler) == 3
    seen = Counter(PIDS[i] for batch in batches for i in batch)
    assert seen == {pid: 3 for pid in range(11)}
    for batch in batches:
        groups = [batch[i:i + 3] for i in range(0, len(batch), 3)]
        for group in groups:
            assert len({PIDS[i] for i in group}) == 1
            if PIDS[group[0]] != 10:
                assert len(set(group)) == 3  # drawn without replacement
    assert [i for batch in batches for i in batch].count(50) == 3  # the lone image repeats


def test_seeded_per_epoch():
    sampler = IdentityGroupSampler(PIDS, 4, 3, seed=1)
    first = list(sampler)
    assert list(sampler) == first
    sampler.set_epoch(1)
    assert list(sampler) != first
    assert list(IdentityGroupSampler(PIDS, 4, 3, seed=2)) != first


def test_ranks_split_whole_batches():
    pids = [pid for pid in range(9) for _ in range(4)]
    ranks = [list(IdentityGroupSampler(pids, 2, 2, seed=0, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 2  # 5 batches, the 1-identity last one merged
    assert len(IdentityGroupSampler(pids, 2, 2, num_replicas=2, rank=1)) == 2
    flat = [set(i for b in r for i in b) for r in ranks]
    assert not flat[0] & flat[1]


def test_needs_two_identities():
    with pytest.raises(ValueError, match="two identities"):
        IdentityGroupSampler([0, 0], 2, 2)


def test_a_last_batch_of_one_identity_joins_the_batch_before():
    """16 identities with P=5 would end with a batch of one identity, which the triplet loss
    cannot take (the original crashed after the epoch): 5, 5, 6 instead of 5, 5, 5, 1."""
    pids = [pid for pid in range(16) for _ in range(3)]
    sampler = IdentityGroupSampler(pids, 5, 2, seed=0)
    batches = sampler.batches()
    identities = [len({pids[i] for i in batch}) for batch in batches]
    assert identities == [5, 5, 6] and len(sampler) == 3
    assert sorted(pids[i] for batch in batches for i in batch) == sorted(
        [pid for pid in range(16) for _ in range(2)])  # every identity once, K images each
    assert [len({pids[i] for i in b}) for b in IdentityGroupSampler(pids, 4, 2).batches()] == [
        4, 4, 4, 4]  # a remainder of 0 (or >= 2) is left as the original has it
