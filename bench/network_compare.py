#!/usr/bin/python3
"""Whole-network forward latency: libdynconv (dynconv.Network on the file that
dynconv.export.export_network wrote from the model) against PyTorch eager on the same model:

  dy_resnet18     kaijieshi7-style DY-ResNet-18 (bench/train_step.py's model: Dynamic_conv2d in
                  every 3x3 and 1x1 layer of the blocks, K = 4, static 7x7 stem, fc)
  resnet18        its static twin: the same model with nn.Conv2d in those places
  dy_mobilenetv2  TArdelean-style DY-MobileNetV2 (width 1.0: DynamicConvolution in every
                  pointwise and depthwise layer, K = 4, forward(x, temperature), static stem)
  mobilenetv2     its static twin

    DYNCONV_LIBRARY=build/release/src/libdynconv.so.1 PYTHONPATH=python \\
        /usr/bin/python3 bench/network_compare.py [--size 224] [--batches 1 16] \\
        [--threads 1 2] [--repeats 7] [--models ...] [--md FILE] [--json FILE] [--smoke]

Each thread count runs in a fresh process with OMP_NUM_THREADS and OPENBLAS_NUM_THREADS set to
it, torch.set_num_threads(it) and Network.threads = it. Inside a process, per batch size, every
repeat runs each model once in libdynconv and once in PyTorch, one right after the other, so
that a change of machine load hits both sides of a ratio; reported: medians over the repeats
(after two warm-up forwards each), min - max, the process CPU time, and ratios as medians of
the per-repeat ratios (PyTorch / libdynconv of one model, dynamic / static of one side: times
taken one right after the other). Only the forward
is timed: libdynconv's into preallocated outputs after its reshape, PyTorch's under
torch.no_grad() in evaluation mode. Before timing, the two outputs of each model are compared
(a fast wrong result must not pass).

OpenBLAS 0.3.21 falls back to its slow Prescott kernels on some AVX-512 Xeons;
OPENBLAS_CORETYPE must be set before it loads. Unless the caller set it (kept), the script
asks `dynconv info` (DYNCONV_CLI, default build/release/tools/dynconv) for the suggested core,
as scripts/openblas-env.sh does; the report names the core each side ran.

--smoke: 32x32 inputs, batches 1 and 2, 1 thread, 1 repeat: checks that the benchmark runs
(the outputs agree, every figure is there); measures nothing.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import workload

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODELS = ("dy_resnet18", "resnet18", "dy_mobilenetv2", "mobilenetv2")
DEFAULT_MODELS = MODELS
# dynamic model -> its static twin, for the dynamic / static ratios
TWINS = {"dy_resnet18": "resnet18", "dy_mobilenetv2": "mobilenetv2"}
# The outputs must agree to this, relative to the largest logit.
AGREEMENT = 1e-3


def mobilenetv2(dynamic=True, classes=1000):
    """TArdelean-style DY-MobileNetV2 (their DynamicConvolution layout: kernels_weights [K,
    C_out, C_in/g, kh, kw], attention.to_scores = Linear, ReLU, Linear on the pooled input,
    softmax(scores / T) with T a forward argument; the K kernels mixed by a broadcast product
    and sum, then one grouped conv over the batch). dynamic=False: nn.Conv2d layers that take
    and ignore the temperature, as in their static baseline."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class TempModule(nn.Module):
        """A module whose forward takes (x, temperature)."""

    class Attention(nn.Module):
        def __init__(self, channels, hidden, kernels):
            super().__init__()
            self.to_scores = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True),
                                           nn.Linear(hidden, kernels))

        def forward(self, x, temperature):
            return F.softmax(self.to_scores(x.mean((2, 3))) / temperature, dim=-1)

    class DynamicConvolution(TempModule):
        def __init__(self, inp, oup, kernel, stride=1, padding=0, groups=1, kernels=4,
                     reduce=4):
            super().__init__()
            self.groups = groups
            self.conv_args = {"stride": stride, "padding": padding, "dilation": 1}
            self.attention = Attention(inp, max(1, inp // reduce), kernels)
            self.kernels_weights = nn.Parameter(torch.empty(kernels, oup, inp // groups, kernel,
                                                            kernel))
            self.register_parameter("kernels_bias", None)
            with torch.no_grad():
                for k in range(kernels):
                    nn.init.kaiming_uniform_(self.kernels_weights[k], nonlinearity="relu")

        def forward(self, x, temperature):
            n = x.shape[0]
            alphas = self.attention(x, temperature).view(n, -1, 1, 1, 1, 1)
            weight = (self.kernels_weights.unsqueeze(0) * alphas).sum(1)
            weight = weight.view(-1, *weight.shape[-3:])
            y = F.conv2d(x.reshape(1, -1, *x.shape[-2:]), weight, None,
                         groups=self.groups * n, **self.conv_args)
            return y.view(n, -1, *y.shape[-2:])

    class StaticConv(nn.Conv2d, TempModule):
        def forward(self, x, temperature):
            return super().forward(x)

    def conv(inp, oup, kernel, stride=1, padding=0, groups=1):
        if dynamic:
            return DynamicConvolution(inp, oup, kernel, stride, padding, groups)
        return StaticConv(inp, oup, kernel, stride, padding, groups=groups, bias=False)

    class TempSequential(TempModule):
        def __init__(self, *layers):
            super().__init__()
            self.layers = nn.ModuleList(layers)

        def forward(self, x, temperature):
            for m in self.layers:
                x = m(x, temperature) if isinstance(m, TempModule) else m(x)
            return x

    class InvertedResidual(TempModule):
        def __init__(self, inp, oup, stride, expand):
            super().__init__()
            hidden = inp * expand
            self.identity = stride == 1 and inp == oup
            layers = []
            if expand != 1:
                layers += [conv(inp, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
            layers += [conv(hidden, hidden, 3, stride, 1, hidden), nn.BatchNorm2d(hidden),
                       nn.ReLU6(inplace=True), conv(hidden, oup, 1), nn.BatchNorm2d(oup)]
            self.conv = TempSequential(*layers)

        def forward(self, x, temperature):
            y = self.conv(x, temperature)
            return x + y if self.identity else y

    class MobileNetV2(nn.Module):
        CFGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1))

        def __init__(self):
            super().__init__()
            layers = [TempSequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32),
                                     nn.ReLU6(inplace=True))]
            inp = 32
            for t, c, n, s in self.CFGS:
                for i in range(n):
                    layers.append(InvertedResidual(inp, c, s if i == 0 else 1, t))
                    inp = c
            self.features = TempSequential(*layers)
            self.conv = TempSequential(conv(inp, 1280, 1), nn.BatchNorm2d(1280),
                                       nn.ReLU6(inplace=True))
            self.classifier = nn.Linear(1280, classes)

        def forward(self, x, temperature):
            x = self.conv(self.features(x, temperature), temperature)
            x = F.adaptive_avg_pool2d(x, 1)
            return self.classifier(x.view(x.size(0), -1))

    return MobileNetV2()


def build(name):
    """(model in evaluation mode, extra forward arguments) of a benchmark model, its batch norms
    calibrated on a random batch (as after training): with the initial statistics the
    activations of the deep models fade, their logits barely depend on the input, and the
    check of the two outputs against each other would show little."""
    import torch
    import torch.nn as nn

    import train_step
    if name in ("dy_resnet18", "resnet18"):
        model, extra = train_step.build(1000, dynamic_layers=name == "dy_resnet18"), ()
    else:
        model, extra = mobilenetv2(dynamic=name == "dy_mobilenetv2"), (1.0,)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # a plain average over the calibration batch
    batch = torch.randn(8, 3, 64, 64) + torch.randn(8, 3, 1, 1)  # a colour cast per sample
    with torch.no_grad():
        model.train()(batch, *extra)
    return model.eval(), extra


def child(args):
    """One thread count: exports every model, checks, times; prints one JSON line."""
    import numpy as np
    import torch

    import dynconv
    from dynconv.export import export_network

    torch.set_num_threads(args.threads)
    workload.seed()
    results = {"threads": args.threads, "size": args.size, "torch": torch.__version__,
               "blas_core": dynconv.library().dynconv_blas_core().decode(),
               "coretype": os.environ.get("OPENBLAS_CORETYPE", ""),
               "library": dynconv.version(), "cases": []}
    models = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            model, extra = build(name)
            path = os.path.join(tmp, name + ".safetensors")
            concrete = {"temperature": extra[0]} if extra else None
            export_network(model, torch.randn(1, 3, args.size, args.size), path, concrete)
            net = dynconv.Network(path)
            os.unlink(path)  # the network holds its own copy
            net.threads = args.threads
            models[name] = (model, extra, net)
    for batch in args.batches:
        x = torch.randn(batch, 3, args.size, args.size) + torch.randn(batch, 3, 1, 1)
        xn = x.numpy()
        outs, times = {}, {}
        for name, (model, extra, net) in models.items():
            net.reshape(batch, args.size, args.size)
            outs[name] = np.empty(net.output_shapes()[0], dtype=np.float32)
            with torch.no_grad():
                for _ in range(2):
                    net.forward(xn, out=outs[name])
                    want = model(x, *extra)
            scale = float(want.abs().max())
            diff = float(np.abs(outs[name] - want.numpy()).max()) / max(scale, 1e-30)
            if batch > 1 and not float((want[0] - want[-1]).abs().max()) > 1e-3 * scale:
                sys.exit(f"network_compare: {name}: the logits do not depend on the input; "
                         "comparing the two sides would show nothing")
            if not diff <= AGREEMENT:
                sys.exit(f"network_compare: {name}, batch {batch}: libdynconv and PyTorch "
                         f"disagree ({diff:.2e} of the largest logit)")
            times[name] = {"model": name, "batch": batch, "threads": args.threads,
                           "agreement": diff, "peak_bytes": net.peak_bytes,
                           "lib_ms": [], "torch_ms": [], "lib_cpu_ms": [], "torch_cpu_ms": []}
        for _ in range(args.repeats):
            for name, (model, extra, net) in models.items():
                w0, c0 = time.perf_counter(), time.process_time()
                net.forward(xn, out=outs[name])
                w1, c1 = time.perf_counter(), time.process_time()
                with torch.no_grad():
                    model(x, *extra)
                w2, c2 = time.perf_counter(), time.process_time()
                t = times[name]
                t["lib_ms"].append(1e3 * (w1 - w0))
                t["torch_ms"].append(1e3 * (w2 - w1))
                t["lib_cpu_ms"].append(1e3 * (c1 - c0))
                t["torch_cpu_ms"].append(1e3 * (c2 - c1))
        results["cases"] += times.values()
    print(json.dumps(results))


def coretype_env():
    """The environment's OPENBLAS_CORETYPE decision (scripts/openblas-env.sh's rule), and a
    note on it for the report."""
    env = dict(os.environ)
    if env.get("OPENBLAS_CORETYPE"):
        return env, f"OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE']} (set by the caller)"
    cli = env.get("DYNCONV_CLI", os.path.join(ROOT, "build", "release", "tools", "dynconv"))
    try:
        info = subprocess.run([cli, "info"], capture_output=True, text=True, timeout=60).stdout
    except OSError:
        return env, f"OPENBLAS_CORETYPE unset (no dynconv tool at {cli} to ask)"
    for line in info.splitlines():
        if line.startswith("BLAS suggested core:"):
            core = line.split(":", 1)[1].strip()
            env["OPENBLAS_CORETYPE"] = core
            return env, f"OPENBLAS_CORETYPE={core} (OpenBLAS fell back to a generic core)"
    return env, "OPENBLAS_CORETYPE unset (OpenBLAS chose a core fit for the CPU)"


def paired(a, b):
    """The median of the per-repeat ratios a[i] / b[i] (both measured in the same repeat)."""
    return statistics.median(x / y for x, y in zip(a, b))


def spread(values):
    return f"{statistics.median(values):.1f} ({min(values):.1f} - {max(values):.1f})"


def table(results):
    """The report's tables: per (batch, threads) subset, one row per model; then the dynamic /
    static ratios. Ratios are medians of the per-repeat ratios (the two sides of a ratio ran
    one right after the other)."""
    lines = []
    cases = {(c["model"], c["batch"], c["threads"]): c for r in results for c in r["cases"]}
    subsets = sorted({(c["batch"], c["threads"]) for c in cases.values()})
    models = list(dict.fromkeys(c["model"] for r in results for c in r["cases"]))
    lines.append("| batch | threads | model | libdynconv ms, median (min - max) | "
                 "PyTorch ms, median (min - max) | PyTorch / libdynconv | "
                 "CPU ms, libdynconv / PyTorch |")
    lines.append("|---|---|---|---|---|---|---|")
    for batch, threads in subsets:
        for m in models:
            c = cases.get((m, batch, threads))
            if c is None:
                continue
            lines.append(f"| {batch} | {threads} | {m} | {spread(c['lib_ms'])} | "
                         f"{spread(c['torch_ms'])} | {paired(c['torch_ms'], c['lib_ms']):.2f}x | "
                         f"{statistics.median(c['lib_cpu_ms']):.0f} / "
                         f"{statistics.median(c['torch_cpu_ms']):.0f} |")
    pairs = [(d, s) for d, s in TWINS.items() if d in models and s in models]
    if pairs:
        lines.append("")
        lines.append("| batch | threads | dynamic / static | libdynconv | PyTorch | "
                     "libdynconv, CPU time | PyTorch, CPU time |")
        lines.append("|---|---|---|---|---|---|---|")
        for batch, threads in subsets:
            for d, s in pairs:
                cd, cs = cases.get((d, batch, threads)), cases.get((s, batch, threads))
                if cd is None or cs is None:
                    continue
                lines.append(f"| {batch} | {threads} | {d} / {s} | "
                             f"{paired(cd['lib_ms'], cs['lib_ms']):.2f}x | "
                             f"{paired(cd['torch_ms'], cs['torch_ms']):.2f}x | "
                             f"{paired(cd['lib_cpu_ms'], cs['lib_cpu_ms']):.2f}x | "
                             f"{paired(cd['torch_cpu_ms'], cs['torch_cpu_ms']):.2f}x |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=224, help="input height and width")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(DEFAULT_MODELS))
    p.add_argument("--smoke", action="store_true",
                   help="32x32, batches 1 and 2, 1 thread, 1 repeat: runs, measures nothing")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--md", help="also write the tables, with the settings, to this file")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.smoke:
        args.size, args.batches, args.threads, args.repeats = 32, [1, 2], [1], 1
    if args.child:
        args.threads = args.threads[0]
        child(args)
        return 0
    if args.size < 32 or args.repeats < 1 or min(args.batches) < 1 or min(args.threads) < 1:
        p.error("--size must be >= 32, --repeats, --batches and --threads >= 1")
    env, core_note = coretype_env()
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as bench/compare.sh: idle threads sleep
    load_start = open("/proc/loadavg").read().split()[:3]
    results = []
    for t in args.threads:
        env_t = dict(env, OMP_NUM_THREADS=str(t), OPENBLAS_NUM_THREADS=str(t))
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "--threads", str(t),
               "--size", str(args.size), "--repeats", str(args.repeats), "--batches",
               *map(str, args.batches), "--models", *args.models]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env_t)
        if r.returncode != 0:
            sys.stderr.write(r.stderr)
            return 1
        results.append(json.loads(r.stdout.strip().splitlines()[-1]))
    load_end = open("/proc/loadavg").read().split()[:3]
    first = results[0]
    header = (f"Whole-network forward, {args.size}x{args.size} input, {args.repeats} "
              f"interleaved repeats per case (medians), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n"
              f"CPU: {workload.cpu_model()} ({os.cpu_count()} logical CPUs); libdynconv "
              f"{first['library']}, OpenBLAS core {first['blas_core']}: {core_note}; PyTorch "
              f"{first['torch']}, OMP_WAIT_POLICY={env['OMP_WAIT_POLICY']}\n"
              f"Load average {' '.join(load_start)} at the start, {' '.join(load_end)} at the "
              f"end. Outputs agree to {max(c['agreement'] for r in results for c in r['cases']):.1e} "
              f"of the largest logit (worst case).")
    text = header + "\n\n" + table(results)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if args.md:
        with open(args.md, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
