#!/usr/bin/python3
"""Backward of the dynamic conv2d, libdynconv against PyTorch autograd, for
bench/backward_compare.sh. Run with Debian's system interpreter (it has python3-torch):

    /usr/bin/python3 bench/backward_compare.py --lib build/release/src/libdynconv.so \\
        --layers bench/layers.txt --batch 16

Both run in this one process and take turns within every repetition (libdynconv forward,
PyTorch forward, libdynconv backward, PyTorch backward), so that a load that comes and goes on a
shared machine hits both alike; the speed-ups are medians of the per-repetition ratios.

PyTorch's layer is the common re-implementation: attention (average pool, 1x1 conv, ReLU, 1x1
conv, softmax / T), the K kernels mixed per sample with one torch.mm, then one grouped conv2d
over the batch folded into the channels (groups = groups * batch). Its "forward" records the
autograd graph; its "backward" is y.backward(dy) on that graph (retain_graph, so the same graph
is timed again), computing dL/dx and every parameter's gradient. libdynconv's backward computes
the same gradients and, having no graph, recomputes the attention and the aggregated kernels
from the input: that is included in its time.
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
F32P = ctypes.POINTER(ctypes.c_float)


class Geometry(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int64) for n in (
        "in_channels", "out_channels", "kernel_h", "kernel_w", "stride_h", "stride_w", "pad_h",
        "pad_w", "dilation_h", "dilation_w", "groups", "num_kernels", "hidden")]


class Weights(ctypes.Structure):
    _fields_ = [(n, F32P) for n in (
        "weight", "bias", "fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias")]


class Gradients(ctypes.Structure):
    _fields_ = [(n, F32P) for n in (
        "input", "weight", "bias", "fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias")]


def ptr(t):
    if t is None:
        return None
    assert t.dtype == torch.float32 and t.is_contiguous()
    return ctypes.cast(t.data_ptr(), F32P)


class BatchAsGroupsDynamicConv2d(nn.Module):
    def __init__(self, c_in, c_out, k, stride, pad, groups):
        super().__init__()
        self.hidden = max(1, c_in // REDUCTION)
        self.c_in, self.c_out, self.k = c_in, c_out, k
        self.stride, self.pad, self.groups = stride, pad, groups
        self.fc1 = nn.Conv2d(c_in, self.hidden, 1, bias=False)
        self.fc2 = nn.Conv2d(self.hidden, KERNELS, 1, bias=True)
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


class Dynconv:
    """The same layer (same weights) as a libdynconv handle, with every gradient requested."""

    def __init__(self, lib, m, x, threads):
        self.lib = lib
        g = Geometry(m.c_in, m.c_out, m.k, m.k, m.stride, m.stride, m.pad, m.pad, 1, 1,
                     m.groups, KERNELS, m.hidden)
        # Parameters in the library's layouts, kept alive by self.
        self.params = [m.weight.detach().contiguous(), m.bias.detach().contiguous(),
                       m.fc1.weight.detach().reshape(m.hidden, m.c_in).contiguous(),
                       m.fc2.weight.detach().reshape(KERNELS, m.hidden).contiguous(),
                       m.fc2.bias.detach().contiguous()]
        w, b, fc1, fc2, fc2b = self.params
        weights = Weights(ptr(w), ptr(b), ptr(fc1), None, ptr(fc2), ptr(fc2b))
        self.layer = ctypes.c_void_p()
        self.check(lib.dynconv_conv2d_create(ctypes.byref(g), ctypes.byref(weights),
                                             ctypes.c_float(1.0), 0, ctypes.byref(self.layer)))
        # The handle's threads: the forward's, and (libdynconv >= 1.1) the backward's per-sample
        # work; 1.0's backward ran its GEMMs on OpenBLAS's threads instead.
        self.check(lib.dynconv_conv2d_set_num_threads(self.layer, threads))
        oh, ow = ctypes.c_int64(), ctypes.c_int64()
        n, _, h, wd = x.shape
        self.check(lib.dynconv_conv2d_reshape(self.layer, n, h, wd, ctypes.byref(oh),
                                              ctypes.byref(ow), None))
        self.check(lib.dynconv_conv2d_prepare_backward(self.layer, None))
        self.x = x.detach().contiguous()
        self.y = torch.empty(n, m.c_out, oh.value, ow.value)
        self.grads_t = [torch.empty_like(self.x)] + [torch.empty_like(p) for p in self.params]
        gx, gw, gb, gfc1, gfc2, gfc2b = self.grads_t
        self.grads = Gradients(ptr(gx), ptr(gw), ptr(gb), ptr(gfc1), None, ptr(gfc2),
                               ptr(gfc2b))

    def check(self, status):
        if status != 0:
            msg = self.lib.dynconv_last_error_message().decode()
            sys.exit(f"backward_compare: libdynconv status {status}: {msg}")

    def forward(self):
        self.check(self.lib.dynconv_conv2d_forward(self.layer, ptr(self.x), ptr(self.y), None,
                                                   None, 0))

    def backward(self, dy):
        self.check(self.lib.dynconv_conv2d_backward(self.layer, ptr(self.x), ptr(dy),
                                                    ctypes.byref(self.grads), 0, None, 0))

    def close(self):
        self.lib.dynconv_conv2d_destroy(self.layer)


def load(path):
    lib = ctypes.CDLL(path)
    for name in ("dynconv_conv2d_create", "dynconv_conv2d_reshape",
                 "dynconv_conv2d_prepare_backward", "dynconv_conv2d_forward",
                 "dynconv_conv2d_backward"):
        getattr(lib, name).restype = ctypes.c_int
    lib.dynconv_conv2d_reshape.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                           ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                                           ctypes.c_void_p]
    vp = ctypes.c_void_p
    lib.dynconv_conv2d_forward.argtypes = [vp, F32P, F32P, F32P, vp, ctypes.c_size_t]
    lib.dynconv_conv2d_backward.argtypes = [vp, F32P, F32P, ctypes.POINTER(Gradients),
                                            ctypes.c_uint32, vp, ctypes.c_size_t]
    lib.dynconv_conv2d_create.argtypes = [ctypes.POINTER(Geometry), ctypes.POINTER(Weights),
                                          ctypes.c_float, ctypes.c_uint32,
                                          ctypes.POINTER(ctypes.c_void_p)]
    lib.dynconv_conv2d_prepare_backward.argtypes = [vp, vp]
    lib.dynconv_conv2d_destroy.argtypes = [vp]
    lib.dynconv_conv2d_set_num_threads.argtypes = [vp, ctypes.c_int]
    lib.dynconv_conv2d_set_num_threads.restype = ctypes.c_int
    lib.dynconv_last_error_message.restype = ctypes.c_char_p
    lib.dynconv_blas_core.restype = ctypes.c_char_p
    lib.dynconv_blas_config.restype = ctypes.c_char_p
    return lib


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
    close(dc.grads_t[3], m.fc1.weight.grad.reshape(dc.grads_t[3].shape), "dL/dfc1_weight")


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


def read_layers(path):
    for lineno, line in enumerate(open(path), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) != 8:
            sys.exit(f"backward_compare: {path}:{lineno}: expected 8 fields")
        yield fields[0], [int(v) for v in fields[1:]]


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
    torch.set_num_threads(args.threads)
    lib = load(args.lib)
    # OpenBLAS (libdynconv's, and torch.mm's on Debian) reads OPENBLAS_NUM_THREADS at load.
    print(f"backward_compare: torch {torch.__version__}, {args.threads} thread(s); "
          f"libdynconv on {lib.dynconv_blas_config().decode()}, core "
          f"{lib.dynconv_blas_core().decode()}, OPENBLAS_NUM_THREADS="
          f"{os.environ.get('OPENBLAS_NUM_THREADS', '')}", file=sys.stderr)
    torch.manual_seed(0)
    print("| layer | libdynconv forward ms | libdynconv backward ms | PyTorch forward ms "
          "| PyTorch backward ms | backward speed-up | forward+backward speed-up |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, (c_in, c_out, k, stride, pad, groups, size) in read_layers(args.layers):
        if args.filter not in name:
            continue
        m = BatchAsGroupsDynamicConv2d(c_in, c_out, k, stride, pad, groups)
        x = torch.randn(args.batch, c_in, size, size, requires_grad=True)
        y = m(x)
        dy = torch.randn_like(y)
        dc = Dynconv(lib, m, x, args.threads)
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
