"""One process of test_distributed: trains a small dynamic CNN for two steps under
DistributedDataParallel (gloo, CPU) on its share of a fixed batch, and saves the gradients of
the first step and the parameters after the second.

    ddp_worker.py RANK WORLD_SIZE PORT OUT.pt      (WORLD_SIZE 1: the whole batch, no DDP)
"""

import sys
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn as nn

from dynconv.torch import DynamicConv2d, DynamicLinear


class SmallDyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = DynamicConv2d(3, 8, 3, padding=1, num_kernels=3, temperature=2.0)
        self.conv2 = DynamicConv2d(8, 8, 3, stride=2, padding=1, groups=2, num_kernels=4,
                                   temperature=2.0)
        self.fc = DynamicLinear(8, 5, num_kernels=2, temperature=2.0)

    def forward(self, x):
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(h.mean((2, 3)))


def batch():
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(8, 3, 10, 10, generator=g)
    labels = torch.randint(0, 5, (8,), generator=g)
    return x, labels


def main():
    rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    torch.set_num_threads(1)
    torch.manual_seed(7)  # the same initial model in every process
    model = SmallDyCNN()
    x, labels = batch()
    share = x.shape[0] // world
    x, labels = x[rank * share:(rank + 1) * share], labels[rank * share:(rank + 1) * share]
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world, timeout=timedelta(seconds=60))
        trained = nn.parallel.DistributedDataParallel(model)
    else:
        trained = model
    opt = torch.optim.SGD(trained.parameters(), lr=0.5)
    grads = None
    for step in range(2):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(trained(x), labels)
        loss.backward()
        if step == 0:
            grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        opt.step()
    torch.save({"grads": grads, "params": {n: p.detach().clone()
                                           for n, p in model.named_parameters()}}, out)
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
