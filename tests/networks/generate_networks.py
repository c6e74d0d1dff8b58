"""Writes the golden networks of tests/networks: small exported models (network files, see
docs/file-format.md, "Networks"), an input and the logits PyTorch computes for it, for the
tests of network readers (python/tests/test_network.py, and a C loader's).

Run from the repository root with Debian's system interpreter (python3-torch, python3-numpy,
python3-torchvision):

    /usr/bin/python3 tests/networks/generate_networks.py

The output is deterministic (seeded per network). Every network is built from pure-PyTorch
modules: the logits must not come from libdynconv, which the data is meant to test. The script
refuses a network whose logits do not depend on the input, and one whose dynamic layers'
attention is nearly uniform or the same for every sample (a reader computing a static
convolution, or ignoring the attention, would then pass).
"""

import hashlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [os.path.join(ROOT, "python"), os.path.join(ROOT, "python", "tests")]

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402

import network_models as nm  # noqa: E402
from dynconv import network_ref  # noqa: E402
from dynconv.export import export_network  # noqa: E402

SHAPE = (2, 3, 32, 32)

# name -> (seed, constructor, concrete_args, description)
NETWORKS = {
    "dy_resnet": (11, lambda: nm.DyResNet(temperature=1.0), None,
                  "kaijieshi7-style DY-ResNet, widths 8-64, one BasicBlock per stage: "
                  "Dynamic_conv2d 3x3 and 1x1 (downsample) layers, static 7x7 stem, batch "
                  "norms, residual adds, max pool, adaptive average pool, fc"),
    "dy_mobilenetv2": (12, nm.DyMobileNetV2, {"temperature": 1.0},
                       "TArdelean-style DY-MobileNetV2, reduced: DynamicConvolution layers "
                       "(pointwise, depthwise), ReLU6, residual adds, temperature 1 given "
                       "at export"),
    "mixed": (13, lambda: nm.MixedNet(library_layers=False), None,
              "External-Attention's DynamicConv (dilation 2, groups 2), a 3x1 dynamic "
              "convolution, cat along channels, average pools (count_include_pad false), "
              "relu6 as hardtanh, mean over (2, 3), a dynamic linear layer, dropout"),
    "mobilenet_v2_025": (14, lambda: torchvision.models.mobilenet_v2(num_classes=10,
                                                                     width_mult=0.25),
                         None, "torchvision mobilenet_v2, width_mult 0.25, 10 classes"),
}


def check(name, net, x, logits):
    scale = np.abs(logits).max()
    if not scale > 0 or np.abs(logits[0] - logits[1]).max() < 1e-2 * scale:
        raise SystemExit(f"{name}: the logits barely depend on the input")
    values = net.run(x, all_values=True)
    varying = []
    for node in net.nodes:
        if not node["op"].startswith("dynamic_"):
            continue
        t = net._node_tensors(node)
        v = values[node["inputs"][0]]
        pooled = v.mean(axis=(2, 3)) if v.ndim == 4 else v
        pi = network_ref._attention(t, pooled, node["attrs"]["temperature"])
        if (pi.max(axis=1) - pi.min(axis=1)).min() < 0.02:
            raise SystemExit(f"{name}: node '{node['name']}': attention nearly uniform")
        if pi.max() > 0.99:
            raise SystemExit(f"{name}: node '{node['name']}': attention nearly one-hot")
        varying.append(np.abs(pi[0] - pi[1]).max() > 1e-3)
    # Right after a batch norm the channel means hardly differ between samples (the norm
    # takes them out), so some layers see nearly the same attention for both: most must not.
    if varying and sum(varying) < 0.75 * len(varying):
        raise SystemExit(f"{name}: the attention differs between the samples in only "
                         f"{sum(varying)} of {len(varying)} dynamic layers")


def main():
    torch.set_num_threads(1)
    table = {}
    for name, (seed, make, concrete, description) in NETWORKS.items():
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        model = make()
        extra = list(concrete.values()) if concrete else []
        batch = (torch.randn(8, *SHAPE[1:], generator=generator) +
                 torch.randn(8, SHAPE[1], 1, 1, generator=generator))
        with torch.no_grad():
            nm.randomize_batchnorms(model, generator, lambda m: m(batch, *extra))
        # Each sample with its own colour cast, as images differ: with zero-mean noise alone
        # the pooled inputs of the attentions are nearly the same for every sample.
        x = (torch.randn(*SHAPE, generator=generator) +
             torch.randn(SHAPE[0], SHAPE[1], 1, 1, generator=generator))
        with torch.no_grad():
            logits = model(x, *extra).numpy().astype(np.float32)
        path = os.path.join(HERE, f"{name}.safetensors")
        export_network(model, x, path, concrete)
        net = network_ref.load_network(path)
        check(name, net, x.numpy().astype(np.float64), logits.astype(np.float64))
        err = np.abs(net.run(x.numpy()) - logits).max() / np.abs(logits).max()
        np.save(os.path.join(HERE, f"{name}.input.npy"), x.numpy().astype(np.float32))
        np.save(os.path.join(HERE, f"{name}.logits.npy"), logits)
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        table[name] = {"file": f"{name}.safetensors", "input": f"{name}.input.npy",
                       "logits": f"{name}.logits.npy", "description": description,
                       "nodes": len(net.nodes), "sha256": digest}
        print(f"{name}: {len(net.nodes)} nodes, {os.path.getsize(path)} bytes, reference vs "
              f"PyTorch {err:.1e} (relative to the largest logit)")
    with open(os.path.join(HERE, "networks.json"), "w") as f:
        json.dump(table, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
