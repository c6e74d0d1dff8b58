"""A small safetensors reader (numpy only): 8-byte little-endian header length, a JSON header,
then the raw little-endian data. It accepts and refuses what the C reader (dcio_st_parse in
tools/io/safetensors.c) does: see docs/file-format.md."""

import json
import struct

import numpy as np

_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "BF16": None, "I64": "<i8", "I32": "<i4",
           "I16": "<i2", "I8": "i1", "U8": "u1", "U16": "<u2", "U32": "<u4", "U64": "<u8",
           "BOOL": "?", "F8_E4M3": "u1", "F8_E5M2": "u1"}
_SIZES = {"F32": 4, "F16": 2, "F64": 8, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
          "U8": 1, "U16": 2, "U32": 4, "U64": 8, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
MAX_HEADER = 100 * 1000 * 1000
MAX_RANK = 8                # DCIO_MAX_RANK
_SIZE_LIMIT = 1 << 64       # element and byte counts must fit the C reader's size_t
_INT64_MAX = (1 << 63) - 1


class SafetensorsError(ValueError):
    pass


def parse(data, where="safetensors"):
    """Returns ({name: numpy array}, {metadata key: value}) from the bytes of a file. BF16 is
    widened to float32; other dtypes keep their numpy equivalent."""
    data = memoryview(data).cast("B")
    if len(data) < 8:
        raise SafetensorsError(f"{where}: too short for a safetensors file")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8 or n > MAX_HEADER:
        raise SafetensorsError(f"{where}: header length {n} goes beyond the file "
                               f"({len(data)} bytes)")
    if n < 2 or data[8] != ord("{"):
        raise SafetensorsError(f"{where}: the header is not a JSON object (it must start with "
                               "'{')")
    try:
        # Strict JSON as jansson reads it: no NaN/Infinity, no NUL, no lone surrogate.
        header = json.loads(bytes(data[8:8 + n]).decode("utf-8"),
                            object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as e:
        raise SafetensorsError(f"{where}: the header is not valid UTF-8 JSON: {e}") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{where}: the header is not a JSON object")
    body = data[8 + n:]
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise SafetensorsError(f"{where}: __metadata__ must map strings to strings")
    tensors, ranges = {}, []
    for name, desc in header.items():
        if name == "":
            raise SafetensorsError(f"{where}: a tensor has an empty name")
        if not isinstance(desc, dict) or set(desc) != {"dtype", "shape", "data_offsets"}:
            raise SafetensorsError(f"{where}: tensor '{name}': malformed description")
        dtype, shape, offsets = desc["dtype"], desc["shape"], desc["data_offsets"]
        if not isinstance(dtype, str) or dtype not in _SIZES:
            raise SafetensorsError(f"{where}: tensor '{name}': unknown dtype {dtype!r}")
        if (not isinstance(shape, list) or len(shape) > MAX_RANK or
                not all(isinstance(d, int) and not isinstance(d, bool) and
                        0 <= d <= _INT64_MAX for d in shape)):
            raise SafetensorsError(f"{where}: tensor '{name}': bad shape {shape!r} (at most "
                                   f"{MAX_RANK} integers >= 0)")
        count = 1
        for d in shape:  # the C reader's running product must not overflow its size_t
            count *= d
            if count >= _SIZE_LIMIT or count * _SIZES[dtype] >= _SIZE_LIMIT:
                raise SafetensorsError(f"{where}: tensor '{name}': the element count of its "
                                       "shape overflows")
        if (not isinstance(offsets, list) or len(offsets) != 2 or
                not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets) or
                not 0 <= offsets[0] <= offsets[1] <= len(body)):
            raise SafetensorsError(f"{where}: tensor '{name}': data_offsets {offsets!r} outside "
                                   f"the data section of {len(body)} bytes")
        numel = int(np.prod(shape, dtype=object)) if shape else 1
        if numel * _SIZES[dtype] != offsets[1] - offsets[0]:
            raise SafetensorsError(f"{where}: tensor '{name}': shape {shape} does not match "
                                   f"{offsets[1] - offsets[0]} bytes of {dtype}")
        raw = body[offsets[0]:offsets[1]]
        if dtype == "BF16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            array = bits.view(np.float32)
        else:
            array = np.frombuffer(raw, dtype=_DTYPES[dtype])
        tensors[name] = array.reshape(shape)
        ranges.append((offsets[0], offsets[1], name))
    expected = 0
    for begin, end, name in sorted(ranges):
        if begin != expected:
            raise SafetensorsError(f"{where}: tensor '{name}' at byte {begin}: "
                                   f"{'overlaps another' if begin < expected else 'gap before it'}")
        expected = end
    if expected != len(body):
        raise SafetensorsError(f"{where}: {len(body) - expected} bytes of data belong to no tensor")
    return tensors, dict(metadata)


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate key in the JSON header")
    for text in keys + [v for _, v in pairs if isinstance(v, str)]:
        _check_string(text)
    for _, v in pairs:
        if isinstance(v, list):
            for item in v:
                if isinstance(item, str):
                    _check_string(item)
    return dict(pairs)


def _check_string(text):
    if "\0" in text:
        raise ValueError("NUL character in a string of the JSON header")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("lone surrogate escape in a string of the JSON header") from None


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def load_file(path):
    """({name: numpy array}, metadata) of a safetensors file."""
    with open(path, "rb") as f:
        return parse(f.read(), where=str(path))
