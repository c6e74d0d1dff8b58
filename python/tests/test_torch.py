"""dynconv.torch against the PyTorch reference modules: forward and every gradient (autograd on
the original structure), state_dict compatibility with kaijieshi7's layout, convert() on a model
mixing the three common layouts, temperature handling, and the refusals."""

import copy
import io
import os
import subprocess
import sys
import unittest

import torch
import torch.nn as nn

import cases
import dynconv
from dynconv.torch import DynamicConv2d, DynamicLinear, convert
import dynconv.torch as dt
from reference_modules import (DynamicConv2dFC, DynamicConvNet, DynamicLinearRef,
                               KernelsDynamicConv)

_threads = None


def setUpModule():
    # One thread, as PyTorch's own default in these tests: results do not depend on it, and
    # the machine's cores are shared.
    global _threads
    _threads = torch.get_num_threads()
    torch.set_num_threads(1)


def tearDownModule():
    torch.set_num_threads(_threads)


def scale_attention(module, factor=2.0):
    """Larger attention weights, so that the kernels really mix and differ between samples."""
    with torch.no_grad():
        for p in module.attention.parameters():
            p.mul_(factor)


def forward_backward(module, x, gy, *args):
    """y and the gradients of <y, gy> for x and every parameter, by name."""
    x = x.clone().requires_grad_(True)
    module.zero_grad()
    y = module(x, *args)
    y.backward(gy)
    grads = {"input": x.grad.clone()}
    grads.update({n: p.grad.clone() for n, p in module.named_parameters()})
    return y.detach(), grads


CONV_CASES = {
    # name: (DynamicConv2d / DynamicConv2dFC arguments, input shape)
    "basic_3x3": (dict(in_planes=8, out_planes=6, kernel_size=3, padding=1, K=4), (3, 8, 7, 7)),
    "rgb_stem_stride2": (dict(in_planes=3, out_planes=8, kernel_size=3, stride=2, padding=1,
                              K=4), (2, 3, 12, 11)),
    "groups2_stride2_dilation2": (dict(in_planes=8, out_planes=4, kernel_size=3, stride=2,
                                       padding=2, dilation=2, groups=2, K=3), (2, 8, 11, 10)),
    "depthwise": (dict(in_planes=6, out_planes=6, kernel_size=3, padding=1, groups=6, K=4),
                  (3, 6, 7, 5)),
    "rect_no_bias": (dict(in_planes=5, out_planes=4, kernel_size=(3, 1), stride=(1, 2),
                          padding=(1, 0), bias=False, K=2), (2, 5, 6, 7)),
    "pointwise": (dict(in_planes=8, out_planes=6, kernel_size=1, K=3), (2, 8, 5, 5)),
}


def ours_from_reference_args(a, temperature):
    return DynamicConv2d(a["in_planes"], a["out_planes"], a["kernel_size"],
                         stride=a.get("stride", 1), padding=a.get("padding", 0),
                         dilation=a.get("dilation", 1), groups=a.get("groups", 1),
                         bias=a.get("bias", True), num_kernels=a["K"], temperature=temperature)


class Modules(unittest.TestCase):
    def test_conv_forward_and_every_gradient(self):
        for name, (args, shape) in CONV_CASES.items():
            with self.subTest(layer=name):
                cases.seed("torch_" + name)
                ref = DynamicConv2dFC(temperature=0.8, **args)
                scale_attention(ref)
                ours = ours_from_reference_args(args, 0.8)
                # kaijieshi7's layout: the same names and shapes, so strict loading works
                self.assertEqual({k: v.shape for k, v in ours.state_dict().items()},
                                 {k: v.shape for k, v in ref.state_dict().items()})
                ours.load_state_dict(ref.state_dict(), strict=True)
                x = torch.randn(shape) + torch.randn(shape[0], shape[1], 1, 1)
                with torch.no_grad():
                    pi = ref.attention(x)
                with torch.no_grad():
                    gy = torch.randn_like(ref(x))
                y_ref, g_ref = forward_backward(ref, x, gy)
                cases.assert_nontrivial(self, y_ref, pi, name)
                y, g = forward_backward(ours, x, gy)
                cases.assert_close(self, y, y_ref, name + " output")
                cases.assert_close(self, ours.last_attention, pi, name + " attention")
                self.assertEqual(sorted(g), sorted(g_ref))
                for key in g_ref:
                    cases.assert_close(self, g[key], g_ref[key], f"{name} d{key}")

    def test_linear_forward_and_every_gradient(self):
        cases.seed("torch_linear")
        ref = DynamicLinearRef(10, 7, K=3, temperature=1.3)
        scale_attention(ref)
        ours = DynamicLinear(10, 7, num_kernels=3, temperature=1.3)
        self.assertEqual(ours.hidden, ref.attention.fc1.weight.shape[0])
        ours.load_state_dict(ref.state_dict(), strict=True)
        x = torch.randn(6, 10) + torch.randn(6, 1)
        gy = torch.randn(6, 7)
        y_ref, g_ref = forward_backward(ref, x, gy)
        with torch.no_grad():
            cases.assert_nontrivial(self, y_ref, ref.attention(x), "linear")
        y, g = forward_backward(ours, x, gy)
        cases.assert_close(self, y, y_ref, "linear output")
        self.assertEqual(sorted(g), sorted(g_ref))
        for key in g_ref:
            cases.assert_close(self, g[key], g_ref[key], f"linear d{key}")

    def test_only_requested_gradients(self):
        cases.seed("torch_partial")
        ours = DynamicConv2d(4, 4, 3, padding=1)
        ours.weight.requires_grad_(False)
        x = torch.randn(2, 4, 6, 6)  # no gradient for the input either
        ours(x).sum().backward()
        self.assertIsNone(ours.weight.grad)
        self.assertIsNotNone(ours.attention.fc1.weight.grad)

    def test_state_dict_and_pickle_round_trip(self):
        cases.seed("torch_state")
        a = DynamicConv2d(6, 5, 3, padding=1, groups=1, num_kernels=3, temperature=2.0)
        b = DynamicConv2d(6, 5, 3, padding=1, groups=1, num_kernels=3, temperature=2.0)
        x = torch.randn(2, 6, 8, 8)
        ya = a(x)
        b.load_state_dict(a.state_dict(), strict=True)
        cases.assert_close(self, b(x).detach(), ya.detach(), "loaded state_dict")
        buf = io.BytesIO()
        torch.save(a, buf)
        buf.seek(0)
        c = torch.load(buf)
        cases.assert_close(self, c(x).detach(), ya.detach(), "pickled module")
        d = copy.deepcopy(a)
        cases.assert_close(self, d(x).detach(), ya.detach(), "deep copy")
        with torch.no_grad():
            d.weight.mul_(0.5)  # the copy's parameters are its own
        cases.assert_close(self, a(x).detach(), ya.detach(), "original after the copy changed")

    def test_optimizer_updates_are_seen(self):
        cases.seed("torch_sgd")
        args, shape = CONV_CASES["basic_3x3"]
        ref = DynamicConv2dFC(temperature=1.0, **args)
        ours = ours_from_reference_args(args, 1.0)
        ours.load_state_dict(ref.state_dict())
        x = torch.randn(shape)
        for module in (ref, ours):
            opt = torch.optim.SGD(module.parameters(), lr=0.1)
            for _ in range(2):
                opt.zero_grad()
                (module(x) ** 2).mean().backward()
                opt.step()
        with torch.no_grad():
            cases.assert_close(self, ours(x), ref(x), "after two SGD steps")

    def test_temperature(self):
        cases.seed("torch_temperature")
        m = DynamicConv2d(4, 4, 3, padding=1, temperature=30.0)
        self.assertEqual(m.attention.temperature, 30.0)
        x = torch.randn(2, 4, 6, 6)
        y30 = m(x).detach()
        m.temperature = 0.5
        y05 = m(x).detach()
        self.assertGreater(float((y30 - y05).abs().max()), 1e-4)
        ref = DynamicConv2dFC(4, 4, 3, padding=1, temperature=0.5)
        ref.load_state_dict(m.state_dict())
        with torch.no_grad():
            cases.assert_close(self, y05, ref(x), "at T = 0.5")
        m.set_temperature_schedule(30.0, 1.0, 4)
        self.assertEqual(m.temperature, 30.0)
        self.assertEqual([m.step_temperature() for _ in range(5)], [22.75, 15.5, 8.25, 1.0, 1.0])
        m.temperature = 34.0
        m.update_temperature()
        self.assertEqual(m.temperature, 31.0)
        with self.assertRaises(ValueError):
            m.temperature = 0.0
        with self.assertRaises(RuntimeError):
            m.step_temperature()  # assigning T ended the schedule
        model = nn.Sequential(m, nn.ReLU(), DynamicLinear(4, 2))
        dt.set_temperature_schedule(model, 10.0, 2.0, 2)
        self.assertEqual(dt.step_temperature(model), 6.0)
        self.assertEqual([layer.temperature for layer in dt.dynamic_layers(model)], [6.0, 6.0])
        # forward(x, temperature) for this call only
        with torch.no_grad():
            ref.attention.temperature = 3.0
            cases.assert_close(self, m(x, 3.0), ref(x), "forward(x, temperature)")
        self.assertEqual(m.temperature, 6.0)

    def test_one_module_twice_in_a_graph(self):
        # The same layer on two input sizes in one forward: each backward reshapes the handle
        # to its own input.
        cases.seed("torch_twice")
        args = dict(in_planes=4, out_planes=4, kernel_size=3, padding=1, K=3)
        ref = DynamicConv2dFC(temperature=1.0, **args)
        scale_attention(ref)
        ours = ours_from_reference_args(args, 1.0)
        ours.load_state_dict(ref.state_dict())
        a, b = torch.randn(2, 4, 6, 6), torch.randn(3, 4, 9, 7)
        grads = []
        for m in (ref, ours):
            m.zero_grad()
            (m(a).square().mean() + m(b).sum()).backward()
            grads.append({n: p.grad.clone() for n, p in m.named_parameters()})
        for n in grads[0]:
            cases.assert_close(self, grads[1][n], grads[0][n], f"shared layer d{n}")

    def test_export_of_a_module(self):
        from dynconv import export as exporter
        cases.seed("torch_export_module")
        m = DynamicConv2d(4, 6, 3, stride=2, padding=1, num_kernels=3, temperature=1.7)
        scale_attention(m)
        path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"dynconv-m-{os.getpid()}.st")
        try:
            exporter.export(m, path)
            layer = dynconv.Conv2d.from_safetensors(path)
        finally:
            if os.path.exists(path):
                os.unlink(path)
        x = torch.randn(2, 4, 9, 9)
        with torch.no_grad():
            cases.assert_close(self, layer(x.numpy()), m(x), "exported module")
        self.assertAlmostEqual(layer.temperature, 1.7, places=6)

    def test_threads(self):
        cases.seed("torch_threads")
        m = DynamicConv2d(8, 8, 3, padding=1)
        x = torch.randn(4, 8, 10, 10)
        with torch.no_grad():
            y1 = m(x)  # threads None: torch.get_num_threads(), 1 here
            m.threads = 2
            cases.assert_close(self, m(x), y1, "2 threads")
        self.assertEqual(m._dc_layer.threads, 2)

    def test_no_second_derivative(self):
        m = DynamicLinear(4, 3)
        x = torch.randn(2, 4, requires_grad=True)
        (g,) = torch.autograd.grad(m(x).sum(), x, create_graph=True)
        with self.assertRaises(RuntimeError):
            g.sum().backward()  # refused, rather than silently zero

    def test_refusals(self):
        m = DynamicConv2d(4, 4, 3)
        with self.assertRaisesRegex(TypeError, "float32"):
            m(torch.randn(1, 4, 5, 5, dtype=torch.float64))
        with self.assertRaisesRegex(ValueError, r"\[N, 4, H, W\]"):
            m(torch.randn(1, 3, 5, 5))
        with self.assertRaises(dynconv.DynconvError):
            m(torch.randn(1, 4, 2, 2))  # smaller than the kernel
        m.double()
        with self.assertRaisesRegex(TypeError, "parameter 'weight'"):
            m(torch.randn(1, 4, 5, 5))
        with self.assertRaises(TypeError):
            DynamicConv2d(4, 4, 3, kernels=2)  # unknown keyword
        self.assertIn("num_kernels=4", repr(DynamicConv2d(4, 4, 3)))


class WithBatchNorm(DynamicConv2dFC):
    def __init__(self):
        super().__init__(4, 4, 3, padding=1)
        self.attention.bn = nn.BatchNorm2d(2)


class Mixed(nn.Module):
    """A small model with one dynamic convolution of each layout; TArdelean's takes the
    temperature from the model's forward."""

    def __init__(self):
        super().__init__()
        self.stem = DynamicConv2dFC(3, 8, 3, stride=2, padding=1, K=3, temperature=4.0)
        self.body = nn.Sequential(nn.ReLU(), DynamicConvNet(8, 8, 3, padding=1, groups=2, K=4,
                                                            temprature=2.0, ratio=2))
        self.head = KernelsDynamicConv(3, 4, 8, 6, 3, stride=1, padding=(1, 0))
        self.fc = DynamicLinearRef(6, 5, K=2, temperature=1.5)

    def forward(self, x, temperature=0.7):
        h = self.head(self.body(self.stem(x)), temperature)
        return self.fc(h.mean((2, 3)))


class Convert(unittest.TestCase):
    def test_convert_a_model(self):
        cases.seed("torch_convert")
        model = Mixed()
        for m in (model.stem, model.body[1], model.head, model.fc):
            scale_attention(m, 1.5)
        original = copy.deepcopy(model)
        params_before = dict(model.named_parameters())
        keys_before = {k: v.shape for k, v in model.state_dict().items()}
        x = torch.randn(3, 3, 12, 12)
        gy = torch.randn(3, 5)
        y_ref, g_ref = forward_backward(original, x, gy)
        self.assertIs(convert(model, temperature=0.7), model)
        self.assertIsInstance(model.stem, DynamicConv2d)
        self.assertIsInstance(model.body[1], DynamicConv2d)
        self.assertIsInstance(model.head, DynamicConv2d)
        self.assertIsInstance(model.fc, DynamicLinear)
        # the same Parameter objects under the same names
        self.assertEqual({k: v.shape for k, v in model.state_dict().items()}, keys_before)
        for name, p in model.named_parameters():
            self.assertIs(p, params_before[name], name)
        y, g = forward_backward(model, x, gy)
        cases.assert_close(self, y, y_ref, "converted model output")
        self.assertEqual(sorted(g), sorted(g_ref))
        for key in g_ref:
            cases.assert_close(self, g[key], g_ref[key], f"converted model d{key}")
        # the temperature stays where each layout keeps it
        self.assertEqual(model.body[1].temperature, 2.0)
        model.body[1].attention.temprature = 0.9
        original.body[1].attention.temprature = 0.9
        model.stem.attention.temperature = 2.5
        original.stem.attention.temperature = 2.5
        with torch.no_grad():
            cases.assert_close(self, model(x, 1.1), original(x, 1.1), "after changing T")
        self.assertEqual(model.head.temperature, 0.7)
        self.assertIs(convert(model.stem), model.stem)  # already converted: unchanged

    def test_convert_refuses_what_it_cannot_compute(self):
        with self.assertRaisesRegex(ValueError, "attention holds 'bn.weight'"):
            convert(nn.Sequential(WithBatchNorm()))

    def test_converted_layer_is_exported_alike(self):
        # the exporter reads a converted layer as the original
        from dynconv import export as exporter
        cases.seed("torch_export_converted")
        layer = DynamicConvNet(4, 6, 3, padding=1, temprature=1.5, ratio=2)
        tmp = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"dynconv-{os.getpid()}.st")
        try:
            exporter.export(convert(layer), tmp)
            tensors, meta = dynconv.load_file(tmp)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self.assertEqual(sorted(tensors), sorted(layer.state_dict()))
        self.assertEqual((meta["padding"], meta["temperature"]), ("1,1", "1.5"))


class WithoutTorch(unittest.TestCase):
    def test_package_imports_without_torch(self):
        # torch is optional: a Python whose `import torch` fails still imports dynconv
        code = ("import sys; sys.modules['torch'] = None; import dynconv; "
                "print(dynconv.Conv2d.__name__)")
        env = dict(os.environ, PYTHONPATH=cases.PACKAGE)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=env, timeout=60)
        self.assertEqual((r.returncode, r.stdout.strip()), (0, "Conv2d"), r.stderr)


if __name__ == "__main__":
    unittest.main()
