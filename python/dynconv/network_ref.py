"""A reference interpreter of network files (docs/file-format.md, "Networks"), in numpy and
double precision: it reads the graph and the tensors of a file written by
dynconv.export.export_network and runs the ops one by one, from the file alone (no PyTorch, no
libdynconv). It is the proof that a file holds everything the network computes, and the
oracle the C library's network runtime (dynconv_network_*) is measured against.

    from dynconv.network_ref import load_network
    net = load_network("resnet.safetensors")   # GraphError / SafetensorsError if malformed
    logits = net.run(x)                        # x [N, C, H, W]; float64 result

The loader checks everything the schema says before any op runs (network_format.parse_graph:
unknown ops, missing tensors, dangling edges, cycles); shapes that depend on the input (the
channel count reaching a layer, a kernel larger than the padded input) are checked as the
network runs, and refused with the node's name.
"""

import json
import struct

import numpy as np

from . import network_format
from .network_format import GraphError
from .safetensors import load_file

__all__ = ["GraphError", "Network", "load_network"]


def _header_dtypes(path):
    """{tensor name: dtype string} from the header (the parser widens BF16 to float32, which
    would hide a non-F32 tensor)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n).decode("utf-8"))
    return {k: v["dtype"] for k, v in header.items() if k != "__metadata__"}


def load_network(path):
    """The network of a file, checked (GraphError naming what is wrong)."""
    tensors, metadata = load_file(path)
    not_f32 = sorted(k for k, d in _header_dtypes(path).items() if d != "F32")
    if not_f32:
        raise GraphError(f"{path}: network tensors must be F32: {', '.join(not_f32[:8])}")
    try:
        graph = network_format.parse_graph(metadata, {k: v.shape for k, v in tensors.items()})
    except GraphError as e:
        raise GraphError(f"{path}: {e}") from None
    return Network(graph, tensors)


def _windows(xp, kernel, stride, dilation, out):
    """[N, C, kh, kw, Ho, Wo]: the input under each kernel tap, for each output position."""
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, stride, dilation, out
    taps = [[xp[:, :, i * dh: i * dh + sh * (ho - 1) + 1: sh,
                j * dw: j * dw + sw * (wo - 1) + 1: sw] for j in range(kw)] for i in range(kh)]
    return np.stack([np.stack(row, axis=2) for row in taps], axis=2)


def _out_size(where, size, kernel, stride, padding, dilation):
    out = []
    for s, k, st, p, d in zip(size, kernel, stride, padding, dilation):
        o = (s + 2 * p - d * (k - 1) - 1) // st + 1
        if o < 1:
            raise ValueError(f"{where}: kernel {k} (dilation {d}) is larger than the padded "
                             f"input {s + 2 * p}")
        out.append(o)
    return out


def _conv(where, x, weight, bias, stride, padding, dilation, groups):
    """x [N, C, H, W]; weight [C_out, C/g, kh, kw] shared, or [N, C_out, C/g, kh, kw] per
    sample (a dynamic convolution's aggregated kernels); bias [C_out] or [N, C_out]."""
    n, c, h, w = x.shape
    per_sample = weight.ndim == 5
    c_out, cg, kh, kw = weight.shape[-4:]
    if c != cg * groups:
        raise ValueError(f"{where}: input has {c} channels, the kernels take {cg * groups}")
    ho, wo = _out_size(where, (h, w), (kh, kw), stride, padding, dilation)
    xp = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    cols = _windows(xp, (kh, kw), stride, dilation, (ho, wo))  # [N, C, kh, kw, Ho, Wo]
    cols = cols.reshape(n, groups, cg * kh * kw, ho * wo)
    wm = weight.reshape((n if per_sample else 1), groups, c_out // groups, cg * kh * kw)
    y = np.matmul(wm, cols).reshape(n, c_out, ho, wo)
    if bias is not None:
        y = y + (bias.reshape(-1, c_out, 1, 1))
    return y


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _attention(t, pooled, temperature):
    """pi [N, K] = softmax(fc2(relu(fc1(pooled))) / T)."""
    h = pooled @ t["fc1_weight"].T
    if "fc1_bias" in t:
        h = h + t["fc1_bias"]
    z = np.maximum(h, 0) @ t["fc2_weight"].T
    if "fc2_bias" in t:
        z = z + t["fc2_bias"]
    return _softmax(z / temperature)


def _pool(where, x, attrs, kind):
    n, c, h, w = x.shape
    k, s, p = attrs["kernel_size"], attrs["stride"], attrs["padding"]
    d = attrs.get("dilation", [1, 1])
    ho, wo = _out_size(where, (h, w), k, s, p, d)
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (p[0],) * 2, (p[1],) * 2), constant_values=fill)
    win = _windows(xp, k, s, d, (ho, wo))
    if kind == "max":
        return win.max(axis=(2, 3))
    total = win.sum(axis=(2, 3))
    if attrs["count_include_pad"]:
        return total / (k[0] * k[1])
    ones = np.pad(np.ones((1, 1, h, w)), ((0, 0), (0, 0), (p[0],) * 2, (p[1],) * 2))
    return total / _windows(ones, k, s, d, (ho, wo)).sum(axis=(2, 3))


class Network:
    """A checked graph and its tensors (float64); run(x) computes the outputs."""

    def __init__(self, graph, tensors):
        self.graph = graph
        self.input = graph["input"]
        self.outputs = graph["outputs"]
        self.nodes = graph["nodes"]
        self.tensors = {k: np.asarray(v, dtype=np.float64) for k, v in tensors.items()}

    def _node_tensors(self, node):
        return {slot: self.tensors[name] for slot, name in node["tensors"].items()}

    def run(self, x, all_values=False):
        """The network's output for x [N, C, H, W] (the first output; all of them as a list
        when the graph has several), in float64. all_values=True returns {value name: array}
        of every node instead."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 4 or x.shape[1] != self.input["shape"][1]:
            raise ValueError(f"input of shape {list(x.shape)}: the network takes [N, "
                             f"{self.input['shape'][1]}, H, W]")
        values = {self.input["name"]: x}
        for node in self.nodes:
            values[node["name"]] = self._run_node(node, [values[v] for v in node["inputs"]])
        if all_values:
            return values
        outs = [values[o] for o in self.outputs]
        return outs[0] if len(outs) == 1 else outs

    def _run_node(self, node, ins):
        op, a, where = node["op"], node["attrs"], f"node '{node['name']}' ({node['op']})"
        t = self._node_tensors(node)
        x = ins[0]
        rank4 = ("conv2d", "dynamic_conv2d", "batchnorm2d", "max_pool2d", "avg_pool2d",
                 "global_avg_pool2d", "cat")
        if op in rank4 and any(v.ndim != 4 for v in ins):
            raise ValueError(f"{where}: input of shape {list(x.shape)}, expected [N, C, H, W]")
        if op in ("linear", "dynamic_linear") and x.ndim != 2:
            raise ValueError(f"{where}: input of shape {list(x.shape)}, expected [N, D]")
        if op == "conv2d":
            return _conv(where, x, t["weight"], t.get("bias"), a["stride"], a["padding"],
                         a["dilation"], a["groups"])
        if op == "dynamic_conv2d":
            if t["fc1_weight"].shape[1] != x.shape[1]:
                raise ValueError(f"{where}: input has {x.shape[1]} channels, the attention "
                                 f"takes {t['fc1_weight'].shape[1]}")
            pi = _attention(t, x.mean(axis=(2, 3)), a["temperature"])
            k = t["weight"].shape[0]
            w = (pi @ t["weight"].reshape(k, -1)).reshape((x.shape[0],) + t["weight"].shape[1:])
            b = pi @ t["bias"] if "bias" in t else None
            return _conv(where, x, w, b, a["stride"], a["padding"], a["dilation"],
                         a["groups"])
        if op == "linear":
            if x.shape[1] != t["weight"].shape[1]:
                raise ValueError(f"{where}: input has {x.shape[1]} features, the weight takes "
                                 f"{t['weight'].shape[1]}")
            y = x @ t["weight"].T
            return y + t["bias"] if "bias" in t else y
        if op == "dynamic_linear":
            if x.shape[1] != t["weight"].shape[2]:
                raise ValueError(f"{where}: input has {x.shape[1]} features, the weight takes "
                                 f"{t['weight'].shape[2]}")
            pi = _attention(t, x, a["temperature"])
            y = np.einsum("nk,koi,ni->no", pi, t["weight"], x)
            return y + pi @ t["bias"] if "bias" in t else y
        if op == "batchnorm2d":
            c = t["running_mean"].shape[0]
            if x.shape[1] != c:
                raise ValueError(f"{where}: input has {x.shape[1]} channels, the batch norm "
                                 f"{c}")
            scale = t["weight"] / np.sqrt(t["running_var"] + a["eps"])
            shift = t["bias"] - t["running_mean"] * scale
            return x * scale.reshape(1, c, 1, 1) + shift.reshape(1, c, 1, 1)
        if op == "relu":
            return np.maximum(x, 0)
        if op == "relu6":
            return np.clip(x, 0, 6)
        if op == "add":
            if ins[0].shape != ins[1].shape:
                raise ValueError(f"{where}: shapes {list(ins[0].shape)} and "
                                 f"{list(ins[1].shape)} differ")
            return ins[0] + ins[1]
        if op == "max_pool2d":
            return _pool(where, x, a, "max")
        if op == "avg_pool2d":
            return _pool(where, x, a, "avg")
        if op == "global_avg_pool2d":
            return x.mean(axis=(2, 3), keepdims=True)
        if op == "flatten":
            return x.reshape(x.shape[0], -1)
        if op == "cat":
            if len({(v.shape[0], v.shape[2], v.shape[3]) for v in ins}) != 1:
                raise ValueError(f"{where}: inputs of shapes {[list(v.shape) for v in ins]} "
                                 "differ outside the channels")
            return np.concatenate(ins, axis=1)
        raise GraphError(f"{where}: unknown op")  # parse_graph admits only known ops
