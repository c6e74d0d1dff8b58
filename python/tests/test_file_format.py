"""The layer file (docs/file-format.md) read by both readers: the C one (`dynconv run`, i.e.
dcio_layer_load) and the Python one (dynconv.load_layer). A table of named files, written by the
Python writer (write_safetensors), by a raw writer of other dtypes and malformed headers, and by
the exporter: both readers must accept the same files, computing the same layer (the same y on
the same x), and refuse the same files."""

import json
import os
import struct
import subprocess
import sys
import unittest

import numpy as np
import torch

import cases
import dynconv
from dynconv import export as exporter
from reference_modules import (DynamicConv2dFC, DynamicConvNet, DynamicLinearRef,
                               KernelsDynamicConv, TwoLayerNet)

CLI = os.environ.get("DYNCONV_CLI", os.path.join(cases.ROOT, "build", "release", "tools",
                                                 "dynconv"))

K, C_OUT, C_IN, G, HID, D_IN = 3, 4, 6, 2, 2, 5
GEOMETRY = {"stride": "1", "padding": "1", "dilation": "1", "groups": "2", "temperature": "1.5"}


def conv_tensors(scheme="fc", forms=2, biases=True):
    rng = np.random.default_rng(7)
    first, second = {"fc": ("fc1", "fc2"), "net": ("net.0", "net.2")}[scheme]
    one = (1, 1) if forms == 4 else ()
    t = {"weight": rng.standard_normal((K, C_OUT, C_IN // G, 3, 3)),
         f"attention.{first}.weight": 2 * rng.standard_normal((HID, C_IN) + one),
         f"attention.{second}.weight": 2 * rng.standard_normal((K, HID) + one)}
    if biases:
        t.update({"bias": rng.standard_normal((K, C_OUT)),
                  f"attention.{first}.bias": rng.standard_normal(HID),
                  f"attention.{second}.bias": rng.standard_normal(K)})
    return t


def linear_tensors(forms=2):
    rng = np.random.default_rng(8)
    one = (1, 1) if forms == 4 else ()
    return {"weight": rng.standard_normal((K, C_OUT, D_IN)),
            "bias": rng.standard_normal((K, C_OUT)),
            "attention.fc1.weight": 2 * rng.standard_normal((HID, D_IN) + one),
            "attention.fc2.weight": 2 * rng.standard_normal((K, HID) + one),
            "attention.fc2.bias": rng.standard_normal(K)}


def meta(**changes):
    m = dict(GEOMETRY)
    for k, v in changes.items():
        if v is None:
            m.pop(k, None)
        else:
            m[k] = v
    return m


def without(tensors, *names):
    return {k: v for k, v in tensors.items() if k not in names}


def raw_file(tensors, metadata, dtypes=None, header_text=None):
    """A safetensors image with tensors in any dtype (name -> F16/BF16/F64/I32/F8_E4M3), or
    with a header text given as is."""
    dtypes = dtypes or {}
    header, blobs, offset = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, a in tensors.items():
        dt = dtypes.get(name, "F32")
        a = np.asarray(a)
        if dt == "BF16":
            raw = (a.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes()
        else:
            raw = a.astype({"F32": "<f4", "F16": "<f2", "F64": "<f8", "I32": "<i4",
                            "F8_E4M3": "u1"}[dt]).tobytes()
        header[name] = {"dtype": dt, "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = (header_text if header_text is not None else json.dumps(header)).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


BASE = conv_tensors()
# name -> (file bytes or (tensors, metadata) for write_safetensors, prefix, accepted)
TABLE = {
    "conv_fc": ((BASE, meta()), "", True),
    "conv_net": ((conv_tensors("net"), meta()), "", True),
    "conv_1x1_forms": ((conv_tensors(forms=4), meta()), "", True),
    "conv_net_1x1_no_biases": ((conv_tensors("net", 4, False), meta()), "", True),
    "conv_pairs": ((BASE, meta(stride="2,1", padding="1,0", dilation="1,2")), "", True),
    "conv_layer_key": ((BASE, meta(layer="conv2d")), "", True),
    "conv_temperature_forms": ((BASE, meta(temperature="1e-01")), "", True),
    "conv_temperature_dot": ((BASE, meta(temperature=".5")), "", True),
    "conv_f16_bf16_f64": (raw_file(BASE, meta(), {"weight": "F16", "bias": "BF16",
                                                  "attention.fc1.weight": "F64"}), "", True),
    "conv_unused_int_and_f8": (raw_file(dict(BASE, step=np.arange(3), scale=np.ones(2)),
                                        meta(), {"step": "I32", "scale": "F8_E4M3"}), "", True),
    "prefixed": (({"a.conv." + k: v for k, v in BASE.items()},
                  {"a.conv." + k: v for k, v in meta().items()}), "a.conv", True),
    "prefixed_with_dot": (({"a.conv." + k: v for k, v in BASE.items()},
                           {"a.conv." + k: v for k, v in meta().items()}), "a.conv.", True),
    "prefixed_key_beats_plain": (({"p." + k: v for k, v in BASE.items()},
                                  dict(meta(stride="1"), **{"p.stride": "2"})), "p", True),
    "prefixed_falls_back_to_plain": (({"p." + k: v for k, v in BASE.items()}, meta()), "p",
                                     True),
    "linear": ((linear_tensors(), {"temperature": "0.5", "layer": "linear"}), "", True),
    "linear_1x1_forms": ((linear_tensors(4), {"temperature": "0.5"}), "", True),
    # refused
    "bare_state_dict": ((BASE, {}), "", False),
    "missing_dilation": ((BASE, meta(dilation=None)), "", False),
    "linear_no_temperature": ((linear_tensors(), {"layer": "linear"}), "", False),
    "groups_pair": ((BASE, meta(groups="2,2")), "", False),
    "groups_text": ((BASE, meta(groups="two")), "", False),
    "groups_wrong": ((BASE, meta(groups="1")), "", False),
    "stride_zero": ((BASE, meta(stride="0")), "", False),
    "padding_negative": ((BASE, meta(padding="-1")), "", False),
    "stride_sign": ((BASE, meta(stride="+1")), "", False),
    "stride_space": ((BASE, meta(stride=" 1")), "", False),
    "stride_triple": ((BASE, meta(stride="1,1,1")), "", False),
    "stride_unicode_digit": ((BASE, meta(stride="\u0661")), "", False),
    "stride_huge": ((BASE, meta(stride="99999999999999999999")), "", False),
    "temperature_zero": ((BASE, meta(temperature="0")), "", False),
    "temperature_nan": ((BASE, meta(temperature="nan")), "", False),
    "temperature_inf": ((BASE, meta(temperature="inf")), "", False),
    "temperature_sign": ((BASE, meta(temperature="+1")), "", False),
    "temperature_space": ((BASE, meta(temperature=" 1")), "", False),
    "temperature_hex": ((BASE, meta(temperature="0x1p3")), "", False),
    "temperature_underscore": ((BASE, meta(temperature="1_0")), "", False),
    "temperature_underflow": ((BASE, meta(temperature="1e-50")), "", False),
    "temperature_overflow": ((BASE, meta(temperature="1e39")), "", False),
    "both_schemes": ((dict(BASE, **{"attention.net.0.weight": BASE["attention.fc1.weight"]}),
                      meta()), "", False),
    "no_attention": ((without(BASE, "attention.fc1.weight", "attention.fc1.bias"), meta()),
                     "", False),
    "no_fc2": ((without(BASE, "attention.fc2.weight", "attention.fc2.bias"), meta()), "",
               False),
    "extra_attention_tensor": ((dict(BASE, **{"attention.bn.weight": np.ones(HID)}), meta()),
                               "", False),
    "layer_key_wrong": ((BASE, meta(layer="linear")), "", False),
    "weight_rank4": ((dict(BASE, weight=BASE["weight"][0]), meta()), "", False),
    "bias_shape": ((dict(BASE, bias=BASE["bias"][:, :2]), meta()), "", False),
    "fc1_cols_wrong": ((dict(BASE, **{"attention.fc1.weight": np.ones((HID, C_IN + 1))}),
                        meta()), "", False),
    "weight_int": (raw_file(BASE, meta(), {"weight": "I32"}), "", False),
    "weight_f8": (raw_file(BASE, meta(), {"weight": "F8_E4M3"}), "", False),
    "f64_beyond_float32": (raw_file(dict(BASE, bias=np.full((K, C_OUT), 1e300)), meta(),
                                    {"bias": "F64"}), "", False),
    "wrong_prefix": ((BASE, meta()), "conv", False),
    "prefix_254": (({"p" * 254 + "." + k: v for k, v in BASE.items()}, meta()), "p" * 254,
                   True),
    "prefix_255": (({"p" * 255 + "." + k: v for k, v in BASE.items()}, meta()), "p" * 255,
                   False),
    "prefix_254_and_dot": (({"p" * 254 + "." + k: v for k, v in BASE.items()}, meta()),
                           "p" * 254 + ".", False),
    "header_leading_space": (raw_file({}, None, header_text=' {"weight": 1}'), "", False),
    "metadata_null": (raw_file({}, None, header_text='{"__metadata__": null}'), "", False),
    "empty_tensor_name": (raw_file({"": np.ones(2)}, meta()), "", False),
    "json_nan": (raw_file({}, None, header_text='{"__metadata__": {"a": "b"}, "x": NaN}'), "",
                 False),
    "duplicate_key": (raw_file({}, None, header_text='{"a": {}, "a": {}}'), "", False),
}


def x_for(path, prefix):
    """An input that fits the layer under prefix (by the weight's shape)."""
    tensors, _ = dynconv.load_file(path)
    w = tensors[(prefix.rstrip(".") + "." if prefix else "") + "weight"]
    rng = np.random.default_rng(9)
    if w.ndim == 3:
        return rng.standard_normal((2, w.shape[2])).astype(np.float32)
    p = (prefix.rstrip(".") + "." if prefix else "")
    fc1 = [v for k, v in tensors.items()
           if k in (p + "attention.fc1.weight", p + "attention.net.0.weight")][0]
    return rng.standard_normal((2, fc1.shape[1], 9, 8)).astype(np.float32)


class Agreement(cases.TempDirTest):
    def read_both(self, path, prefix, x):
        """(C reader: y or the error, Python reader: y or the error)."""
        np.save(self.path("x.npy"), x)
        out = self.path("y.npy")
        if os.path.exists(out):
            os.unlink(out)
        args = [CLI, "run", "--weights", path, "--input", self.path("x.npy"), "--output", out]
        r = subprocess.run(args + (["--prefix", prefix] if prefix else []),
                           capture_output=True, text=True, timeout=60)
        self.assertIn(r.returncode, (0, 1), r.stderr)
        c = np.load(out) if r.returncode == 0 else r.stderr.strip()
        if r.returncode != 0:
            self.assertFalse(os.path.exists(out), "a refused run wrote its output")
        try:
            with dynconv.load_layer(path, prefix) as layer:
                py = layer.forward(x)
        except (ValueError, dynconv.DynconvError) as e:  # SafetensorsError is a ValueError
            py = str(e)
        return c, py

    def assert_agree(self, name, path, prefix, accepted):
        x = x_for(path, prefix) if accepted else np.ones((1, C_IN, 5, 5), np.float32)
        c, py = self.read_both(path, prefix, x)
        if accepted:
            self.assertIsInstance(c, np.ndarray, f"{name}: the C reader refused: {c}")
            self.assertIsInstance(py, np.ndarray, f"{name}: the Python reader refused: {py}")
            np.testing.assert_allclose(py, c, rtol=1e-6, atol=1e-6, err_msg=name)
        else:
            self.assertIsInstance(c, str, f"{name}: the C reader accepted it")
            self.assertIsInstance(py, str, f"{name}: the Python reader accepted it")
        return c, py

    def test_table(self):
        for name, (content, prefix, accepted) in TABLE.items():
            with self.subTest(name):
                path = self.path(name + ".safetensors")
                if isinstance(content, bytes):
                    with open(path, "wb") as f:
                        f.write(content)
                else:
                    exporter.write_safetensors(path, *content)
                self.assert_agree(name, path, prefix, accepted)

    def test_prefixed_key_is_used(self):
        # Agreement alone would pass if both ignored "p.stride": the output shape says 2.
        content, prefix, _ = TABLE["prefixed_key_beats_plain"]
        path = self.path("p.safetensors")
        exporter.write_safetensors(path, *content)
        c, _ = self.assert_agree("prefixed_key_beats_plain", path, prefix, True)
        self.assertEqual(c.shape, (2, C_OUT, 5, 4))

    def test_exported_files(self):
        modules = {
            "fc": DynamicConv2dFC(6, 4, 3, stride=2, padding=1, groups=2, temperature=2.0),
            "net": DynamicConvNet(4, 8, 3, padding=1, groups=4, ratio=2, temprature=1.0),
            "linear": DynamicLinearRef(5, 4, temperature=0.5),
            "two_layers": TwoLayerNet(),
        }
        for name, module in modules.items():
            with self.subTest(name):
                cases.seed("file_format_" + name)
                path = self.path(name + ".safetensors")
                prefixes = exporter.export(module.eval(), path)
                for prefix in prefixes:
                    self.assert_agree(f"{name}:{prefix}", path, prefix, True)
        cases.seed("file_format_tardelean")
        module = KernelsDynamicConv(3, 2, 6, 4, (3, 2), stride=(2, 1), padding=(1, 0),
                                    dilation=1, groups=2).eval()
        path = self.path("tardelean.safetensors")
        exporter.export(module, path, temperature=0.7)
        tensors, metadata = dynconv.load_file(path)
        # written under the first scheme's names, which is what the readers understand
        self.assertEqual(sorted(tensors), ["attention.fc1.bias", "attention.fc1.weight",
                                           "attention.fc2.bias", "attention.fc2.weight",
                                           "bias", "weight"])
        self.assertEqual((metadata["stride"], metadata["padding"], metadata["temperature"]),
                         ("2,1", "1,0", "0.7"))
        c, _ = self.assert_agree("tardelean", path, "", True)
        with torch.no_grad():
            y = module(torch.from_numpy(x_for(path, "")), 0.7).numpy()
        np.testing.assert_allclose(c, y, rtol=1e-4, atol=1e-5)

    def test_exporter_refuses_what_the_readers_refuse(self):
        for attr, value in (("padding", (-1, -1)), ("stride", (0, 1)), ("groups", 0)):
            with self.subTest(attr):
                module = DynamicConv2dFC(4, 4, 3, padding=1, temperature=1.0)
                setattr(module, attr, value)
                with self.assertRaises(ValueError) as cm:
                    exporter.export(module, self.path("bad.safetensors"))
                self.assertIn(attr, str(cm.exception))
        for t in (1e-50, 1e39, float("nan")):
            with self.subTest(temperature=t):
                module = DynamicConv2dFC(4, 4, 3, padding=1, temperature=t)
                with self.assertRaises(ValueError) as cm:
                    exporter.export(module, self.path("bad.safetensors"))
                self.assertIn("temperature", str(cm.exception))
        module = DynamicConv2dFC(4, 4, 3, padding=1, temperature=1.0).double()
        with torch.no_grad():
            module.weight[0, 0, 0, 0, 0] = 1e300
        with self.assertRaises(ValueError) as cm:
            exporter.export(module, self.path("bad.safetensors"))
        self.assertIn("float32 range", str(cm.exception))
        self.assertFalse(os.path.exists(self.path("bad.safetensors")))


if __name__ == "__main__":
    sys.exit(unittest.main())
