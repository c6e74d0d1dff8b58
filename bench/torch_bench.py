#!/usr/bin/python3
"""Times the benchmark workload in PyTorch, for bench/compare.sh.

Run with Debian's system interpreter (it has python3-torch):

    /usr/bin/python3 bench/torch_bench.py --layers bench/layers.txt --out torch.json

For every layer of the list, batch size and thread count it times, in inference mode:
  dynamic  the dynamic convolution as the common PyTorch re-implementation writes it
           (workload.BatchAsGroupsDynamicConv2d): attention (average pool, 1x1 conv, ReLU, 1x1
           conv, softmax / T), the K kernels mixed per sample with one torch.mm, then ONE
           grouped F.conv2d over the batch folded into the channels (groups = groups * batch);
  static   nn.Conv2d of the same shape (oneDNN), with bias (workload.static_conv2d).
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

import workload


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
    try:
        layers = workload.read_layers(args.layers)
    except workload.WorkloadError as e:
        sys.exit(f"torch_bench: {e}")
    workload.seed()
    problem = workload.check_against_definition()
    if problem:
        sys.exit(f"torch_bench: {problem}")
    results = []
    for layer in layers:
        if args.only and layer["name"] != args.only:
            continue
        dyn = workload.dynamic_conv2d(layer).eval()
        static = workload.static_conv2d(layer).eval()
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
                   cpu_capability=cpu_capability(), cpu_model=workload.cpu_model(),
                   default_threads=default_threads, repeats=args.repeats,
                   min_time=args.min_time,
                   omp_wait_policy=os.environ.get("OMP_WAIT_POLICY", "(default)"),
                   openblas_threads_matched=set_blas_threads is not None,
                   openblas_coretype=os.environ.get("OPENBLAS_CORETYPE", ""))
    with open(args.out, "w") as f:
        json.dump(dict(context=context, results=results), f, indent=1)


if __name__ == "__main__":
    main()
