"""P x K identity sampling for triplet training, usable under DistributedDataParallel."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from torch.utils.data import Sampler

from common.data.dataset import DatasetError

__all__ = ["IdentitySampler", "RandomIdentitySampler", "SamplerError"]


class SamplerError(DatasetError):
    """Training data and batch settings that give no batch a loss can take; the message says
    which and how to fix it (a user error, reported without a traceback)."""


class IdentitySampler(Sampler):
    """Base of the identity samplers: the images of each identity, a generator seeded by
    ``(seed, epoch)`` so that every process draws the same batches, and this process's share.

    Subclasses implement :meth:`batches` (every batch of the epoch, all processes).
    """

    def __init__(self, pids, seed=0, num_replicas=1, rank=0):
        if not 0 <= rank < num_replicas:
            raise SamplerError(f"rank {rank} is not in 0..{num_replicas - 1}")
        self.index_of = defaultdict(list)
        for index, pid in enumerate(pids):
            self.index_of[int(pid)].append(index)
        self.pids = sorted(self.index_of)
        self.seed, self.num_replicas, self.rank = seed, num_replicas, rank
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def epoch_rng(self):
        return np.random.default_rng([self.seed, self.epoch])

    def batches(self):
        raise NotImplementedError

    def local_batches(self):
        """The batches of process ``rank``: ``rank, rank + num_replicas, ...``."""
        return self.batches()[self.rank::self.num_replicas]


class RandomIdentitySampler(IdentitySampler):
    """Batches of ``batch_size // num_instances`` distinct identities x ``num_instances`` images.

    Each epoch (torchreid's and BoT's ``RandomIdentitySampler``): every identity's images are
    shuffled and cut into chunks of K (an identity with fewer than K images is drawn with
    replacement up to K; the remainder of the last chunk is dropped); batches then take P random
    identities with chunks left, one chunk each, until fewer than P identities have chunks left.

    The order depends only on ``seed`` and the epoch set with :meth:`set_epoch`, so every process
    builds the same batches; with ``num_replicas`` > 1, process ``rank`` takes batches
    ``rank, rank + num_replicas, ...`` (every process gets the same number of whole batches).
    Use it with a DataLoader whose ``batch_size`` is this sampler's ``batch_size``.

    Args:
        pids: identity of each dataset index.
    """

    def __init__(self, pids, batch_size, num_instances, seed=0, num_replicas=1, rank=0):
        if num_instances < 1 or batch_size < num_instances or batch_size % num_instances:
            raise SamplerError(f"batch_size ({batch_size}) must be a positive multiple of "
                             f"num_instances ({num_instances})")
        super().__init__(pids, seed, num_replicas, rank)
        self.batch_size, self.num_instances = batch_size, num_instances
        self.ids_per_batch = batch_size // num_instances
        if self.ids_per_batch < 2:
            raise SamplerError(f"a batch of {batch_size} with {num_instances} images per identity "
                             f"holds one identity, which gives the triplet loss no negative; use a "
                             f"batch of at least {2 * num_instances}")
        if len(self.pids) < self.ids_per_batch:
            raise SamplerError(f"a batch needs {self.ids_per_batch} identities but the data has "
                             f"only {len(self.pids)}; lower the batch size or raise num_instances")

    def batches(self):
        """Every batch of this epoch (all processes), each a list of dataset indices."""
        rng = self.epoch_rng()
        chunks = {}
        for pid in self.pids:
            indices = np.asarray(self.index_of[pid])
            if len(indices) < self.num_instances:
                indices = rng.choice(indices, size=self.num_instances, replace=True)
            else:
                indices = rng.permutation(indices)
            usable = len(indices) - len(indices) % self.num_instances
            chunks[pid] = [indices[i:i + self.num_instances].tolist()
                           for i in range(0, usable, self.num_instances)]
        available = list(self.pids)
        batches = []
        while len(available) >= self.ids_per_batch:
            chosen = rng.choice(len(available), size=self.ids_per_batch, replace=False)
            batch = []
            for pid in [available[i] for i in chosen]:
                batch += chunks[pid].pop()
                if not chunks[pid]:
                    available.remove(pid)
            batches.append(batch)
        usable = len(batches) - len(batches) % self.num_replicas
        return batches[:usable]

    def __iter__(self):
        for batch in self.local_batches():
            yield from batch

    def __len__(self):
        return len(self.local_batches()) * self.batch_size
