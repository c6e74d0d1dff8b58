#!/usr/bin/python3
"""Save the dynamic convolution layers of a PyTorch model to a safetensors file that
`dynconv run` and the `dynconv` Python package read.

    from export_dynconv import export
    export(model, "model.safetensors")            # every dynamic conv layer of the model
    export(model.layer1, "layer1.safetensors")    # one layer: names without prefix

or, for a pickled module (torch.save(model, path)) or a whole model's module object:

    /usr/bin/python3 tools/export_dynconv.py model.pt model.safetensors

A dynamic convolution layer is recognised by its layout, as in the common PyTorch
re-implementations:
  - a parameter `weight` of shape [K, C_out, C_in/groups, kh, kw] (and optionally `bias`
    [K, C_out]) on the module itself;
  - a submodule `attention` holding two 1x1 convolutions or linear layers, either as `fc1` and
    `fc2` (the original authors' re-implementation) or as `net.0` and `net.2` of an
    nn.Sequential(conv, ReLU, conv) (the External-Attention collection);
  - attributes stride, padding, dilation, groups (ints or pairs) on the module and the softmax
    temperature as `temperature` or `temprature` on the module or its attention.
The file holds every state_dict tensor of those layers as float32 (other dtypes are converted)
and the metadata keys stride, padding, dilation ("a,b"), groups and temperature. With several
layers they are written per layer as "<prefix>.stride" etc.; a file with one layer also has the
plain keys.

The safetensors format is simple enough to write without its Python package (not in Debian):
8-byte little-endian header length, a JSON header, then the raw little-endian tensor bytes.
"""

import json
import os
import struct
import sys
import tempfile

import numpy as np

HYPER_KEYS = ("stride", "padding", "dilation", "groups", "temperature")


def write_safetensors(path, tensors, metadata=None):
    """Writes {name: numpy array} (converted to C-ordered little-endian float32) and string
    metadata, atomically (temporary file, then rename)."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    offset = 0
    for name, array in tensors.items():
        a = np.ascontiguousarray(np.asarray(array, dtype="<f4"))
        raw = a.tobytes(order="C")
        header[name] = {"dtype": "F32", "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # keep the data section 8-byte aligned
    directory = os.path.dirname(os.path.abspath(path))
    fd, temp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + ".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(text)))
            f.write(text)
            for raw in blobs:
                f.write(raw)
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise


def _pair(value, name):
    if isinstance(value, int):
        return (value, value)
    value = tuple(int(v) for v in value)
    if len(value) == 1:
        return (value[0], value[0])
    if len(value) != 2:
        raise ValueError(f"{name} must be an int or a pair, got {value!r}")
    return value


def _attention_layout(attention):
    names = {n for n, _ in attention.named_parameters()}
    if "fc1.weight" in names and "fc2.weight" in names:
        return "fc"
    if "net.0.weight" in names and "net.2.weight" in names:
        return "net"
    return None


def is_dynamic_conv(module):
    weight = getattr(module, "weight", None)
    attention = getattr(module, "attention", None)
    return (weight is not None and hasattr(weight, "dim") and weight.dim() == 5 and
            attention is not None and _attention_layout(attention) is not None)


def _temperature(module):
    for owner in (module, module.attention):
        for attr in ("temperature", "temprature"):
            if hasattr(owner, attr):
                return float(getattr(owner, attr))
    return 1.0


def layer_metadata(module):
    """The hyper-parameters of one dynamic conv module as safetensors metadata strings."""
    meta = {}
    for key in ("stride", "padding", "dilation"):
        if not hasattr(module, key):
            raise ValueError(f"{type(module).__name__} has no attribute '{key}'")
        a, b = _pair(getattr(module, key), key)
        meta[key] = f"{a},{b}"
    meta["groups"] = str(int(getattr(module, "groups", 1)))
    meta["temperature"] = repr(_temperature(module))
    return meta


def collect(model):
    """(prefix, module) of every dynamic conv layer in the model; prefix "" for the model."""
    found = []
    for name, module in model.named_modules():
        if is_dynamic_conv(module):
            if any(name.startswith(p + ".") or p == "" for p, _ in found):
                continue  # a layer inside another layer: part of it, not a layer of its own
            found.append((name, module))
    return found


def export(model, path):
    """Saves every dynamic conv layer of `model` to `path`; returns their prefixes."""
    import torch

    layers = collect(model)
    if not layers:
        raise ValueError("no dynamic convolution layer found (see the module's docstring for "
                         "the layouts recognised)")
    tensors, metadata = {}, {}
    for prefix, module in layers:
        dotted = prefix + "." if prefix else ""
        attention = module.attention
        if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
               for m in attention.modules()):
            raise ValueError(f"layer '{prefix}': a batch norm inside the attention is not "
                             "supported by libdynconv")
        for name, tensor in module.state_dict().items():
            if name in ("weight", "bias") or name.startswith("attention."):
                if not tensor.is_floating_point():
                    continue  # e.g. a counter buffer
                tensors[dotted + name] = tensor.detach().to("cpu").float().numpy()
        for key, value in layer_metadata(module).items():
            metadata[dotted + key if prefix else key] = value
    if len(layers) == 1 and layers[0][0]:
        prefix = layers[0][0]
        for key in HYPER_KEYS:
            metadata[key] = metadata[f"{prefix}.{key}"]
    write_safetensors(path, tensors, metadata)
    return [p for p, _ in layers]


def main(argv):
    if len(argv) != 3 or argv[1] in ("-h", "--help"):
        print(__doc__.strip().split("\n\n")[0])
        print("\nusage: export_dynconv.py MODEL.pt OUT.safetensors   (MODEL.pt from "
              "torch.save(model))")
        return 0 if len(argv) == 2 else 2
    import torch
    model = torch.load(argv[1], map_location="cpu")
    if isinstance(model, dict):
        print(f"{argv[1]}: holds a state_dict, not a module: call export(model, path) from "
              "Python with the model constructed", file=sys.stderr)
        return 1
    try:
        prefixes = export(model, argv[2])
    except ValueError as e:
        print(f"{argv[1]}: {e}", file=sys.stderr)
        return 1
    print(f"{argv[2]}: {len(prefixes)} layer(s): " + ", ".join(p or "(top level)"
                                                          for p in prefixes))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
