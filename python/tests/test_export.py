"""dynconv.export: its command line (exit statuses, one-line messages, never a traceback) and the
layouts it recognises besides the table's (TArdelean's, the dynamic linear layer)."""

import contextlib
import io
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import torch

import cases
import dynconv
from dynconv import export as exporter
from reference_modules import DynamicLinearRef, KernelsDynamicConv, TwoLayerNet


def run_exporter(*args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([cases.PACKAGE, cases.HERE]))
    return subprocess.run([sys.executable, "-m", "dynconv.export", *args], capture_output=True,
                          text=True, env=env, timeout=120)


class ExporterCommandLine(cases.TempDirTest):

    def assert_one_line_error(self, r, status, *fragments):
        self.assertEqual(r.returncode, status, r.stderr)
        self.assertNotIn("Traceback", r.stderr)
        self.assertEqual(r.stdout, "")
        if status == 1:
            self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        for f in fragments:
            self.assertIn(f, r.stderr)

    def test_usage_errors_exit_2(self):
        for args in ((), ("only-one",), ("a", "b", "c"), ("--bogus", "a", "b"),
                     ("--temperature", "hot", "a", "b")):
            with self.subTest(args=args):
                r = run_exporter(*args)
                self.assert_one_line_error(r, 2, "usage: dynconv-export")

    def test_run_as_a_file(self):
        # python3 python/dynconv/export.py: the package's torch.py must not shadow PyTorch
        r = subprocess.run([sys.executable, os.path.join(cases.PACKAGE, "dynconv", "export.py"),
                            self.path("missing.pt"), self.path("out")], capture_output=True,
                           text=True, timeout=120)
        self.assert_one_line_error(r, 1, "no such file")

    def test_exporter_works_without_the_library(self):
        # The exporter needs PyTorch only; the package's first use of libdynconv says why it
        # cannot load it.
        cases.seed("no_library")
        torch.save(TwoLayerNet(), self.path("model.pt"))
        env = dict(os.environ, DYNCONV_LIBRARY=self.path("no-such-libdynconv.so"))
        r = subprocess.run([sys.executable, "-m", "dynconv.export", self.path("model.pt"),
                            self.path("m.safetensors")], capture_output=True, text=True,
                           env=dict(env, PYTHONPATH=os.pathsep.join([cases.PACKAGE, cases.HERE])),
                           timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        code = ("import dynconv, numpy as np\n"
                "try:\n    dynconv.Conv2d(np.zeros((1, 1, 1, 1, 1)), np.ones((1, 1)), "
                "np.ones((1, 1)))\nexcept ImportError as e:\n    print(e)\n")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=dict(env, PYTHONPATH=cases.PACKAGE), timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("no-such-libdynconv.so", r.stdout)
        self.assertIn("DYNCONV_LIBRARY", r.stdout)

    def test_help_exits_0(self):
        r = run_exporter("--help")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("usage: dynconv-export", r.stdout)

    def test_main_returns_the_status(self):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            self.assertEqual(exporter.main([]), 2)
            self.assertEqual(exporter.main([self.path("missing.pt"), self.path("out")]), 1)
        self.assertIn("usage: dynconv-export", err.getvalue())
        self.assertIn("missing.pt: no such file", err.getvalue())

    def test_bad_files_exit_1_with_one_line(self):
        garbage = self.path("garbage.pt")
        with open(garbage, "wb") as f:
            f.write(b"\x80\x02this is not a pickle" * 10)
        empty = self.path("empty.pt")
        open(empty, "wb").close()
        torch.save({"weight": torch.zeros(2)}, self.path("state.pt"))
        torch.save(torch.nn.Linear(2, 2), self.path("plain.pt"))
        torch.save([1, 2], self.path("list.pt"))
        for name, fragment in (("missing.pt", "no such file"), ("garbage.pt", "not a readable"),
                               ("empty.pt", "not a readable"), ("state.pt", "state_dict"),
                               ("plain.pt", "no dynamic"), ("list.pt", "not a torch.nn.Module")):
            with self.subTest(file=name):
                r = run_exporter(self.path(name), self.path("out.safetensors"))
                self.assert_one_line_error(r, 1, name, fragment)
                self.assertFalse(os.path.exists(self.path("out.safetensors")))
        r = run_exporter(self.dir, self.path("out.safetensors"))
        self.assert_one_line_error(r, 1, "directory")

    def test_unwritable_output_exit_1(self):
        cases.seed("unwritable")
        torch.save(TwoLayerNet(), self.path("model.pt"))
        r = run_exporter(self.path("model.pt"), os.path.join(self.dir, "no", "such", "x"))
        self.assert_one_line_error(r, 1, "cannot write")

    def test_tardelean_layout_needs_a_temperature(self):
        cases.seed("tardelean_cli")
        torch.save(KernelsDynamicConv(3, 4, 8, 6, 3, padding=1), self.path("t.pt"))
        r = run_exporter(self.path("t.pt"), self.path("t.safetensors"))
        self.assert_one_line_error(r, 1, "temperature")
        r = run_exporter("--temperature", "2.5", self.path("t.pt"), self.path("t.safetensors"))
        self.assertEqual(r.returncode, 0, r.stderr)
        _, meta = dynconv.load_file(self.path("t.safetensors"))
        self.assertEqual(meta["temperature"], "2.5")


class Layouts(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.file = os.path.join(self.tmp.name, "layer.safetensors")

    def tearDown(self):
        self.tmp.cleanup()

    def test_tardelean_layout(self):
        cases.seed("tardelean")
        module = KernelsDynamicConv(3, 2, 6, 4, (3, 2), stride=(2, 1), padding=(1, 0),
                                    dilation=1, groups=2).eval()
        with torch.no_grad():
            for p in module.attention.parameters():
                p.mul_(2.0)
        x = torch.randn(3, 6, 9, 8) + torch.randn(3, 6, 1, 1)
        with torch.no_grad():
            y = module(x, 0.7)
            pi = module.attention(x, 0.7)
        cases.assert_nontrivial(self, y, pi, "tardelean")
        self.assertEqual(exporter.export(module, self.file, temperature=0.7), [""])
        tensors, meta = dynconv.load_file(self.file)
        self.assertEqual(sorted(tensors), ["attention.fc1.bias", "attention.fc1.weight",
                                           "attention.fc2.bias", "attention.fc2.weight",
                                           "bias", "weight"])
        self.assertEqual((meta["stride"], meta["padding"], meta["groups"]), ("2,1", "1,0", "2"))
        layer = dynconv.Conv2d.from_safetensors(self.file)
        cases.assert_close(self, layer.forward(x.numpy()), y.numpy(), "tardelean output")
        cases.assert_close(self, layer.attention, pi.numpy(), "tardelean attention")
        # and `dynconv run` reads the same file
        cli = os.environ.get("DYNCONV_CLI", os.path.join(cases.ROOT, "build", "release",
                                                         "tools", "dynconv"))
        xp, yp = os.path.join(self.tmp.name, "x.npy"), os.path.join(self.tmp.name, "y.npy")
        np.save(xp, x.numpy())
        r = subprocess.run([cli, "run", "--weights", self.file, "--input", xp, "--output", yp],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        cases.assert_close(self, np.load(yp), y.numpy(), "tardelean output, dynconv run")
        with self.assertRaises(ValueError) as cm:
            exporter.export(module, self.file)
        self.assertIn("temperature", str(cm.exception))

    def test_linear_layer_metadata(self):
        cases.seed("linear_export")
        module = DynamicLinearRef(6, 5, K=3, temperature=1.5)
        self.assertEqual(exporter.export(module, self.file), [""])
        tensors, meta = dynconv.load_file(self.file)
        self.assertEqual(meta, {"layer": "linear", "temperature": "1.5"})
        self.assertEqual(tensors["weight"].shape, (3, 5, 6))
        self.assertEqual(tensors["attention.fc1.weight"].shape, (2, 6))


if __name__ == "__main__":
    unittest.main()
