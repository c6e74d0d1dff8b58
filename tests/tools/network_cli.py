#!/usr/bin/python3
"""`dynconv infer` and `dynconv info --model` on whole networks: the golden networks of
tests/networks against their PyTorch logits, several outputs, threads and temperature; bad
network files and bad inputs (exit status 1, one message naming the file, no output written),
bad usage (exit 2); and the node listing of `info --model`.

    network_cli.py PATH/TO/dynconv PATH/TO/tests/networks

Standard library only (like malformed_files.py), so that it also runs in the sanitizer build."""

import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import unittest

CLI = None
GOLDEN = None
# Float32 through a whole network (BatchNorm folded into the kernels in double, sums in a
# different order than PyTorch's) against PyTorch's logits: relative 1e-3, absolute 1e-4 of the
# largest logit.
RTOL, ATOL = 1e-3, 1e-4


def read_npy(path):
    """(shape, values) of a little-endian float32 C-order .npy file (format 1.0 or 2.0)."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:6] == b"\x93NUMPY", path
    if data[6] == 1:
        (hlen,), start = struct.unpack("<H", data[8:10]), 10
    else:
        (hlen,), start = struct.unpack("<I", data[8:12]), 12
    header = data[start:start + hlen].decode("latin1")
    assert "'descr': '<f4'" in header and "'fortran_order': False" in header, header
    shape_text = header.split("'shape': (", 1)[1].split(")", 1)[0]
    shape = tuple(int(d) for d in shape_text.split(",") if d.strip())
    body = data[start + hlen:]
    return shape, list(struct.unpack(f"<{len(body) // 4}f", body))


def npy(shape, values):
    shape_text = "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
    text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}"
    text += " " * (-(10 + len(text) + 1) % 64) + "\n"
    return (b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode() +
            struct.pack(f"<{len(values)}f", *values))


def safetensors(tensors, metadata):
    header, body = {"__metadata__": metadata}, b""
    for name, (shape, values) in tensors.items():
        raw = struct.pack(f"<{len(values)}f", *values)
        header[name] = {"dtype": "F32", "shape": shape,
                        "data_offsets": [len(body), len(body) + len(raw)]}
        body += raw
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + body


# A small network written by hand: a 1x1 convolution 2 -> 3 (with bias) and a ReLU of it, both
# outputs of the network. (The 3x3 variant has no padding, for inputs too small for it.)
C_IN, C_OUT = 2, 3
WEIGHT = [0.5, -1.0, 0.25, 2.0, -0.75, 0.125]  # [3, 2, 1, 1]
BIAS = [0.1, -0.2, 0.3]


def tiny_network(kernel=1, edit=None, outputs=("conv", "act")):
    weight = WEIGHT if kernel == 1 else [((i * 7) % 5 - 2) / 4 for i in range(C_OUT * C_IN * kernel ** 2)]
    conv = {"name": "conv", "op": "conv2d", "inputs": ["x"], "module": "conv",
            "attrs": {"stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "groups": 1},
            "tensors": {"weight": "conv.weight", "bias": "conv.bias"},
            "shape": [1, C_OUT, 4 - kernel + 1, 4 - kernel + 1]}
    act = {"name": "act", "op": "relu", "inputs": ["conv"], "module": "", "attrs": {},
           "tensors": {}, "shape": conv["shape"]}
    graph = {"schema": "dynconv.network", "version": 1,
             "inputs": [{"name": "x", "shape": [1, C_IN, 4, 4]}], "outputs": list(outputs),
             "nodes": [conv, act]}
    if edit is not None:
        edit(graph)
    tensors = {"conv.weight": ([C_OUT, C_IN, kernel, kernel], weight), "conv.bias": ([C_OUT], BIAS)}
    return safetensors(tensors, {"dynconv.graph": json.dumps(graph)})


def run(*args):
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=120)


def golden(name):
    with open(os.path.join(GOLDEN, "networks.json")) as f:
        entry = json.load(f)[name]
    return tuple(os.path.join(GOLDEN, entry[k]) for k in ("file", "input", "logits"))


class Base(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = tmp.name
        self.y = self.path("y.npy")

    def path(self, name):
        return os.path.join(self.dir, name)

    def write(self, name, data):
        with open(self.path(name), "wb") as f:
            f.write(data)
        return self.path(name)

    def infer(self, model, x, *extra, output=None):
        r = run("infer", "--model", model, "--input", x, "--output", output or self.y, *extra)
        self.assertNotIn("Sanitizer", r.stderr)
        self.assertNotIn("runtime error", r.stderr)
        return r

    def assert_close(self, got, want, what):
        self.assertEqual(got[0], want[0], what)
        scale = max(abs(v) for v in want[1])
        self.assertGreater(scale, 0, what)
        worst = max(abs(a - b) - (ATOL * scale + RTOL * abs(b)) for a, b in zip(got[1], want[1]))
        self.assertLessEqual(worst, 0.0, f"{what}: beyond tolerance by {worst:.3g}")

    def assert_fails(self, model, x, *phrases, named=None, extra=()):
        with open(self.y, "wb") as f:
            f.write(b"previous")
        r = self.infer(model, x, *extra)
        self.assertEqual(r.returncode, 1, f"exit status {r.returncode}, stderr: {r.stderr}")
        self.assertTrue(r.stderr.startswith("dynconv infer: "), r.stderr)
        self.assertEqual(r.stderr.count("\n"), 1, f"not one line: {r.stderr}")
        self.assertEqual(r.stdout, "")
        self.assertIn(named or model, r.stderr)
        for p in phrases:
            self.assertIn(p, r.stderr)
        with open(self.y, "rb") as f:
            self.assertEqual(f.read(), b"previous", "a failed run replaced the output")
        self.assertEqual([n for n in os.listdir(self.dir) if ".tmp-" in n], [])
        self.assertFalse(os.path.exists(self.path("y.1.npy")))


class Golden(Base):
    def test_golden_networks_match_pytorch(self):
        with open(os.path.join(GOLDEN, "networks.json")) as f:
            names = sorted(json.load(f))
        self.assertGreaterEqual(len(names), 4)
        for name in names:
            with self.subTest(network=name):
                model, x, logits = golden(name)
                r = self.infer(model, x)
                self.assertEqual((r.returncode, r.stderr, r.stdout), (0, "", ""))
                want = read_npy(logits)
                self.assert_close(read_npy(self.y), want, name)
                # The logits depend on the input: a network ignoring it could not pass.
                n, d = want[0]
                self.assertGreater(max(abs(want[1][i] - want[1][d + i]) for i in range(d)),
                                   1e-3 * max(abs(v) for v in want[1]))

    def test_threads(self):
        model, x, logits = golden("dy_resnet")
        for threads in ("1", "2"):
            with self.subTest(threads=threads):
                r = self.infer(model, x, "--threads", threads)
                self.assertEqual((r.returncode, r.stderr), (0, ""))
                self.assert_close(read_npy(self.y), read_npy(logits), f"{threads} threads")

    def test_temperature_sets_every_dynamic_layer(self):
        # dy_mobilenetv2 was exported with temperature 1: --temperature 1 changes nothing, a
        # sharp temperature changes the attention of every layer and so the logits.
        model, x, logits = golden("dy_mobilenetv2")
        r = self.infer(model, x, "--temperature", "1")
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        self.assert_close(read_npy(self.y), read_npy(logits), "temperature 1")
        r = self.infer(model, x, "--temperature", "0.01")
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        got, want = read_npy(self.y)[1], read_npy(logits)[1]
        self.assertGreater(max(abs(a - b) for a, b in zip(got, want)),
                           0.01 * max(abs(v) for v in want))

    def test_other_input_size(self):
        # N, H and W may differ from the traced shape; only C is fixed.
        model, _, _ = golden("dy_resnet")
        x = self.write("x.npy", npy([3, 3, 40, 24], [math.sin(i) for i in range(3 * 3 * 40 * 24)]))
        r = self.infer(model, x)
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        shape, values = read_npy(self.y)
        self.assertEqual(shape, (3, 10))
        self.assertTrue(all(math.isfinite(v) for v in values))


class SeveralOutputs(Base):
    def test_outputs_are_numbered(self):
        model = self.write("tiny.safetensors", tiny_network())
        xs = [((i * 5) % 11 - 5) / 3 for i in range(C_IN * 16)]
        x = self.write("x.npy", npy([1, C_IN, 4, 4], xs))
        r = self.infer(model, x)
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        conv = [BIAS[o] + sum(WEIGHT[o * C_IN + c] * xs[c * 16 + p] for c in range(C_IN))
                for o in range(C_OUT) for p in range(16)]
        self.assert_close(read_npy(self.y), ((1, C_OUT, 4, 4), conv), "output 0 (conv)")
        self.assert_close(read_npy(self.path("y.1.npy")),
                          ((1, C_OUT, 4, 4), [max(v, 0.0) for v in conv]), "output 1 (relu)")
        self.assertEqual(sorted(os.listdir(self.dir)),
                         ["tiny.safetensors", "x.npy", "y.1.npy", "y.npy"])
        # a name without .npy gets the number appended
        r = self.infer(model, x, output=self.path("out"))
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        self.assertTrue(os.path.exists(self.path("out")) and os.path.exists(self.path("out.1")))


class BadFiles(Base):
    def setUp(self):
        super().setUp()
        self.model, self.x, _ = golden("dy_resnet")

    def test_not_a_network(self):
        self.assert_fails(self.dir, self.x)
        self.assert_fails(self.path("missing.safetensors"), self.x)
        self.assert_fails(self.write("junk.safetensors", b"\x01\x02junk" * 10), self.x,
                          "invalid model")
        layer = safetensors({"weight": ([1, 1, 1, 1, 1], [1.0])}, {"stride": "1"})
        self.assert_fails(self.write("layer.safetensors", layer), self.x, "invalid model")

    def test_truncated(self):
        with open(self.model, "rb") as f:
            data = f.read()
        self.assert_fails(self.write("cut.safetensors", data[:-100]), self.x, "invalid model")
        self.assert_fails(self.write("head.safetensors", data[:40]), self.x, "invalid model")

    def test_bad_graphs(self):
        tiny_x = self.write("tiny.npy", npy([1, C_IN, 4, 4], [0.5] * (C_IN * 16)))
        for name, edit in (
                ("unknown op", lambda g: g["nodes"][1].update(op="gelu")),
                ("dangling edge", lambda g: g["nodes"][1].update(inputs=["nowhere"])),
                ("cycle", lambda g: g["nodes"][0].update(inputs=["act"])),
                ("version", lambda g: g.update(version=2))):
            with self.subTest(name):
                bad = self.write("bad.safetensors", tiny_network(edit=edit))
                self.assert_fails(bad, tiny_x, "invalid model")

    def test_bad_inputs(self):
        self.assert_fails(self.model, self.write("c4.npy", npy([2, 4, 8, 8], [0.0] * 512)),
                          "C = 3", named="c4.npy")
        self.assert_fails(self.model, self.write("r3.npy", npy([3, 8, 8], [0.0] * 192)),
                          "3 dimensions", named="r3.npy")
        self.assert_fails(self.model, self.write("e.npy", npy([0, 3, 8, 8], [])), "empty",
                          named="e.npy")
        self.assert_fails(self.model, self.write("bad.npy", b"\x93NUMPY\x01\x00junk"),
                          named="bad.npy")
        self.assert_fails(self.model, self.path("none.npy"), named="none.npy")
        # A kernel larger than the padded input: the message names the node.
        big = self.write("k3.safetensors", tiny_network(kernel=3))
        self.assert_fails(big, self.write("small.npy", npy([1, C_IN, 2, 2], [1.0] * 8)),
                          "does not suit", "conv", named="small.npy")

    def test_temperature_without_dynamic_layers(self):
        tiny = self.write("tiny.safetensors", tiny_network())
        x = self.write("tiny.npy", npy([1, C_IN, 4, 4], [0.5] * (C_IN * 16)))
        self.assert_fails(tiny, x, "--temperature", extra=("--temperature", "2"))


class Usage(Base):
    def test_help(self):
        for args in (["infer", "--help"], ["info", "--help"]):
            r = run(*args)
            self.assertEqual(r.returncode, 0, args)
            self.assertIn("--model", r.stdout)

    def test_bad_usage_exits_2(self):
        model, x, _ = golden("dy_resnet")
        full = ["infer", "--model", model, "--input", x, "--output", self.y]
        for args in (["infer"], ["infer", "--model", model], ["infer", "--input", x],
                     full[:5], full + ["--threads", "-1"], full + ["--threads", "x"],
                     full + ["--temperature", "0"], full + ["--temperature", "nan"],
                     full + ["--weights", model], full + ["extra"], full + ["--model", model],
                     ["info", "--model"], ["info", "--model", model, "more"],
                     ["info", "--model="]):
            with self.subTest(args=args[1:]):
                r = run(*args)
                self.assertEqual(r.returncode, 2, f"{args}: {r.stderr}")
                self.assertIn("--help", r.stderr)
                self.assertFalse(os.path.exists(self.y))


class ModelInfo(Base):
    def rows(self, stdout):
        lines = stdout.splitlines()
        start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["#", "name"])
        rows = []
        for line in lines[start + 1:]:
            if not line.strip():
                break
            fields = line.split()
            # index name op K fused [shape...] parameters; the shape has spaces
            shape_text = line[line.index("["):line.index("]") + 1]
            rows.append({"index": int(fields[0]), "name": fields[1], "op": fields[2],
                         "K": fields[3], "fused": fields[4],
                         "shape": json.loads(shape_text), "parameters": int(fields[-1])})
        return rows

    def test_dy_resnet(self):
        model, _, _ = golden("dy_resnet")
        r = run("info", "--model", model)
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        self.assertIn("input:       [2, 3, 32, 32]", r.stdout)
        rows = self.rows(r.stdout)
        self.assertEqual([row["index"] for row in rows], list(range(len(rows))))
        ops = [row["op"] for row in rows]
        # Every batch norm of this network follows a convolution and is folded into it.
        self.assertNotIn("batchnorm2d", ops)
        dynamic = [row for row in rows if row["op"] == "dynamic_conv2d"]
        self.assertEqual(len(dynamic), 11)  # 8 3x3 layers, 3 1x1 downsamples
        self.assertEqual({row["K"] for row in dynamic}, {"4"})
        self.assertTrue(all(row["fused"].startswith("bn") for row in dynamic))
        self.assertEqual(rows[0]["op"], "conv2d")
        self.assertEqual(rows[0]["fused"], "bn+relu")  # the stem: conv1, bn1, relu
        self.assertEqual(rows[0]["shape"], [2, 8, 16, 16])
        self.assertEqual(ops[-1], "linear")
        self.assertEqual(rows[-1]["shape"], [2, 10])
        self.assertEqual(rows[-1]["parameters"], 64 * 10 + 10)
        total = int(r.stdout.split("parameters:  ", 1)[1].split()[0])
        self.assertEqual(total, sum(row["parameters"] for row in rows))
        peak = int(r.stdout.split("peak memory: ", 1)[1].split()[0])
        # At least the input and the largest activation ([2, 8, 16, 16] floats) are held.
        self.assertGreater(peak, 4 * (2 * 3 * 32 * 32 + 2 * 8 * 16 * 16))

    def test_bad_model(self):
        r = run("info", "--model", self.path("missing.safetensors"))
        self.assertEqual(r.returncode, 1)
        self.assertTrue(r.stderr.startswith("dynconv info: "), r.stderr)
        self.assertIn("missing.safetensors", r.stderr)
        bad = self.write("bad.safetensors", tiny_network(edit=lambda g: g.update(version=2)))
        r = run("info", "--model", bad)
        self.assertEqual(r.returncode, 1)
        self.assertIn(bad, r.stderr)
        self.assertEqual(r.stdout, "")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: network_cli.py PATH/TO/dynconv PATH/TO/tests/networks")
    CLI = os.path.abspath(sys.argv.pop(1))
    GOLDEN = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=1)
