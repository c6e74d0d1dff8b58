"""The rules of the layer file (docs/file-format.md) that the Python reader (dynconv.layer), the
exporter (dynconv.export) and dynconv.torch all follow, written once. The C reader
(tools/io/layer.c) follows the same rules; python/tests/test_file_format.py checks that both
readers accept and refuse the same files.

Pure Python: the exporter imports it without numpy's or libdynconv's help.
"""

import math
import re
import struct

# The parameter slots of a layer, in the order of dynconv_conv2d_weights.
SLOTS = ("weight", "bias", "fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias")
# The attention's two layers as the readers accept them, one naming scheme per row, in the
# order of SLOTS[2:]. A file holds exactly one of the two schemes (dcio_layer_load's fc_names).
FC_NAMES = (("attention.fc1.weight", "attention.fc1.bias",
             "attention.fc2.weight", "attention.fc2.bias"),
            ("attention.net.0.weight", "attention.net.0.bias",
             "attention.net.2.weight", "attention.net.2.bias"))
DEFAULT_NAMES = dict(zip(SLOTS, ("weight", "bias") + FC_NAMES[0]))
# The attention layouts of the PyTorch modules (submodule names inside `attention`): the first
# two are also file names; TArdelean's is written under the first scheme's names (TARDELEAN).
ATTENTION_LAYOUTS = {"fc": ("fc1", "fc2"), "net": ("net.0", "net.2"),
                     "to_scores": ("to_scores.0", "to_scores.2")}
TARDELEAN = {"kernels_weights": "weight", "kernels_bias": "bias",
             "attention.to_scores.0.weight": "attention.fc1.weight",
             "attention.to_scores.0.bias": "attention.fc1.bias",
             "attention.to_scores.2.weight": "attention.fc2.weight",
             "attention.to_scores.2.bias": "attention.fc2.bias"}

# The metadata keys: what a convolution needs (a linear layer only the temperature), and the
# optional "layer" saying which kind the file holds ("conv2d" or "linear").
CONV_KEYS = ("stride", "padding", "dilation", "groups", "temperature")
LINEAR_KEYS = ("temperature",)
HYPER_KEYS = ("layer",) + CONV_KEYS
KINDS = {5: "conv2d", 3: "linear"}  # rank of `weight` -> the kind of layer
PAIR_MINIMUM = {"stride": 1, "padding": 0, "dilation": 1}
INT64_MAX = (1 << 63) - 1
# What dcio_parse_temperature takes: decimal, no sign, no white space, no hex, no inf/nan.
_TEMPERATURE = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# Largest temperature accepted: below FLT_MAX, so that T converts to a finite float.
MAX_TEMPERATURE = 3.0e38


# Longest prefix the C reader takes (its buffer of 256 bytes holds the prefix, a '.' and NUL).
MAX_PREFIX = 254


def dotted(prefix):
    """"layer1.conv" and "layer1.conv." are the same prefix; "" is none."""
    prefix = prefix or ""
    return prefix if not prefix or prefix.endswith(".") else prefix + "."


def check_prefix(prefix):
    """ValueError for a prefix (as the caller gave it, with its dot if any) longer than
    MAX_PREFIX bytes, which the C reader refuses."""
    size = len((prefix or "").encode("utf-8", errors="surrogatepass"))
    if size > MAX_PREFIX:
        raise ValueError(f"prefix of {size} characters is too long (at most {MAX_PREFIX})")


def metadata_value(metadata, prefix, key):
    """The layer's own "<prefix>.key" (files with several layers), else the plain "key"."""
    p = dotted(prefix)
    if p and p + key in metadata:
        return metadata[p + key]
    return metadata.get(key)


def layer_prefixes(names):
    """The prefixes (with their dot, "" for none) under which a set of tensor names holds a
    layer: "<p>weight" beside "<p>attention.fc1.weight" or "<p>attention.net.0.weight"."""
    found = []
    for name in names:
        if name == "weight" or name.endswith(".weight"):
            base = name[:-len("weight")]
            if any(base + scheme[0] in names for scheme in FC_NAMES):
                found.append(base)
    return found


def _decimal(text):
    # ASCII digits only: str.isdigit() would take '²' and other Unicode digits.
    return text != "" and all("0" <= c <= "9" for c in text)


def parse_pair(text, key, minimum):
    """"a" or "a,b" (decimal, no sign or white space, each >= minimum and <= INT64_MAX) ->
    (a, b), "a" meaning (a, a): dcio_parse_pair. ValueError names the key."""
    parts = text.split(",") if isinstance(text, str) else None
    if (parts is None or not 1 <= len(parts) <= 2 or not all(_decimal(p) for p in parts) or
            not all(minimum <= int(p) <= INT64_MAX for p in parts)):
        raise ValueError(f"metadata '{key}' = {text!r} is not \"a\" or \"a,b\" with integers "
                         f">= {minimum}")
    values = tuple(int(p) for p in parts)
    return values * 2 if len(values) == 1 else values


def parse_groups(text):
    """groups: one decimal integer >= 1 (no pair: a convolution has one group count)."""
    if not isinstance(text, str) or not _decimal(text) or not 1 <= int(text) <= INT64_MAX:
        raise ValueError(f"metadata 'groups' = {text!r} is not an integer >= 1")
    return int(text)


def check_temperature(value):
    """A temperature the readers accept: finite, > 0, at most MAX_TEMPERATURE, and not so small
    that it rounds to 0 as a float32. Returns it as a float; ValueError otherwise."""
    t = float(value)
    if not (math.isfinite(t) and 0 < t <= MAX_TEMPERATURE and
            struct.unpack("<f", struct.pack("<f", t))[0] > 0):
        raise ValueError(f"temperature {value!r} is not a finite number > 0 (that float32 "
                         "represents)")
    return t


def parse_temperature(text):
    """The metadata temperature: a decimal number as check_temperature wants it
    (dcio_parse_temperature)."""
    if not isinstance(text, str) or not _TEMPERATURE.fullmatch(text):
        raise ValueError(f"metadata 'temperature' = {text!r} is not a finite number > 0")
    try:
        return check_temperature(text)
    except ValueError:
        raise ValueError(f"metadata 'temperature' = {text!r} is not a finite number > 0") \
            from None


def format_pair(value, key):
    """An int or a pair of ints (a module's stride, padding or dilation) as metadata "a,b";
    ValueError for what the readers would refuse (a negative padding, a zero stride)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    try:
        value = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be an int or a pair of ints, got {value!r}") from None
    if len(value) == 1:
        value = value * 2
    text = ",".join(str(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"{key} must be an int or a pair of ints, got {value!r}")
    parse_pair(text, key, PAIR_MINIMUM[key])
    return text


def format_groups(value):
    text = str(int(value))
    parse_groups(text)
    return text


def format_temperature(value):
    """The shortest decimal that reads back as the same double (repr), checked."""
    text = repr(check_temperature(value))
    parse_temperature(text)
    return text
