"""A small safetensors reader (numpy only): 8-byte little-endian header length, a JSON header,
then the raw little-endian data. Offsets, shapes and lengths are checked like the C reader."""

import json
import struct

import numpy as np

_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "BF16": None, "I64": "<i8", "I32": "<i4",
           "I16": "<i2", "I8": "i1", "U8": "u1", "U16": "<u2", "U32": "<u4", "U64": "<u8",
           "BOOL": "?"}
_SIZES = {"F32": 4, "F16": 2, "F64": 8, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
          "U8": 1, "U16": 2, "U32": 4, "U64": 8, "BOOL": 1}
MAX_HEADER = 100 * 1000 * 1000


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
    try:
        header = json.loads(bytes(data[8:8 + n]).decode("utf-8"),
                            object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as e:
        raise SafetensorsError(f"{where}: the header is not valid UTF-8 JSON: {e}") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{where}: the header is not a JSON object")
    body = data[8 + n:]
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise SafetensorsError(f"{where}: __metadata__ must map strings to strings")
    tensors, ranges = {}, []
    for name, desc in header.items():
        if not isinstance(desc, dict) or set(desc) != {"dtype", "shape", "data_offsets"}:
            raise SafetensorsError(f"{where}: tensor '{name}': malformed description")
        dtype, shape, offsets = desc["dtype"], desc["shape"], desc["data_offsets"]
        if dtype not in _SIZES:
            raise SafetensorsError(f"{where}: tensor '{name}': unknown dtype {dtype!r}")
        if (not isinstance(shape, list) or
                not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
            raise SafetensorsError(f"{where}: tensor '{name}': bad shape {shape!r}")
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
    return dict(pairs)


def load_file(path):
    """({name: numpy array}, metadata) of a safetensors file."""
    with open(path, "rb") as f:
        return parse(f.read(), where=str(path))
