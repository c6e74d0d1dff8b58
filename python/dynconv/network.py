"""Whole networks exported from PyTorch (dynconv.export.export_network), run by libdynconv.

    net = dynconv.Network("net.safetensors")
    logits = net.forward(x)            # x [N, C, H, W]; a tuple for a network of several outputs
    net.temperature = 0.5              # every dynamic layer; net.set_temperature(2.0, name) one
    pi = net.attention("layer1_0_conv1")   # [N, K] of the last forward
    net.nodes                          # the ops as the network runs them (after folding)

dtype policy as for the layers (dynconv.layer): any array of real numbers is converted to
C-contiguous float32; complex, boolean and object arrays are refused with TypeError. Results
are float32. Errors of the library raise DynconvError (the file's name, the node and the
reason are in its message).
"""

import collections
import ctypes
import os

import numpy as np

from . import _lib
from .layer import _as_float32, _ptr

FLAG_NO_FUSION = 1

# dynconv_network_node_info.fused bits, by the name NodeInfo.fused lists them under.
_FUSED = (("batchnorm", 1 << 0), ("relu", 1 << 1), ("relu6", 1 << 2))

NodeInfo = collections.namedtuple("NodeInfo", "name op module num_kernels fused shape parameters")
NodeInfo.__doc__ = """One op as the network runs it: the file's node (value) name, the op
("dynamic_conv2d", "conv2d", "linear", "max_pool2d", ...), the module path ("" for none), K
(0 for a static op), the following ops folded into it (a tuple of "batchnorm", "relu",
"relu6"), the output shape at the current input shape (None before the first reshape) and
the number of float parameters it holds."""


class Network(_lib.Handle):
    """A network file (docs/file-format.md, "Networks") loaded into libdynconv.

    fusion=False runs every op of the file as written (no BatchNorm folding, no activation
    fusion): for checking the folding, or debugging a file."""

    def __init__(self, path, *, fusion=True):
        self._lib = _lib.network_library()
        handle = ctypes.c_void_p()
        flags = 0 if fusion else FLAG_NO_FUSION
        self._call("create_from_file", os.fsencode(path), flags, ctypes.byref(handle))
        self._init(handle, os.fspath(path))

    @classmethod
    def from_bytes(cls, data, *, fusion=True):
        """The network of a file's bytes held in memory (the library copies what it keeps)."""
        self = cls.__new__(cls)
        self._lib = _lib.network_library()
        data = bytes(data)
        handle = ctypes.c_void_p()
        self._call("create_from_memory", data, len(data), 0 if fusion else FLAG_NO_FUSION,
                   ctypes.byref(handle))
        self._init(handle, "<memory>")
        return self

    def _init(self, handle, origin):
        self._handle = handle
        self.origin = origin
        value = ctypes.c_int64()
        self._call("get_input_channels", handle, ctypes.byref(value))
        self.input_channels = value.value
        self._call("get_num_outputs", handle, ctypes.byref(value))
        self.num_outputs = value.value
        self._shape = None       # the input shape of the last successful reshape
        self._peak_bytes = None

    def _call(self, name, *args):
        function = f"dynconv_network_{name}"
        _lib.check(function, getattr(self._lib, function)(*args))

    def _live(self):
        if self._handle is None:
            raise ValueError("Network: the network has been closed")
        return self._handle

    # -- shapes and forward ------------------------------------------------------------------

    def reshape(self, batch, height, width):
        """Plans the network for inputs [batch, C, height, width] (forward does it when the
        shape changes); returns the peak bytes. On error the previous shape stays."""
        peak = ctypes.c_size_t()
        self._call("reshape", self._live(), int(batch), int(height), int(width),
                   ctypes.byref(peak))
        self._shape = (int(batch), self.input_channels, int(height), int(width))
        self._peak_bytes = peak.value
        return self._peak_bytes

    @property
    def peak_bytes(self):
        """Bytes the network holds for its current shape (activations, the shared workspace,
        attention rows and handed-over channel means), as reshape reported them; None before
        the first reshape."""
        return self._peak_bytes

    def output_shapes(self):
        """The shapes of the outputs at the current input shape ([N, C, H, W] or [N, D])."""
        shapes = []
        for i in range(self.num_outputs):
            shape = (ctypes.c_int64 * 4)()
            rank = ctypes.c_int()
            self._call("get_output_shape", self._live(), i, shape, ctypes.byref(rank))
            shapes.append(tuple(shape[:rank.value]))
        return shapes

    def forward(self, x, out=None):
        """The network's output for x [N, C, H, W] (converted to C-contiguous float32): one
        array, or a tuple of arrays for a network of several outputs. `out`, when given, is
        what to write into instead (an array, or a sequence of one per output): C-contiguous
        float32 arrays of the outputs' shapes, distinct from x and from each other."""
        x = _as_float32(x, "input")
        if x.ndim != 4 or x.shape[1] != self.input_channels:
            raise ValueError(f"input: expected [N, {self.input_channels}, H, W], got {x.shape}")
        if x.shape != self._shape:
            self.reshape(x.shape[0], x.shape[2], x.shape[3])
        shapes = self.output_shapes()
        if out is None:
            outputs = [np.empty(s, dtype=np.float32) for s in shapes]
        else:
            outputs = [out] if isinstance(out, np.ndarray) else list(out)
            if len(outputs) != len(shapes) or not all(
                    isinstance(y, np.ndarray) and y.dtype == np.float32 and
                    y.flags.c_contiguous and y.flags.writeable and y.shape == s
                    for y, s in zip(outputs, shapes)):
                raise ValueError(f"out: expected {len(shapes)} C-contiguous float32 arrays of "
                                 f"shapes {shapes}")
        pointers = (_lib._float_p * len(outputs))(*(_ptr(y) for y in outputs))
        self._call("forward", self._live(), _ptr(x), pointers)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def __call__(self, x, out=None):
        return self.forward(x, out)

    # -- nodes, attention, temperature, threads ----------------------------------------------

    @property
    def nodes(self):
        """The ops in execution order, after folding: a list of NodeInfo."""
        handle = self._live()
        count = ctypes.c_int64()
        self._call("get_num_nodes", handle, ctypes.byref(count))
        nodes = []
        for i in range(count.value):
            info = _lib.NodeInfo()
            self._call("get_node_info", handle, i, ctypes.byref(info))
            nodes.append(NodeInfo(
                info.name.decode(), info.op.decode(), (info.module or b"").decode(),
                info.num_kernels, tuple(n for n, bit in _FUSED if info.fused & bit),
                tuple(info.shape[:info.rank]) if info.rank > 0 else None, info.parameters))
        return nodes

    def attention(self, name):
        """The attention [N, K] that the last forward computed in the dynamic layer `name`
        (a node name, see nodes)."""
        handle = self._live()
        kernels = {n.name: n.num_kernels for n in self.nodes if n.num_kernels > 0}
        batch = self._shape[0] if self._shape is not None else 1
        # For a name that is no dynamic layer, the library says so (with the reason).
        k = kernels.get(name, max(kernels.values(), default=1))
        out = np.empty((batch, k), dtype=np.float32)
        self._call("get_attention", handle, name.encode(), _ptr(out), out.size)
        return out

    def get_temperature(self, name=None):
        """The temperature of the dynamic layer `name`, or (None) of the first dynamic layer in
        execution order."""
        t = ctypes.c_float()
        self._call("get_temperature", self._live(), None if name is None else name.encode(),
                   ctypes.byref(t))
        return t.value

    def set_temperature(self, value, name=None):
        """Sets the softmax temperature (finite, > 0) of the dynamic layer `name`, or of every
        dynamic layer (None)."""
        self._call("set_temperature", self._live(), None if name is None else name.encode(),
                   float(value))

    @property
    def temperature(self):
        """The first dynamic layer's temperature (get_temperature(name) reads another);
        assigning sets every dynamic layer's. DynconvError for a network without dynamic
        layers."""
        return self.get_temperature()

    @temperature.setter
    def temperature(self, value):
        self.set_temperature(value)

    # -- lifetime ------------------------------------------------------------------------------

    def _destroy(self, handle):
        self._lib.dynconv_network_destroy(handle)

    def __repr__(self):
        if self._handle is None:
            return "dynconv.Network(closed)"
        nodes = self.nodes
        dynamic = sum(n.num_kernels > 0 for n in nodes)
        shape = "" if self._shape is None else f", input_shape={self._shape}"
        return (f"dynconv.Network({self.origin!r}, nodes={len(nodes)}, dynamic={dynamic}, "
                f"input_channels={self.input_channels}, outputs={self.num_outputs}{shape})")
