#!/usr/bin/python3
"""Times the benchmark workload in PyTorch, for bench/compare.sh.

Run with Debian's system interpreter (it has python3-torch):

    /usr/bin/python3 bench/torch_bench.py --layers bench/layers.txt --out torch.json

For every layer of the list, batch size and thread count it times, in inference mode:
  dynamic  the dynamic convolution as the common PyTorch re-implementation writes it: attention
           (average pool, 1x1 conv, ReLU, 1x1 conv, softmax / T), the K kernels mixed per sample
           with one torch.mm, then ONE grouped F.conv2d over the batch folded into the channels
           (groups = groups * batch);
  static   nn.Conv2d of the same shape (oneDNN), with bias.
Each figure is the median over --repeats timed runs of at least --min-time seconds each, after a
warm-up. Writes JSON: {"context": {...}, "results": [{layer, batch, threads, variant, ms, ...}]}.
"""

import argparse
import ctypes
import ctypes.util
import json
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

KERNELS = 4
REDUCTION = 4


def read_layers(path):
    layers = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split("#", 1)[0].split()
            if not fields:
                continue
            if len(fields) != 8:
                sys.exit(f"torch_bench: {path}:{lineno}: expected 8 fields, got {len(fields)}")
            try:
                c_in, c_out, k, s, p, g, size = (int(v) for v in fields[1:])
            except ValueError:
                sys.exit(f"torch_bench: {path}:{lineno}: sizes must be integers")
            layers.append(dict(name=fields[0], c_in=c_in, c_out=c_out, k=k, stride=s, pad=p,
                               groups=g, size=size))
    if not layers:
        sys.exit(f"torch_bench: {path} lists no layers")
    return layers


class BatchAsGroupsDynamicConv2d(nn.Module):
    """Dynamic convolution the way the widely used PyTorch re-implementation computes it."""

    def __init__(self, c_in, c_out, k, stride, pad, groups, kernels=KERNELS, temperature=1.0):
        super().__init__()
        hidden = max(1, c_in // REDUCTION)
        self.c_in, self.c_out, self.k = c_in, c_out, k
        self.stride, self.pad, self.groups = stride, pad, groups
        self.kernels, self.temperature = kernels, temperature
        self.fc1 = nn.Conv2d(c_in, hidden, 1, bias=False)
        self.fc2 = nn.Conv2d(hidden, kernels, 1, bias=True)
        self.weight = nn.Parameter(torch.randn(kernels, c_out, c_in // groups, k, k) /
                                   (c_in // groups * k * k))
        self.bias = nn.Parameter(0.1 * torch.randn(kernels, c_out))

    def forward(self, x):
        b, _, h, w = x.shape
        a = F.adaptive_avg_pool2d(x, 1)
        a = self.fc2(F.relu(self.fc1(a))).view(b, -1)
        pi = F.softmax(a / self.temperature, dim=1)
        weight = torch.mm(pi, self.weight.view(self.kernels, -1))
        weight = weight.view(b * self.c_out, self.c_in // self.groups, self.k, self.k)
        bias = torch.mm(pi, self.bias).view(-1)
        y = F.conv2d(x.reshape(1, -1, h, w), weight, bias, self.stride, self.pad, 1,
                     self.groups * b)
        return y.view(b, self.c_out, y.size(-2), y.size(-1))


def self_check():
    """The batch-as-groups forward must equal the definition, sample by sample, or its timings
    would mean nothing."""
    m = BatchAsGroupsDynamicConv2d(6, 4, 3, 2, 1, 2).eval()
    with torch.no_grad():
        m.fc2.bias.normal_()  # spread the attention so every kernel matters
        x = torch.randn(3, 6, 9, 9)
        y = m(x)
        pooled = x.mean((2, 3))
        z = F.linear(F.relu(F.linear(pooled, m.fc1.weight.flatten(1))),
                     m.fc2.weight.flatten(1), m.fc2.bias)
        pi = F.softmax(z, dim=1)
        for n in range(x.shape[0]):
            w = (pi[n].view(-1, 1, 1, 1, 1) * m.weight).sum(0)
            b = (pi[n].view(-1, 1) * m.bias).sum(0)
            ref = F.conv2d(x[n:n + 1], w, b, 2, 1, 1, 2)
            if not torch.allclose(y[n:n + 1], ref, rtol=1e-4, atol=1e-5):
                sys.exit("torch_bench: the batch-as-groups forward disagrees with the definition")


def time_module(module, x, repeats, min_time):
    """Median wall-clock seconds per call over `repeats` runs of at least min_time seconds each,
    the samples, the iterations per run, and the median process CPU seconds per call."""
    module(x)  # warm-up: oneDNN primitive creation, first touch of the buffers
    start = time.perf_counter()
    module(x)
    once = max(time.perf_counter() - start, 1e-7)
    iters = max(1, int(min_time / once) + 1)
    samples, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(iters):
            module(x)
        samples.append((time.perf_counter() - start) / iters)
        cpu.append((time.process_time() - start_cpu) / iters)
    return statistics.median(samples), samples, iters, statistics.median(cpu)


def openblas_threads_setter():
    """Debian's torch does its torch.mm through OpenBLAS, which keeps its own thread pool beside
    torch's OpenMP threads: unless both get the same count, a 2-thread run has 4 busy threads on
    2 cores. Returns a function setting OpenBLAS's count, or None when it is not loaded."""
    for name in ("libopenblas.so.0", ctypes.util.find_library("openblas")):
        if not name:
            continue
        try:
            # RTLD_NOLOAD (4 on Linux): only the copy torch already loaded, never a second one.
            lib = ctypes.CDLL(name, mode=getattr(os, "RTLD_NOLOAD", 4))
        except OSError:
            continue
        fn = getattr(lib, "openblas_set_num_threads", None)
        if fn is not None:
            fn.argtypes = [ctypes.c_int]
            return fn
    return None


def cpu_capability():
    for line in torch.__config__.show().splitlines():
        if "CPU capability usage" in line:
            return line.split(":", 1)[1].strip()
    return ""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", required=True)
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=0.2)
    ap.add_argument("--only", default="", help="only the layer of this name")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    batches = [int(v) for v in args.batches.split(",")]
    threads = [int(v) for v in args.threads.split(",")]
    if args.repeats < 1 or args.min_time <= 0 or min(batches + threads) < 1:
        sys.exit("torch_bench: repeats, min-time, batches and threads must be positive")

    default_threads = torch.get_num_threads()
    torch.mm(torch.ones(2, 2), torch.ones(2, 2))  # makes sure the BLAS is loaded
    set_blas_threads = openblas_threads_setter()
    torch.manual_seed(0)
    self_check()
    results = []
    for layer in read_layers(args.layers):
        if args.only and layer["name"] != args.only:
            continue
        dyn = BatchAsGroupsDynamicConv2d(layer["c_in"], layer["c_out"], layer["k"],
                                         layer["stride"], layer["pad"], layer["groups"]).eval()
        static = nn.Conv2d(layer["c_in"], layer["c_out"], layer["k"], layer["stride"],
                           layer["pad"], groups=layer["groups"], bias=True).eval()
        for batch in batches:
            x = torch.randn(batch, layer["c_in"], layer["size"], layer["size"])
            for t in threads:
                torch.set_num_threads(t)
                if set_blas_threads is not None:
                    set_blas_threads(t)
                for variant, module in (("dynamic", dyn), ("static", static)):
                    with torch.no_grad():
                        sec, samples, iters, cpu = time_module(module, x, args.repeats,
                                                               args.min_time)
                    results.append(dict(layer=layer["name"], batch=batch, threads=t,
                                        variant=variant, ms=1e3 * sec, cpu_ms=1e3 * cpu,
                                        samples_ms=[1e3 * s for s in samples],
                                        iterations=iters))
                    print(f"torch {layer['name']:<22} b{batch:<3} t{t} {variant:<8}"
                          f" {1e3 * sec:9.3f} ms", flush=True)

    context = dict(torch_version=torch.__version__, python=platform.python_version(),
                   mkldnn=torch.backends.mkldnn.is_available(),
                   cpu_capability=cpu_capability(),
                   default_threads=default_threads, repeats=args.repeats,
                   min_time=args.min_time,
                   omp_wait_policy=os.environ.get("OMP_WAIT_POLICY", "(default)"),
                   openblas_threads_matched=set_blas_threads is not None,
                   openblas_coretype=os.environ.get("OPENBLAS_CORETYPE", ""))
    with open(args.out, "w") as f:
        json.dump(dict(context=context, results=results), f, indent=1)


if __name__ == "__main__":
    main()
