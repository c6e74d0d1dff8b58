"""The dynamic 2-D convolution layer on numpy arrays."""

import ctypes

import numpy as np

from . import _lib
from .safetensors import load_file

_FC_NAMES = (("attention.fc1.weight", "attention.fc1.bias",
              "attention.fc2.weight", "attention.fc2.bias"),
             ("attention.net.0.weight", "attention.net.0.bias",
              "attention.net.2.weight", "attention.net.2.bias"))


def _pair(value, name, minimum):
    if isinstance(value, str):
        parts = value.split(",")
        if not 1 <= len(parts) <= 2 or not all(p.isdigit() for p in parts):
            raise ValueError(f"{name} = {value!r} is not 'a' or 'a,b'")
        value = tuple(int(p) for p in parts)
    if isinstance(value, (int, np.integer)):
        value = (int(value), int(value))
    value = tuple(int(v) for v in value)
    if len(value) == 1:
        value = value * 2
    if len(value) != 2 or min(value) < minimum:
        raise ValueError(f"{name} must be an int >= {minimum} or a pair of them, got {value!r}")
    return value


def _as_float32(array, what, shape=None):
    """A C-contiguous float32 array: real numbers are converted, anything else is refused."""
    a = np.asarray(array)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{what}: expected an array of real numbers, got dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if shape is not None and a.shape != tuple(shape):
        raise ValueError(f"{what}: expected shape {tuple(shape)}, got {a.shape}")
    return a


def _matrix(array, what):
    """[a, b] or a 1x1 convolution's [a, b, 1, 1] as a matrix."""
    a = np.asarray(array)
    if a.ndim == 4 and a.shape[2:] == (1, 1):
        a = a.reshape(a.shape[:2])
    if a.ndim != 2:
        raise ValueError(f"{what}: expected [rows, cols] or [rows, cols, 1, 1], got {a.shape}")
    return a


def _ptr(a):
    return None if a is None else a.ctypes.data_as(ctypes.POINTER(ctypes.c_float))


class Conv2d:
    """A dynamic convolution: per sample, pi = softmax(fc2(relu(fc1(mean_hw(x)))) / T), then
    y = conv2d(x, sum_k pi_k weight_k, sum_k pi_k bias_k).

    weight [K, C_out, C_in/groups, kh, kw]; bias [K, C_out] or None; fc1_weight [hidden, C_in]
    (or [hidden, C_in, 1, 1]); fc1_bias [hidden] or None; fc2_weight [K, hidden] (or
    [K, hidden, 1, 1]); fc2_bias [K] or None. The library keeps its own copy of the weights.
    """

    def __init__(self, weight, fc1_weight, fc2_weight, bias=None, fc1_bias=None, fc2_bias=None,
                 stride=1, padding=0, dilation=1, groups=1, temperature=1.0):
        self._lib = _lib.library()
        self._handle = None
        weight = _as_float32(weight, "weight")
        if weight.ndim != 5:
            raise ValueError(f"weight: expected [K, C_out, C_in/groups, kh, kw], got {weight.shape}")
        k, c_out, _, kh, kw = weight.shape
        fc1 = _as_float32(_matrix(fc1_weight, "fc1_weight"), "fc1_weight")
        hidden, c_in = fc1.shape
        fc2 = _as_float32(_matrix(fc2_weight, "fc2_weight"), "fc2_weight", (k, hidden))
        arrays = {
            "weight": weight, "fc1_weight": fc1, "fc2_weight": fc2,
            "bias": None if bias is None else _as_float32(bias, "bias", (k, c_out)),
            "fc1_bias": None if fc1_bias is None else _as_float32(fc1_bias, "fc1_bias", (hidden,)),
            "fc2_bias": None if fc2_bias is None else _as_float32(fc2_bias, "fc2_bias", (k,)),
        }
        stride, padding, dilation = (_pair(stride, "stride", 1), _pair(padding, "padding", 0),
                                     _pair(dilation, "dilation", 1))
        geometry = _lib.Geometry(c_in, c_out, kh, kw, stride[0], stride[1], padding[0],
                                 padding[1], dilation[0], dilation[1], int(groups), k, hidden)
        weights = _lib.Weights(**{name: _ptr(a) for name, a in arrays.items()})
        handle = ctypes.c_void_p()
        _lib.check("dynconv_conv2d_create",
                   self._lib.dynconv_conv2d_create(ctypes.byref(geometry), ctypes.byref(weights),
                                                   float(temperature), 0, ctypes.byref(handle)))
        self._handle = handle
        # parameter shapes in the library's layout, for the gradients
        self._param_shapes = {name: a.shape for name, a in arrays.items() if a is not None}
        self.in_channels, self.out_channels, self.num_kernels, self.hidden = c_in, c_out, k, hidden
        self.kernel_size, self.stride, self.padding, self.dilation = (kh, kw), stride, padding, dilation
        self.groups = int(groups)
        self.attention = None  # [N, K] of the last forward
        self._shape = None

    @classmethod
    def from_safetensors(cls, path, prefix="", **overrides):
        """The layer saved under `prefix` in a safetensors file (as by dynconv-export);
        keyword arguments (stride, padding, dilation, groups, temperature) override the file's
        metadata."""
        tensors, metadata = load_file(path)
        dotted = prefix + "." if prefix and not prefix.endswith(".") else (prefix or "")

        def tensor(name, required):
            t = tensors.get(dotted + name)
            if t is None and required:
                raise ValueError(f"{path}: no tensor '{dotted + name}'")
            if t is not None and t.dtype.kind != "f":
                raise ValueError(f"{path}: tensor '{dotted + name}' has dtype {t.dtype}; only "
                                 "floating-point tensors (converted to float32) can be used")
            return t

        schemes = [s for s in _FC_NAMES if dotted + s[0] in tensors]
        if len(schemes) != 1:
            raise ValueError(f"{path}: expected exactly one of '{dotted}{_FC_NAMES[0][0]}' and "
                             f"'{dotted}{_FC_NAMES[1][0]}'")
        names = schemes[0]
        known = {dotted + n for n in names}
        extra = [n for n in tensors if n.startswith(dotted + "attention.") and n not in known]
        if extra:
            raise ValueError(f"{path}: unexpected tensor '{extra[0]}' in the attention")

        def meta(key, default):
            return overrides.get(key, metadata.get(dotted + key, metadata.get(key, default)))

        return cls(tensor("weight", True), tensor(names[0], True), tensor(names[2], True),
                   bias=tensor("bias", False), fc1_bias=tensor(names[1], False),
                   fc2_bias=tensor(names[3], False), stride=meta("stride", 1),
                   padding=meta("padding", 0), dilation=meta("dilation", 1),
                   groups=int(meta("groups", 1)), temperature=float(meta("temperature", 1.0)))

    @property
    def threads(self):
        """Threads a forward uses; assign 0 for one per CPU available (the default)."""
        t = ctypes.c_int()
        _lib.check("dynconv_conv2d_get_num_threads",
                   self._lib.dynconv_conv2d_get_num_threads(self._live(), ctypes.byref(t)))
        return t.value

    @threads.setter
    def threads(self, value):
        _lib.check("dynconv_conv2d_set_num_threads",
                   self._lib.dynconv_conv2d_set_num_threads(self._live(), int(value)))

    @property
    def temperature(self):
        t = ctypes.c_float()
        _lib.check("dynconv_conv2d_get_temperature",
                   self._lib.dynconv_conv2d_get_temperature(self._live(), ctypes.byref(t)))
        return t.value

    @temperature.setter
    def temperature(self, value):
        _lib.check("dynconv_conv2d_set_temperature",
                   self._lib.dynconv_conv2d_set_temperature(self._live(), float(value)))

    def _live(self):
        if self._handle is None:
            raise ValueError("the layer has been closed")
        return self._handle

    def output_shape(self, input_shape):
        n, _, h, w = input_shape
        out = [n, self.out_channels]
        for size, k, s, p, d in zip((h, w), self.kernel_size, self.stride, self.padding,
                                    self.dilation):
            out.append((size + 2 * p - d * (k - 1) - 1) // s + 1)
        return tuple(out)

    def forward(self, x):
        """y [N, C_out, H_out, W_out] for x [N, C_in, H, W] (converted to C-contiguous float32
        when it is not). The attention [N, K] is kept in self.attention."""
        x = _as_float32(x, "input")
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"input: expected [N, {self.in_channels}, H, W], got {x.shape}")
        handle = self._live()
        if self._shape != x.shape:
            oh, ow = ctypes.c_int64(), ctypes.c_int64()
            _lib.check("dynconv_conv2d_reshape",
                       self._lib.dynconv_conv2d_reshape(handle, x.shape[0], x.shape[2],
                                                        x.shape[3], ctypes.byref(oh),
                                                        ctypes.byref(ow), None))
            self._shape = x.shape
        y = np.empty(self.output_shape(x.shape), dtype=np.float32)
        attention = np.empty((x.shape[0], self.num_kernels), dtype=np.float32)
        _lib.check("dynconv_conv2d_forward",
                   self._lib.dynconv_conv2d_forward(handle, _ptr(x), _ptr(y), _ptr(attention),
                                                    None, 0))
        self.attention = attention
        return y

    __call__ = forward

    def backward(self, x, grad_output):
        """Gradients of L for dL/dy = grad_output at input x (the layer's current weights and
        temperature): a dict with "input" [N, C_in, H, W] and, for every parameter the layer
        has, "weight", "bias", "fc1_weight" [hidden, C_in], "fc1_bias", "fc2_weight"
        [K, hidden], "fc2_bias"."""
        x = _as_float32(x, "input")
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"input: expected [N, {self.in_channels}, H, W], got {x.shape}")
        gy = _as_float32(grad_output, "grad_output", self.output_shape(x.shape))
        handle = self._live()
        if self._shape != x.shape:
            _lib.check("dynconv_conv2d_reshape",
                       self._lib.dynconv_conv2d_reshape(handle, x.shape[0], x.shape[2],
                                                        x.shape[3], None, None, None))
            self._shape = x.shape
        _lib.check("dynconv_conv2d_prepare_backward",
                   self._lib.dynconv_conv2d_prepare_backward(handle, None))
        grads = {"input": np.empty(x.shape, dtype=np.float32)}
        for name, shape in self._param_shapes.items():
            grads[name] = np.empty(shape, dtype=np.float32)
        struct = _lib.Gradients(**{name: _ptr(a) for name, a in grads.items()})
        _lib.check("dynconv_conv2d_backward",
                   self._lib.dynconv_conv2d_backward(handle, _ptr(x), _ptr(gy),
                                                     ctypes.byref(struct), 0, None, 0))
        return grads

    def close(self):
        if self._handle is not None:
            self._lib.dynconv_conv2d_destroy(self._handle)
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
