#!/usr/bin/python3
"""Turns the JSON of dynconv-bench (Google Benchmark) and of torch_bench.py into the comparison
table, docs/benchmarks.md and the ratio plot. Called by bench/compare.sh; needs Python 3, and
python3-matplotlib for the plot.

Ratios are of times measured in the same run (so that the machine's load affects both sides):
  torch-dyn / lib     PyTorch batch-as-groups dynamic conv time / libdynconv dynamic time
  torch-static / lib  PyTorch static nn.Conv2d time / libdynconv dynamic time
  lib dyn / static    libdynconv dynamic (K = 4) time / libdynconv static (K = 1) time
  % sgemm             libdynconv dynamic GFLOP/s / square sgemm GFLOP/s, same thread count
                      (information, not a target)
GFLOP/s count the convolution's own operations, 2 * N * C_out * C_in/g * kh * kw * H_out * W_out.
Each case is also given what bounds it (bounds()): the time its convolution would take at the
sgemm rate, the time the K kernel sets take to read at the measured memory bandwidth, the same
for the activations, and the convolution's time on the tiles its columns fill.
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
# The batch at which dynamic / static is judged (the N=1 figures are shown, not judged).
SELF_RATIO_BATCH = 16
# K kernel sets up to this size stay in the last-level cache from one sample to the next, so a
# forward reads them from memory once (src/exec/plan.c, DC_CACHED_KERNELS).
CACHED_KERNEL_BYTES = 8 << 20
# The engine's tile (columns of a B panel, rows of an A panel) per widest ISA, when the run did
# not record it (src/gemm/kernels.c).
ENGINE_TILES = {"avx512f": (32, 8), "avx2": (16, 6)}
# Lanes of the tiles left idle must cost more than this share of the compute time before the
# GEMM shape, not compute, is named as the bound.
SHAPE_MARGIN = 1.05
# Hand-written benchmark notes next to the report (docs/), linked from it.
HAND_WRITTEN = [
    ("benchmarks-engine.md", "The own engine: before and after"),
    ("benchmarks-training.md", "Training step of a DY-ResNet-18 from PyTorch (dynconv.torch)"),
    ("benchmarks-networks.md", "Networks: whole-network forward, libdynconv against PyTorch "
     "eager"),
    ("benchmarks-backward.md", "Backward: the input gradient on the own engine"),
]
# The array dynconv-bench's bandwidth reference sums (membw/256/tT), in MiB.
MEMBW_MIB = 256
# Machine references: their best repetition is what the machine can reach.
REFERENCES = ("sgemm/", "membw/")


def flops(layer, batch):
    o = workload.output_size(layer)
    return (2.0 * batch * layer["c_out"] * (layer["c_in"] // layer["groups"]) * layer["k"] ** 2
            * o * o)


def to_ms(value, unit):
    return value * {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def read_gbench(paths):
    """Context of the first file, and {run name: ms} over all files for the wall-clock time and
    for the CPU time: the median aggregate, or when the file has the single runs, their median,
    except for the machine references (sgemm, memory bandwidth), whose best run is what the
    machine can reach. Counters kept: "<run>#workspace" and the dynamic layers' plan,
    "<run>#plan_engine" and the like."""
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
            if b.get("aggregate_name", "median") == "median":
                if "workspace_bytes" in b:
                    counters[name + "#workspace"] = b["workspace_bytes"]
                for key in ("plan_engine", "plan_nr", "plan_chunk", "plan_team", "plan_wino"):
                    if key in b:
                        counters[f"{name}#{key}"] = b[key]
            if b.get("run_type") == "aggregate":
                if b.get("aggregate_name") == "median" and not name.startswith(REFERENCES):
                    wall[name], cpu[name] = times
            else:
                runs.setdefault(name, []).append(times)
    for name, values in runs.items():
        pick = min if name.startswith(REFERENCES) else statistics.median
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


def derived_plan(layer, batch, threads, isa):
    """The plan of a dynamic layer's forward as src/exec derives it from the shape (the engine
    rule of exec/engine.c, the chunk of exec/plan.c, the team of exec/schedule.c), for runs
    whose dynconv-bench did not record it."""
    c_in, c_out, g, k = layer["c_in"], layer["c_out"], layer["groups"], layer["k"]
    o, kernels = workload.output_size(layer), workload.KERNELS
    plane, depth = o * o, c_in // g * k * k
    pointwise = k == 1 and layer["stride"] == 1 and layer["pad"] == 0
    depthwise = g == c_in and not pointwise
    nr, mr = ENGINE_TILES.get(isa, (8, 4))
    engine = not depthwise and plane >= nr and (k > 1 or (pointwise and 256 <= plane <= 1024))
    packed = g * -(-(c_out // g) // mr) * mr * depth
    hidden = max(1, c_in // workload.REDUCTION)
    per_batch = 8 * hidden > layer["size"] ** 2
    macs = batch * c_out * depth * plane
    floats = batch * (c_in * layer["size"] ** 2 + c_out * plane)
    team = 1 if macs + 8.0 * floats < 1e6 else threads
    per_thread = batch // threads
    if engine and packed * 4 * kernels > CACHED_KERNEL_BYTES:  # mixed slice by slice
        chunk = 1 if not per_batch or per_thread < 2 else min(per_thread, 8)
    else:
        kernel_bytes = (packed if engine else c_out * depth) * 4
        chunk = (1 if not per_batch or per_thread < 2 or kernel_bytes * kernels
                 <= CACHED_KERNEL_BYTES else max(1, min((32 << 20) // kernel_bytes, per_thread)))
    return dict(engine=engine, nr=None if depthwise else nr, mr=mr, chunk=chunk, team=team,
                recorded=False)


def plan_of(lib, key, layer, batch, threads, isa):
    """The plan dynconv-bench recorded from the handle, else the one derived from the shape."""
    got = {f: lib.get(f"{key}/dynamic#plan_{f}") for f in ("engine", "nr", "chunk", "team")}
    if any(v is None for v in got.values()):
        return derived_plan(layer, batch, threads, isa)
    wino = lib.get(f"{key}/dynamic#plan_wino")  # absent in runs of older builds
    return dict(engine=got["engine"] > 0, nr=int(got["nr"]) or None,
                mr=ENGINE_TILES.get(isa, (8, 4))[1], chunk=max(1, int(got["chunk"])),
                team=max(1, int(got["team"])), recorded=True, wino=bool(wino))


def bounds(layer, batch, threads, dyn_ms, plan, sgemm_gflops, bandwidth):
    """What bounds one dynamic case, from figures of the same run. Each estimate is a time in
    ms (None when its rate was not measured):
      compute     the convolution's FLOPs at the square sgemm's rate, same thread count
                  (on the Winograd path the 16/36 of them its products make; its sets are
                  16/9 the size of the kernels)
      kernels     the K kernel sets read from memory per forward at the measured bandwidth:
                  K * C_out * C_in/g * kh * kw * 4 bytes once per pass over them. Sets that
                  fit in the cache (<= 8 MiB) are read once per forward; larger ones once per
                  chunk of samples per thread, plus once per sample the threads share (the
                  remainder of the batch, all of it at batch 1)
      activations the input read and the output written once, at the same bandwidth
      shape       the compute time on the tiles the columns fill: per sample out_h * out_w
                  columns in tiles NR wide, C_out rows in tiles MR high (engine cases only:
                  im2col + BLAS cases are left to OpenBLAS's own tiling)
    The bound is the largest estimate (the shape only when idle lanes add more than 5%), and
    `explained` that estimate as a share of the measured time: far below 100% means the
    case loses its time to something none of the estimates counts."""
    kernels, o = workload.KERNELS, workload.output_size(layer)
    plane = o * o
    c_in, c_out, g, k = layer["c_in"], layer["c_out"], layer["groups"], layer["k"]
    wino = 16.0 / 36.0 if plan.get("wino") else 1.0
    set_bytes = kernels * c_out * (c_in // g) * k * k * 4.0 * (16.0 / 9.0 if wino < 1 else 1.0)
    team = plan["team"]
    count = batch - batch % team
    if set_bytes <= CACHED_KERNEL_BYTES:
        passes = 1
    else:
        passes = team * -(-(count // team) // plan["chunk"]) + (batch - count)
    read = set_bytes * passes
    act_bytes = 4.0 * batch * (c_in * layer["size"] ** 2 + c_out * plane)
    est = {}
    est["compute"] = (None if not sgemm_gflops
                      else wino * flops(layer, batch) / (sgemm_gflops * 1e9) * 1e3)
    est["kernels"] = None if not bandwidth else read / bandwidth * 1e3
    est["activations"] = None if not bandwidth else act_bytes / bandwidth * 1e3
    fill = None
    if plan["engine"] and plan["nr"]:
        nr, mr = plan["nr"], plan["mr"]
        g_out = c_out // g
        fill = (plane / (-(-plane // nr) * nr)) * (g_out / (-(-g_out // mr) * mr))
    est["shape"] = (None if est["compute"] is None or fill is None else est["compute"] / fill)
    known = {n: v for n, v in est.items() if v is not None}
    bound = None
    if known:
        bound = max(known, key=lambda n: known[n])
        if bound == "shape" and (est["shape"] <= SHAPE_MARGIN * est["compute"]
                                 or known.get("compute") == known["shape"]):
            rest = {n: v for n, v in known.items() if n != "shape"}
            bound = max(rest, key=lambda n: rest[n])
    return dict(est=est, bound=bound, cols=plane, fill=fill, passes=passes,
                read_mib=read / 2 ** 20, plan=plan,
                explained=None if bound is None else 100.0 * known[bound] / dyn_ms)


BOUND_NAMES = {"compute": "compute", "kernels": "K-set traffic",
               "activations": "activation traffic", "shape": "GEMM shape"}


def build_rows(layers, lib, torch, sgemm_n, lib_cpu, torch_cpu, isa=""):
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
                bw = lib.get(f"membw/{MEMBW_MIB}/t{t}")
                bandwidth = None if bw is None else MEMBW_MIB * 2 ** 20 / (bw * 1e-3)
                row = dict(layer=layer, batch=b, threads=t, dyn=dyn, stat=stat,
                           ws_mb=None if ws is None else ws / 2 ** 20,
                           tdyn=tdyn, tstat=tstat, gflops=gflops,
                           r_tdyn=ratio(tdyn, dyn), r_tstat=ratio(tstat, dyn),
                           r_self=ratio(dyn, stat),
                           peak=None if sg_gflops is None else 100.0 * gflops / sg_gflops,
                           bandwidth=bandwidth,
                           bounds=bounds(layer, b, t, dyn, plan_of(lib, key, layer, b, t, isa),
                                         sg_gflops, bandwidth))
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


def bound_label(r):
    """"K-set traffic (64%)": the bound of a case and how much of its time that estimate
    accounts for."""
    b = r["bounds"]
    if b["bound"] is None:
        return "bound not measured"
    return f"{BOUND_NAMES[b['bound']]} ({fmt(b['explained'], 0)}%)"


def table(rows):
    head = ("| layer | N | threads | lib dyn ms | lib static ms | torch dyn ms | torch static ms "
            "| lib dyn GFLOP/s | torch-dyn / lib | torch-static / lib | lib dyn / static "
            "| % sgemm | lib dyn workspace MiB | bound (its share of lib dyn) |")
    lines = [head, "|" + "---|" * 14]
    for r in rows:
        lines.append(
            f"| {r['layer']['name']} | {r['batch']} | {r['threads']} | {fmt(r['dyn'], 3)} "
            f"| {fmt(r['stat'], 3)} | {fmt(r['tdyn'], 3)} | {fmt(r['tstat'], 3)} "
            f"| {fmt(r['gflops'], 1)} | {fmt(r['r_tdyn'])} | {fmt(r['r_tstat'])} "
            f"| {fmt(r['r_self'])} | {fmt(r['peak'], 0)} | {fmt(r['ws_mb'], 2)} "
            f"| {bound_label(r)} |")
    return lines


def bounds_table(rows):
    """The estimates behind the bound column, case by case."""
    lines = ["| layer | N | threads | path | lib dyn ms | compute ms | K sets read MiB (passes) "
             "| K-set traffic ms | activation traffic ms | columns per sample | lane fill "
             "| GEMM shape ms | bound | share of lib dyn |",
             "|" + "---|" * 14]
    for r in rows:
        b = r["bounds"]
        p = b["plan"]
        path = ("Winograd F(2x2, 3x3)" if p.get("wino") else "engine" if p["engine"]
                else "im2col + BLAS" if p["nr"] else "depthwise loop")
        if p["chunk"] > 1:
            path += f", chunk {p['chunk']}"
        e = b["est"]
        lines.append(
            f"| {r['layer']['name']} | {r['batch']} | {r['threads']} | {path} "
            f"| {fmt(r['dyn'], 3)} | {fmt(e['compute'], 3)} "
            f"| {fmt(b['read_mib'], 1)} ({b['passes']}) | {fmt(e['kernels'], 3)} "
            f"| {fmt(e['activations'], 3)} | {b['cols']} "
            f"| {'-' if b['fill'] is None else fmt(100 * b['fill'], 0) + '%'} "
            f"| {'-' if e['shape'] is None else fmt(e['shape'], 3)} "
            f"| {'-' if b['bound'] is None else BOUND_NAMES[b['bound']]} "
            f"| {'-' if b['explained'] is None else fmt(b['explained'], 0) + '%'} |")
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
      value     the figure of one case (None: no figure)
      cpu       the same figure in 1-thread CPU time, or None
      counts    whether a case counts for the target (others are shown for information only)
      goal      the threshold; higher: the figure must reach it, else stay at or below it
      strict    the figure must pass it (> rather than >=)
      rule      "mean": the verdict is the geometric mean's; "every": every case must pass
      detail    optional: more figures of a case below target, for "What limits"
    Every case is also compared with the goal on its own, so that the cases below target are
    named even where the mean is met."""
    specs = []
    if have_torch:
        specs.append(dict(
            name="libdynconv's dynamic layer at least 1.1x faster than PyTorch's "
                 "batch-as-groups dynamic convolution on every case",
            value=lambda r: r["r_tdyn"], cpu=lambda r: r.get("c_r_tdyn"), goal=1.1,
            higher=True, strict=False, rule="every", unit="x"))
        specs.append(dict(
            name="libdynconv's dynamic layer at least as fast as PyTorch's static nn.Conv2d "
                 "(oneDNN) in geometric mean",
            value=lambda r: r["r_tstat"], cpu=lambda r: r.get("c_r_tstat"), goal=1.0,
            higher=True, strict=False, rule="mean", unit="x"))
        specs.append(dict(
            name="... and at least 0.65x its speed in the worst case",
            value=lambda r: r["r_tstat"], cpu=lambda r: r.get("c_r_tstat"), goal=0.65,
            higher=True, strict=False, rule="every", unit="x"))
    specs.append(dict(
        name=f"libdynconv dynamic / own static forward at most 1.10 on every layer at batch "
             f"{SELF_RATIO_BATCH}",
        value=lambda r: r["r_self"], cpu=lambda r: r.get("c_r_self"),
        counts=lambda r: r["batch"] == SELF_RATIO_BATCH, goal=1.10, higher=False,
        strict=False, rule="every", unit="x",
        # What the dynamic layer costs more, next to the time its K sets take to read.
        detail=lambda r: (f"{fmt(r['dyn'] - r['stat'], 3)} ms over static, reading the K "
                          f"sets {fmt(r['bounds']['est']['kernels'], 3)} ms")))
    return specs


def passes(spec, v):
    if spec["higher"]:
        return v > spec["goal"] if spec["strict"] else v >= spec["goal"]
    return v <= spec["goal"]


def fmt_value(spec, v):
    return f"{fmt(v, 0)}%" if spec["unit"] == "%" else f"{fmt(v)}x"


def judge(spec, rows, figure="value"):
    """The target on one set of cases: None when no case has the figure, else a dict with the
    aggregate figure, the worst case, the cases below target and the verdict ("not judged"
    when none of the cases counts for the target: their figures are information)."""
    cases = [(r, spec[figure](r)) for r in rows]
    cases = [(r, v) for r, v in cases if v is not None]
    if not cases:
        return None
    counted = [(r, v) for r, v in cases if (spec.get("counts") or (lambda _: True))(r)]
    if not counted:
        j = judge(dict(spec, counts=None), [r for r, _ in cases], figure)
        return dict(j, verdict="not judged", below=[])
    cases = counted
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
            if j is not None and j["verdict"] == "not judged":
                lines.append(f"| {label} | {j['measured']} | {j['worst']} | - "
                             "| not judged (information) |")
            elif j is not None:
                lines.append(f"| {label} | {j['measured']} | {j['worst']} "
                             f"| {len(j['below'])} of {j['count']} | **{j['verdict']}** |")
        lines.append("")
        if whole["below"]:
            worst_first = sorted(whole["below"], key=lambda rv: rv[1],
                                 reverse=not spec["higher"])
            lines += ["Below target (each with what bounds it): " + ", ".join(
                f"{case_label(r)} ({fmt_value(spec, v)}; {bound_label(r)})"
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


def limits(rows, layers, cpu, batch, sgemm_n, have_torch):
    """Facts from this run's figures next to each missed target: what bounds the cases below
    it, and where the module benchmarks ran, where the time goes."""
    out = []
    for spec in target_specs(rows, have_torch):
        j = judge(spec, rows)
        if j is None or j["verdict"] != "missed":
            continue
        by_bound = {}
        for r, v in j["below"]:
            by_bound.setdefault(bound_label(r).split(" (")[0], []).append((r, v))
        detail = spec.get("detail") or (lambda r: "")
        parts = [f"{name}: " + ", ".join(f"{case_label(r)} ({fmt_value(spec, v)}; the bound "
                                         f"{fmt(r['bounds']['explained'], 0)}% of the measured "
                                         "time" + (f"; {detail(r)}" if detail(r) else "") + ")"
                                         for r, v in cases)
                 for name, cases in sorted(by_bound.items(), key=lambda kv: -len(kv[1]))]
        out.append(f"- **{spec['name']}** ({len(j['below'])} of {j['count']} cases below "
                   "target), by bound: " + "; ".join(parts) + ".")
    if out:
        out.append("- A bound's share far below 100% means the estimates do not account for "
                   "that case's time: the pooling, attention and mixing passes, im2col, "
                   "synchronisation and, in wall-clock time, the machine's load are not in "
                   "them. The stages below give the first of those in CPU time.")
    # Dynamic over static: the layers that pay most, and what mixing K kernels alone costs.
    by_layer = {}
    for r in rows:
        by_layer.setdefault(r["layer"]["name"], []).append(r)
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
    out.append("- **Dynamic / static.** Largest overheads (geometric mean over the layer's "
               "cases): " + "; ".join(facts) + ". The static layer skips the attention and the "
               "mixing and reads one kernel set instead of K; the cost is largest where "
               "kernels are large next to the image (many channels, small spatial size).")
    # Share of the sgemm rate: how fast the bare GEMMs of each shape are.
    sg = cpu.get(f"sgemm/{sgemm_n}/t1")
    if sg:
        sg_rate = 2.0 * sgemm_n ** 3 / sg
        facts = []
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
            facts.append(
                f"{layer['name']}: OpenBLAS's GEMMs alone ([{layer['c_out']} x "
                f"{layer['c_in'] * 9}] x [{layer['c_in'] * 9} x {o * o}] per sample) reach "
                f"{fmt(share, 0)}% of the sgemm rate"
                + (f", im2col adds {fmt(100 * im2col / gemm, 0)}% to their time"
                   if im2col is not None else ""))
        if facts:
            out.append("- **The GEMM shape on OpenBLAS** (dense 3x3 layers with >= "
                       f"{THREE_BY_THREE_MIN_CHANNELS} channels, 1 thread, CPU time, N="
                       + str(batch) + "): " + "; ".join(facts) + ". A product with few "
                       "columns does not reach the square-matrix rate even in OpenBLAS, so "
                       "the % sgemm column is information on the shape, not a target.")
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
                       "time\nhigher is better for libdynconv; target: every case >= 1.1",
                       [(1.1, "target 1.1x, every case"), (1.0, "parity")], True))
        panels.append(("r_tstat", "PyTorch static nn.Conv2d (oneDNN) time / libdynconv dynamic "
                       "time\nhigher is better; targets: geometric mean >= 1, every case >= "
                       "0.65", [(1.0, "target: geometric mean 1 (parity)"),
                                (0.65, "target 0.65, every case")], True))
    panels.append(("r_self", "libdynconv dynamic (K=4) time / static (K=1) time\n"
                   f"lower is better; target: every layer <= 1.10 at N={SELF_RATIO_BATCH} "
                   "(N=1 bars for information)",
                   [(1.10, f"target 1.10 at N={SELF_RATIO_BATCH}"), (1.0, "no overhead")],
                   True))
    panels.append(("peak", "libdynconv dynamic GFLOP/s as % of the sgemm GFLOP/s (same threads)"
                   "\ninformation, not a target", [], False))
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
        top = max((y for y, _ in lines), default=None)
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
    rows, batches, threads = build_rows(layers, lib, torch, args.sgemm, lib_cpu, torch_cpu,
                                        ctx.get("cpu_isa", ""))
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
    bandwidth = {t: lib.get(f"membw/{MEMBW_MIB}/t{t}") for t in threads}
    if any(v is not None for v in bandwidth.values()):
        env.append(f"- Memory read bandwidth, a {MEMBW_MIB} MiB float array summed (best "
                   "repetition): " + ", ".join(
                       f"{fmt(MEMBW_MIB * 2 ** 20 / (v * 1e-3) / 1e9, 1)} GB/s with {t} "
                       f"thread{'s' if t > 1 else ''}" for t, v in bandwidth.items()
                       if v is not None))
    else:
        env.append("- Memory read bandwidth: not measured in this run (its dynconv-bench had no "
                   "membw benchmark), so the traffic estimates of the bounds are n/a")
    recorded = sum(1 for r in rows if r["bounds"]["plan"]["recorded"])
    env.append("- Plans of the dynamic layers (engine, chunk, team): "
               + ("recorded by dynconv-bench from the handles" if recorded == len(rows)
                  else "derived from the shapes by the library's rules (this run's "
                  "dynconv-bench did not record them)" if recorded == 0
                  else f"recorded for {recorded} of {len(rows)} cases, derived for the rest"))
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
               "(its best repetition, at the start or the end of the run): information on how "
               "close a shape comes to the machine's GEMM rate, not a target. GFLOP/s count "
               "the direct convolution's multiply-adds, so the Winograd path, which makes "
               "16/36 of them, can pass 100%.",
               "- **bound**: what bounds each dynamic case (see \"What bounds each case\").",
               ""]
        md += ["## Targets", "",
               "Judged on the whole workload (every layer, batch and thread count) of this run, "
               "then below on each batch size and thread count apart. The worst case and the "
               "number of cases below target (each case compared with the target on its own) "
               "show whether a mean is carried by a few shapes. Dynamic / static is judged at "
               f"batch {SELF_RATIO_BATCH} only; its batch-1 figures are shown for information. "
               "The targets are for a 2-core AVX-512 machine; the machine above is what this "
               "run had.", "",
               "| target | measured (wall clock) | worst case | cases below target "
               "| 1 thread, CPU time | verdict |",
               "|---|---|---|---|---|---|"]
        md += [f"| {n} | {m} | {w} | {b} | {c or '-'} | **{v}** |"
               for n, m, c, w, b, v in tgt]
        md += ["",
               "The verdicts use wall-clock times, what a user waits for. The CPU-time column "
               "repeats the figure for the 1-thread cases with the process CPU time of both "
               "sides: it leaves out the time other programs had the core, so when the two "
               "columns disagree, the machine's load decided the wall-clock figure.", ""]
        md += ["## Targets per batch size and thread count", "",
               "Each target judged on a subset of the cases the same way as on the whole "
               "workload (wall-clock times), with the cases below it named.", ""] + per_subset
        md += ["## Geometric means", ""] + geo + [""]
        md += ["## Every case", ""] + tab + [""]
        method = [
               "Four estimates of the dynamic forward's time, each from figures of this run, "
               "and the largest named as the bound:",
               "",
               "- **compute**: the convolution's FLOPs at the square sgemm's rate with the same "
               "thread count.",
               "- **K-set traffic**: the bytes of the K kernel sets the forward must read, "
               "K * C_out * C_in/g * kh * kw * 4, at the memory read bandwidth of the same "
               f"thread count (`membw/{MEMBW_MIB}/tT`: a {MEMBW_MIB} MiB float array summed, "
               "best repetition). Sets of at most 8 MiB stay in the last-level cache from one "
               "sample to the next and count once per forward; larger ones once per chunk of "
               "samples a thread mixes in one pass (src/exec/plan.c: up to 8 samples on the "
               "engine's slice-by-slice path, up to 32 MiB of mixed kernels otherwise), plus "
               "once per sample the threads share (the rest of the batch; at batch 1 the one "
               "sample, read once).",
               "- **activation traffic**: the input read and the output written once, at the "
               "same bandwidth (what bounds depthwise layers and large images). Data that "
               "stays in the cache from one forward of the benchmark loop to the next (small "
               "images at batch 1, small K sets) does not come from memory at all: for those "
               "the two traffic estimates are upper bounds.",
               "- **GEMM shape**: the compute time divided by the lane fill of the engine's "
               "tiles: out_h * out_w columns per sample in B panels NR wide (32 with AVX-512), "
               "C_out / groups rows in A panels MR high; named only when idle lanes add more "
               f"than {fmt(100 * (SHAPE_MARGIN - 1), 0)}% to the compute time. Cases on "
               "im2col + BLAS or the depthwise loop have no figure here (OpenBLAS tiles on "
               "its own).",
               "",
               "The plan (engine or not, chunk, threads the forward really uses) comes from "
               "the handle when dynconv-bench recorded it, else from the library's rules "
               "applied to the shape. The share after each bound is that estimate over the "
               "measured time: near 100% the case runs at its bound; far below, the time "
               "goes to what none of the estimates counts (attention, mixing arithmetic, "
               "im2col, synchronisation, the machine's load); above 100%, the case ran faster "
               "than the estimate's rate (the engine's AVX-512 tiles can outrun the sgemm of "
               "an OpenBLAS core with narrower vectors).",
               ""]
        md += ["## What bounds each case", ""] + method + bounds_table(rows) + [""]
        lim = limits(rows, layers, lib_cpu, max(batches), args.sgemm, have_torch)
        md += ["## What limits the missed targets", ""] + lim + [""]
        mt = module_table(layers, lib_cpu, max(batches))
        if mt:
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
        md += ["## Written by hand", "",
               "Measurements made by other scripts and described by hand live in files of "
               "their own, which a regeneration of this report leaves alone:", ""]
        md += [f"- [{title}]({name})" for name, title in HAND_WRITTEN]
        md += [""]
        with open(args.md, "w") as f:
            f.write("\n".join(md))
        print(f"\nwrote {args.md}")
    if args.png:
        plot(rows, batches, threads, have_torch, args.png)
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
