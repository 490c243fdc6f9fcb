"""Run by test_runtime.py under ``torchrun --nproc_per_node 2``: a few DDP steps on the CPU."""

import json
import sys

import torch
import torch.distributed as dist
import torch.nn as nn

from common.data import RandomIdentitySampler
from common.runtime import close_distributed, init_distributed, seed_everything, select_device

env = init_distributed(cpu=True)
seed_everything(0)
device = select_device(cpu=True)
model = nn.parallel.DistributedDataParallel(nn.Linear(4, 2))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
pids = [i // 4 for i in range(64)]
sampler = RandomIdentitySampler(pids, batch_size=8, num_instances=4, seed=0,
                                num_replicas=env.world_size, rank=env.rank)
indices = list(sampler)
for start in range(0, len(indices), 8):
    x = torch.tensor([[float(i), 1.0, -1.0, float(env.rank)] for i in indices[start:start + 8]])
    loss = model(x).pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
weights = [torch.zeros_like(model.module.weight) for _ in range(env.world_size)]
dist.all_gather(weights, model.module.weight.detach())
seen = [None] * env.world_size
dist.all_gather_object(seen, indices)
if env.is_main:
    with open(sys.argv[1], "w") as handle:
        json.dump({"world_size": env.world_size, "backend": dist.get_backend(),
                   "same_weights": all(torch.equal(w, weights[0]) for w in weights),
                   "indices": seen}, handle)
del model, optimizer
close_distributed()
