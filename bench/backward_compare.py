#!/usr/bin/python3
"""Backward of the dynamic conv2d, libdynconv against PyTorch autograd, for
bench/backward_compare.sh. Run with Debian's system interpreter (it has python3-torch):

    /usr/bin/python3 bench/backward_compare.py --lib build/release/src/libdynconv.so \\
        --layers bench/layers.txt --batch 16

Both run in this one process and take turns within every repetition (libdynconv forward,
PyTorch forward, libdynconv backward, PyTorch backward), so that a load that comes and goes on a
shared machine hits both alike; the speed-ups are medians of the per-repetition ratios.

PyTorch's layer is the common re-implementation, workload.BatchAsGroupsDynamicConv2d:
attention (average pool, 1x1 conv, ReLU, 1x1 conv, softmax / T), the K kernels mixed per sample
with one torch.mm, then one grouped conv2d over the batch folded into the channels (groups =
groups * batch). Its "forward" records the autograd graph; its "backward" is y.backward(dy) on
that graph (retain_graph, so the same graph is timed again), computing dL/dx and every
parameter's gradient. libdynconv's backward (called through the dynconv package's declarations)
computes the same gradients and, having no graph, recomputes the attention and the aggregated
kernels from the input: that is included in its time.
"""

import argparse
import ctypes
import os
import statistics
import sys
import time

import torch

import workload

HERE = os.path.dirname(os.path.abspath(__file__))
F32P = ctypes.POINTER(ctypes.c_float)
_lib = None  # dynconv._lib, imported by main() once DYNCONV_LIBRARY names the library


def ptr(t):
    if t is None:
        return None
    assert t.dtype == torch.float32 and t.is_contiguous()
    return ctypes.cast(t.data_ptr(), F32P)


class Dynconv:
    """The same layer (same weights) as a libdynconv handle, with every gradient requested. It
    calls the C functions as the dynconv package declares them, on preallocated tensors, so
    that the timings hold no allocation (dynconv.Conv2d would allocate every result)."""

    def __init__(self, m, x, threads):
        self.lib = _lib.library()
        k, hidden = m.kernels, m.hidden
        g = _lib.Geometry(m.c_in, m.c_out, m.k, m.k, m.stride, m.stride, m.padding, m.padding,
                          1, 1, m.groups, k, hidden)
        att = m.attention
        # Parameters in the library's layouts, kept alive by self.
        self.params = [m.weight.detach().contiguous(), m.bias.detach().contiguous(),
                       att.fc1.weight.detach().reshape(hidden, m.c_in).contiguous(),
                       att.fc2.weight.detach().reshape(k, hidden).contiguous(),
                       att.fc2.bias.detach().contiguous()]
        w, b, fc1, fc2, fc2b = self.params
        weights = _lib.Weights(ptr(w), ptr(b), ptr(fc1), None, ptr(fc2), ptr(fc2b))
        self.layer = ctypes.c_void_p()
        self.call("create", ctypes.byref(g), ctypes.byref(weights),
                  float(att.temperature), 0, ctypes.byref(self.layer))
        # The handle's threads: the forward's, and (libdynconv >= 1.1) the backward's per-sample
        # work; 1.0's backward ran its GEMMs on OpenBLAS's threads instead.
        self.call("set_num_threads", self.layer, threads)
        oh, ow = ctypes.c_int64(), ctypes.c_int64()
        n, _, h, wd = x.shape
        self.call("reshape", self.layer, n, h, wd, ctypes.byref(oh), ctypes.byref(ow), None)
        self.call("prepare_backward", self.layer, None)
        self.x = x.detach().contiguous()
        self.y = torch.empty(n, m.c_out, oh.value, ow.value)
        self.grads_t = [torch.empty_like(self.x)] + [torch.empty_like(p) for p in self.params]
        gx, gw, gb, gfc1, gfc2, gfc2b = self.grads_t
        self.grads = _lib.Gradients(ptr(gx), ptr(gw), ptr(gb), ptr(gfc1), None, ptr(gfc2),
                                    ptr(gfc2b))

    def call(self, name, *args):
        function = "dynconv_conv2d_" + name
        try:
            _lib.check(function, getattr(self.lib, function)(*args))
        except _lib.DynconvError as e:
            sys.exit(f"backward_compare: {e}")

    def forward(self):
        self.call("forward", self.layer, ptr(self.x), ptr(self.y), None, None, 0)

    def backward(self, dy):
        self.call("backward", self.layer, ptr(self.x), ptr(dy), ctypes.byref(self.grads), 0,
                  None, 0)

    def close(self):
        self.lib.dynconv_conv2d_destroy(self.layer)


def check_same(name, m, x, y, dy, dc):
    """Both sides must compute the same thing, or the timings mean nothing."""
    def close(a, b, what):
        scale = max(float(b.abs().max()), 1e-30)
        if not torch.allclose(a, b, rtol=1e-3, atol=1e-4 * scale):
            sys.exit(f"backward_compare: {name}: libdynconv and PyTorch disagree on {what}")
    dc.forward()
    close(dc.y, y.detach(), "y")
    x.grad = None
    m.zero_grad(set_to_none=True)
    y.backward(dy, retain_graph=True)
    dc.backward(dy)
    close(dc.grads_t[0], x.grad, "dL/dx")
    close(dc.grads_t[1], m.weight.grad, "dL/dweight")
    close(dc.grads_t[3], m.attention.fc1.weight.grad.reshape(dc.grads_t[3].shape),
          "dL/dfc1_weight")


def calls_for(fn, min_time):
    fn()  # warm-up
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    return max(1, int(min_time / once) + 1)


def per_call_ms(fn, calls):
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return 1e3 * (time.perf_counter() - start) / calls


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", required=True, help="path of libdynconv.so")
    ap.add_argument("--layers", required=True)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=0.2)
    ap.add_argument("--filter", default="")
    args = ap.parse_args()
    try:
        layers = workload.read_layers(args.layers)
    except workload.WorkloadError as e:
        sys.exit(f"backward_compare: {e}")
    global _lib
    # The package loads the library named by DYNCONV_LIBRARY when it is imported.
    os.environ["DYNCONV_LIBRARY"] = os.path.abspath(args.lib)
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python"))
    try:
        from dynconv import _lib
        lib = _lib.library()
    except ImportError as e:
        sys.exit(f"backward_compare: {e}")
    torch.set_num_threads(args.threads)
    # OpenBLAS (libdynconv's, and torch.mm's on Debian) reads OPENBLAS_NUM_THREADS at load.
    print(f"backward_compare: torch {torch.__version__}, {args.threads} thread(s); "
          f"libdynconv on {lib.dynconv_blas_config().decode()}, core "
          f"{lib.dynconv_blas_core().decode()}, OPENBLAS_NUM_THREADS="
          f"{os.environ.get('OPENBLAS_NUM_THREADS', '')}; CPU {workload.cpu_model()}",
          file=sys.stderr)
    workload.seed()
    print("| layer | libdynconv forward ms | libdynconv backward ms | PyTorch forward ms "
          "| PyTorch backward ms | backward speed-up | forward+backward speed-up |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for layer in layers:
        name = layer["name"]
        if args.filter not in name:
            continue
        m = workload.dynamic_conv2d(layer)
        x = torch.randn(args.batch, layer["c_in"], layer["size"], layer["size"],
                        requires_grad=True)
        y = m(x)
        dy = torch.randn_like(y)
        dc = Dynconv(m, x, args.threads)
        check_same(name, m, x, y, dy, dc)
        fns = {"dc_fwd": dc.forward, "dc_bwd": lambda: dc.backward(dy),
               "pt_fwd": lambda: m(x), "pt_bwd": lambda: y.backward(dy, retain_graph=True)}
        calls = {key: calls_for(fn, args.min_time) for key, fn in fns.items()}
        ms = {key: [] for key in fns}
        for _ in range(args.repeats):
            for key in ("dc_fwd", "pt_fwd", "dc_bwd", "pt_bwd"):
                ms[key].append(per_call_ms(fns[key], calls[key]))
        med = {key: statistics.median(v) for key, v in ms.items()}
        bwd_ratio = statistics.median(p / d for p, d in zip(ms["pt_bwd"], ms["dc_bwd"]))
        both_ratio = statistics.median((pf + pb) / (df + db) for pf, pb, df, db in
                                       zip(ms["pt_fwd"], ms["pt_bwd"], ms["dc_fwd"],
                                           ms["dc_bwd"]))
        print(f"| {name} | {med['dc_fwd']:.2f} | {med['dc_bwd']:.2f} | {med['pt_fwd']:.2f} "
              f"| {med['pt_bwd']:.2f} | {bwd_ratio:.2f}x | {both_ratio:.2f}x |", flush=True)
        dc.close()


if __name__ == "__main__":
    main()
