"""IAUnet's chunk-shuffle identity sampler (iaunet.md §2)."""

from collections import Counter

import pytest

from iaunet.sampler import ChunkShuffleSampler


def test_chunks_of_k_cover_every_identity_and_batches_are_full():
    pids = [0] * 9 + [1] * 2 + [2] * 4 + [3] * 5  # 9 -> 2 chunks, 2 -> 1 (drawn with replacement)
    sampler = ChunkShuffleSampler(pids, batch_size=8, num_instances=4, seed=0)
    batches = sampler.batches()
    assert len(batches) == 2 and all(len(b) == 8 for b in batches)  # 5 chunks -> 2 full batches
    chunks = [batch[i:i + 4] for batch in batches for i in (0, 4)]
    assert all(len({pids[j] for j in chunk}) == 1 for chunk in chunks)  # a chunk is one identity
    sampler.set_epoch(1)
    assert sampler.batches() != batches
    sampler.set_epoch(0)
    assert sampler.batches() == batches  # seeded by (seed, epoch)
    counts = Counter(pids[j] for batch in ChunkShuffleSampler(
        pids, 20, 4, seed=0).batches() for j in batch)
    assert counts == {0: 8, 1: 4, 2: 4, 3: 4}


def test_processes_split_the_batches_and_bad_sizes_are_refused():
    pids = [p for p in range(10) for _ in range(4)]
    full = ChunkShuffleSampler(pids, 8, 4, seed=0).batches()
    shares = [ChunkShuffleSampler(pids, 8, 4, seed=0, num_replicas=2, rank=r).local_batches()
              for r in (0, 1)]
    assert shares[0] == full[0:4:2] and shares[1] == full[1:4:2]
    with pytest.raises(ValueError, match="multiple of --num-instances 4"):
        ChunkShuffleSampler(pids, 10, 4)


def test_a_batch_of_one_identity_is_left_out():
    """Identity 0's two chunks alone in a batch give the triplet loss no negative (the original
    crashed on it): such a batch is dropped, every other batch is kept."""
    pids = [0] * 8 + [1] * 4 + [2] * 4  # chunks 0, 0, 1, 2: two batches of two chunks
    seen = set()
    for seed in range(20):
        batches = ChunkShuffleSampler(pids, batch_size=8, num_instances=4, seed=seed).batches()
        seen.add(len(batches))
        if len(batches) == 1:  # both chunks of identity 0 fell together: that batch is gone
            assert {pids[i] for i in batches[0]} == {1, 2}
        else:
            assert all(len({pids[i] for i in batch}) == 2 for batch in batches)
    assert seen == {1, 2}
    with pytest.raises(ValueError, match="one identity"):
        ChunkShuffleSampler(pids, batch_size=4, num_instances=4)
