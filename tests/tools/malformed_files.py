#!/usr/bin/python3
"""`dynconv run` on malformed and inconsistent files: each must fail with exit status 1, a
message on stderr naming the file and the problem, no sanitizer report, and no output file.
Also the usage errors (exit 2) and --help of every command (exit 0).

    malformed_files.py PATH/TO/dynconv

Standard library only (no numpy), so that it runs wherever the tool is built, including the
sanitizer build."""

import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import unittest

CLI = None

# A valid layer: C_in 4, C_out 6, K 3, hidden 2, 3x3, groups 1.
K, COUT, CIN, KS, HID = 3, 6, 4, 3, 2


def floats(n, seed):
    return [((i * 37 + seed * 11) % 17 - 8) / 8.0 for i in range(n)]


def layer_tensors():
    return {
        "weight": ([K, COUT, CIN, KS, KS], floats(K * COUT * CIN * KS * KS, 1)),
        "bias": ([K, COUT], floats(K * COUT, 2)),
        "attention.fc1.weight": ([HID, CIN, 1, 1], floats(HID * CIN, 3)),
        "attention.fc2.weight": ([K, HID, 1, 1], floats(K * HID, 4)),
        "attention.fc2.bias": ([K], floats(K, 5)),
    }


# The geometry every file states unless a test says otherwise (the tool has no defaults).
GEOMETRY = {"stride": "1", "padding": "0", "dilation": "1", "groups": "1", "temperature": "1"}
NO_METADATA = object()


def safetensors(tensors, metadata=None, header_edit=None, pad=True, drop=()):
    """Bytes of a safetensors file with GEOMETRY updated by `metadata` (NO_METADATA: no
    metadata at all); header_edit(header dict) may corrupt the header."""
    header, body = {}, b""
    if metadata is not NO_METADATA:
        header["__metadata__"] = {k: v for k, v in dict(GEOMETRY, **(metadata or {})).items()
                                  if k not in drop}
    for name, (shape, values) in tensors.items():
        raw = struct.pack(f"<{len(values)}f", *values)
        header[name] = {"dtype": "F32", "shape": shape,
                        "data_offsets": [len(body), len(body) + len(raw)]}
        body += raw
    if header_edit is not None:
        header_edit(header)
    text = json.dumps(header).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + body


def npy(shape, values=None, descr="'<f4'", fortran="False", version=(1, 0), extra=b""):
    if values is None:
        n = 1
        for d in shape:
            n *= d
        values = floats(n, 9)
    shape_text = "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
    text = f"{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {shape_text}, }}"
    size_field = 2 if version[0] == 1 else 4
    total = 6 + 2 + size_field + len(text) + 1
    text = text + " " * (-total % 64) + "\n"
    head = b"\x93NUMPY" + bytes(version) + struct.pack("<H" if size_field == 2 else "<I",
                                                         len(text)) + text.encode()
    return head + struct.pack(f"<{len(values)}f", *values) + extra


def run(*args):
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=60)


def run_env(*args, **env):
    """run() with these variables added to the environment."""
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, **env))


class Base(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.weights = self.write("layer.safetensors", safetensors(layer_tensors()))
        self.x = self.write("x.npy", npy([2, CIN, 5, 5]))
        self.y = os.path.join(self.tmp.name, "y.npy")

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, name, data):
        path = os.path.join(self.tmp.name, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def assert_fails(self, weights, x, *phrases, extra=()):
        r = run("run", "--weights", weights, "--input", x, "--output", self.y, *extra)
        self.assertNotIn("Sanitizer", r.stderr)
        self.assertNotIn("runtime error", r.stderr)
        self.assertEqual(r.returncode, 1, f"exit status {r.returncode}, stderr: {r.stderr}")
        self.assertTrue(r.stderr.startswith("dynconv run: "), r.stderr)
        self.assertEqual(r.stdout, "")
        bad = weights if any(p.startswith("@w") for p in phrases) else x
        self.assertIn(bad, r.stderr)
        for p in phrases:
            self.assertIn(p.removeprefix("@w"), r.stderr)
        self.assertFalse(os.path.exists(self.y), "an output was written by a failed run")
        self.assertEqual([n for n in os.listdir(self.tmp.name) if ".tmp-" in n], [])


class GoodFiles(Base):
    def test_valid_files_run(self):
        r = run("run", "--weights", self.weights, "--input", self.x, "--output", self.y)
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        with open(self.y, "rb") as f:
            data = f.read()
        self.assertTrue(data.startswith(b"\x93NUMPY\x01\x00"))
        self.assertIn(b"'shape': (2, 6, 3, 3)", data)
        self.assertEqual(len(data) % 64, (2 * 6 * 3 * 3 * 4) % 64)
        umask = os.umask(0)
        os.umask(umask)
        self.assertEqual(os.stat(self.y).st_mode & 0o777, 0o666 & ~umask)  # as any new file

    def test_geometry_from_the_command_line(self):
        # A file without metadata (saved from a bare state_dict) runs only when every key is
        # given; the refusal names the missing ones.
        bare = self.write("bare.safetensors", safetensors(layer_tensors(), NO_METADATA))
        self.assert_fails(bare, self.x, "@wno metadata 'stride', 'padding', 'dilation', "
                          "'groups', 'temperature'", "@wdynconv-export")
        self.assert_fails(bare, self.x, "@wno metadata 'dilation', 'temperature'",
                          extra=("--stride", "1", "--padding", "1", "--groups", "1"))
        r = run("run", "--weights", bare, "--input", self.x, "--output", self.y, "--stride",
                "1", "--padding", "1", "--dilation", "1", "--groups", "1", "--temperature", "1")
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        with open(self.y, "rb") as f:
            self.assertIn(b"'shape': (2, 6, 5, 5)", f.read())
        os.unlink(self.y)
        # a partial file: only the missing key is asked for
        partial = self.write("partial.safetensors",
                             safetensors(layer_tensors(), {"padding": "1"}, drop=("dilation",)))
        self.assert_fails(partial, self.x, "@wno metadata 'dilation' for the convolution")

    def test_failed_run_keeps_the_previous_output(self):
        with open(self.y, "wb") as f:
            f.write(b"previous")
        bad = self.write("bad.npy", npy([2, CIN + 1, 5, 5]))
        r = run("run", "--weights", self.weights, "--input", bad, "--output", self.y)
        self.assertEqual(r.returncode, 1)
        with open(self.y, "rb") as f:
            self.assertEqual(f.read(), b"previous")


def linear_tensors():
    """A dynamic linear layer: D_in CIN, D_out COUT, K, hidden HID."""
    return {
        "weight": ([K, COUT, CIN], floats(K * COUT * CIN, 1)),
        "bias": ([K, COUT], floats(K * COUT, 2)),
        "attention.fc1.weight": ([HID, CIN], floats(HID * CIN, 3)),
        "attention.fc2.weight": ([K, HID], floats(K * HID, 4)),
        "attention.fc2.bias": ([K], floats(K, 5)),
    }


class LinearLayer(Base):
    def setUp(self):
        super().setUp()
        self.linear = self.write("linear.safetensors",
                                 safetensors(linear_tensors(), {"layer": "linear"},
                                             drop=("stride", "padding", "dilation", "groups")))
        self.x2 = self.write("x2.npy", npy([3, CIN]))

    def test_runs_with_gradients(self):
        gy = self.write("gy.npy", npy([3, COUT]))
        pi = os.path.join(self.tmp.name, "pi.npy")
        r = run("run", "--weights", self.linear, "--input", self.x2, "--output", self.y,
                "--attention", pi, "--grad-output", gy, "--grad-dir", self.tmp.name)
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        with open(self.y, "rb") as f:
            self.assertIn(b"'shape': (3, 6)", f.read())
        with open(pi, "rb") as f:
            self.assertIn(b"'shape': (3, 3)", f.read())
        names = sorted(n for n in os.listdir(self.tmp.name) if n.startswith("g"))
        self.assertEqual(names, ["g_attention.fc1.weight.npy", "g_attention.fc2.bias.npy",
                                 "g_attention.fc2.weight.npy", "g_bias.npy", "g_weight.npy",
                                 "gx.npy", "gy.npy"])
        with open(os.path.join(self.tmp.name, "gx.npy"), "rb") as f:
            self.assertIn(b"'shape': (3, 4)", f.read())

    def test_errors(self):
        self.assert_fails(self.linear, self.x, "[N, D_in = 4]", "linear layer")
        self.assert_fails(self.linear, self.write("x3.npy", npy([3, CIN + 1])), "D_in = 4")
        self.assert_fails(self.linear, self.x2, "@wno stride, padding", extra=("--stride", "2"))
        bare = self.write("bare.safetensors", safetensors(linear_tensors(), NO_METADATA))
        self.assert_fails(bare, self.x2, "@wno metadata 'temperature' for the linear layer")
        r = run("run", "--weights", bare, "--input", self.x2, "--output", self.y,
                "--temperature", "2")
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        os.unlink(self.y)
        gy = self.write("gy.npy", npy([3, COUT + 1]))
        r = run("run", "--weights", self.linear, "--input", self.x2, "--output", self.y,
                "--grad-output", gy, "--grad-dir", self.tmp.name)
        self.assertEqual(r.returncode, 1)
        self.assertIn(gy + ": gradient of shape [3, 7]", r.stderr)
        self.assertFalse(os.path.exists(self.y))
        self.assertFalse(os.path.exists(os.path.join(self.tmp.name, "gx.npy")))


class Gradients(Base):
    def test_gradient_files(self):
        gy = self.write("gy.npy", npy([2, COUT, 3, 3]))
        r = run("run", "--weights", self.weights, "--input", self.x, "--output", self.y,
                "--grad-output", gy, "--grad-dir", self.tmp.name)
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        names = sorted(n for n in os.listdir(self.tmp.name) if n.startswith("g"))
        self.assertEqual(names, ["g_attention.fc1.weight.npy", "g_attention.fc2.bias.npy",
                                 "g_attention.fc2.weight.npy", "g_bias.npy", "g_weight.npy",
                                 "gx.npy", "gy.npy"])
        with open(os.path.join(self.tmp.name, "g_attention.fc1.weight.npy"), "rb") as f:
            self.assertIn(b"'shape': (2, 4, 1, 1)", f.read())  # as in the weights file

    def test_bad_gradient_arguments(self):
        gy = self.write("gy.npy", npy([2, COUT, 3, 4]))
        r = run("run", "--weights", self.weights, "--input", self.x, "--output", self.y,
                "--grad-output", gy, "--grad-dir", self.tmp.name)
        self.assertEqual(r.returncode, 1)
        self.assertIn(gy + ": gradient of shape [2, 6, 3, 4]", r.stderr)
        self.assertFalse(os.path.exists(self.y))
        gy = self.write("gy.npy", npy([2, COUT, 3, 3]))
        missing = os.path.join(self.tmp.name, "nowhere")
        r = run("run", "--weights", self.weights, "--input", self.x, "--output", self.y,
                "--grad-output", gy, "--grad-dir", missing)
        self.assertEqual(r.returncode, 1)
        self.assertIn(missing + ": not an existing directory", r.stderr)
        self.assertFalse(os.path.exists(self.y))
        r = run("run", "--weights", self.weights, "--input", self.x, "--output", self.y,
                "--grad-output", gy)
        self.assertEqual(r.returncode, 2)


class MalformedSafetensors(Base):
    def check(self, data, *phrases, pad=True):
        path = self.write("bad.safetensors", data)
        self.assert_fails(path, self.x, *("@w" + p for p in phrases))

    def edit(self, fn, *phrases, tensors=None, metadata=None):
        self.check(safetensors(tensors or layer_tensors(), metadata, fn), *phrases)

    def test_empty_and_short(self):
        self.check(b"", "too short")
        self.check(b"\x10\x00\x00", "too short")

    def test_truncated(self):
        good = safetensors(layer_tensors())
        self.check(good[:-10], "beyond the data section", "truncated")
        self.check(good[:20], "beyond the end of the file")

    def test_header_length_beyond_file(self):
        good = safetensors(layer_tensors())
        self.check(struct.pack("<Q", len(good)) + good[8:], "beyond the end of the file")
        self.check(struct.pack("<Q", 2**63 + 5) + good[8:], "beyond the end of the file")

    def test_overlapping_offsets(self):
        def fn(h):
            h["bias"]["data_offsets"] = [0, K * COUT * 4]
        self.edit(fn, "overlap")

    def test_out_of_range_offsets(self):
        def fn(h):
            end = h["attention.fc2.bias"]["data_offsets"][1]
            h["attention.fc2.bias"]["data_offsets"] = [end + 4, end + 4 + K * 4]
        self.edit(fn, "beyond the data section")

    def test_huge_offsets(self):
        def fn(h):
            h["attention.fc2.bias"]["data_offsets"] = [2**63 - 1, 2**63 - 1 + 12]
        self.edit(fn, "not valid JSON")  # beyond int64: jansson refuses the number

        def fn2(h):
            h["attention.fc2.bias"]["data_offsets"] = [2**62, 2**62 + 12]
        self.edit(fn2, "beyond the data section")

    def test_gap_between_tensors(self):
        def fn(h):
            h.pop("bias")
        self.edit(fn, "belong to no tensor")

    def test_wrong_dtype(self):
        def fn(h):
            h["weight"]["dtype"] = "I32"
        self.edit(fn, "'weight' has dtype I32")

        def fn2(h):
            h["weight"]["dtype"] = "F17"
        self.edit(fn2, "unknown dtype")

    def test_shape_length_mismatch(self):
        def fn(h):
            h["bias"]["shape"] = [K, COUT + 1]
        self.edit(fn, "'bias'", "span")

    def test_huge_dimensions(self):
        def fn(h):
            h["bias"]["shape"] = [2**40, 2**40, 2**40]
        self.edit(fn, "overflows")

        def fn2(h):
            h["bias"]["shape"] = [-3, 6]
        self.edit(fn2, "shape[0]")

    def test_not_json(self):
        self.check(struct.pack("<Q", 8) + b"{\"a\": 1" + b"\n", "not valid JSON")
        self.check(struct.pack("<Q", 4) + b"[1] ", "not a JSON object")
        self.check(struct.pack("<Q", 2) + b"{}", "no tensor 'weight'")

    def test_not_utf8(self):
        text = b'{"w\xff\xfe": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}}'
        self.check(struct.pack("<Q", len(text)) + text + b"\0\0\0\0", "not valid JSON")

    def test_duplicate_key(self):
        text = (b'{"bias": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
                b'"bias": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}')
        self.check(struct.pack("<Q", len(text)) + text + bytes(8), "not valid JSON")

    def test_bad_descriptions(self):
        def fn(h):
            h["bias"]["data_offsets"] = [0.5, 24]
        self.edit(fn, "data_offsets")

        def fn2(h):
            h["bias"]["extra"] = 1
        self.edit(fn2, "unknown field")

        def fn3(h):
            h["__metadata__"] = {"stride": 2}
        self.edit(fn3, "__metadata__")

    def test_missing_tensors_are_named(self):
        t = layer_tensors()
        del t["attention.fc2.weight"]
        self.check(safetensors(t), "'attention.fc2.weight'")
        t = layer_tensors()
        del t["attention.fc1.weight"]
        self.check(safetensors(t), "'attention.fc1.weight'", "'attention.net.0.weight'")

    def test_inconsistent_tensors_are_named(self):
        t = layer_tensors()
        t["attention.fc2.weight"] = ([K + 1, HID], floats((K + 1) * HID, 4))
        self.check(safetensors(t), "'attention.fc2.weight'", "'weight'")
        t = layer_tensors()
        t["bias"] = ([K, COUT - 1], floats(K * (COUT - 1), 2))
        self.check(safetensors(t), "'bias'", "[K, C_out]")
        t = layer_tensors()
        t["attention.net.0.weight"] = ([HID, CIN], floats(HID * CIN, 3))
        self.check(safetensors(t), "ambiguous")
        t = layer_tensors()
        t["attention.bn.weight"] = ([HID], floats(HID, 3))
        self.check(safetensors(t), "unexpected tensor 'attention.bn.weight'")

    def test_groups_must_match_the_shapes(self):
        self.check(safetensors(layer_tensors(), {"groups": "2"}), "groups = 2", "C_in = 4")
        t = layer_tensors()
        t["weight"] = ([K, COUT, CIN // 2, KS, KS], floats(K * COUT * CIN // 2 * KS * KS, 1))
        self.check(safetensors(t), "set groups = 2")

    def test_bad_metadata(self):
        self.check(safetensors(layer_tensors(), {"stride": "0"}), "'stride'")
        self.check(safetensors(layer_tensors(), {"padding": "1,2,3"}), "'padding'")
        self.check(safetensors(layer_tensors(), {"temperature": "nan"}), "'temperature'")
        self.check(safetensors(layer_tensors(), {"temperature": "-1"}), "'temperature'")

    def test_layer_larger_than_input(self):
        self.check(safetensors(layer_tensors(), {"dilation": "4"}), "invalid shape")

    def test_not_a_file(self):
        self.assert_fails(self.tmp.name, self.x, "@wnot a regular file")
        self.assert_fails(os.path.join(self.tmp.name, "missing"), self.x, "@wcannot open")


class MalformedNpy(Base):
    def check(self, data, *phrases):
        self.assert_fails(self.weights, self.write("bad.npy", data), *phrases)

    def test_magic_and_version(self):
        self.check(b"", "not a .npy file")
        self.check(b"\x93NUMPX\x01\x00" + bytes(100), "not a .npy file")
        self.check(npy([2, CIN, 5, 5], version=(3, 0)), "version 3.0")

    def test_version_2_is_read(self):
        x = self.write("x2.npy", npy([2, CIN, 5, 5], version=(2, 0)))
        r = run("run", "--weights", self.weights, "--input", x, "--output", self.y)
        self.assertEqual((r.returncode, r.stderr), (0, ""))

    def test_dtypes(self):
        self.check(npy([2, CIN, 5, 5], descr="'<f8'"), "'<f8'", "'<f4'")
        self.check(npy([2, CIN, 5, 5], descr="'>f4'"), "'>f4'")
        self.check(npy([2, CIN, 5, 5], descr="[('a', '<f4')]"), "descr")

    def test_fortran_order(self):
        self.check(npy([2, CIN, 5, 5], fortran="True"), "Fortran")

    def test_lengths(self):
        good = npy([2, CIN, 5, 5])
        self.check(good[:-4], "truncated")
        self.check(good + b"\0\0\0\0", "the file has")
        self.check(good[:9], "not a .npy file")
        self.check(good[:8] + b"\xff\xff" + good[10:80], "beyond the end of the file")

    def test_huge_shape(self):
        self.check(npy([2**40, 2**40, 2**40], values=[]), "overflows")
        self.check(npy([99999999999999999999], values=[]), "int64")

    def test_malformed_header(self):
        good = npy([2, CIN, 5, 5])
        self.check(good.replace(b"'shape'", b"'shapf'"), "'shapf'")
        self.check(good.replace(b"'fortran_order': False, ", b" " * 24), "lacks 'fortran_order'")
        self.check(good.replace(b"(2, 4, 5, 5)", b"[2, 4, 5, 5]"), "not a tuple")
        self.check(good.replace(b"{", b"("), "not a Python dict")

    def test_shape_does_not_suit_the_layer(self):
        self.check(npy([2, CIN + 1, 5, 5]), "C_in = 4")
        self.check(npy([CIN, 5, 5]), "3 dimensions")
        self.check(npy([2, CIN, 2, 2]), "does not suit the layer")
        self.check(npy([0, CIN, 5, 5]), "empty")


class Usage(unittest.TestCase):
    def test_help_of_every_command(self):
        for args in (["--help"], ["run", "--help"], ["bench", "--help"], ["info", "--help"],
                     ["run", "-h"]):
            r = run(*args)
            self.assertEqual(r.returncode, 0, args)
            self.assertIn("usage: dynconv", r.stdout)

    def test_bad_usage_exits_2(self):
        for args in ([], ["frobnicate"], ["run"], ["run", "--weights", "w"],
                     ["run", "--weights", "a", "--input", "b", "--output", "c", "--temperature",
                      "0"],
                     ["run", "--weights", "a", "--input", "b", "--output", "c", "--stride", "x"],
                     ["run", "--weights", "a", "--weights", "b"], ["run", "--bogus", "1"],
                     ["run", "--weights", "a", "--input", "b", "--output", "c", "--threads",
                      "-1"], ["bench", "--threads", "many"],
                     ["run", "--weights"], ["bench", "--batch", "0"], ["info", "extra"],
                     ["run", "--weights", "a", "--input", "b", "--output", "c",
                      "--attention", "c"]):
            r = run(*args)
            self.assertEqual(r.returncode, 2, f"{args}: {r.stderr}")
            self.assertIn("--help", r.stderr)

    def test_info(self):
        r = run("info")
        self.assertEqual(r.returncode, 0, r.stderr)
        for line in ("libdynconv:", "BLAS:", "BLAS core:", "BLAS fallback:", "BLAS threads:",
                     "CPU features:"):
            self.assertIn(line, r.stdout)
        with open("/proc/cpuinfo") as f:
            flags = f.read().split()
        if "avx2" in flags and "fma" in flags:
            # OpenBLAS honours a forced core type: its generic fallback must be flagged, with
            # the core that fits the CPU.
            better = "SkylakeX" if all(f in flags for f in (
                "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd")) else "Haswell"
            r = run_env("info", OPENBLAS_CORETYPE="Prescott")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("BLAS core:     Prescott (OPENBLAS_CORETYPE=Prescott)", r.stdout)
            self.assertIn("BLAS fallback: yes", r.stdout)
            self.assertIn("generic 'Prescott' kernels", r.stderr)
            self.assertIn(f"Set OPENBLAS_CORETYPE={better}", r.stderr)
            # A core fit for the CPU is never second-guessed.
            r = run_env("info", OPENBLAS_CORETYPE="Haswell")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("BLAS core:     Haswell (OPENBLAS_CORETYPE=Haswell)", r.stdout)
            self.assertIn("BLAS fallback: no", r.stdout)
            self.assertNotIn("warning", r.stderr)

    def test_bench_runs_a_small_workload(self):
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
            f.write("# name in out kernel stride pad groups size\n"
                    "tiny_3x3 4 8 3 1 1 1 6   # comment\n\n"
                    "tiny_dw 8 8 3 2 1 8 7\n")
            f.flush()
            r = run("bench", "--layers", f.name, "--batch", "2", "--repeats", "3")
            self.assertEqual(r.returncode, 0, r.stderr)
            rows = [line.split() for line in r.stdout.splitlines()
                    if line.startswith("tiny_")]
            self.assertEqual([row[0] for row in rows], ["tiny_3x3", "tiny_dw"])
            for row in rows:
                # A measured time, and a rate that is a number: a tiny layer on a busy machine
                # may print 0.00 GFLOP/s, so the rate itself is not required to be positive.
                self.assertGreater(float(row[-3]), 0.0)  # median_ms
                self.assertTrue(math.isfinite(float(row[-1])) and float(row[-1]) >= 0.0)
            self.assertIn("BLAS core:", r.stdout)
            r = run("bench", "--layers", f.name, "--only", "nothing")
            self.assertEqual(r.returncode, 1)
        # the built-in workload (bench/layers.txt), one small layer of it
        r = run("bench", "--only", "mb2_1x1_160_960_7", "--batch", "1", "--repeats", "1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("mb2_1x1_160_960_7   ", r.stdout)

    def test_bench_layers_file_errors(self):
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
            f.write("a 4 4 3 1 1 1\n")
            f.flush()
            r = run("bench", "--layers", f.name)
            self.assertEqual(r.returncode, 1)
            self.assertIn(f.name + ":1:", r.stderr)
        # The grammar of bench/layers.txt (dcio_workload_parse, shared with dynconv-bench):
        # the line is named, groups must divide the channels, a list must not be empty.
        for text, want in (("# c\na 4 4 3 1 1 1 5\nb 4 6 3 1 1 4 5\n",
                            ":3: expected 'name in out kernel stride pad groups size'"),
                           ("a 4 4 3 1 1 1 5\nb 4 4 3 1 1 1 5 \0\n",
                            ":2: not a text line (contains NUL bytes)"),
                           ("# nothing\n\n", " lists no layers")):
            with self.subTest(text=text), tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
                f.write(text)
                f.flush()
                r = run("bench", "--layers", f.name, "--repeats", "1")
                self.assertEqual(r.returncode, 1)
                self.assertIn("dynconv bench: " + f.name + want, r.stderr)
                self.assertEqual(r.stdout, "")  # refused before the first layer runs


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: malformed_files.py PATH/TO/dynconv")
    CLI = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=1)
