"""Network files (docs/file-format.md, "Networks"): dynconv.export.export_network writes them,
dynconv.network_ref runs them from the file alone, and its logits must match the PyTorch model
(rtol 1e-4, atol 1e-5 times the logits' largest magnitude). Also: what the exporter refuses
(writing nothing), what the loader refuses, and the golden networks of tests/networks."""

import hashlib
import json
import os
import subprocess
import unittest

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import cases
import network_models as nm
from dynconv import network_format, network_ref
from dynconv.export import export_network, write_safetensors
from dynconv.safetensors import load_file

try:
    import torchvision
except ImportError:  # Debian: python3-torchvision (scripts/deps.sh python)
    torchvision = None

GOLDEN = os.path.join(cases.ROOT, "tests", "networks")
CLI = os.environ.get("DYNCONV_CLI", os.path.join(cases.ROOT, "build", "release", "tools",
                                                 "dynconv"))


def _library_available():
    import dynconv
    try:
        dynconv.library()
        return True
    except ImportError:
        return False


class NetworkTest(cases.TempDirTest):
    def setUp(self):
        super().setUp()
        self.generator = torch.Generator().manual_seed(1234)

    def assert_logits_match(self, got, want):
        want = np.asarray(want, dtype=np.float64)
        scale = np.abs(want).max()
        self.assertGreater(scale, 0)
        # Logits that do not depend on the input would let a broken network pass.
        self.assertGreater(np.abs(want[0] - want[-1]).max(), 1e-3 * scale)
        np.testing.assert_allclose(got, want, rtol=cases.RTOL, atol=cases.ATOL * scale)


class RoundTrip(NetworkTest):
    """The exported file run by the reference interpreter gives the model's logits."""

    def round_trip(self, model, concrete_args=None, shape=(2, 3, 32, 32), run_shapes=()):
        extra = list(concrete_args.values()) if concrete_args else []
        batch = torch.randn(8, *shape[1:], generator=self.generator)
        nm.randomize_batchnorms(model, self.generator, lambda m: m(batch, *extra))
        x = torch.randn(*shape, generator=self.generator)
        path = self.path("net.safetensors")
        graph = export_network(model, x, path, concrete_args)
        net = network_ref.load_network(path)
        for s in (shape,) + tuple(run_shapes):
            xs = x if s == shape else torch.randn(*s, generator=self.generator)
            with torch.no_grad():
                want = model(xs, *extra)
            self.assert_logits_match(net.run(xs.numpy()), want.numpy())
        return graph, net

    def ops(self, graph):
        return {n["op"] for n in graph["nodes"]}

    def test_dy_resnet_kaijieshi7_layout(self):
        graph, _ = self.round_trip(nm.DyResNet(temperature=4.0), run_shapes=[(2, 3, 40, 48)])
        self.assertTrue({"conv2d", "dynamic_conv2d", "batchnorm2d", "relu", "add",
                         "max_pool2d", "global_avg_pool2d", "flatten",
                         "linear"} <= self.ops(graph))
        dyn = [n for n in graph["nodes"] if n["op"] == "dynamic_conv2d"]
        self.assertEqual(len(dyn), 11)  # 8 3x3 layers, 3 1x1 downsamples
        self.assertEqual({tuple(n["attrs"]["dilation"]) for n in dyn}, {(1, 1)})
        stem = [n for n in graph["nodes"] if n["op"] == "conv2d"]
        self.assertEqual(stem[0]["attrs"]["stride"], [2, 2])
        self.assertEqual(stem[0]["tensors"], {"weight": "conv1.weight"})

    def test_dy_mobilenetv2_tardelean_layout_temperature(self):
        # The temperature is a forward argument: the file holds the one it was exported with.
        files = {}
        for t in (30.0, 0.5):
            graph, net = self.round_trip(nm.DyMobileNetV2(), {"temperature": t})
            self.assertTrue({"relu6", "dynamic_conv2d", "add"} <= self.ops(graph))
            temps = {n["attrs"]["temperature"] for n in graph["nodes"]
                     if n["op"] == "dynamic_conv2d"}
            self.assertEqual(temps, {t})
            depthwise = [n for n in graph["nodes"] if n["op"] == "dynamic_conv2d" and
                         n["attrs"]["groups"] > 1]
            self.assertTrue(depthwise)
            files[t] = net
        x = np.random.default_rng(0).standard_normal((2, 3, 32, 32))
        self.assertGreater(np.abs(files[30.0].run(x) - files[0.5].run(x)).max(), 1e-6)

    def test_tardelean_static_baseline(self):
        # nn.Conv2d subclasses traced through: F.conv2d on the module's own weight.
        graph, _ = self.round_trip(nm.DyMobileNetV2(dynamic=False), {"temperature": 1.0})
        convs = [n for n in graph["nodes"] if n["op"] == "conv2d"]
        self.assertEqual(len(convs), 1 + 3 * 5 + 2 + 1)
        self.assertNotIn("dynamic_conv2d", self.ops(graph))
        self.assertIn("features.layers.1.conv.layers.0.weight",
                      [n["tensors"]["weight"] for n in convs])

    def test_mixed_ops_and_layouts(self):
        if not _library_available():
            self.skipTest("libdynconv not loadable (dynconv.torch's layers need it)")
        graph, _ = self.round_trip(nm.MixedNet())
        self.assertTrue({"cat", "avg_pool2d", "relu6", "dynamic_linear",
                         "global_avg_pool2d"} <= self.ops(graph))
        # Dropout is the identity in eval mode and is not in the file.
        self.assertFalse([n for n in graph["nodes"] if "drop" in n["name"]])

    def test_mixed_pure_pytorch(self):
        self.round_trip(nm.MixedNet(library_layers=False), run_shapes=[(3, 3, 20, 24)])

    @unittest.skipIf(torchvision is None, "python3-torchvision is not installed")
    def test_torchvision_resnet18(self):
        graph, _ = self.round_trip(torchvision.models.resnet18(num_classes=10),
                                   shape=(2, 3, 32, 32))
        self.assertEqual(sum(n["op"] == "conv2d" for n in graph["nodes"]), 20)
        self.assertEqual(sum(n["op"] == "add" for n in graph["nodes"]), 8)

    @unittest.skipIf(torchvision is None, "python3-torchvision is not installed")
    def test_torchvision_mobilenet_v2(self):
        graph, _ = self.round_trip(torchvision.models.mobilenet_v2(num_classes=10),
                                   shape=(2, 3, 32, 32))
        self.assertEqual(sum(n["op"] == "conv2d" for n in graph["nodes"]), 52)

    def test_functional_spellings(self):
        # The other spellings of the same ops map to the same graph.
        class Functional(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.Conv2d(3, 6, 3, padding=1)
                self.b = nn.Conv2d(3, 6, 1, padding="valid")
                self.bn = nn.BatchNorm2d(12, affine=False)
                self.flat = nn.Flatten()
                self.pool = nn.MaxPool2d(4, padding=1, dilation=(1, 2))
                self.fc = nn.Linear(12, 5)
                self.fc2 = nn.Linear(12 * 3 * 2, 3)

            def forward(self, x):
                y = torch.add(torch.relu(self.a(x)), F.relu6(self.b(x)))
                y = torch.cat((y, F.hardtanh(y, 0.0, 6.0)), 1).relu()
                y = self.bn(y.contiguous())
                p = F.adaptive_avg_pool2d(y, 1).flatten(1)
                q = self.flat(y.mean((-2, -1), keepdim=True))
                r = self.pool(y)
                r = F.dropout(r.reshape(r.shape[0], -1), 0.5, training=self.training)
                return self.fc(F.relu(p)) + self.fc(q), self.fc2(r.view(r.size(0), -1))

        graph, _ = self.round_trip_multi(Functional())
        self.assertEqual(len(graph["outputs"]), 2)

    def round_trip_multi(self, model):
        batch = torch.randn(8, 3, 12, 12, generator=self.generator)
        nm.randomize_batchnorms(model, self.generator, lambda m: m(batch))
        x = torch.randn(2, 3, 12, 12, generator=self.generator)
        path = self.path("net.safetensors")
        graph = export_network(model, x, path)
        net = network_ref.load_network(path)
        with torch.no_grad():
            want = model(x)
        for got, w in zip(net.run(x.numpy()), want):
            self.assert_logits_match(got, w.numpy())
        return graph, net

    def test_layer_readable_out_of_a_network_file(self):
        # A dynamic layer's tensors and keys follow the layer format under its module path.
        if not _library_available():
            self.skipTest("libdynconv not loadable")
        import dynconv
        model = nm.randomize_batchnorms(nm.DyResNet(temperature=4.0), self.generator)
        x = torch.randn(2, 3, 32, 32, generator=self.generator)
        path = self.path("net.safetensors")
        graph = export_network(model, x, path)
        node = next(n for n in graph["nodes"] if n["module"] == "layer2.0.conv1")
        values = network_ref.load_network(path).run(x.numpy(), all_values=True)
        layer = dynconv.load_layer(path, prefix="layer2.0.conv1")
        got = layer.forward(values[node["inputs"][0]].astype(np.float32))
        self.assert_logits_match(got, values[node["name"]])


    @unittest.skipUnless(os.access(CLI, os.X_OK), "the dynconv tool is not built")
    def test_dynconv_run_reads_a_layer_of_a_network_file(self):
        path = os.path.join(GOLDEN, "dy_resnet.safetensors")
        net = network_ref.load_network(path)
        values = net.run(np.load(os.path.join(GOLDEN, "dy_resnet.input.npy")), all_values=True)
        node = next(n for n in net.nodes if n["module"] == "layer3.0.conv1")
        np.save(self.path("x.npy"), values[node["inputs"][0]].astype(np.float32))
        r = subprocess.run([CLI, "run", "--weights", path, "--prefix", "layer3.0.conv1",
                            "--input", self.path("x.npy"), "--output", self.path("y.npy")],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_logits_match(np.load(self.path("y.npy")), values[node["name"]])


class Schema(NetworkTest):
    def export_small(self):
        model = nm.MixedNet(library_layers=False).eval()
        path = self.path("net.safetensors")
        export_network(model, torch.randn(2, 3, 16, 16, generator=self.generator), path)
        return path

    def test_version_and_schema_present(self):
        tensors, metadata = load_file(self.export_small())
        graph = json.loads(metadata[network_format.GRAPH_KEY])
        self.assertEqual(graph["schema"], "dynconv.network")
        self.assertEqual(graph["version"], 1)
        self.assertEqual(graph["inputs"], [{"name": "x", "shape": [2, 3, 16, 16]}])
        self.assertTrue(all(a.dtype == np.float32 for a in tensors.values()))
        used = {t for n in graph["nodes"] for t in n["tensors"].values()}
        self.assertEqual(used, set(tensors))

    def rewrite(self, path, edit):
        """The file with its graph changed by edit(graph) (or its tensors by edit(graph,
        tensors)), written as a new file."""
        tensors, metadata = load_file(path)
        graph = json.loads(metadata[network_format.GRAPH_KEY])
        edit(graph, tensors)
        metadata[network_format.GRAPH_KEY] = json.dumps(graph)
        out = self.path("edited.safetensors")
        write_safetensors(out, tensors, metadata)
        return out

    def assert_refused(self, edit, *fragments):
        out = self.rewrite(self.export_small(), edit)
        with self.assertRaises(network_format.GraphError) as cm:
            network_ref.load_network(out)
        for f in fragments:
            self.assertIn(f, str(cm.exception))

    def test_dangling_edge(self):
        def edit(g, _):
            g["nodes"][3]["inputs"][0] = "nowhere"
        self.assert_refused(edit, "input 'nowhere'", "dangling edge")

    def test_dangling_output(self):
        def edit(g, _):
            g["outputs"] = ["gone"]
        self.assert_refused(edit, "output 'gone'", "dangling edge")

    def test_cycle(self):
        def edit(g, _):
            # the stem reads the last node's output: every node is then on a cycle
            first = next(n for n in g["nodes"] if n["inputs"] == ["x"])
            first["inputs"] = [g["outputs"][0]]
        self.assert_refused(edit, "cycle")

    def test_self_loop(self):
        looped = []

        def edit(g, _):
            n = g["nodes"][2]
            n["inputs"] = [n["name"]] * len(n["inputs"])
            looped.append(n["name"])
        out = self.rewrite(self.export_small(), edit)
        with self.assertRaisesRegex(network_format.GraphError, "cycle") as cm:
            network_ref.load_network(out)
        self.assertIn(looped[0], str(cm.exception))

    def test_other_version_unknown_op_missing_tensor(self):
        self.assert_refused(lambda g, _: g.update(version=2), "version 2")
        self.assert_refused(lambda g, _: g["nodes"][1].update(op="gelu"), "unknown op 'gelu'")

        def drop_tensor(g, tensors):
            del tensors["stem.weight"]
        self.assert_refused(drop_tensor, "'stem.weight'", "not in the file")

        def bad_attr(g, _):
            g["nodes"][0]["attrs"]["stride"] = [0, 1]
        self.assert_refused(bad_attr, "'stride'")

    def test_malformed_graph_json(self):
        path = self.export_small()
        tensors, metadata = load_file(path)
        text = metadata[network_format.GRAPH_KEY]
        for bad, fragment in ((text[:-1], "not valid JSON"),
                              ('{"version": 1, ' + text[1:], "duplicate key 'version'"),
                              (text.replace('"version":1', '"version":NaN', 1),
                               "not valid JSON"),
                              ("[]", "not a JSON object")):
            with self.subTest(fragment=fragment):
                metadata[network_format.GRAPH_KEY] = bad
                out = self.path("bad.safetensors")
                write_safetensors(out, tensors, metadata)
                with self.assertRaisesRegex(network_format.GraphError, fragment):
                    network_ref.load_network(out)

    def test_node_order_is_free(self):
        # Nodes may come in any order: the loader sorts them by their edges.
        path = self.export_small()
        x = np.random.default_rng(1).standard_normal((2, 3, 16, 16))
        want = network_ref.load_network(path).run(x)
        out = self.rewrite(path, lambda g, _: g["nodes"].reverse())
        np.testing.assert_array_equal(network_ref.load_network(out).run(x), want)

    def test_layer_file_is_not_a_network(self):
        path = self.path("layer.safetensors")
        write_safetensors(path, {"weight": np.zeros((2, 2, 2, 1, 1))}, {"stride": "1"})
        with self.assertRaisesRegex(network_format.GraphError, "no network graph"):
            network_ref.load_network(path)


class Refusals(NetworkTest):
    """What the format cannot hold is refused with its name and module path, and no file is
    written (an existing file at the path is left as it was)."""

    def assert_refused(self, model, fragments, concrete_args=None):
        path = self.path("out.safetensors")
        with open(path, "wb") as f:
            f.write(b"previous")
        with self.assertRaises(ValueError) as cm:
            export_network(model.eval(), torch.randn(1, 3, 16, 16), path, concrete_args)
        for f in fragments:
            self.assertIn(f, str(cm.exception))
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"previous")
        self.assertEqual(sorted(os.listdir(self.dir)), ["out.safetensors"])  # no temp left
        return str(cm.exception)

    def test_sigmoid(self):
        class Gate(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 4, 3)

            def forward(self, x):
                y = self.conv(x)
                return y * torch.sigmoid(y)

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.block = nn.Sequential(Gate())

            def forward(self, x):
                return self.block(x)

        self.assert_refused(Net(), ["sigmoid", "module 'block.0'"])

    def test_gelu_module(self):
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.GELU()))
        self.assert_refused(model, ["GELU", "'1.0'"])

    def test_traced_temperature(self):
        self.assert_refused(nm.DyMobileNetV2(), ["concrete_args", "temperature"])

    def test_training_mode(self):
        model = nm.DyResNet()
        path = self.path("out.safetensors")
        with self.assertRaisesRegex(ValueError, "training mode"):
            export_network(model.train(), torch.randn(1, 3, 16, 16), path)
        self.assertFalse(os.path.exists(path))

    def test_broadcast_and_constant_add(self):
        class Shift(nn.Module):
            def forward(self, x):
                return x + 1.0

        self.assert_refused(nn.Sequential(nn.Conv2d(3, 4, 1), Shift()),
                            ["add", "non-tensor operand 1.0", "module '1'"])

    def test_parameters_used_directly(self):
        class Scaled(nn.Module):
            def __init__(self):
                super().__init__()
                self.w = nn.Parameter(torch.randn(4, 3, 3, 3))
                self.shift = nn.Parameter(torch.randn(1, 4, 1, 1))

            def forward(self, x):
                return F.conv2d(x, x)  # a weight the network computes

        class Shifted(Scaled):
            def forward(self, x):
                return F.conv2d(x, self.w) + self.shift

        self.assert_refused(nn.Sequential(Scaled()), ["conv2d", "weight is computed",
                                                      "module '0'"])
        self.assert_refused(nn.Sequential(Shifted()), ["the tensor '0.shift'"])

    def test_ceil_mode_pool(self):
        self.assert_refused(nn.Sequential(nn.MaxPool2d(3, 2, ceil_mode=True)), ["ceil_mode"])


class Golden(unittest.TestCase):
    """The committed networks of tests/networks: the reference interpreter reproduces the
    PyTorch logits stored beside them."""

    def test_golden_networks(self):
        with open(os.path.join(GOLDEN, "networks.json")) as f:
            table = json.load(f)
        self.assertGreaterEqual(len(table), 3)
        for name, entry in table.items():
            with self.subTest(network=name):
                path = os.path.join(GOLDEN, entry["file"])
                with open(path, "rb") as f:  # the file the generator wrote, not an edited one
                    self.assertEqual(hashlib.sha256(f.read()).hexdigest(), entry["sha256"])
                net = network_ref.load_network(path)
                x = np.load(os.path.join(GOLDEN, entry["input"]))
                want = np.load(os.path.join(GOLDEN, entry["logits"]))
                got = net.run(x)
                scale = np.abs(want).max()
                np.testing.assert_allclose(got, want, rtol=cases.RTOL,
                                           atol=cases.ATOL * scale)


if __name__ == "__main__":
    unittest.main()
