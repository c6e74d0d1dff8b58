#!/usr/bin/python3
"""Times one training step (forward + loss + backward) of a DY-ResNet-18 on the CPU: the model as
kaijieshi7's re-implementation builds it (every 3x3 convolution and every 1x1 downsample is a
dynamic convolution, K = 4, no kernel bias; the 7x7 stem and the classifier are static; batch
norm after each convolution), stock PyTorch against the same model after dynconv.torch.convert.

    DYNCONV_LIBRARY=build/release/src/libdynconv.so.1 PYTHONPATH=python \\
        /usr/bin/python3 bench/train_step.py [--batch 16] [--size 64] [--threads 1 2] [--repeats 7]

Each thread count runs in a fresh process with OMP_NUM_THREADS and OPENBLAS_NUM_THREADS set to
it and torch.set_num_threads(it), so that PyTorch, its BLAS and libdynconv all use that many.
Inside a process the two variants alternate step by step (after two warm-up steps each), so
that a change of machine load hits both; reported: the median step time, its spread (min-max),
the CPU time per step, and the ratio of the medians. The stock forward is the usual one: the
attention, the K kernels mixed with one torch.mm, one grouped F.conv2d over the batch folded
into the channels.
"""

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time

import workload

HERE = os.path.dirname(os.path.abspath(__file__))


def build(size_classes=100, dynamic_layers=True):
    """The DY-ResNet-18; dynamic_layers=False: the static ResNet-18 twin (nn.Conv2d without
    bias where the dynamic model has a dynamic convolution, all else the same)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    def dynamic(in_planes, out_planes, kernel_size, stride=1, padding=0):
        """kaijieshi7's Dynamic_conv2d (K = 4, T = 34, no kernel bias, Kaiming-uniform
        kernels, attention hidden size int(C_in / 4) + 1) in the batch-as-groups formulation."""
        if not dynamic_layers:
            return nn.Conv2d(in_planes, out_planes, kernel_size, stride, padding, bias=False)
        return workload.BatchAsGroupsDynamicConv2d(
            in_planes, out_planes, kernel_size, stride, padding, kernels=4,
            hidden=int(in_planes * 0.25) + 1, bias=False, temperature=34.0).kaiming_()

    class Block(nn.Module):
        def __init__(self, inplanes, planes, stride):
            super().__init__()
            self.conv1 = dynamic(inplanes, planes, 3, stride, 1)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = dynamic(planes, planes, 3, 1, 1)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = None
            if stride != 1 or inplanes != planes:
                self.downsample = nn.Sequential(dynamic(inplanes, planes, 1, stride),
                                                nn.BatchNorm2d(planes))

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            identity = x if self.downsample is None else self.downsample(x)
            return F.relu(out + identity)

    class DyResNet18(nn.Module):
        def __init__(self, classes):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            layers, inplanes = [], 64
            for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
                layers.append(nn.Sequential(Block(inplanes, planes, stride),
                                            Block(planes, planes, 1)))
                inplanes = planes
            self.layer1, self.layer2, self.layer3, self.layer4 = layers
            self.fc = nn.Linear(512, classes)

        def forward(self, x):
            x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    return DyResNet18(size_classes)


def one_thread_count(args):
    """Runs in the child process: times both variants at args.threads."""
    import torch
    import torch.nn.functional as F

    from dynconv.torch import convert

    torch.set_num_threads(args.threads)
    workload.seed()
    stock = build()
    converted = convert(copy.deepcopy(stock))
    x = torch.randn(args.batch, 3, args.size, args.size)
    labels = torch.randint(0, 100, (args.batch,))

    def step(model):
        model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), labels)
        loss.backward()

    times = {"stock": [], "dynconv": []}
    cpu = {"stock": [], "dynconv": []}
    for _ in range(2):
        step(stock)
        step(converted)
    for _ in range(args.repeats):
        for name, model in (("stock", stock), ("dynconv", converted)):
            w0, c0 = time.perf_counter(), time.process_time()
            step(model)
            times[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
    # The two compute the same function: check it once, so that a fast wrong result cannot pass.
    with torch.no_grad():
        stock.eval()
        converted.eval()
        a, b = stock(x), converted(x)
    err = float((a - b).abs().max() / (a.abs().max() + 1e-12))
    out = {"threads": args.threads, "batch": args.batch, "size": args.size,
           "max_relative_difference": err}
    for name in times:
        out[name] = {"median_ms": 1e3 * statistics.median(times[name]),
                     "min_ms": 1e3 * min(times[name]), "max_ms": 1e3 * max(times[name]),
                     "cpu_ms": 1e3 * statistics.median(cpu[name])}
    out["speedup"] = out["stock"]["median_ms"] / out["dynconv"]["median_ms"]
    print(json.dumps(out))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=64, help="input height and width")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.threads = args.threads[0]
        one_thread_count(args)
        return 0
    results = []
    for t in args.threads:
        env = dict(os.environ, OMP_NUM_THREADS=str(t), OPENBLAS_NUM_THREADS=str(t))
        r = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", "--threads",
                            str(t), "--batch", str(args.batch), "--size", str(args.size),
                            "--repeats", str(args.repeats)], capture_output=True, text=True,
                           env=env)
        if r.returncode != 0:
            sys.stderr.write(r.stderr)
            return 1
        results.append(json.loads(r.stdout.strip().splitlines()[-1]))
    print(f"DY-ResNet-18 training step (forward + backward), batch {args.batch}, "
          f"{args.size}x{args.size} input, {args.repeats} interleaved steps per variant")
    print(f"{'threads':>7}  {'stock ms (min-max)':>24}  {'dynconv ms (min-max)':>24}  "
          f"{'CPU ms stock/dynconv':>20}  speedup")
    for r in results:
        s, d = r["stock"], r["dynconv"]
        print(f"{r['threads']:>7}  {s['median_ms']:>8.0f} ({s['min_ms']:.0f}-{s['max_ms']:.0f})"
              f"{'':>6}  {d['median_ms']:>8.0f} ({d['min_ms']:.0f}-{d['max_ms']:.0f}){'':>6}  "
              f"{s['cpu_ms']:>9.0f}/{d['cpu_ms']:<9.0f}  {r['speedup']:.2f}x   "
              f"(outputs agree to {r['max_relative_difference']:.1e})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
