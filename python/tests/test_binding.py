"""The Python package (ctypes) against PyTorch on the table of random layers, and its handling
of arguments: conversions, refusals, errors from the library, temperature."""

import unittest

import numpy as np
import torch

import cases
import dynconv


def layer_from_module(module):
    att = module.attention
    names = ("fc1", "fc2") if hasattr(att, "fc1") else ("net.0", "net.2")
    params = dict(att.named_parameters())

    def get(name):
        p = params.get(name)
        return None if p is None else p.detach().numpy()

    temperature = getattr(att, "temperature", getattr(att, "temprature", 1.0))
    prefixes = ("attention." + names[0], "attention." + names[1])
    state_names = {"weight": "weight", "bias": "bias",
                   "fc1_weight": prefixes[0] + ".weight", "fc1_bias": prefixes[0] + ".bias",
                   "fc2_weight": prefixes[1] + ".weight", "fc2_bias": prefixes[1] + ".bias"}
    return dynconv.Conv2d(
        module.weight.detach().numpy(), get(names[0] + ".weight"), get(names[1] + ".weight"),
        bias=None if module.bias is None else module.bias.detach().numpy(),
        fc1_bias=get(names[0] + ".bias"), fc2_bias=get(names[1] + ".bias"),
        stride=module.stride, padding=module.padding, dilation=module.dilation,
        groups=module.groups, temperature=temperature, names=state_names)


class Binding(unittest.TestCase):
    def test_version_checked_at_load(self):
        self.assertEqual(dynconv.version_number() // 10000, 1)
        self.assertRegex(dynconv.version(), r"^1\.\d+\.\d+$")

    def test_table_against_pytorch(self):
        for name in cases.LAYERS:
            with self.subTest(layer=name):
                module, x, y, pi = cases.make(name)
                cases.assert_nontrivial(self, y, pi, name)
                with layer_from_module(module) as layer:
                    got = layer.forward(x.numpy())
                    cases.assert_close(self, got, y.numpy(), name + " output")
                    cases.assert_close(self, layer.attention, pi.numpy(), name + " attention")
                    # a second batch of another size reshapes the handle
                    x2 = x[:1, :, 1:, :]
                    with torch.no_grad():
                        y2 = module(x2)
                    cases.assert_close(self, layer(x2.numpy()), y2.numpy(), name + " reshaped")

    def test_backward_against_autograd(self):
        for name in ("basic_3x3", "depthwise_multiplier", "rect_kernel_stride_1x2",
                     "all_biases_linear_attention", "net_biases_pointwise", "no_biases"):
            with self.subTest(layer=name):
                module, x, _, _ = cases.make(name)
                x = x.clone().requires_grad_(True)
                y = module(x)
                gy = torch.randn_like(y)
                module.zero_grad()
                y.backward(gy)
                grads = layer_from_module(module).backward(x.detach().numpy(), gy.numpy())
                # the gradients come under the state_dict's names, in its shapes
                want = {"input": x.grad}
                want.update({name: p.grad for name, p in module.named_parameters()})
                self.assertEqual(sorted(grads), sorted(want))
                for key, g in want.items():
                    cases.assert_close(self, grads[key], g.numpy(), f"{name} d{key}")

    def test_temperature(self):
        module, x, _, _ = cases.make("groups2")
        layer = layer_from_module(module)
        self.assertEqual(layer.temperature, 2.0)
        layer.temperature = 0.3
        module.attention.temperature = 0.3
        with torch.no_grad():
            y = module(x)
        self.assertAlmostEqual(layer.temperature, 0.3, places=6)
        cases.assert_close(self, layer.forward(x.numpy()), y.numpy(), "output at T = 0.3")
        with self.assertRaises(dynconv.DynconvError) as cm:
            layer.temperature = -1.0
        self.assertEqual(cm.exception.status, 2)  # DYNCONV_ERROR_INVALID_ARGUMENT
        self.assertIn("temperature", str(cm.exception))

    def test_threads(self):
        module, x, y, pi = cases.make("groups2_stride2_dilation2")
        layer = layer_from_module(module)
        self.assertGreaterEqual(layer.threads, 1)
        for threads in (1, 3):
            layer.threads = threads
            self.assertEqual(layer.threads, threads)
            cases.assert_close(self, layer.forward(x.numpy()), y.numpy(), f"{threads} threads")
            cases.assert_close(self, layer.attention, pi.numpy(), f"attention, {threads} threads")
        with self.assertRaises(dynconv.DynconvError):
            layer.threads = -1

    def test_inputs_are_converted_or_refused(self):
        module, x, y, _ = cases.make("basic_3x3")
        layer = layer_from_module(module)
        x64 = x.numpy().astype(np.float64)
        cases.assert_close(self, layer.forward(x64), y.numpy(), "float64 input")
        strided = np.asfortranarray(x.numpy())
        cases.assert_close(self, layer.forward(strided), y.numpy(), "Fortran-ordered input")
        with self.assertRaises(TypeError):
            layer.forward(x.numpy().astype(np.complex64))
        with self.assertRaises(ValueError):
            layer.forward(x.numpy()[:, :3])
        with self.assertRaises(ValueError):
            layer.forward(x.numpy()[0])

    def test_library_errors_become_exceptions(self):
        rng = np.random.default_rng(1)
        w = rng.standard_normal((2, 4, 2, 3, 3)).astype(np.float32)
        fc1 = rng.standard_normal((2, 4)).astype(np.float32)
        fc2 = rng.standard_normal((2, 2)).astype(np.float32)
        with self.assertRaises(dynconv.DynconvError) as cm:
            dynconv.Conv2d(w, fc1, fc2, groups=3)  # 3 does not divide 4 channels
        self.assertEqual(cm.exception.status, 2)
        self.assertIn("groups", cm.exception.message)
        layer = dynconv.Conv2d(w, fc1, fc2, groups=2)
        with self.assertRaises(dynconv.DynconvError) as cm:
            layer.forward(np.zeros((1, 4, 2, 2), np.float32))  # smaller than the kernel
        self.assertEqual(cm.exception.status, 3)  # DYNCONV_ERROR_INVALID_SHAPE
        with self.assertRaises(ValueError):
            dynconv.Conv2d(w, fc1, fc2[:1])
        layer.close()
        with self.assertRaises(ValueError):
            layer.forward(np.zeros((1, 4, 5, 5), np.float32))


class Polish(unittest.TestCase):
    def small(self, **kwargs):
        rng = np.random.default_rng(3)
        w = rng.standard_normal((2, 4, 2, 3, 3)).astype(np.float32)
        fc1 = rng.standard_normal((2, 4)).astype(np.float32)
        fc2 = rng.standard_normal((2, 2)).astype(np.float32)
        return w, fc1, fc2

    def test_messages_name_the_function_once(self):
        w, fc1, fc2 = self.small()
        with self.assertRaises(dynconv.DynconvError) as cm:
            dynconv.Conv2d(w, fc1, fc2, groups=3)
        text = str(cm.exception)
        self.assertTrue(text.startswith("dynconv_conv2d_create: invalid argument: "), text)
        self.assertEqual(text.count("dynconv_conv2d_create"), 1, text)
        layer = dynconv.Conv2d(w, fc1, fc2, groups=2)
        with self.assertRaises(dynconv.DynconvError) as cm:
            layer.temperature = float("nan")
        self.assertEqual(str(cm.exception).count("dynconv_conv2d_set_temperature"), 1)

    def test_unknown_keywords_are_refused(self):
        w, fc1, fc2 = self.small()
        for kwargs in ({"strides": 2}, {"pading": 1}, {"temprature": 2.0}):
            with self.subTest(kwargs=kwargs), self.assertRaises(TypeError):
                dynconv.Conv2d(w, fc1, fc2, groups=2, **kwargs)
        with self.assertRaises(TypeError):
            dynconv.Linear(w[:, :, :, 0, 0], fc1[:, :2], fc2, stride=1)

    def test_dtype_policy(self):
        w, fc1, fc2 = self.small()
        layer = dynconv.Conv2d(w.astype(np.float64), fc1, fc2.astype(np.float16), groups=2)
        x = np.random.default_rng(4).standard_normal((2, 4, 5, 5))
        y = layer(x)  # float64 in, converted
        self.assertEqual(y.dtype, np.float32)
        cases.assert_close(self, y, layer(x.astype(np.float32)), "float64 input converted")
        with self.assertRaisesRegex(TypeError, "converted to float32"):
            layer(x.astype(np.complex128))
        with self.assertRaisesRegex(TypeError, "converted to float32"):
            layer(x > 0)

    def test_repr(self):
        w, fc1, fc2 = self.small()
        layer = dynconv.Conv2d(w, fc1, fc2, groups=2, padding=1, temperature=3.0)
        self.assertEqual(repr(layer), "dynconv.Conv2d(4, 4, kernel_size=(3, 3), padding=(1, 1), "
                                      "groups=2, num_kernels=2, hidden=2, bias=False, "
                                      "temperature=3)")
        layer.close()
        self.assertEqual(repr(layer), "dynconv.Conv2d(closed)")
        lin = dynconv.Linear(w[:, :, 0, 0, 0][:, :, None].repeat(4, 2), fc1, fc2, bias=w[:, :, 0, 0, 0])
        self.assertEqual(repr(lin), "dynconv.Linear(4, 4, num_kernels=2, hidden=2, bias=True, "
                                    "temperature=1)")

    def test_temperature_schedule(self):
        w, fc1, fc2 = self.small()
        layer = dynconv.Conv2d(w, fc1, fc2, groups=2)
        layer.set_temperature_schedule(30.0, 1.0, 2)
        self.assertEqual(layer.temperature, 30.0)
        self.assertEqual([layer.step_temperature() for _ in range(3)], [15.5, 1.0, 1.0])
        layer.temperature = 2.0
        with self.assertRaises(dynconv.DynconvError) as cm:
            layer.step_temperature()  # assigning T ended the schedule
        self.assertEqual(cm.exception.status, 6)  # DYNCONV_ERROR_INVALID_STATE

    def test_borrowed_weights_are_read_in_place(self):
        w, fc1, fc2 = self.small()
        layer = dynconv.Conv2d(w, fc1, fc2, groups=2, borrow=True)
        x = np.random.default_rng(5).standard_normal((1, 4, 5, 5)).astype(np.float32)
        y1 = layer(x).copy()
        w *= 2.0  # the layer sees it: its output doubles (no bias)
        cases.assert_close(self, layer(x), 2 * y1, "after changing the borrowed weight")
        with self.assertRaisesRegex(TypeError, "borrow"):
            dynconv.Conv2d(w.astype(np.float64), fc1, fc2, groups=2, borrow=True)


if __name__ == "__main__":
    unittest.main()
