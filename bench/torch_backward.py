#!/usr/bin/python3
"""Times the forward and the autograd backward of the usual PyTorch dynamic convolution on a
layer list (format of bench/layers.txt), for bench/backward_compare.sh.

Run with Debian's system interpreter (it has python3-torch):

    /usr/bin/python3 bench/torch_backward.py --layers bench/layers.txt --batch 16

The layer is the common re-implementation: attention (average pool, 1x1 conv, ReLU, 1x1 conv,
softmax / T), the K kernels mixed per sample with one torch.mm, then one grouped conv2d over the
batch folded into the channels (groups = groups * batch). "forward" is its forward with autograd
recording; "backward" is y.backward(dy) on that graph (retain_graph, so the same graph is timed
again), computing dL/dx and every parameter's gradient. Prints one tab-separated line per layer:
    name  batch  forward_ms  backward_ms
each the median over --repeats runs of at least --min-time seconds, after a warm-up.
"""

import argparse
import ctypes
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

KERNELS = 4
REDUCTION = 4


class BatchAsGroupsDynamicConv2d(nn.Module):
    def __init__(self, c_in, c_out, k, stride, pad, groups):
        super().__init__()
        hidden = max(1, c_in // REDUCTION)
        self.c_in, self.c_out, self.k = c_in, c_out, k
        self.stride, self.pad, self.groups = stride, pad, groups
        self.fc1 = nn.Conv2d(c_in, hidden, 1, bias=False)
        self.fc2 = nn.Conv2d(hidden, KERNELS, 1, bias=True)
        fan_in = c_in // groups * k * k
        self.weight = nn.Parameter(torch.randn(KERNELS, c_out, c_in // groups, k, k) / fan_in)
        self.bias = nn.Parameter(0.1 * torch.randn(KERNELS, c_out))

    def forward(self, x):
        b, _, h, w = x.shape
        a = F.adaptive_avg_pool2d(x, 1)
        pi = F.softmax(self.fc2(F.relu(self.fc1(a))).view(b, -1), dim=1)
        weight = torch.mm(pi, self.weight.view(KERNELS, -1))
        weight = weight.view(b * self.c_out, self.c_in // self.groups, self.k, self.k)
        bias = torch.mm(pi, self.bias).view(-1)
        y = F.conv2d(x.reshape(1, -1, h, w), weight, bias, self.stride, self.pad, 1,
                     self.groups * b)
        return y.view(b, self.c_out, y.size(-2), y.size(-1))


def median_ms(fn, repeats, min_time):
    fn()
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    iters = max(1, int(min_time / once) + 1)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        samples.append((time.perf_counter() - start) / iters)
    return 1e3 * statistics.median(samples)


def read_layers(path):
    for lineno, line in enumerate(open(path), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) != 8:
            sys.exit(f"torch_backward: {path}:{lineno}: expected 8 fields")
        yield fields[0], [int(v) for v in fields[1:]]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", required=True)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=0.2)
    ap.add_argument("--filter", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    # Debian's torch runs torch.mm on OpenBLAS, with a thread pool of its own: match it.
    try:
        ctypes.CDLL("libopenblas.so.0", mode=getattr(os, "RTLD_NOLOAD", 4)) \
            .openblas_set_num_threads(args.threads)
    except (OSError, AttributeError):
        pass
    torch.manual_seed(0)
    print(f"torch_backward: torch {torch.__version__}, {args.threads} thread(s)", file=sys.stderr)
    for name, (c_in, c_out, k, stride, pad, groups, size) in read_layers(args.layers):
        if args.filter not in name:
            continue
        m = BatchAsGroupsDynamicConv2d(c_in, c_out, k, stride, pad, groups)
        x = torch.randn(args.batch, c_in, size, size, requires_grad=True)
        fwd = median_ms(lambda: m(x), args.repeats, args.min_time)
        y = m(x)
        dy = torch.randn_like(y)
        bwd = median_ms(lambda: y.backward(dy, retain_graph=True), args.repeats, args.min_time)
        print(f"{name}\t{args.batch}\t{fwd:.4f}\t{bwd:.4f}", flush=True)


if __name__ == "__main__":
    main()
