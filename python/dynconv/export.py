"""Save the dynamic layers of a PyTorch model to a safetensors file that `dynconv run` and the
`dynconv` Python package read.

    from dynconv.export import export
    export(model, "model.safetensors")            # every dynamic layer of the model
    export(model.layer1, "layer1.safetensors")    # one layer: names without prefix

Whole networks (every layer and the graph between them) go to one file with
export_network(model, example_input, path, concrete_args=None); see its docstring and
docs/file-format.md, "Networks".

For a module pickled whole (torch.save(model, path)), the layers from the command line:

    dynconv-export model.pt model.safetensors     # or: python3 -m dynconv.export ...

A dynamic layer is recognised by its layout, as in the common PyTorch re-implementations:
  - convolution: a parameter `weight` [K, C_out, C_in/groups, kh, kw] (optionally `bias`
    [K, C_out]) and a submodule `attention` holding two 1x1 convolutions or linear layers,
    either as `fc1` and `fc2` (kaijieshi7's Dynamic_conv2d, dynconv.torch.DynamicConv2d) or as
    `net.0` and `net.2` of an nn.Sequential(conv, ReLU, conv) (External-Attention's
    DynamicConv); attributes stride, padding, dilation, groups (ints or pairs) on the module and
    the softmax temperature as `temperature` or `temprature` on the module or its attention;
  - convolution, TArdelean/DynamicConvolution's layout: `kernels_weights`, `kernels_bias`, and
    `attention.to_scores.0` / `.2` linear layers; stride, padding and dilation in `conv_args`.
    Its temperature is an argument of forward(), not part of the module: pass it to export()
    (temperature=...) or on the command line (--temperature). Its tensors are written under the
    names of the first layout (weight, bias, attention.fc1.*, attention.fc2.*), which is what
    the readers understand;
  - linear (dynamic perceptron): `weight` [K, D_out, D_in] (optionally `bias` [K, D_out]) and an
    attention of either of the first two layouts (dynconv.torch.DynamicLinear).
The file holds the tensors of those layers as float32 (other floating dtypes are converted) and
the metadata "layer" (conv2d or linear), "temperature" and, for a convolution, "stride",
"padding", "dilation" ("a,b") and "groups". With several layers the keys are written per layer
as "<prefix>.stride" etc.; a file with one layer also has the plain keys.

The safetensors format is simple enough to write without its Python package (not in Debian):
8-byte little-endian header length, a JSON header, then the raw little-endian tensor bytes.
"""

import argparse
import json
import os
import pickle
import struct
import sys
import tempfile

if __name__ == "__main__" and sys.path and sys.path[0] and \
        os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    # Run as a file (python3 .../dynconv/export.py), Python puts the package's own directory
    # first on the path, where dynconv/torch.py would then shadow PyTorch itself.
    del sys.path[0]

import numpy as np

try:
    from . import layer_format
except ImportError:  # run as a file: the package is the directory above this one
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from dynconv import layer_format

# The metadata keys (docs/file-format.md), as the readers know them.
HYPER_KEYS = layer_format.HYPER_KEYS
# The keys a convolution's metadata must give (a linear layer only needs the temperature).
CONV_KEYS = layer_format.CONV_KEYS
_FLOAT32_MAX = float(np.finfo(np.float32).max)


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


# Attention layouts: (names of the first layer, names of the second layer) as state_dict
# prefixes inside the attention submodule.
_ATTENTION_LAYOUTS = layer_format.ATTENTION_LAYOUTS


def _attention_layout(attention):
    names = {n for n, _ in attention.named_parameters()}
    for layout, (first, second) in _ATTENTION_LAYOUTS.items():
        if first + ".weight" in names and second + ".weight" in names:
            return layout
    return None


def _dims(param):
    return param.dim() if param is not None and hasattr(param, "dim") else None


def layer_kind(module):
    """"conv2d", "linear" or "tardelean" (a convolution in TArdelean's layout) for a dynamic
    layer, else None."""
    attention = getattr(module, "attention", None)
    if not hasattr(attention, "named_parameters"):
        return None
    layout = _attention_layout(attention)
    if layout is None:
        return None
    if layout == "to_scores":
        return "tardelean" if _dims(getattr(module, "kernels_weights", None)) == 5 else None
    dims = _dims(getattr(module, "weight", None))
    return {5: "conv2d", 3: "linear"}.get(dims)


def is_dynamic_conv(module):
    """Whether `module` is a dynamic layer (convolution or linear) this exporter understands."""
    return layer_kind(module) is not None


def _temperature(module):
    for owner in (module, module.attention):
        for attr in ("temperature", "temprature"):
            if hasattr(owner, attr):
                value = getattr(owner, attr)
                return float(value() if callable(value) else value)
    return None


def layer_metadata(module, temperature=None):
    """The hyper-parameters of one dynamic layer as safetensors metadata strings. `temperature`
    is used when the module does not hold one (TArdelean's layout)."""
    kind = layer_kind(module)
    meta = {"layer": "linear" if kind == "linear" else "conv2d"}
    if kind != "linear":
        source = getattr(module, "conv_args", None) if kind == "tardelean" else None
        for key in ("stride", "padding", "dilation"):
            if source is not None and key in source:
                value = source[key]
            elif hasattr(module, key):
                value = getattr(module, key)
            else:
                raise ValueError(f"{type(module).__name__} has no attribute '{key}'")
            meta[key] = layer_format.format_pair(value, key)
        meta["groups"] = layer_format.format_groups(getattr(module, "groups", 1))
    t = _temperature(module)
    if t is None:
        t = temperature
    if t is None:
        raise ValueError(f"{type(module).__name__} holds no temperature (its forward takes it "
                         "as an argument): give it to export(..., temperature=T) or "
                         "--temperature T")
    meta["temperature"] = layer_format.format_temperature(t)
    return meta


def collect(model):
    """(prefix, module) of every dynamic layer in the model; prefix "" for the model itself."""
    found = []
    for name, module in model.named_modules():
        if is_dynamic_conv(module):
            if any(name.startswith(p + ".") or p == "" for p, _ in found):
                continue  # a layer inside another layer: part of it, not a layer of its own
            found.append((name, module))
    return found


def _layer_tensors(module, kind):
    """{file name: tensor} of one layer, in the readers' naming: weight, bias and the
    attention's two layers under the module's own scheme (TArdelean's renamed to fc1/fc2). Any
    other floating-point tensor in the attention is refused, as the readers would refuse it;
    the temperature (a buffer, for some) and integer counters are not tensors of the file."""
    state = module.state_dict()
    if kind == "tardelean":
        rename = layer_format.TARDELEAN
    else:
        first, second = _ATTENTION_LAYOUTS[_attention_layout(module.attention)]
        rename = {n: n for n in ("weight", "bias")}
        rename.update({f"attention.{layer}.{p}": f"attention.{layer}.{p}"
                       for layer in (first, second) for p in ("weight", "bias")})
    skip = {"attention.temperature", "attention.temprature", "temperature", "temprature"}
    out = {}
    for name, tensor in state.items():
        if name in rename:
            out[rename[name]] = tensor
        elif (name.startswith("attention.") and tensor.is_floating_point() and
              name not in skip):
            raise ValueError(f"unexpected tensor '{name}' in the attention")
    return out


def _float32(tensor, name):
    """The tensor as float32 numpy, refusing values a float32 cannot hold (the readers refuse
    such F64 values too) instead of writing infinities."""
    a = tensor.detach().to("cpu")
    wide = a.double().numpy()
    if np.any(np.isfinite(wide) & (np.abs(wide) > _FLOAT32_MAX)):
        raise ValueError(f"tensor '{name}' holds values outside the float32 range")
    return a.float().numpy()


def export(model, path, temperature=None):
    """Saves every dynamic layer of `model` to `path`; returns their prefixes. `temperature`
    is the softmax temperature of layers that do not hold one (TArdelean's layout)."""
    import torch

    layers = collect(model)
    if not layers:
        raise ValueError("no dynamic convolution or linear layer found (see the docstring of "
                         "dynconv.export for the layouts recognised)")
    tensors, metadata = {}, {}
    for prefix, module in layers:
        dotted = prefix + "." if prefix else ""
        where = f"layer '{prefix}'" if prefix else "the layer"
        kind = layer_kind(module)
        if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
               for m in module.attention.modules()):
            raise ValueError(f"{where}: a batch norm inside the attention is not supported by "
                             "libdynconv")
        try:
            meta = layer_metadata(module, temperature)
            for name, tensor in _layer_tensors(module, kind).items():
                tensors[dotted + name] = _float32(tensor, dotted + name)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        for key, value in meta.items():
            metadata[dotted + key if prefix else key] = value
    if len(layers) == 1 and layers[0][0]:
        prefix = layers[0][0]
        for key in HYPER_KEYS:
            if f"{prefix}.{key}" in metadata:
                metadata[key] = metadata[f"{prefix}.{key}"]
    write_safetensors(path, tensors, metadata)
    return [p for p, _ in layers]


def export_network(model, example_input, path, concrete_args=None):
    """Saves the whole network `model` (eval mode), traced with torch.fx on `example_input`
    [N, C, H, W], to one safetensors file: every tensor and the graph (docs/file-format.md,
    "Networks"). Other forward arguments (TArdelean's temperature) go in `concrete_args`.
    Returns the graph; an op the format cannot hold is refused (ValueError naming it and its
    module path) and nothing is written. See dynconv.network_export."""
    from . import network_export
    return network_export.export_network(model, example_input, path, concrete_args)


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would exit; main() returns the status instead
        raise _UsageError(message)


def _parser():
    p = _Parser(prog="dynconv-export",
                description="Save the dynamic convolution and linear layers of a PyTorch "
                            "module pickled whole (torch.save(model, MODEL.pt)) to a "
                            "safetensors file for `dynconv run` and the dynconv package.",
                epilog="A .pt file is a pickle: loading it runs code it contains. Export only "
                       "files you trust.")
    p.add_argument("model", metavar="MODEL.pt", help="a module saved with torch.save(model)")
    p.add_argument("output", metavar="OUT.safetensors", help="the file to write")
    p.add_argument("--temperature", type=float, metavar="T",
                   help="softmax temperature for layers that do not hold one (TArdelean's "
                        "layout takes it as a forward argument)")
    return p


def _load_module(path):
    import torch
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except TypeError:  # torch before 1.13 has no weights_only (and does not need it)
        return torch.load(path, map_location="cpu")


def main(argv=None):
    """The dynconv-export command: returns 0 on success, 1 when the model cannot be read or
    exported (one line on stderr), 2 on a usage error (usage on stderr)."""
    parser = _parser()
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        opts = parser.parse_args(args)
    except _UsageError as e:
        parser.print_usage(sys.stderr)
        print(f"dynconv-export: error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:  # --help (printed to stdout) exits 0
        return int(e.code or 0)
    try:
        import torch  # noqa: F401
    except ImportError:
        print("dynconv-export: PyTorch is not installed (Debian: python3-torch)",
              file=sys.stderr)
        return 1
    try:
        model = _load_module(opts.model)
    except FileNotFoundError:
        print(f"dynconv-export: {opts.model}: no such file", file=sys.stderr)
        return 1
    except IsADirectoryError:
        print(f"dynconv-export: {opts.model}: is a directory", file=sys.stderr)
        return 1
    except PermissionError:
        print(f"dynconv-export: {opts.model}: permission denied", file=sys.stderr)
        return 1
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, AttributeError,
            ImportError, OSError, UnicodeDecodeError, KeyError, IndexError, TypeError) as e:
        # A module pickled from code this process cannot import also lands here
        # (AttributeError/ImportError): say what torch said, on one line.
        reason = " ".join(str(e).split()) or type(e).__name__
        print(f"dynconv-export: {opts.model}: not a readable PyTorch file "
              f"({type(e).__name__}: {reason[:300]})", file=sys.stderr)
        return 1
    if isinstance(model, dict):
        print(f"dynconv-export: {opts.model}: holds a state_dict, not a module: construct the "
              "model, load the state_dict and call dynconv.export.export(model, path) from "
              "Python", file=sys.stderr)
        return 1
    if not hasattr(model, "named_modules"):
        print(f"dynconv-export: {opts.model}: holds a {type(model).__name__}, not a "
              "torch.nn.Module", file=sys.stderr)
        return 1
    try:
        prefixes = export(model, opts.output, temperature=opts.temperature)
    except ValueError as e:
        print(f"dynconv-export: {opts.model}: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"dynconv-export: {opts.output}: cannot write: {e.strerror or e}",
              file=sys.stderr)
        return 1
    print(f"{opts.output}: {len(prefixes)} layer(s): " + ", ".join(p or "(top level)"
                                                              for p in prefixes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
