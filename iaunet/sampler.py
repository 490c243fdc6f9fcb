"""IAUnet's identity sampler: deep-person-reid v0.x's ``RandomIdentitySampler``
(``../shared/specs/iaunet.md`` §2, "Sampler").

Each epoch every identity's images are shuffled (drawn with replacement up to K when it has
fewer) and cut into chunks of K, the remainder dropped; all chunks are shuffled together and
read in order, ``batch_size`` images a batch. Unlike the P x K sampler, an epoch covers nearly
every image once, and two chunks of one identity can land in the same batch. A batch made only
of one identity's chunks (possible on tiny training sets; the original crashed on it) is left
out.
"""

from __future__ import annotations

from common.data import IdentitySampler, SamplerError

__all__ = ["ChunkShuffleSampler"]


class ChunkShuffleSampler(IdentitySampler):
    """Yields whole batches (use it as a DataLoader ``batch_sampler``); under DDP process
    ``rank`` takes batches ``rank, rank + num_replicas, ...``."""

    def __init__(self, pids, batch_size, num_instances, seed=0, num_replicas=1, rank=0):
        if num_instances < 1 or batch_size % num_instances:
            raise SamplerError(f"--train-batch {batch_size} must be a multiple of "
                             f"--num-instances {num_instances}")
        if batch_size // num_instances < 2:
            raise SamplerError(f"--train-batch {batch_size} with --num-instances {num_instances} "
                             f"makes batches of one identity, which give the triplet loss no "
                             f"negative; use --train-batch {2 * num_instances} or more")
        super().__init__(pids, seed, num_replicas, rank)
        self.batch_size, self.num_instances = batch_size, num_instances
        self.pid_of = {index: pid for pid, indices in self.index_of.items() for index in indices}

    def batches(self):
        rng = self.epoch_rng()
        chunks = []
        for pid in self.pids:
            indices = self.index_of[pid]
            if len(indices) < self.num_instances:
                indices = rng.choice(indices, size=self.num_instances, replace=True)
            else:
                indices = rng.permutation(indices)
            usable = len(indices) - len(indices) % self.num_instances
            chunks += [indices[i:i + self.num_instances].tolist()
                       for i in range(0, usable, self.num_instances)]
        order = [index for chunk in rng.permutation(len(chunks)) for index in chunks[chunk]]
        batches = [order[i:i + self.batch_size]
                   for i in range(0, len(order) - self.batch_size + 1, self.batch_size)]
        # a batch whose chunks all come from one identity has no triplet negative (the original
        # crashed on it; it can only happen on very small training sets): it is left out
        batches = [batch for batch in batches if len({self.pid_of[i] for i in batch}) > 1]
        return batches[:len(batches) - len(batches) % self.num_replicas]

    def __iter__(self):
        return iter(self.local_batches())

    def __len__(self):
        return len(self.local_batches())
