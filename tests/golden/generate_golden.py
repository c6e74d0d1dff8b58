#!/usr/bin/python3
"""Generate the golden data: forward results and gradients of dynamic convolution and dynamic
linear layers computed by PyTorch, for test_golden.c and test_golden_backward.c. Every array goes
to data/<kind>/<case>/<field>.npy (float32); golden_cases.c gets the table of the cases.

Run from anywhere with Debian's system interpreter (it has python3-torch and python3-numpy):

    /usr/bin/python3 tests/golden/generate_golden.py

The output is deterministic: every case seeds torch from its name (or from the seed name it gives,
to share data with another case), so adding, removing or reordering cases does not change the
data of the others.

The forward is written directly with torch.nn.functional, one sample at a time (no batch-as-groups
trick), so that it reads like the definition:
    pooled = x.mean((2, 3));  u = relu(linear(pooled, fc1_w, fc1_b));  z = linear(u, fc2_w, fc2_b)
    pi = softmax(z / T, dim=1);  W_n = sum_k pi[n, k] W_k;  b_n = sum_k pi[n, k] b_k
    y[n] = conv2d(x[n], W_n, b_n, stride, padding, dilation, groups)

Every case also gets a backward: a random dL/dy (drawn from its own seed, after the forward's
data) and the gradients autograd computes through that same forward, for the input and for
every parameter the case has.
"""

import os
import sys
import zlib

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OUTPUT = os.path.join(HERE, "golden_cases.c")
DATA = os.path.join(HERE, "data")


# ------------------------------------------------------------------------------------------------
# Case definitions
# ------------------------------------------------------------------------------------------------

def conv_case(name, n=2, c_in=4, c_out=6, h=7, w=7, k=(3, 3), stride=(1, 1), pad=(1, 1),
              dil=(1, 1), groups=1, kernels=4, hidden=None, temperature=1.0,
              bias=True, fc1_bias=True, fc2_bias=True, seed=None):
    if hidden is None:  # the rule of the common PyTorch re-implementation
        hidden = kernels if c_in == 3 else int(c_in * 0.25) + 1
    return dict(name=name, n=n, c_in=c_in, c_out=c_out, h=h, w=w, kh=k[0], kw=k[1],
                sh=stride[0], sw=stride[1], ph=pad[0], pw=pad[1], dh=dil[0], dw=dil[1],
                groups=groups, kernels=kernels, hidden=hidden, temperature=temperature,
                bias=bias, fc1_bias=fc1_bias, fc2_bias=fc2_bias, seed=seed or name)


def linear_case(name, n=2, d_in=8, d_out=5, kernels=4, hidden=3, temperature=1.0,
                bias=True, fc1_bias=True, fc2_bias=True, seed=None):
    return dict(name=name, n=n, d_in=d_in, d_out=d_out, kernels=kernels, hidden=hidden,
                temperature=temperature, bias=bias, fc1_bias=fc1_bias, fc2_bias=fc2_bias,
                seed=seed or name)


def bias_cases():
    cases = []
    for wb in (False, True):
        for b1 in (False, True):
            for b2 in (False, True):
                parts = [p for p, on in (("weight", wb), ("fc1", b1), ("fc2", b2)) if on]
                name = "bias_" + ("_".join(parts) if parts else "none")
                cases.append(conv_case(name, n=2, c_in=3, c_out=4, h=5, w=5, kernels=3,
                                       bias=wb, fc1_bias=b1, fc2_bias=b2))
    return cases


CONV2D_CASES = [
    conv_case("basic_3x3", n=2, c_in=4, c_out=6, h=7, w=7),
    conv_case("stride2_odd", n=2, c_in=3, c_out=4, h=7, w=9, stride=(2, 2), pad=(0, 0), kernels=3),
    conv_case("stride2_odd_pad1", n=2, c_in=4, c_out=4, h=9, w=7, stride=(2, 2), pad=(1, 1)),
    conv_case("padding2", n=2, c_in=4, c_out=5, h=6, w=5, pad=(2, 2)),
    conv_case("dilation2", n=2, c_in=4, c_out=4, h=9, w=9, pad=(2, 2), dil=(2, 2)),
    conv_case("dilation2_nopad", n=1, c_in=3, c_out=4, h=9, w=8, pad=(0, 0), dil=(2, 2), kernels=2),
    conv_case("kernel_3x1", n=2, c_in=4, c_out=4, h=6, w=5, k=(3, 1), pad=(1, 0)),
    conv_case("kernel_1x5", n=2, c_in=4, c_out=4, h=5, w=8, k=(1, 5), pad=(0, 2)),
    conv_case("kernel_2x3", n=2, c_in=4, c_out=4, h=6, w=7, k=(2, 3), pad=(0, 0)),
    conv_case("groups2", n=2, c_in=4, c_out=6, h=6, w=6, groups=2),
    conv_case("groups2_stride2_dilation2", n=2, c_in=8, c_out=4, h=11, w=10, stride=(2, 2),
              pad=(2, 1), dil=(2, 2), groups=2, kernels=3),
    conv_case("depthwise", n=2, c_in=6, c_out=6, h=7, w=7, groups=6),
    conv_case("depthwise_stride2", n=2, c_in=4, c_out=4, h=8, w=9, stride=(2, 2), groups=4),
    conv_case("channel_multiplier2", n=2, c_in=4, c_out=8, h=6, w=6, groups=4),
    conv_case("single_kernel_k1", n=2, c_in=4, c_out=4, h=6, w=6, kernels=1),
    conv_case("batch3", n=3, c_in=4, c_out=5, h=6, w=7),
    *bias_cases(),
    conv_case("temperature_0p5", n=2, c_in=4, c_out=4, h=6, w=6, temperature=0.5,
              seed="temperature"),
    conv_case("temperature_1", n=2, c_in=4, c_out=4, h=6, w=6, temperature=1.0,
              seed="temperature"),
    conv_case("temperature_30", n=2, c_in=4, c_out=4, h=6, w=6, temperature=30.0,
              seed="temperature"),
    conv_case("pointwise_1x1", n=2, c_in=8, c_out=6, h=5, w=6, k=(1, 1), pad=(0, 0)),
    conv_case("pointwise_1x1_stride2", n=2, c_in=8, c_out=6, h=7, w=6, k=(1, 1), pad=(0, 0),
              stride=(2, 2)),
    conv_case("output_1x1", n=2, c_in=4, c_out=5, h=5, w=4, stride=(3, 3), pad=(0, 0)),
    conv_case("output_1x1_full_kernel", n=2, c_in=3, c_out=4, h=4, w=5, k=(4, 5), pad=(0, 0),
              kernels=3),
    conv_case("asymmetric", n=2, c_in=4, c_out=4, h=9, w=10, k=(3, 2), stride=(2, 1),
              pad=(1, 2), dil=(1, 2)),
    conv_case("asymmetric_transposed", n=2, c_in=4, c_out=4, h=10, w=9, k=(2, 3), stride=(1, 2),
              pad=(2, 1), dil=(2, 1)),
    conv_case("hidden_eq_k_cin3", n=2, c_in=3, c_out=4, h=6, w=6, kernels=4, hidden=4),
    conv_case("hidden_ratio_cin8", n=2, c_in=8, c_out=4, h=5, w=5, kernels=4,
              hidden=int(8 * 0.25) + 1),
    conv_case("hidden_1", n=2, c_in=4, c_out=4, h=5, w=5, kernels=3, hidden=1),
    conv_case("kernels8_hidden6", n=2, c_in=5, c_out=3, h=6, w=5, kernels=8, hidden=6),
]

LINEAR_CASES = [
    linear_case("linear_basic"),
    linear_case("linear_no_bias", bias=False, fc1_bias=False, fc2_bias=False),
    linear_case("linear_weight_bias_only", bias=True, fc1_bias=False, fc2_bias=False),
    linear_case("linear_attention_bias_only", bias=False, fc1_bias=True, fc2_bias=True),
    linear_case("linear_k1", kernels=1, hidden=2),
    linear_case("linear_batch4", n=4, d_in=6, d_out=7, kernels=3, hidden=2),
    linear_case("linear_single_sample", n=1, d_in=5, d_out=3),
    linear_case("linear_temperature_0p5", temperature=0.5, seed="linear_basic"),
    linear_case("linear_temperature_30", temperature=30.0, seed="linear_basic"),
]


# ------------------------------------------------------------------------------------------------
# Data and forward
# ------------------------------------------------------------------------------------------------

def seed_for(kind, name, attempt):
    # Cases that give the same seed name (and shape) share their data, e.g. to vary only T, unless
    # generate() has to reject a draw for one of them.
    torch.manual_seed(zlib.crc32(f"{kind}/{name}/{attempt}".encode()))


def randn(*shape, std=1.0):
    return torch.randn(*shape, dtype=torch.float32) * std


def attention(pooled, p, temperature):
    u = F.relu(F.linear(pooled, p["fc1_weight"], p["fc1_bias"]))
    z = F.linear(u, p["fc2_weight"], p["fc2_bias"])
    return torch.softmax(z / temperature, dim=1)


def attention_params(p, d_in, hidden, kernels, fc1_bias, fc2_bias):
    # fc weights of std ~1 (scaled by fan-in) so that pi varies clearly within and across samples.
    p["fc1_weight"] = randn(hidden, d_in, std=1.2 / d_in ** 0.5)
    p["fc1_bias"] = randn(hidden, std=0.5) if fc1_bias else None
    p["fc2_weight"] = randn(kernels, hidden, std=1.2 / hidden ** 0.5)
    p["fc2_bias"] = randn(kernels, std=0.5) if fc2_bias else None


def make_conv2d(c, attempt):
    seed_for("conv2d", c["seed"], attempt)
    n, c_in, c_out, g, k = c["n"], c["c_in"], c["c_out"], c["groups"], c["kernels"]
    # Per-sample, per-channel offsets make the pooled vectors (and so pi) differ between samples.
    x = randn(n, c_in, c["h"], c["w"]) + randn(n, c_in, 1, 1, std=1.5)
    fan_in = (c_in // g) * c["kh"] * c["kw"]
    p = {"weight": randn(k, c_out, c_in // g, c["kh"], c["kw"], std=1.0 / fan_in ** 0.5)}
    p["bias"] = randn(k, c_out, std=0.5) if c["bias"] else None
    attention_params(p, c_in, c["hidden"], k, c["fc1_bias"], c["fc2_bias"])

    pi, y = conv2d_forward(c, x, p)
    return x, p, pi, y


def conv2d_forward(c, x, p):
    pi = attention(x.mean((2, 3)), p, c["temperature"])
    ys = []
    for i in range(c["n"]):
        wn = torch.einsum("k,koihw->oihw", pi[i], p["weight"])
        bn = pi[i] @ p["bias"] if p["bias"] is not None else None
        ys.append(F.conv2d(x[i:i + 1], wn, bn, stride=(c["sh"], c["sw"]),
                           padding=(c["ph"], c["pw"]), dilation=(c["dh"], c["dw"]),
                           groups=c["groups"]))
    return pi, torch.cat(ys, 0)


def make_linear(c, attempt):
    seed_for("linear", c["seed"], attempt)
    n, k = c["n"], c["kernels"]
    x = randn(n, c["d_in"], std=1.5)
    p = {"weight": randn(k, c["d_out"], c["d_in"], std=1.0 / c["d_in"] ** 0.5)}
    p["bias"] = randn(k, c["d_out"], std=0.5) if c["bias"] else None
    attention_params(p, c["d_in"], c["hidden"], k, c["fc1_bias"], c["fc2_bias"])

    pi, y = linear_forward(c, x, p)
    return x, p, pi, y


def linear_forward(c, x, p):
    pi = attention(x, p, c["temperature"])
    ys = []
    for i in range(c["n"]):
        wn = torch.einsum("k,koi->oi", pi[i], p["weight"])
        bn = pi[i] @ p["bias"] if p["bias"] is not None else None
        ys.append(F.linear(x[i:i + 1], wn, bn))
    return pi, torch.cat(ys, 0)


PARAM_KEYS = ("weight", "bias", "fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias")


def gradients(kind, forward, c, x, p, attempt):
    """dL/dy drawn from the case's own gradient seed (the forward data above does not move),
    and autograd's dL/dx and dL/dparameter for L = <dL/dy, y>, through the attention too."""
    torch.manual_seed(zlib.crc32(f"{kind}-grad/{c['seed']}/{attempt}".encode()))
    xg = x.clone().requires_grad_(True)
    pg = {k: (v.clone().requires_grad_(True) if v is not None else None) for k, v in p.items()}
    _, y = forward(c, xg, pg)
    dy = randn(*y.shape)
    y.backward(dy)
    grads = {k: (v.grad if v is not None else None) for k, v in pg.items()}
    for k, v in [("dx", xg.grad)] + list(grads.items()):
        if v is not None and not torch.all(torch.isfinite(v)):
            sys.exit(f"generate_golden.py: {kind} case {c['name']}: non-finite gradient {k}")
    return dy, xg.grad, grads


class Unfit(Exception):
    pass


def check(pi, y):
    """Raise Unfit unless the case can actually catch mistakes: attention neither uniform nor
    one-hot and different between samples, output O(1) and neither mostly zero nor constant."""
    def fail(msg):
        raise Unfit(msg)

    pi = pi.double().numpy()
    y = y.double().numpy().ravel()
    if not np.all(np.isfinite(y)) or not np.all(np.isfinite(pi)):
        fail("non-finite output")
    if not np.allclose(pi.sum(1), 1.0, atol=1e-5):
        fail("attention rows do not sum to 1")
    n, k = pi.shape
    if k > 1:
        # Not uniform within a sample, and not one-hot (so several kernels contribute).
        spread = pi.max(1) - pi.min(1)
        if spread.min() < 1e-3:
            fail(f"attention nearly uniform (spread {spread.min():.3g})")
        second = np.sort(pi, axis=1)[:, -2]
        if second.min() < 0.02:
            fail(f"attention nearly one-hot (second largest {second.min():.3g})")
        # Different across samples: attention is per sample.
        for a in range(n):
            for b in range(a + 1, n):
                if np.abs(pi[a] - pi[b]).max() < 1e-3:
                    fail(f"attention of samples {a} and {b} nearly equal")
    zeros = np.count_nonzero(np.abs(y) < 1e-6)
    if zeros * 2 > y.size:
        fail(f"{zeros} of {y.size} outputs are zero")
    if y.max() - y.min() < 1e-3:
        fail("output nearly constant")
    rms = float(np.sqrt(np.mean(y ** 2)))
    if not 0.05 < rms < 20.0:
        fail(f"output not O(1) (rms {rms:.3g})")
    return rms


# ------------------------------------------------------------------------------------------------
# Drawing usable data
# ------------------------------------------------------------------------------------------------

MAX_ATTEMPTS = 20


def check_gradients(c, dx, grads):
    """Raise Unfit when a gradient is mostly zero: typically ReLU units of the attention that
    are dead for every sample, whose gradients would then compare zero with zero. With K = 1
    the attention's gradients vanish by construction and are exempt."""
    named = [("dx", dx)] + [(k, v) for k, v in grads.items() if v is not None]
    for key, v in named:
        if c["kernels"] == 1 and key.startswith("fc"):
            continue
        v = v.double().numpy().ravel()
        zeros = np.count_nonzero(np.abs(v) < 1e-12)
        if zeros * 2 > v.size or (v.size == 1 and zeros == 1):
            raise Unfit(f"{zeros} of {v.size} values of the gradient of {key} are zero")


def generate(kind, make, forward, c):
    """Draws the case's data; a draw that fails check() or check_gradients() (e.g. ReLU
    silencing every hidden unit of a sample) is replaced by the next seed, so the result stays
    deterministic."""
    reasons = []
    for attempt in range(MAX_ATTEMPTS):
        x, p, pi, y = make(c, attempt)
        try:
            rms = check(pi, y)
            dy, dx, grads = gradients(kind, forward, c, x, p, attempt)
            check_gradients(c, dx, grads)
        except Unfit as e:
            reasons.append(str(e))
            continue
        return x, p, pi, y, rms, attempt, (dy, dx, grads)
    sys.exit(f"generate_golden.py: {kind} case {c['name']}: no usable data in {MAX_ATTEMPTS} "
             f"draws (last: {reasons[-1]})")


def c_float(v):
    s = "%.9g" % float(v)
    if s in ("nan", "inf", "-inf"):
        raise ValueError("non-finite value")
    if "." not in s and "e" not in s:
        s += ".0"
    if np.float32(s) != np.float32(v):
        raise ValueError(f"{s} does not round-trip to {v!r}")
    return s + "f"


# ------------------------------------------------------------------------------------------------
# Output: one .npy per array, and the C table of the cases
# ------------------------------------------------------------------------------------------------

class DataWriter:
    """Writes data/<kind>/<case>/<field>.npy (float32, C order, as np.save writes it) and
    remembers every file, so that files of cases that no longer exist can be removed."""

    def __init__(self):
        self.written = set()

    def array(self, kind, case, field, tensor):
        if tensor is None:
            return
        path = os.path.join(DATA, kind, case, field + ".npy")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        values = np.ascontiguousarray(tensor.detach().numpy().astype("<f4"))
        np.save(path, values, allow_pickle=False)
        self.written.add(os.path.abspath(path))

    def case(self, kind, name, x, p, y, pi, dy, dx, grads):
        for field, t in [("x", x), ("y", y), ("pi", pi), ("dy", dy), ("dx", dx)]:
            self.array(kind, name, field, t)
        for key in PARAM_KEYS:
            self.array(kind, name, key, p[key])
            self.array(kind, name, "d" + key, grads[key])

    def remove_stale(self):
        for root, _, files in os.walk(DATA):
            for f in files:
                path = os.path.abspath(os.path.join(root, f))
                if path not in self.written:
                    os.remove(path)
        for root, dirs, _ in os.walk(DATA, topdown=False):
            for d in dirs:
                full = os.path.join(root, d)
                if not os.listdir(full):
                    os.rmdir(full)


def shape(t):
    return "[" + ", ".join(str(d) for d in t.shape) + "]"


def c_bool(v):
    return "true" if v else "false"


def main():
    torch.set_num_threads(1)
    data = DataWriter()
    conv_entries, linear_entries = [], []
    names = set()

    for c in CONV2D_CASES:
        name = c["name"]
        # A case name is a directory name and a test name.
        assert name.isidentifier() and name not in names, name
        names.add(name)
        x, p, pi, y, rms, attempt, (dy, dx, grads) = generate("conv2d", make_conv2d,
                                                               conv2d_forward, c)
        data.case("conv2d", name, x, p, y, pi, dy, dx, grads)
        conv_entries.append(
            f"    {{.name = \"{name}\",\n"
            f"     .geometry = {{{c['c_in']}, {c['c_out']}, {c['kh']}, {c['kw']}, "
            f"{c['sh']}, {c['sw']}, {c['ph']}, {c['pw']}, {c['dh']}, {c['dw']}, "
            f"{c['groups']}, {c['kernels']}, {c['hidden']}}},\n"
            f"     .temperature = {c_float(np.float32(c['temperature']))}, "
            f".batch = {c['n']}, .height = {c['h']}, .width = {c['w']}, "
            f".out_h = {y.shape[2]}, .out_w = {y.shape[3]},\n"
            f"     .has_bias = {c_bool(c['bias'])}, .has_fc1_bias = {c_bool(c['fc1_bias'])}, "
            f".has_fc2_bias = {c_bool(c['fc2_bias'])}}},\n")
        print(f"conv2d {name:28s} y {shape(y):16s} rms {rms:.3f} seed#{attempt} "
              f"pi[0] {np.array2string(pi[0].numpy(), precision=3)}")

    for c in LINEAR_CASES:
        name = c["name"]
        assert name.isidentifier() and name not in names, name
        names.add(name)
        x, p, pi, y, rms, attempt, (dy, dx, grads) = generate("linear", make_linear,
                                                               linear_forward, c)
        data.case("linear", name, x, p, y, pi, dy, dx, grads)
        linear_entries.append(
            f"    {{.name = \"{name}\",\n"
            f"     .geometry = {{{c['d_in']}, {c['d_out']}, {c['kernels']}, {c['hidden']}}},\n"
            f"     .temperature = {c_float(np.float32(c['temperature']))}, .batch = {c['n']},\n"
            f"     .has_bias = {c_bool(c['bias'])}, .has_fc1_bias = {c_bool(c['fc1_bias'])}, "
            f".has_fc2_bias = {c_bool(c['fc2_bias'])}}},\n")
        print(f"linear {name:28s} y {shape(y):16s} rms {rms:.3f} seed#{attempt} "
              f"pi[0] {np.array2string(pi[0].numpy(), precision=3)}")

    data.remove_stale()
    out = [
        "/* Generated by tests/golden/generate_golden.py with PyTorch "
        f"{torch.__version__.split('+')[0]}. Do not edit by hand:\n"
        " * change the generator and run it again (see tests/golden/README.md).\n"
        " * The cases; their arrays are in data/<kind>/<name>/<field>.npy (golden_load.c). */\n",
        "#include \"golden.h\"\n\n",
        "/* geometry: in, out, kernel h, w, stride h, w, pad h, w, dilation h, w, groups, K, "
        "hidden */\n",
        "golden_conv2d_case golden_conv2d_cases[] = {\n", *conv_entries, "};\n",
        "const size_t golden_conv2d_case_count =\n"
        "    sizeof golden_conv2d_cases / sizeof golden_conv2d_cases[0];\n",
        "\n/* geometry: in features, out features, K, hidden */\n",
        "golden_linear_case golden_linear_cases[] = {\n", *linear_entries, "};\n",
        "const size_t golden_linear_case_count =\n"
        "    sizeof golden_linear_cases / sizeof golden_linear_cases[0];\n",
    ]
    text = "".join(out)
    with open(OUTPUT, "w", encoding="ascii") as f:
        f.write(text)
    print(f"wrote {OUTPUT} ({len(CONV2D_CASES)} conv2d and {len(LINEAR_CASES)} linear cases) "
          f"and {len(data.written)} arrays under {DATA}")


if __name__ == "__main__":
    main()
