"""bench/workload.py, the Python scripts' reader of the benchmark workload file, against
dynconv-bench's (dcio_workload_parse in tools/io/workload.c), which times the libdynconv side of the
same file: on a table of texts both must accept the same layers, or refuse with the same
message. And the shared PyTorch reference layer against its definition."""

import os
import subprocess
import sys
import tempfile
import unittest

import cases

sys.path.insert(0, os.path.join(cases.ROOT, "bench"))
import workload  # noqa: E402

CLI = os.environ.get("DYNCONV_CLI", os.path.join(cases.ROOT, "build", "release", "tools",
                                                 "dynconv"))
BENCH = os.environ.get("DYNCONV_BENCH", os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(CLI))), "bench", "dynconv-bench"))

GOOD = b"a 4 4 3 1 1 1 5\n"
with open(os.path.join(cases.ROOT, "bench", "layers.txt"), "rb") as _f:
    WORKLOAD = _f.read()
TEXTS = {
    "plain": GOOD,
    "comments_and_blanks": (b"# name in out ...\n\n  \t\na 4 8 3 2 1 1 7   # comment\n"
                            b"b 8 8 3 1 1 8 6"),
    "crlf": b"a 4 4 3 1 1 1 5\r\nb 4 4 1 1 0 1 3\r\n",
    "tabs_and_signs": b"a\t+4\t4\t3\t1\t1\t1\t05\n",
    "workload": WORKLOAD,
    "longest_line": b"a 4 4 3 1 1 1 5" + b" " * (510 - 15) + b"\n",
    "name_63": b"n" * 63 + b" 4 4 3 1 1 1 5\n",
    # refused
    "empty": b"",
    "only_comments": b"# nothing\n\n",
    "seven_fields": b"a 4 4 3 1 1 1\n",
    "nine_fields": b"a 4 4 3 1 1 1 5 6\n",
    "not_an_integer": b"a 4 4 3 1 1 1 5.5\n",
    "hex": b"a 4 4 3 1 1 1 0x5\n",
    "underscore": b"a 4 4 3 1 1 1 1_0\n",
    "zero_channels": b"a 0 4 3 1 1 1 5\n",
    "negative_pad": b"a 4 4 3 1 -1 1 5\n",
    "kernel_16": b"a 4 4 16 1 1 1 50\n",
    "size_4097": b"a 4 4 3 1 1 1 4097\n",
    "groups_not_dividing": b"a 4 6 3 1 1 4 5\n",
    "kernel_beyond_input": b"a 4 4 5 1 0 1 3\n",
    "name_64": b"n" * 64 + b" 4 4 3 1 1 1 5\n",
    "line_511": b"a 4 4 3 1 1 1 5" + b" " * (511 - 15) + b"\n",
    "second_line_bad": GOOD + b"b 4 4 3 1 1 1\n",
}


@unittest.skipUnless(os.access(BENCH, os.X_OK), f"no dynconv-bench at {BENCH}")
class SameRulesAsDynconvBench(unittest.TestCase):
    def bench_reads(self, path):
        """(layer names, None) or (None, message) from dynconv-bench."""
        r = subprocess.run([BENCH, "--layers", path, "--batches", "1", "--threads", "1",
                            "--benchmark_list_tests=true"], capture_output=True, text=True,
                           timeout=60)
        if r.returncode != 0:
            return None, r.stderr.strip().splitlines()[-1]
        names = []
        for line in r.stdout.splitlines():
            if line.startswith("layer/") and line.split("/")[1] not in names:
                names.append(line.split("/")[1])
        return names, None

    def test_table(self):
        with tempfile.TemporaryDirectory() as tmp:
            for name, text in TEXTS.items():
                with self.subTest(name):
                    path = os.path.join(tmp, name + ".txt")
                    with open(path, "wb") as f:
                        f.write(text)
                    want_names, want_error = self.bench_reads(path)
                    try:
                        got = [layer["name"] for layer in workload.read_layers(path)]
                        self.assertEqual(got, want_names, f"dynconv-bench said {want_error}")
                    except workload.WorkloadError as e:
                        self.assertEqual(f"dynconv-bench: {e}", want_error)

    def test_values(self):
        layers = workload.parse_layers(TEXTS["tabs_and_signs"], "t")
        self.assertEqual(layers, [dict(name="a", c_in=4, c_out=4, k=3, stride=1, pad=1,
                                       groups=1, size=5)])
        self.assertEqual(workload.output_size(dict(size=56, pad=1, k=3, stride=2)), 28)

    def test_missing_file(self):
        with self.assertRaises(workload.WorkloadError) as cm:
            workload.read_layers("/nonexistent/layers.txt")
        self.assertIn("cannot open layer list /nonexistent/layers.txt", str(cm.exception))


class ReferenceLayer(unittest.TestCase):
    def test_batch_as_groups_matches_the_definition(self):
        workload.seed()
        self.assertIsNone(workload.check_against_definition())

    def test_convert_recognises_it(self):
        # bench/train_step.py converts models built of it with dynconv.torch.convert.
        import torch
        from dynconv.torch import convert
        workload.seed()
        m = workload.dynamic_conv2d(dict(c_in=8, c_out=4, k=3, stride=2, pad=1, groups=2),
                                    temperature=3.0).eval()
        x = torch.randn(3, 8, 9, 9)
        with torch.no_grad():
            m.attention.fc2.bias.normal_()
            y = m(x)
            c = convert(torch.nn.Sequential(m))
            torch.testing.assert_close(c(x), y, rtol=1e-4, atol=1e-5)

    def test_cpu_model(self):
        self.assertTrue(workload.cpu_model())
        self.assertNotIn("\n", workload.cpu_model())


if __name__ == "__main__":
    unittest.main()
