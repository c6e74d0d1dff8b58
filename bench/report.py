#!/usr/bin/python3
"""Turns the JSON of dynconv-bench (Google Benchmark) and of torch_bench.py into the comparison
table, docs/benchmarks.md and the ratio plot. Called by bench/compare.sh; needs Python 3, and
python3-matplotlib for the plot.

Ratios are of times measured in the same run (so that the machine's load affects both sides):
  torch-dyn / lib     PyTorch batch-as-groups dynamic conv time / libdynconv dynamic time
  torch-static / lib  PyTorch static nn.Conv2d time / libdynconv dynamic time
  lib dyn / static    libdynconv dynamic (K = 4) time / libdynconv static (K = 1) time
  % sgemm             libdynconv dynamic GFLOP/s / square sgemm GFLOP/s, same thread count
GFLOP/s count the convolution's own operations, 2 * N * C_out * C_in/g * kh * kw * H_out * W_out.
"""

import argparse
import json
import math
import os
import re
import statistics
import sys

import workload

THREE_BY_THREE_MIN_CHANNELS = 128


def flops(layer, batch):
    o = workload.output_size(layer)
    return (2.0 * batch * layer["c_out"] * (layer["c_in"] // layer["groups"]) * layer["k"] ** 2
            * o * o)


def to_ms(value, unit):
    return value * {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def read_gbench(paths):
    """Context of the first file, and {run name: ms} over all files for the wall-clock time and
    for the CPU time: the median aggregate, or when the file has the single runs, their median,
    except for the sgemm reference, whose best run is what the machine can reach."""
    context, wall, cpu, runs = None, {}, {}, {}
    counters = {}
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        if context is None:
            context = data.get("context", {})
        for b in data.get("benchmarks", []):
            if b.get("error_occurred"):
                sys.exit(f"report: {b['name']} failed: {b.get('error_message', '')}")
            name = re.sub(r"/(process_time|real_time)", "", b.get("run_name", b["name"]))
            times = (to_ms(b["real_time"], b["time_unit"]), to_ms(b["cpu_time"], b["time_unit"]))
            if "workspace_bytes" in b and b.get("aggregate_name", "median") == "median":
                counters[name + "#workspace"] = b["workspace_bytes"]
            if b.get("run_type") == "aggregate":
                if b.get("aggregate_name") == "median" and not name.startswith("sgemm/"):
                    wall[name], cpu[name] = times
            else:
                runs.setdefault(name, []).append(times)
    for name, values in runs.items():
        pick = min if name.startswith("sgemm/") else statistics.median
        wall.setdefault(name, pick(v[0] for v in values))
        cpu.setdefault(name, pick(v[1] for v in values))
    wall.update(counters)  # "<run>#workspace": bytes, kept apart from the times by the '#'
    return context or {}, wall, cpu


def geomean(values):
    values = [v for v in values if v is not None and v > 0]
    if not values:
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


def fmt(v, digits=2):
    return "n/a" if v is None else f"{v:.{digits}f}"


def ratio(a, b):
    return None if a is None or b is None or b <= 0 else a / b


def build_rows(layers, lib, torch, sgemm_n, lib_cpu, torch_cpu):
    rows = []
    batches = sorted({int(m.group(1)) for k in lib for m in [re.search(r"/b(\d+)/", k)] if m})
    threads = sorted({int(m.group(1)) for k in lib if k.startswith("layer/")
                      for m in [re.search(r"/t(\d+)/", k)] if m})
    for layer in layers:
        for b in batches:
            for t in threads:
                key = f"layer/{layer['name']}/b{b}/t{t}"
                dyn, stat = lib.get(key + "/dynamic"), lib.get(key + "/static")
                if dyn is None:
                    continue
                tdyn = torch.get((layer["name"], b, t, "dynamic"))
                tstat = torch.get((layer["name"], b, t, "static"))
                gflops = flops(layer, b) / (dyn * 1e-3) / 1e9
                sg = lib.get(f"sgemm/{sgemm_n}/t{t}")
                sg_gflops = None if sg is None else 2.0 * sgemm_n ** 3 / (sg * 1e-3) / 1e9
                ws = lib.get(key + "/dynamic#workspace")
                row = dict(layer=layer, batch=b, threads=t, dyn=dyn, stat=stat,
                           ws_mb=None if ws is None else ws / 2 ** 20,
                           tdyn=tdyn, tstat=tstat, gflops=gflops,
                           r_tdyn=ratio(tdyn, dyn), r_tstat=ratio(tstat, dyn),
                           r_self=ratio(dyn, stat),
                           peak=None if sg_gflops is None else 100.0 * gflops / sg_gflops)
                # With one thread, CPU time is the work's cost even when other programs take
                # the core away now and then; with more threads it would add the threads up.
                if t == 1:
                    cdyn, cstat = lib_cpu.get(key + "/dynamic"), lib_cpu.get(key + "/static")
                    csg = lib_cpu.get(f"sgemm/{sgemm_n}/t1")
                    if cdyn and csg:
                        row["c_peak"] = 100.0 * (flops(layer, b) / cdyn) / (
                            2.0 * sgemm_n ** 3 / csg)
                    ctdyn = torch_cpu.get((layer["name"], b, t, "dynamic"))
                    ctstat = torch_cpu.get((layer["name"], b, t, "static"))
                    row.update(c_r_tdyn=ratio(ctdyn, cdyn), c_r_tstat=ratio(ctstat, cdyn),
                               c_r_self=ratio(cdyn, cstat))
                rows.append(row)
    return rows, batches, threads


def table(rows):
    head = ("| layer | N | threads | lib dyn ms | lib static ms | torch dyn ms | torch static ms "
            "| lib dyn GFLOP/s | torch-dyn / lib | torch-static / lib | lib dyn / static "
            "| % sgemm | lib dyn workspace MiB |")
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        lines.append(
            f"| {r['layer']['name']} | {r['batch']} | {r['threads']} | {fmt(r['dyn'], 3)} "
            f"| {fmt(r['stat'], 3)} | {fmt(r['tdyn'], 3)} | {fmt(r['tstat'], 3)} "
            f"| {fmt(r['gflops'], 1)} | {fmt(r['r_tdyn'])} | {fmt(r['r_tstat'])} "
            f"| {fmt(r['r_self'])} | {fmt(r['peak'], 0)} | {fmt(r['ws_mb'], 2)} |")
    return lines


def geomean_table(rows, batches, threads):
    lines = ["| subset | torch-dyn / lib | torch-static / lib | lib dyn / static |",
             "|---|---|---|---|"]
    subsets = [(f"N={b}, {t} thread{'s' if t > 1 else ''}",
                [r for r in rows if r["batch"] == b and r["threads"] == t])
               for b in batches for t in threads]
    subsets.append(("whole workload", rows))
    for label, sub in subsets:
        lines.append(f"| {label} | {fmt(geomean([r['r_tdyn'] for r in sub]))} "
                     f"| {fmt(geomean([r['r_tstat'] for r in sub]))} "
                     f"| {fmt(geomean([r['r_self'] for r in sub]))} |")
    one = [r for r in rows if "c_r_self" in r]
    if one:
        lines.append(f"| 1 thread, CPU time instead of wall-clock time "
                     f"| {fmt(geomean([r.get('c_r_tdyn') for r in one]))} "
                     f"| {fmt(geomean([r.get('c_r_tstat') for r in one]))} "
                     f"| {fmt(geomean([r['c_r_self'] for r in one]))} |")
    return lines


def case_label(r):
    return f"{r['layer']['name']} N={r['batch']} {r['threads']}T"


def target_specs(rows, have_torch):
    """The performance targets, each judged the same way on any set of cases:
      value     the figure of one case (None: the case does not count for this target)
      cpu       the same figure in 1-thread CPU time, or None
      goal      the threshold; higher: the figure must reach it, else stay at or below it
      strict    the figure must pass it (> rather than >=)
      rule      "mean": the verdict is the geometric mean's; "every": every case must pass
    Every case is also compared with the goal on its own, so that the cases below target are
    named even where the mean is met."""
    specs = []
    if have_torch:
        specs.append(dict(
            name="PyTorch batch-as-groups dynamic conv >= 2x slower than libdynconv "
                 "(geometric mean)",
            value=lambda r: r["r_tdyn"], cpu=lambda r: r.get("c_r_tdyn"), goal=2.0,
            higher=True, strict=False, rule="mean", unit="x"))
        specs.append(dict(
            name="... and slower on every layer",
            value=lambda r: r["r_tdyn"], cpu=lambda r: r.get("c_r_tdyn"), goal=1.0,
            higher=True, strict=True, rule="every", unit="x"))
        specs.append(dict(
            name="PyTorch static nn.Conv2d at most 1.10x faster than libdynconv's dynamic "
                 "layer (geometric mean of lib dyn / torch static)",
            value=lambda r: ratio(1.0, r["r_tstat"]),
            cpu=lambda r: ratio(1.0, r.get("c_r_tstat")), goal=1.10, higher=False,
            strict=False, rule="mean", unit="x"))
    specs.append(dict(
        name="libdynconv dynamic / static forward <= 1.10 (geometric mean)",
        value=lambda r: r["r_self"], cpu=lambda r: r.get("c_r_self"), goal=1.10, higher=False,
        strict=False, rule="mean", unit="x"))

    def dense_3x3(r):
        return (r["layer"]["k"] == 3 and r["layer"]["groups"] == 1
                and min(r["layer"]["c_in"], r["layer"]["c_out"]) >= THREE_BY_THREE_MIN_CHANNELS)

    if any(dense_3x3(r) and r["peak"] is not None for r in rows):
        specs.append(dict(
            name=f"dense 3x3 layers with >= {THREE_BY_THREE_MIN_CHANNELS} channels reach "
                 ">= 80% of the sgemm GFLOP/s (same thread count)",
            value=lambda r: r["peak"] if dense_3x3(r) else None,
            cpu=lambda r: r.get("c_peak") if dense_3x3(r) else None, goal=80.0, higher=True,
            strict=False, rule="every", unit="%"))
    return specs


def passes(spec, v):
    if spec["higher"]:
        return v > spec["goal"] if spec["strict"] else v >= spec["goal"]
    return v <= spec["goal"]


def fmt_value(spec, v):
    return f"{fmt(v, 0)}%" if spec["unit"] == "%" else f"{fmt(v)}x"


def judge(spec, rows, figure="value"):
    """The target on one set of cases: None when no case counts, else a dict with the
    aggregate figure, the worst case, the cases below target and the verdict."""
    cases = [(r, spec[figure](r)) for r in rows]
    cases = [(r, v) for r, v in cases if v is not None]
    if not cases:
        return None
    worst = (min if spec["higher"] else max)(cases, key=lambda rv: rv[1])
    below = [(r, v) for r, v in cases if not passes(spec, v)]
    if spec["rule"] == "mean":
        g = geomean([v for _, v in cases])
        measured, ok = fmt_value(spec, g), g is not None and passes(spec, g)
    else:
        lo, hi = min(v for _, v in cases), max(v for _, v in cases)
        measured = (fmt_value(spec, lo) if lo == hi
                    else f"{fmt_value(spec, lo)} to {fmt_value(spec, hi)}")
        ok = not below
    return dict(measured=measured, worst=f"{fmt_value(spec, worst[1])} ({case_label(worst[0])})",
                below=below, count=len(cases), verdict="met" if ok else "missed")


def subsets(rows, batches, threads):
    """The whole workload, then each batch size, each thread count and each combination: a
    verdict met on the whole may still be missed on one of them."""
    out = [("whole workload", rows)]
    out += [(f"N={b}", [r for r in rows if r["batch"] == b]) for b in batches]
    out += [(f"{t} thread{'s' if t > 1 else ''}", [r for r in rows if r["threads"] == t])
            for t in threads]
    if len(batches) > 1 and len(threads) > 1:
        out += [(f"N={b}, {t}T", [r for r in rows if r["batch"] == b and r["threads"] == t])
                for b in batches for t in threads]
    return [(label, sub) for label, sub in out if sub]


def targets(rows, have_torch):
    """[(target, measured, 1-thread CPU figure, worst case, cases below target, verdict)] on the
    whole workload's wall-clock times."""
    out = []
    for spec in target_specs(rows, have_torch):
        j = judge(spec, rows)
        if j is None:
            continue
        c = judge(spec, [r for r in rows if r["threads"] == 1], figure="cpu")
        cpu = "" if c is None else (f"{c['measured']}; {len(c['below'])} of {c['count']} "
                                    "cases below target")
        out.append((spec["name"], j["measured"], cpu, j["worst"],
                    f"{len(j['below'])} of {j['count']}", j["verdict"]))
    return out


def subset_targets(rows, batches, threads, have_torch):
    """Per target: a table of its verdict on every subset, then the cases below it."""
    lines = []
    for spec in target_specs(rows, have_torch):
        whole = judge(spec, rows)
        if whole is None:
            continue
        lines += [f"### {spec['name']}", "",
                  "| cases | measured | worst case | cases below target | verdict |",
                  "|---|---|---|---|---|"]
        for label, sub in subsets(rows, batches, threads):
            j = judge(spec, sub)
            if j is not None:
                lines.append(f"| {label} | {j['measured']} | {j['worst']} "
                             f"| {len(j['below'])} of {j['count']} | **{j['verdict']}** |")
        lines.append("")
        if whole["below"]:
            worst_first = sorted(whole["below"], key=lambda rv: rv[1],
                                 reverse=not spec["higher"])
            lines += ["Below target: " + ", ".join(f"{case_label(r)} ({fmt_value(spec, v)})"
                                                   for r, v in worst_first) + ".", ""]
        else:
            lines += ["Every case reaches the target on its own.", ""]
    return lines


def module_table(layers, cpu, batch):
    """Stages on their own against the whole forward, all in CPU time (1 thread), which the
    machine's load changes least."""
    mods = ["pool", "attention", "aggregate", "im2col", "gemm", "conv"]
    pipeline = ["pool", "attention", "aggregate", "conv"]
    lines = [f"| layer (N={batch}, 1 thread, CPU ms) | " + " | ".join(mods)
             + " | pool+attention+aggregate+conv | dynamic forward | static forward |",
             "|" + "---|" * (len(mods) + 4)]
    found = False
    for layer in layers:
        vals = {m: cpu.get(f"module/{layer['name']}/b{batch}/{m}") for m in mods}
        if all(v is None for v in vals.values()):
            continue
        found = True
        total = sum(vals[m] for m in pipeline if vals[m] is not None)
        fwd = cpu.get(f"layer/{layer['name']}/b{batch}/t1/dynamic")
        stat = cpu.get(f"layer/{layer['name']}/b{batch}/t1/static")
        lines.append(f"| {layer['name']} | "
                     + " | ".join(fmt(vals[m], 3) if vals[m] is not None else "-" for m in mods)
                     + f" | {fmt(total, 3)} | {fmt(fwd, 3)} | {fmt(stat, 3)} |")
    return lines if found else []


def limits(rows, layers, cpu, batch, sgemm_n):
    """Facts from this run's figures next to each missed target: where the time goes."""
    out = []
    by_layer = {}
    for r in rows:
        by_layer.setdefault(r["layer"]["name"], []).append(r)
    # Dynamic over static: the layers that pay most, and what mixing K kernels alone costs.
    worst = sorted(by_layer.items(), key=lambda kv: -geomean([r["r_self"] for r in kv[1]]))[:3]
    facts = []
    for name, rs in worst:
        agg = cpu.get(f"module/{name}/b{batch}/aggregate")
        stat = cpu.get(f"layer/{name}/b{batch}/t1/static")
        fact = f"{name} (dynamic / static {fmt(geomean([r['r_self'] for r in rs]))}x)"
        if agg is not None and stat:
            fact += (f": mixing the K kernels for N={batch} alone takes {fmt(agg, 2)} ms of CPU, "
                     f"{fmt(100 * agg / stat, 0)}% of the static forward's {fmt(stat, 2)} ms")
        facts.append(fact)
    out.append("- **Dynamic / static.** Largest overheads: " + "; ".join(facts) + ". The "
               "static layer skips the attention and the mixing; the dynamic one writes one "
               "kernel set per sample, which costs most where kernels are large next to the "
               "image (many channels, small spatial size).")
    # Share of the sgemm rate: how fast the bare GEMMs of each shape are.
    sg = cpu.get(f"sgemm/{sgemm_n}/t1")
    if sg:
        sg_rate = 2.0 * sgemm_n ** 3 / sg
        facts, narrow = [], []
        for layer in layers:
            if not (layer["k"] == 3 and layer["groups"] == 1
                    and min(layer["c_in"], layer["c_out"]) >= THREE_BY_THREE_MIN_CHANNELS):
                continue
            gemm = cpu.get(f"module/{layer['name']}/b{batch}/gemm")
            im2col = cpu.get(f"module/{layer['name']}/b{batch}/im2col")
            if gemm is None:
                continue
            o = workload.output_size(layer)
            share = 100 * flops(layer, batch) / gemm / sg_rate
            if share < 80.0:
                narrow.append(f"{layer['name']} (N = {o * o})")
            facts.append(
                f"{layer['name']}: the GEMMs alone ([{layer['c_out']} x "
                f"{layer['c_in'] * 9}] x [{layer['c_in'] * 9} x {o * o}] per sample) reach "
                f"{fmt(share, 0)}% of the sgemm rate"
                + (f", im2col adds {fmt(100 * im2col / gemm, 0)}% to their time"
                   if im2col is not None else ""))
        if facts:
            out.append("- **Share of the sgemm rate** (1 thread, CPU time, N=" + str(batch)
                       + "): " + "; ".join(facts) + "."
                       + (" Where the bare GEMMs stay below 80% ("
                          + ", ".join(narrow) + "), OpenBLAS itself does not reach its "
                          "square-matrix rate on that shape, so a convolution built on those "
                          "GEMMs cannot either." if narrow else "")
                       + " Where they reach it, the forward loses the rest outside the GEMMs "
                       "(im2col, mixing the kernels, and in wall-clock time the machine's "
                       "load): the table below sets the stages beside the forwards.")
    slower = [r for r in rows if r.get("r_tdyn") is not None and r["r_tdyn"] <= 1.0]
    if slower:
        out.append("- **Cases where PyTorch's dynamic convolution was not slower:** "
                   + ", ".join(f"{r['layer']['name']} N={r['batch']} {r['threads']}T "
                               f"({fmt(r['r_tdyn'])}x"
                               + (f", CPU time {fmt(r['c_r_tdyn'])}x" if r.get("c_r_tdyn")
                                  else "") + ")" for r in slower) + ".")
    return out


def plot(rows, batches, threads, have_torch, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    for r in rows:
        if r["layer"]["name"] not in names:
            names.append(r["layer"]["name"])
    configs = [(b, t) for b in batches for t in threads]
    panels = []
    if have_torch:
        panels.append(("r_tdyn", "PyTorch dynamic (batch-as-groups) time / libdynconv dynamic "
                       "time\nhigher is better for libdynconv; target: geometric mean >= 2, "
                       "every case > 1", [(2.0, "target 2x"), (1.0, "parity")], True))
        panels.append(("r_tstat", "PyTorch static nn.Conv2d time / libdynconv dynamic time\n"
                       "target: geometric mean >= 1/1.10", [(1 / 1.10, "target 0.91"),
                                                            (1.0, "parity")], True))
    panels.append(("r_self", "libdynconv dynamic (K=4) time / static (K=1) time\n"
                   "lower is better; target: geometric mean <= 1.10",
                   [(1.10, "target 1.10"), (1.0, "no overhead")], True))
    panels.append(("peak", "libdynconv dynamic GFLOP/s as % of the sgemm GFLOP/s (same threads)"
                   "\ntarget: >= 80% for dense 3x3 layers with >= 128 channels",
                   [(80.0, "target 80%")], False))
    fig, axes = plt.subplots(len(panels), 1, figsize=(13, 4.2 * len(panels)))
    if len(panels) == 1:
        axes = [axes]
    width = 0.8 / len(configs)
    colors = ["#4c72b0", "#55a868", "#c44e52", "#8172b2", "#ccb974", "#64b5cd"]
    for ax, (key, title, lines, log) in zip(axes, panels):
        for ci, (b, t) in enumerate(configs):
            xs, ys = [], []
            for li, name in enumerate(names):
                for r in rows:
                    if (r["layer"]["name"], r["batch"], r["threads"]) == (name, b, t) \
                            and r[key] is not None:
                        xs.append(li - 0.4 + width * (ci + 0.5))
                        ys.append(r[key])
            ax.bar(xs, ys, width, label=f"N={b}, {t}T", color=colors[ci % len(colors)])
        top = max(y for y, _ in lines)
        for y, label in lines:
            ax.axhline(y, color="black", linestyle="--" if "target" in label else ":",
                       linewidth=1)
            # The highest line's label above it, the others below theirs: close lines stay
            # legible.
            ax.annotate(label, (len(names) - 0.45, y), fontsize=8, ha="right",
                        va="bottom" if y == top else "top")
        if log:
            ax.set_yscale("log")
            # Ticks at 1, 2, 5 times powers of ten: a panel spanning less than a decade still
            # gets labels.
            ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1, 2, 5)))
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=20, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(configs), fontsize=9,
               title="batch N, threads T")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description="libdynconv vs PyTorch benchmark report")
    ap.add_argument("--dynconv", required=True, nargs="+", help="dynconv-bench JSON outputs")
    ap.add_argument("--torch", nargs="*", default=[],
                    help="torch_bench.py JSON outputs (none: libdynconv only)")
    ap.add_argument("--layers", required=True)
    ap.add_argument("--sgemm", type=int, default=2048)
    ap.add_argument("--md", help="Markdown report to write")
    ap.add_argument("--png", help="ratio plot to write")
    ap.add_argument("--command", default="bench/compare.sh", help="how the run was made")
    ap.add_argument("--settings", default="", help="repeats and minimum times, for the record")
    ap.add_argument("--date", default="")
    ap.add_argument("--load", default="", help="load averages seen during the run")
    ap.add_argument("--append", nargs="*", default=[],
                    help="markdown sections appended to the report as they are "
                         "(bench/backward_compare.sh --md)")
    args = ap.parse_args()

    try:
        layers = workload.read_layers(args.layers)
    except workload.WorkloadError as e:
        sys.exit(f"report: {e}")
    ctx, lib, lib_cpu = read_gbench(args.dynconv)
    torch_ctx, torch, torch_cpu = {}, {}, {}
    for path in args.torch:
        with open(path) as f:
            data = json.load(f)
        torch_ctx = torch_ctx or data["context"]
        torch.update({(r["layer"], r["batch"], r["threads"], r["variant"]): r["ms"]
                      for r in data["results"]})
        torch_cpu.update({(r["layer"], r["batch"], r["threads"], r["variant"]): r["cpu_ms"]
                          for r in data["results"] if "cpu_ms" in r})
    have_torch = bool(torch)
    rows, batches, threads = build_rows(layers, lib, torch, args.sgemm, lib_cpu, torch_cpu)
    if not rows:
        sys.exit("report: no layer results in " + " ".join(args.dynconv))

    core = ctx.get("blas_core", "unknown")
    isa = ctx.get("cpu_isa", "")
    better = ctx.get("blas_better_core", "")
    warn = None
    if better:
        warn = (f"WARNING: OpenBLAS ran its generic \"{core}\" kernels on a CPU with "
                f"{isa.upper()}: every BLAS-bound figure below is several times too low. Set "
                f"OPENBLAS_CORETYPE={better} before starting the programs (bench/compare.sh "
                "does it through scripts/openblas-env.sh when OpenBLAS falls back).")
    sgemm = {t: lib.get(f"sgemm/{args.sgemm}/t{t}") for t in threads}
    sgemm_gf = {t: (None if v is None else 2.0 * args.sgemm ** 3 / (v * 1e-3) / 1e9)
                for t, v in sgemm.items()}

    env = [
        f"- Date: {args.date or ctx.get('date', '')}",
        f"- CPU: {ctx.get('cpu_model', 'unknown')} ({ctx.get('num_cpus', '?')} logical CPUs, "
        f"widest vector ISA: {isa or 'unknown'})",
        f"- BLAS: {ctx.get('blas_config', 'unknown')}; core in use: **{core}** "
        f"({'a generic fallback' if better else 'fit for the CPU'}); "
        f"OPENBLAS_CORETYPE={ctx.get('OPENBLAS_CORETYPE', '') or '(unset)'}",
        f"- libdynconv {ctx.get('libdynconv_version', '?')}; thread count set through "
        f"{ctx.get('thread_control', '?')}; threads measured: "
        f"{', '.join(str(t) for t in threads)}; batches: {', '.join(str(b) for b in batches)}",
        "- sgemm " + f"{args.sgemm}^3 (best repetition): " + ", ".join(
            f"{fmt(sgemm_gf[t], 1)} GFLOP/s with {t} thread{'s' if t > 1 else ''}"
            for t in threads),
    ]
    if have_torch:
        env.append(f"- PyTorch {torch_ctx.get('torch_version', '?')} (Python "
                   f"{torch_ctx.get('python', '?')}, oneDNN "
                   f"{'on' if torch_ctx.get('mkldnn') else 'off'}, CPU capability "
                   f"{torch_ctx.get('cpu_capability', '?') or '?'}), threads set with "
                   "torch.set_num_threads (and its OpenBLAS's count) to the same counts; "
                   f"OMP_WAIT_POLICY={torch_ctx.get('omp_wait_policy', '?')}")
    if args.settings:
        env.append(f"- Settings: {args.settings}")
    if args.load:
        env.append(f"- Load average (1, 5, 15 min) {args.load}: other processes on the "
                   "machine take cores from both sides; 2-thread figures suffer most")

    tab = table(rows)
    geo = geomean_table(rows, batches, threads)
    tgt = targets(rows, have_torch)
    per_subset = subset_targets(rows, batches, threads, have_torch)

    # Console output.
    if warn:
        print(warn)
    print("\n".join(env))
    print()
    print(f"{'layer':<22}{'N':>4}{'T':>3}{'lib dyn':>10}{'lib stat':>10}{'t dyn':>10}"
          f"{'t stat':>10}{'GF/s':>8}{'tdyn/lib':>9}{'tst/lib':>9}{'dyn/st':>8}{'%sgemm':>8}")
    for r in rows:
        print(f"{r['layer']['name']:<22}{r['batch']:>4}{r['threads']:>3}{fmt(r['dyn'], 3):>10}"
              f"{fmt(r['stat'], 3):>10}{fmt(r['tdyn'], 3):>10}{fmt(r['tstat'], 3):>10}"
              f"{fmt(r['gflops'], 1):>8}{fmt(r['r_tdyn']):>9}{fmt(r['r_tstat']):>9}"
              f"{fmt(r['r_self']):>8}{fmt(r['peak'], 0):>8}")
    print("(times in ms, medians; ratios of times)")
    print()
    print("\n".join(geo))
    print()
    for name, measured, cpu, worst, below, verdict in tgt:
        extra = f" (1 thread, CPU time: {cpu})" if cpu else ""
        print(f"[{verdict.upper():>6}] {name}: {measured}; worst {worst}; {below} cases below "
              f"target{extra}")
    for spec in target_specs(rows, have_torch):
        for label, sub in subsets(rows, batches, threads)[1:]:
            j = judge(spec, sub)
            if j is not None and j["verdict"] == "missed":
                print(f"  missed on {label}: {spec['name']}: {j['measured']}, worst "
                      f"{j['worst']}, {len(j['below'])} of {j['count']} below target")

    if args.md:
        md = ["# Benchmarks", "",
              "Generated by `" + args.command + "` (see the README); do not edit by hand. "
              "Times are medians of repeated runs, wall clock, in milliseconds. Ratios are "
              "of times measured in the same run. GFLOP/s count the convolution's own "
              "operations (2 * N * C_out * C_in/g * kh * kw * H_out * W_out), the same figure "
              "for the dynamic and the static variant, so the dynamic layer's extra work (the "
              "attention and the mixing of kernels) shows as a lower rate.", ""]
        if warn:
            md += ["> **" + warn + "**", ""]
        md += ["## Machine and settings", ""] + env + [""]
        md += ["## What was measured", "",
               "- **lib dyn**: `dynconv_conv2d_forward` with K = 4 kernels, attention hidden size "
               "C_in / 4, bias, temperature 1 (attention, mixing of kernels and convolution).",
               "- **lib static**: the same call and shape with K = 1, a static convolution.",
               "- **torch dyn**: the usual PyTorch dynamic convolution: attention, "
               "`torch.mm` of the attention with the K kernels, then one grouped `F.conv2d` "
               "with the batch folded into the channels (groups = groups * batch), under "
               "`torch.no_grad()`.",
               "- **torch static**: `nn.Conv2d` of the same shape with bias (oneDNN).",
               "- **% sgemm**: lib dyn GFLOP/s over the GFLOP/s of a square "
               f"{args.sgemm}^3 `cblas_sgemm` on the same OpenBLAS with the same thread count "
               "(its best repetition, at the start or the end of the run).",
               ""]
        md += ["## Targets", "",
               "Judged on the whole workload (every layer, batch and thread count) of this run, "
               "then below on each batch size and thread count apart. The worst case and the "
               "number of cases below target (each case compared with the target on its own) "
               "show whether a mean is carried by a few shapes. "
               "The targets were set for a 2-core AVX-512 machine with OpenBLAS on its SkylakeX "
               "kernels; the machine above is what this run had.", "",
               "| target | measured (wall clock) | worst case | cases below target "
               "| 1 thread, CPU time | verdict |",
               "|---|---|---|---|---|---|"]
        md += [f"| {n} | {m} | {w} | {b} | {c or '-'} | **{v}** |"
               for n, m, c, w, b, v in tgt]
        md += ["| the steady-state forward allocates nothing; peak memory of the largest "
               "layer close to the workspace formula | not measured by this tool (the README's "
               "performance and memory section has the peak memory; the workspace each handle "
               "asks for is in the last column of the table of every case) | - | - | - | "
               "not judged here |", "",
               "The verdicts use wall-clock times, what a user waits for. The CPU-time column "
               "repeats the figure for the 1-thread cases with the process CPU time of both "
               "sides: it leaves out the time other programs had the core, so when the two "
               "columns disagree, the machine's load decided the wall-clock figure.", ""]
        md += ["## Targets per batch size and thread count", "",
               "Each target judged on a subset of the cases the same way as on the whole "
               "workload (wall-clock times), with the cases below it named.", ""] + per_subset
        md += ["## Geometric means", ""] + geo + [""]
        md += ["## Every case", ""] + tab + [""]
        mt = module_table(layers, lib_cpu, max(batches))
        if mt:
            md += ["## What limits the missed targets", ""]
            md += limits(rows, layers, lib_cpu, max(batches), args.sgemm) + [""]
            md += ["## Where the time goes", "",
                   "Each stage of the generic pipeline on its own (internal layers, 1 BLAS "
                   "thread, whole batch): global average pool, the attention's fully connected "
                   "layers and softmax, mixing of the K kernels for the whole batch, the two "
                   "halves of the generic convolution path (im2col of every sample and group, "
                   "none for 1x1 layers; the GEMMs on an unfolded input), and `conv`, the "
                   "per-sample convolution as the library runs it for that shape (im2col + GEMM "
                   "or a faster path). The forward columns are the whole forwards with 1 thread; "
                   "they may order or fuse the stages differently. All in process CPU time, "
                   "which leaves out the time other programs had the core.", ""] + mt + [""]
        if args.png:
            md += ["## Plot", "", f"![ratios]({os.path.basename(args.png)})", ""]
        for path in args.append:
            with open(path) as f:
                md += [f.read().rstrip(), ""]
        with open(args.md, "w") as f:
            f.write("\n".join(md))
        print(f"\nwrote {args.md}")
    if args.png:
        plot(rows, batches, threads, have_torch, args.png)
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
