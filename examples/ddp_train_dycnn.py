#!/usr/bin/python3
"""Trains a small dynamic CNN (DY-CNN) with DistributedDataParallel on the CPU: two processes
on this machine (gloo backend, 127.0.0.1), each training on its half of every batch, with the
dynamic convolutions computed by libdynconv (dynconv.torch).

    DYNCONV_LIBRARY=build/release/src/libdynconv.so.1 PYTHONPATH=python \\
        /usr/bin/python3 examples/ddp_train_dycnn.py [--processes 2] [--epochs 4]

The task is synthetic, so that the example needs no download: 12x12 images of noise with a
bright 3x3 square in one of four quadrants; the label is the quadrant. The temperature of every
dynamic layer anneals from 30 to 1 over the first epoch (the paper's schedule, shortened).
"""

import argparse
import os
import socket
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

from dynconv.torch import DynamicConv2d, DynamicLinear, set_temperature_schedule, step_temperature


class DyCNN(nn.Module):
    def __init__(self, classes=4):
        super().__init__()
        self.features = nn.Sequential(
            DynamicConv2d(1, 8, 3, padding=1, num_kernels=4), nn.ReLU(),
            DynamicConv2d(8, 16, 3, stride=2, padding=1, num_kernels=4), nn.ReLU(),
            DynamicConv2d(16, 16, 3, padding=1, groups=2, num_kernels=4), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(2)  # keeps where in the image a feature is
        self.head = DynamicLinear(16 * 4, classes, num_kernels=2)

    def forward(self, x):
        return self.head(self.pool(self.features(x)).flatten(1))


def dataset(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = 0.5 * torch.randn(n, 1, 12, 12, generator=g)
    labels = torch.randint(0, 4, (n,), generator=g)
    for i in range(n):
        q = int(labels[i])
        top = (q // 2) * 6 + int(torch.randint(0, 4, (1,), generator=g))
        left = (q % 2) * 6 + int(torch.randint(0, 4, (1,), generator=g))
        x[i, 0, top:top + 3, left:left + 3] += 2.0
    return x, labels


def train(rank, world, port, epochs, batch):
    torch.set_num_threads(1)  # one core per process
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=120))
    torch.manual_seed(0)  # DDP also broadcasts rank 0's parameters at construction
    model = nn.parallel.DistributedDataParallel(DyCNN())
    x, labels = dataset(1024, seed=1)
    x_test, labels_test = dataset(256, seed=2)
    steps_per_epoch = len(x) // batch
    set_temperature_schedule(model, 30.0, 1.0, steps_per_epoch)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    share = batch // world
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        total = 0.0
        for step in range(steps_per_epoch):
            idx = order[step * batch:(step + 1) * batch][rank * share:(rank + 1) * share]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), labels[idx])
            loss.backward()  # DDP averages the gradients of the processes here
            opt.step()
            t = step_temperature(model)
            total += float(loss)
        with torch.no_grad():
            accuracy = (model.module(x_test).argmax(1) == labels_test).float().mean()
        if rank == 0:
            print(f"epoch {epoch + 1}: mean loss {total / steps_per_epoch:.3f}, temperature "
                  f"{t:g}, test accuracy {100 * float(accuracy):.1f}%", flush=True)
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch", type=int, default=32, help="global batch (split between them)")
    args = p.parse_args()
    if args.batch % args.processes:
        p.error("--batch must be a multiple of --processes")
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(train, args=(args.processes, port, args.epochs, args.batch),
             nprocs=args.processes, join=True)


if __name__ == "__main__":
    main()
