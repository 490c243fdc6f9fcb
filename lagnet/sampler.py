"""MGN-pytorch's identity sampler, which LAG-Net trains with (``../shared/specs/lagnet.md`` §2)."""

from __future__ import annotations

from common.data import IdentitySampler, SamplerError

__all__ = ["IdentityGroupSampler"]


class IdentityGroupSampler(IdentitySampler):
    """A batch sampler: every identity once per epoch, K images each, P identities per batch.

    Each epoch the identities are shuffled; each draws ``batchimage`` (K) of its images without
    replacement (an identity with fewer than K images has its list repeated K times first, so it
    may show an image twice); consecutive runs of ``batchid`` (P) identities form the batches.
    An epoch is thus ``num_ids * K`` images and its last batch may be smaller, as in the original
    (Market-1501 with P=8, K=4: 94 batches, the last of 7 identities). A last batch of a single
    identity (e.g. 16 identities with P=5: 5, 5, 5, 1; MSMT17's 1,041 with P=8) would give the
    triplet loss no negative, and the original crashed on it; here it joins the batch before
    (5, 5, 6), so every identity is still seen once per epoch.

    The original is unseeded; here the draw depends only on ``seed`` and :meth:`set_epoch`. With
    ``num_replicas`` > 1 (DDP), process ``rank`` takes batches ``rank, rank + num_replicas, ...``
    of the epoch's batches cut to a multiple of ``num_replicas``.

    Args:
        pids: training identity of each dataset index.
    """

    def __init__(self, pids, batchid, batchimage, seed=0, num_replicas=1, rank=0):
        if batchid < 1 or batchimage < 1:
            raise SamplerError(f"batchid ({batchid}) and batchimage ({batchimage}) must be >= 1")
        super().__init__(pids, seed, num_replicas, rank)
        if len(self.pids) < 2:
            raise SamplerError(f"training needs at least two identities; the data has {len(self.pids)}")
        self.batchid, self.batchimage = batchid, batchimage

    def batches(self):
        """Every batch of this epoch (all processes), each a list of dataset indices."""
        rng = self.epoch_rng()
        groups = []
        for pid in rng.permutation(self.pids):
            indices = self.index_of[int(pid)]
            if len(indices) < self.batchimage:
                indices = indices * self.batchimage
            groups.append(rng.choice(indices, size=self.batchimage, replace=False).tolist())
        batches = [sum(groups[i:i + self.batchid], []) for i in range(0, len(groups), self.batchid)]
        if len(batches) > 1 and len(groups) % self.batchid == 1:
            last = batches.pop()
            batches[-1] = batches[-1] + last
        if self.num_replicas > 1:
            batches = batches[:len(batches) - len(batches) % self.num_replicas]
        return batches

    def __iter__(self):
        return iter(self.local_batches())

    def __len__(self):
        count = -(-len(self.pids) // self.batchid)
        if count > 1 and len(self.pids) % self.batchid == 1:
            count -= 1
        if self.num_replicas > 1:
            count -= count % self.num_replicas
        return len(range(self.rank, count, self.num_replicas))
