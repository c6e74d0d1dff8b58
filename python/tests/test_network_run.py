"""dynconv.Network: whole networks run by libdynconv against PyTorch. The golden networks of
tests/networks against their stored PyTorch logits; kaijieshi7-style and TArdelean-style models
exported with export_network against the models' own output; temperature, attention, threads,
the node list, peak memory; and what it refuses."""

import json
import os
import unittest

import numpy as np
import torch
import torch.nn as nn

import cases
import dynconv
import network_models as nm
from dynconv.export import export_network, write_safetensors
from dynconv.safetensors import load_file

GOLDEN = os.path.join(cases.ROOT, "tests", "networks")
# Float32 through a whole network (BatchNorm folded into the kernels, sums in another order than
# PyTorch's): relative 1e-3, absolute 1e-4 of the largest logit.
RTOL, ATOL = 1e-3, 1e-4
INVALID_MODEL = 10


def _network_api():
    try:
        dynconv._lib.network_library()
        return True
    except ImportError:
        return False


@unittest.skipUnless(_network_api(), "libdynconv with the network API (1.2) not loadable")
class NetworkTest(cases.TempDirTest):
    def setUp(self):
        super().setUp()
        self.generator = torch.Generator().manual_seed(4321)

    def assert_matches(self, got, want, what=""):
        want = np.asarray(want, dtype=np.float64)
        scale = np.abs(want).max()
        self.assertGreater(scale, 0, what)
        self.assertEqual(got.dtype, np.float32, what)
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL * scale, err_msg=what)

    def exported(self, model, shape=(2, 3, 32, 32), concrete_args=None):
        """(path, x) of the model exported after its batch norms were calibrated."""
        extra = list(concrete_args.values()) if concrete_args else []
        batch = torch.randn(8, *shape[1:], generator=self.generator)
        # each sample its own colour cast, so that the attention differs between samples
        batch = batch + torch.randn(8, shape[1], 1, 1, generator=self.generator)
        nm.randomize_batchnorms(model, self.generator, lambda m: m(batch, *extra))
        x = torch.randn(*shape, generator=self.generator) + \
            torch.randn(shape[0], shape[1], 1, 1, generator=self.generator)
        path = self.path("net.safetensors")
        export_network(model, x, path, concrete_args)
        return path, x

    def node(self, net, module):
        return next(n for n in net.nodes if n.module == module)


class Golden(NetworkTest):
    def test_golden_networks(self):
        with open(os.path.join(GOLDEN, "networks.json")) as f:
            table = json.load(f)
        self.assertGreaterEqual(len(table), 4)
        for name, entry in table.items():
            x = np.load(os.path.join(GOLDEN, entry["input"]))
            want = np.load(os.path.join(GOLDEN, entry["logits"]))
            for fusion in (True, False):
                with self.subTest(network=name, fusion=fusion):
                    net = dynconv.Network(os.path.join(GOLDEN, entry["file"]), fusion=fusion)
                    self.assert_matches(net.forward(x), want, name)

    def test_from_bytes(self):
        path = os.path.join(GOLDEN, "dy_resnet.safetensors")
        with open(path, "rb") as f:
            net = dynconv.Network.from_bytes(f.read())
        x = np.load(os.path.join(GOLDEN, "dy_resnet.input.npy"))
        self.assert_matches(net.forward(x), np.load(os.path.join(GOLDEN, "dy_resnet.logits.npy")))
        self.assertEqual(net.origin, "<memory>")


class RoundTrip(NetworkTest):
    def test_kaijieshi7_dy_resnet(self):
        model = nm.DyResNet(temperature=4.0)
        path, x = self.exported(model)
        net = dynconv.Network(path)
        with torch.no_grad():
            want = model(x)
        self.assert_matches(net.forward(x.numpy()), want.numpy(), "traced shape")
        # another batch and size (reshape), then the first again
        x2 = torch.randn(3, 3, 40, 48, generator=self.generator)
        with torch.no_grad():
            want2 = model(x2)
        self.assert_matches(net.forward(x2.numpy()), want2.numpy(), "[3, 3, 40, 48]")
        self.assert_matches(net.forward(x.numpy()), want.numpy(), "traced shape again")
        # float64 input is converted (the dtype policy of the layers)
        self.assert_matches(net.forward(x.numpy().astype(np.float64)), want.numpy(), "float64")

    def test_tardelean_dy_mobilenetv2_and_temperature(self):
        # The temperature is a forward argument of the model; the file holds the exported one
        # and Network.temperature replaces it in every dynamic layer.
        model = nm.DyMobileNetV2()
        path, x = self.exported(model, concrete_args={"temperature": 1.0})
        net = dynconv.Network(path)
        self.assertEqual(net.temperature, 1.0)
        for t in (1.0, 30.0, 0.2):
            with self.subTest(temperature=t):
                net.temperature = t
                self.assertAlmostEqual(net.temperature, t, places=5)
                with torch.no_grad():
                    want = model(x, t)
                self.assert_matches(net.forward(x.numpy()), want.numpy(), f"T = {t}")
        with torch.no_grad():
            self.assertGreater((model(x, 30.0) - model(x, 0.2)).abs().max().item(), 1e-3)

    def test_temperature_of_one_layer(self):
        model = nm.DyResNet(temperature=4.0)
        path, x = self.exported(model)
        net = dynconv.Network(path)
        name = self.node(net, "layer2.0.conv1").name
        net.set_temperature(0.3, name)
        model.layer2[0].conv1.attention.temperature = 0.3
        self.assertAlmostEqual(net.get_temperature(name), 0.3, places=6)
        self.assertEqual(net.get_temperature(), 4.0)  # the first dynamic layer's
        with torch.no_grad():
            want = model(x)
        self.assert_matches(net.forward(x.numpy()), want.numpy())
        with self.assertRaises(dynconv.DynconvError):
            net.set_temperature(0.0)
        with self.assertRaises(dynconv.DynconvError):
            net.set_temperature(1.0, "no_such_layer")
        self.assertAlmostEqual(net.get_temperature(name), 0.3, places=6)  # unchanged

    def test_attention(self):
        model = nm.DyResNet(temperature=4.0)
        path, x = self.exported(model)
        net = dynconv.Network(path)
        name = self.node(net, "layer3.0.conv1").name
        with self.assertRaises(dynconv.DynconvError) as cm:
            net.attention(name)  # no forward yet
        self.assertEqual(cm.exception.status_string, "invalid state")
        seen = {}
        module = model.layer3[0].conv1
        hook = module.register_forward_hook(lambda m, inputs, out: seen.update(x=inputs[0]))
        with torch.no_grad():
            model(x)
            want = module.attention(seen["x"]).numpy()
        hook.remove()
        net.forward(x.numpy())
        got = net.attention(name)
        self.assertEqual(got.shape, (2, 4))
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-5)
        # a mixture, and another one for each sample: else the check would show little
        self.assertLess(want.max(), 0.95)
        self.assertGreater(np.abs(want[0] - want[1]).max(), 1e-3)
        with self.assertRaises(dynconv.DynconvError):
            net.attention(self.node(net, "fc").name)  # a static layer

    def test_several_outputs(self):
        class TwoHeads(nn.Module):
            def __init__(self):
                super().__init__()
                self.body = nm.DyResNet(temperature=4.0)
                self.extra = nn.Linear(10, 3)

            def forward(self, x):
                logits = self.body(x)
                return logits, self.extra(torch.relu(logits))

        model = TwoHeads()
        path, x = self.exported(model)
        net = dynconv.Network(path)
        self.assertEqual(net.num_outputs, 2)
        got = net.forward(x.numpy())
        with torch.no_grad():
            want = model(x)
        self.assertIsInstance(got, tuple)
        for g, w in zip(got, want):
            self.assert_matches(g, w.numpy())


class Properties(NetworkTest):
    def setUp(self):
        super().setUp()
        self.file = os.path.join(GOLDEN, "dy_resnet.safetensors")
        self.x = np.load(os.path.join(GOLDEN, "dy_resnet.input.npy"))

    def test_threads_agree(self):
        net = dynconv.Network(self.file)
        results = {}
        for threads in (1, 2):
            net.threads = threads
            self.assertEqual(net.threads, threads)
            results[threads] = net.forward(self.x)
        scale = np.abs(results[1]).max()
        np.testing.assert_allclose(results[2], results[1], rtol=1e-5, atol=1e-6 * scale)
        with self.assertRaises(dynconv.DynconvError):
            net.threads = -1
        out = np.full((2, 10), np.nan, dtype=np.float32)
        self.assertIs(net.forward(self.x, out=out), out)
        np.testing.assert_array_equal(out, results[2])
        with self.assertRaises(ValueError):
            net.forward(self.x, out=np.empty((2, 9), dtype=np.float32))

    def test_nodes_and_peak_bytes(self):
        net = dynconv.Network(self.file)
        self.assertIsNone(net.peak_bytes)
        self.assertTrue(all(n.shape is None for n in net.nodes))
        net.forward(self.x)
        nodes = net.nodes
        ops = [n.op for n in nodes]
        self.assertNotIn("batchnorm2d", ops)  # each follows a convolution: folded
        dynamic = [n for n in nodes if n.op == "dynamic_conv2d"]
        self.assertEqual(len(dynamic), 11)
        self.assertEqual({n.num_kernels for n in dynamic}, {4})
        self.assertTrue(all("batchnorm" in n.fused for n in dynamic))
        self.assertEqual(nodes[0].fused, ("batchnorm", "relu"))  # the stem: conv1, bn1, relu
        self.assertEqual(nodes[-1].shape, (2, 10))
        self.assertEqual(nodes[-1].parameters, 64 * 10 + 10)
        small = net.peak_bytes
        self.assertGreater(small, self.x.nbytes)
        self.assertGreater(net.reshape(8, 64, 64), small)
        self.assertEqual(net.nodes[0].shape, (8, 8, 32, 32))
        # Unfused, the network runs every op of the file.
        graph = json.loads(load_file(self.file)[1]["dynconv.graph"])
        plain = dynconv.Network(self.file, fusion=False)
        self.assertEqual(sorted(n.op for n in plain.nodes),
                         sorted(n["op"] for n in graph["nodes"]))
        self.assertEqual(sum(n.op == "batchnorm2d" for n in plain.nodes), 12)
        self.assertTrue(all(n.fused == () for n in plain.nodes))
        self.assertIn("nodes=", repr(plain))

    def test_refusals(self):
        net = dynconv.Network(self.file)
        with self.assertRaises(ValueError):
            net.forward(self.x[:, :2])  # two channels for three
        with self.assertRaises(ValueError):
            net.forward(self.x[0])
        with self.assertRaises(TypeError):
            net.forward(self.x.astype(np.complex64))
        net.close()
        self.assertEqual(repr(net), "dynconv.Network(closed)")
        with self.assertRaises(ValueError):
            net.forward(self.x)

    def test_kernel_larger_than_input(self):
        # A 3x3 convolution without padding: the message names the node; the previous shape
        # stays in force.
        graph = {"schema": "dynconv.network", "version": 1,
                 "inputs": [{"name": "x", "shape": [1, 2, 5, 5]}], "outputs": ["conv"],
                 "nodes": [{"name": "conv", "op": "conv2d", "inputs": ["x"], "module": "c",
                            "attrs": {"stride": [1, 1], "padding": [0, 0],
                                      "dilation": [1, 1], "groups": 1},
                            "tensors": {"weight": "c.weight"}, "shape": [1, 4, 3, 3]}]}
        path = self.path("small.safetensors")
        weight = np.arange(4 * 2 * 9, dtype=np.float32).reshape(4, 2, 3, 3) / 50
        write_safetensors(path, {"c.weight": weight}, {"dynconv.graph": json.dumps(graph)})
        net = dynconv.Network(path)
        x = np.random.default_rng(2).standard_normal((1, 2, 5, 5)).astype(np.float32)
        want = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(weight))
        self.assert_matches(net.forward(x), want.numpy())
        with self.assertRaises(dynconv.DynconvError) as cm:
            net.forward(x[:, :, :2, :2])
        self.assertEqual(cm.exception.status_string, "invalid shape")
        self.assertIn("conv", cm.exception.message)
        self.assertEqual(net.nodes[0].shape, (1, 4, 3, 3))
        self.assert_matches(net.forward(x), want.numpy())
        with self.assertRaises(dynconv.DynconvError):
            net.temperature = 2.0  # no dynamic layer to set

    def test_bad_files(self):
        junk = self.path("junk.safetensors")
        with open(junk, "wb") as f:
            f.write(b"not a network at all")
        layer = self.path("layer.safetensors")
        write_safetensors(layer, {"weight": np.zeros((2, 2, 2, 1, 1))}, {"stride": "1"})
        for path in (junk, layer):
            with self.subTest(path=os.path.basename(path)):
                with self.assertRaises(dynconv.DynconvError) as cm:
                    dynconv.Network(path)
                self.assertEqual(cm.exception.status, INVALID_MODEL)
                self.assertIn(path, str(cm.exception))
        with self.assertRaises(dynconv.DynconvError) as cm:
            dynconv.Network(self.path("missing.safetensors"))
        self.assertIn("missing.safetensors", str(cm.exception))
        with self.assertRaises(dynconv.DynconvError) as cm:
            dynconv.Network.from_bytes(b"")
        self.assertEqual(cm.exception.status, INVALID_MODEL)


if __name__ == "__main__":
    unittest.main()
