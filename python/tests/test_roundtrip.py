"""PyTorch module -> dynconv.export -> `dynconv run` -> the same output as PyTorch."""

import os
import subprocess
import sys
import unittest

import numpy as np
import torch

import cases
from dynconv import export as exporter
from reference_modules import DynamicLinearRef, TwoLayerNet

CLI = os.environ.get("DYNCONV_CLI", os.path.join(cases.ROOT, "build", "release", "tools",
                                                 "dynconv"))


def run_cli(*args):
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=120)


class Files(cases.TempDirTest):
    """A temporary directory and `dynconv run` on files in it."""

    def run_layer(self, weights, x, *extra):
        np.save(self.path("x.npy"), np.asarray(x, dtype=np.float32))
        r = run_cli("run", "--weights", weights, "--input", self.path("x.npy"),
                    "--output", self.path("y.npy"), "--attention", self.path("pi.npy"), *extra)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, "")
        return np.load(self.path("y.npy")), np.load(self.path("pi.npy"))


class RoundTrip(Files):
    def test_table(self):
        for name in cases.LAYERS:
            with self.subTest(layer=name):
                module, x, y, pi = cases.make(name)
                cases.assert_nontrivial(self, y, pi, name)
                weights = self.path(name + ".safetensors")
                self.assertEqual(exporter.export(module, weights), [""])
                got_y, got_pi = self.run_layer(weights, x.numpy())
                cases.assert_close(self, got_y, y.numpy(), name + " output")
                cases.assert_close(self, got_pi, pi.numpy(), name + " attention")

    def test_gradients_match_autograd(self):
        for name in ("basic_3x3", "depthwise", "groups2_stride2_dilation2",
                     "all_biases_linear_attention", "net_biases_pointwise", "no_biases"):
            with self.subTest(layer=name):
                module, x, _, _ = cases.make(name)
                weights = self.path(name + ".safetensors")
                exporter.export(module, weights)
                x = x.clone().requires_grad_(True)
                y = module(x)
                gy = torch.randn_like(y)
                module.zero_grad()
                y.backward(gy)
                np.save(self.path("gy.npy"), gy.numpy())
                grad_dir = self.path("grads_" + name)
                os.mkdir(grad_dir)
                self.run_layer(weights, x.detach().numpy(), "--grad-output",
                               self.path("gy.npy"), "--grad-dir", grad_dir)
                expected = {"gx.npy": x.grad}
                for pname, p in module.named_parameters():
                    expected[f"g_{pname}.npy"] = p.grad
                self.assertEqual(sorted(os.listdir(grad_dir)), sorted(expected))
                for fname, want in expected.items():
                    cases.assert_close(self, np.load(os.path.join(grad_dir, fname)),
                                       want.numpy(), f"{name} {fname}")

    def test_threads_option(self):
        module, x, y, _ = cases.make("stride2")
        weights = self.path("layer.safetensors")
        exporter.export(module, weights)
        for threads in ("1", "2", "3"):
            got_y, _ = self.run_layer(weights, x.numpy(), "--threads", threads)
            cases.assert_close(self, got_y, y.numpy(), f"--threads {threads}")

    def test_temperature_override(self):
        module, x, _, _ = cases.make("basic_3x3")
        weights = self.path("layer.safetensors")
        exporter.export(module, weights)
        module.attention.temperature = 0.25
        with torch.no_grad():
            y, pi = module(x), module.attention(x)
        got_y, got_pi = self.run_layer(weights, x.numpy(), "--temperature", "0.25")
        cases.assert_close(self, got_y, y.numpy(), "output at T = 0.25")
        cases.assert_close(self, got_pi, pi.numpy(), "attention at T = 0.25")

    def test_prefixes_of_a_model(self):
        cases.seed("two_layers")
        model = TwoLayerNet().eval()
        weights = self.path("model.safetensors")
        self.assertEqual(exporter.export(model, weights), ["stem", "block.1"])
        x = torch.randn(2, 3, 12, 12)
        with torch.no_grad():
            h = model.stem(x)
            y = model(x)
        got_h, _ = self.run_layer(weights, x.numpy(), "--prefix", "stem")
        cases.assert_close(self, got_h, h.numpy(), "stem")
        got_y, _ = self.run_layer(weights, torch.relu(h).numpy(), "--prefix", "block.1.")
        cases.assert_close(self, got_y, y.numpy(), "block.1")
        # Without a prefix the layer is ambiguous: the error lists the candidates.
        np.save(self.path("x.npy"), x.numpy())
        r = run_cli("run", "--weights", weights, "--input", self.path("x.npy"),
                    "--output", self.path("none.npy"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("'stem.'", r.stderr)
        self.assertIn("'block.1.'", r.stderr)
        self.assertFalse(os.path.exists(self.path("none.npy")))

    def test_half_precision_and_errors_in_files(self):
        import dynconv
        module, x, y, _ = cases.make("basic_3x3")
        tensors = {k: v.detach().numpy() for k, v in module.state_dict().items()}
        # F16 tensors: the reader converts them; the result is the layer with rounded weights
        header, blobs, offset = {}, [], 0
        for name, a in tensors.items():
            raw = a.astype("<f2").tobytes()
            header[name] = {"dtype": "F16", "shape": list(a.shape),
                            "data_offsets": [offset, offset + len(raw)]}
            blobs.append(raw)
            offset += len(raw)
        text = __import__("json").dumps(header).encode()
        path = self.path("half.safetensors")
        with open(path, "wb") as f:
            f.write(len(text).to_bytes(8, "little") + text + b"".join(blobs))
        with torch.no_grad():
            for p in module.parameters():
                p.copy_(p.half().float())
            y_half = module(x)
        # A bare state_dict has no geometry: nothing is guessed, the missing keys are named.
        with self.assertRaises(ValueError) as cm:
            dynconv.Conv2d.from_safetensors(path, padding=1)
        self.assertIn("'stride', 'dilation', 'groups', 'temperature'", str(cm.exception))
        self.assertIn("stride=...", str(cm.exception))
        np.save(self.path("x.npy"), x.numpy())
        r = run_cli("run", "--weights", path, "--input", self.path("x.npy"), "--output",
                    self.path("y.npy"), "--padding", "1")
        self.assertEqual(r.returncode, 1)
        self.assertIn("no metadata 'stride', 'dilation', 'groups', 'temperature'", r.stderr)
        self.assertFalse(os.path.exists(self.path("y.npy")))
        layer = dynconv.Conv2d.from_safetensors(path, padding=1, stride=1, dilation=1, groups=1,
                                                temperature=1.0)
        cases.assert_close(self, layer.forward(x.numpy()), y_half.numpy(), "F16 weights")
        got_y, _ = self.run_layer(path, x.numpy(), "--padding", "1", "--stride", "1",
                                  "--dilation", "1", "--groups", "1", "--temperature", "1")
        cases.assert_close(self, got_y, y_half.numpy(), "F16 weights, dynconv run")
        with self.assertRaises(ValueError) as cm:
            dynconv.Conv2d.from_safetensors(path, prefix="nothing")
        self.assertIn("'' (no prefix)", str(cm.exception))
        with self.assertRaises(TypeError):
            dynconv.Conv2d.from_safetensors(path, paddin=1)  # a misspelt key is not ignored
        with self.assertRaises(dynconv.SafetensorsError):
            dynconv.load_file(__file__)

    def test_exporter_command_line(self):
        cases.seed("exporter_cli")
        model = TwoLayerNet().eval()
        torch.save(model, self.path("model.pt"))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([cases.PACKAGE, cases.HERE]))
        r = subprocess.run([sys.executable, "-m", "dynconv.export", self.path("model.pt"),
                            self.path("model.safetensors")], capture_output=True, text=True,
                           env=env, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("2 layer(s): stem, block.1", r.stdout)
        x = torch.randn(1, 3, 10, 10)
        with torch.no_grad():
            want = model.stem(x)
        got, _ = self.run_layer(self.path("model.safetensors"), x.numpy(), "--prefix", "stem")
        cases.assert_close(self, got, want.numpy(), "stem via the exporter's command line")

    def test_python_package_reads_the_export(self):
        import dynconv
        module, x, y, pi = cases.make("dilation2")
        weights = self.path("layer.safetensors")
        exporter.export(module, weights)
        layer = dynconv.Conv2d.from_safetensors(weights)
        cases.assert_close(self, layer.forward(x.numpy()), y.numpy(), "package output")
        cases.assert_close(self, layer.attention, pi.numpy(), "package attention")


class LinearRoundTrip(Files):
    def test_linear_layer(self):
        import dynconv
        for name, kwargs in (("linear_biases", dict(fc1_bias=True)),
                             ("linear_no_bias", dict(bias=False, fc2_bias=False))):
            with self.subTest(layer=name):
                cases.seed(name)
                module = DynamicLinearRef(12, 7, K=3, temperature=0.8, **kwargs)
                with torch.no_grad():
                    for p in module.attention.parameters():
                        p.mul_(2.0)
                x = torch.randn(5, 12) + torch.randn(5, 1)
                x.requires_grad_(True)
                y = module(x)
                with torch.no_grad():
                    pi = module.attention(x)
                cases.assert_nontrivial(self, y.detach(), pi, name)
                gy = torch.randn_like(y)
                module.zero_grad()
                y.backward(gy)
                weights = self.path(name + ".safetensors")
                self.assertEqual(exporter.export(module, weights), [""])
                np.save(self.path("gy.npy"), gy.numpy())
                grad_dir = self.path("grads_" + name)
                os.mkdir(grad_dir)
                got_y, got_pi = self.run_layer(weights, x.detach().numpy(), "--grad-output",
                                               self.path("gy.npy"), "--grad-dir", grad_dir)
                cases.assert_close(self, got_y, y.detach().numpy(), name + " output")
                cases.assert_close(self, got_pi, pi.numpy(), name + " attention")
                expected = {"gx.npy": x.grad}
                expected.update({f"g_{n}.npy": p.grad for n, p in module.named_parameters()})
                self.assertEqual(sorted(os.listdir(grad_dir)), sorted(expected))
                for fname, want in expected.items():
                    cases.assert_close(self, np.load(os.path.join(grad_dir, fname)),
                                       want.numpy(), f"{name} {fname}")
                # the package reads the same file
                layer = dynconv.Linear.from_safetensors(weights)
                cases.assert_close(self, layer(x.detach().numpy()), y.detach().numpy(),
                                   name + " package output")
                grads = layer.backward(x.detach().numpy(), gy.numpy())
                self.assertEqual(sorted(grads), sorted(["input"] + [
                    n for n, _ in module.named_parameters()]))
                cases.assert_close(self, grads["input"], x.grad.numpy(), name + " package dx")
                for n, p in module.named_parameters():
                    cases.assert_close(self, grads[n], p.grad.numpy(), f"{name} package d{n}")
                with self.assertRaises(ValueError):
                    dynconv.Conv2d.from_safetensors(weights)  # not a convolution


if __name__ == "__main__":
    unittest.main()
