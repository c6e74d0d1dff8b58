"""The dynamic 2-D convolution and dynamic linear layers on numpy arrays.

dtype policy: parameters, inputs and output gradients may be any array of real numbers (float16,
float32, float64, integers); they are converted to C-contiguous float32, the only type
libdynconv computes in (so float64 data loses precision beyond float32's, silently by design).
Complex, object, string and boolean arrays are refused with TypeError. Results are float32.
"""

import ctypes

import numpy as np

from . import _lib, layer_format
from .safetensors import load_file

# The file's names and metadata rules, shared with the exporter (docs/file-format.md).
_SLOTS = layer_format.SLOTS
_FC_NAMES = layer_format.FC_NAMES
DEFAULT_NAMES = layer_format.DEFAULT_NAMES
_GEOMETRY_KEYS = layer_format.CONV_KEYS
_FLOAT32_MAX = float(np.finfo(np.float32).max)

FLAG_BORROW_WEIGHTS = 1


def _pair(value, name, minimum):
    """An int, a pair of ints or metadata text ("a" or "a,b") -> (a, b)."""
    if isinstance(value, str):
        return layer_format.parse_pair(value, name, minimum)
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
        raise TypeError(f"{what}: expected an array of real numbers (converted to float32), "
                        f"got dtype {a.dtype}")
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


def _prefix_hint(tensors):
    """The prefixes of a file that hold a dynamic layer, for the message of a bad prefix."""
    found = [f"'{p}'" if p else "'' (no prefix)" for p in layer_format.layer_prefixes(tensors)]
    return ", ".join(found) if found else "none"


def _read_layer(path, prefix, rank=None):
    """(tensors by slot, names by slot, metadata lookup) of the layer under `prefix`, by the
    rules of dcio_layer_load (docs/file-format.md). rank: 5 (a convolution), 3 (a linear
    layer), or None for whichever the weight's rank says."""
    layer_format.check_prefix(prefix)
    tensors, metadata = load_file(path)
    dotted = layer_format.dotted(prefix)
    if dotted + "weight" not in tensors:
        raise ValueError(f"{path}: no tensor '{dotted}weight' (prefix {prefix!r}); the "
                         f"prefixes holding a dynamic layer are: {_prefix_hint(tensors)}")
    schemes = [s for s in _FC_NAMES if dotted + s[0] in tensors]
    if len(schemes) != 1:
        raise ValueError(f"{path}: expected exactly one of '{dotted}{_FC_NAMES[0][0]}' and "
                         f"'{dotted}{_FC_NAMES[1][0]}'")
    names = dict(zip(_SLOTS, ("weight", "bias") + schemes[0]))
    if dotted + names["fc2_weight"] not in tensors:
        raise ValueError(f"{path}: missing tensor '{dotted}{names['fc2_weight']}' (the "
                         "attention's second layer)")
    known = {dotted + n for n in names.values()}
    extra = [n for n in tensors if n.startswith(dotted + "attention.") and n not in known]
    if extra:
        raise ValueError(f"{path}: unexpected tensor '{extra[0]}' in the attention")
    out = {}
    for slot, name in names.items():
        t = tensors.get(dotted + name)
        if t is not None and t.dtype.kind != "f":
            raise ValueError(f"{path}: tensor '{dotted + name}' has dtype {t.dtype}; only "
                             "floating-point tensors (converted to float32) can be used")
        if t is not None and t.dtype == np.float64 and \
                np.any(np.isfinite(t) & (np.abs(t) > _FLOAT32_MAX)):
            raise ValueError(f"{path}: tensor '{dotted + name}': F64 values outside the "
                             "float32 range")
        out[slot] = t
    weight_rank = out["weight"].ndim
    if weight_rank not in layer_format.KINDS or (rank is not None and weight_rank != rank):
        kind = {5: "a convolution", 3: "a linear layer"}.get(weight_rank, "no layer")
        raise ValueError(f"{path}: tensor '{dotted}weight' has shape {out['weight'].shape}: "
                         f"the weight of {kind}")

    def meta(key):
        return layer_format.metadata_value(metadata, dotted, key)

    kind = meta("layer")
    want = layer_format.KINDS[weight_rank]
    if kind is not None and kind != want:
        raise ValueError(f"{path}: metadata 'layer' = {kind!r} but the layer's weight is that "
                         f"of a {want}")
    return out, names, meta


def load_layer(path, prefix="", **overrides):
    """The layer saved under `prefix` in a safetensors file, a Conv2d or a Linear as the rank
    of its weight says (as `dynconv run` decides). Keyword arguments as for the
    from_safetensors of that class."""
    tensors, _, _ = _read_layer(path, prefix)
    cls = Conv2d if tensors["weight"].ndim == 5 else Linear
    return cls.from_safetensors(path, prefix, **overrides)


def _biases(given, k, out, hidden):
    """The optional bias [K, out], fc1 bias [hidden] and fc2 bias [K] as float32, or None."""
    shapes = {"bias": (k, out), "fc1_bias": (hidden,), "fc2_bias": (k,)}
    return {slot: None if given[slot] is None else _as_float32(given[slot], slot, shape)
            for slot, shape in shapes.items()}


class _Layer(_lib.Handle):
    """What both layers share: the handle, threads, temperature (and its schedule), close."""

    _prefix = None  # "dynconv_conv2d" or "dynconv_linear"

    def _fn(self, name):
        return f"{self._prefix}_{name}", getattr(self._lib, f"{self._prefix}_{name}")

    def _call(self, name, *args):
        function, fn = self._fn(name)
        _lib.check(function, fn(*args))

    def _take(self, borrow, *params):
        """{slot: parameter as given}; with borrow, each must already be what the library
        reads in place (borrowed arrays are not converted)."""
        given = dict(zip(_SLOTS, params))
        self._given = given if borrow else None
        if borrow:
            for slot, a in given.items():
                if a is not None and not (isinstance(a, np.ndarray) and a.dtype == np.float32
                                          and a.flags.c_contiguous):
                    raise TypeError(f"{type(self).__name__}(borrow=True): {slot} must be a "
                                    "C-contiguous float32 numpy array (borrowed arrays are "
                                    "not converted)")
        # gradients come back in the shapes the parameters were given in ([h, C, 1, 1] stays)
        self._name_shapes = {slot: np.shape(a) for slot, a in given.items() if a is not None}
        return given

    def _setup(self, arrays, names, temperature, borrow, create):
        """Creates the handle from {slot: float32 array or None}; with borrow, the library
        reads the arrays in place (they must stay alive and contiguous: self keeps them)."""
        if borrow:
            for slot, a in arrays.items():
                if a is not None and not np.may_share_memory(a, self._given[slot]):
                    raise TypeError(f"{type(self).__name__}(borrow=True): {slot} would be "
                                    "copied; borrowed arrays must be float32 and C-contiguous")
        weights = _lib.Weights(**{slot: _ptr(a) for slot, a in arrays.items()})
        handle = ctypes.c_void_p()
        function, fn = create
        _lib.check(function, fn(ctypes.byref(self._geometry), ctypes.byref(weights),
                                float(temperature), FLAG_BORROW_WEIGHTS if borrow else 0,
                                ctypes.byref(handle)))
        self._handle = handle
        self._borrowed = arrays if borrow else None
        self._given = None
        self._param_shapes = {slot: a.shape for slot, a in arrays.items() if a is not None}
        self.names = {slot: (names or DEFAULT_NAMES)[slot] for slot in self._param_shapes}
        self.attention = None  # [N, K] of the last forward
        self._shape = None
        self._backward_ready = False

    @property
    def temperature(self):
        """The softmax temperature T (finite, > 0); assigning one ends a schedule."""
        t = ctypes.c_float()
        self._call("get_temperature", self._live(), ctypes.byref(t))
        return t.value

    @temperature.setter
    def temperature(self, value):
        self._call("set_temperature", self._live(), float(value))

    def set_temperature_schedule(self, t0, t1, steps):
        """T moves linearly from t0 to t1 over `steps` calls of step_temperature (the paper:
        30 -> 1 over the first epochs, one step per iteration); T = t0 now."""
        self._call("set_temperature_schedule", self._live(), float(t0), float(t1), int(steps))

    def step_temperature(self):
        """Advances the schedule by one step; returns the new T."""
        t = ctypes.c_float()
        self._call("step_temperature", self._live(), ctypes.byref(t))
        return t.value

    def _live(self):
        if self._handle is None:
            raise ValueError(f"{type(self).__name__}: the layer has been closed")
        return self._handle

    def _forward(self, x, out):
        x = self._input(x)
        self._reshape(x.shape)
        shape = self.output_shape(x.shape)
        if out is None:
            y = np.empty(shape, dtype=np.float32)
        else:
            y = out
            if not (isinstance(y, np.ndarray) and y.dtype == np.float32 and
                    y.flags.c_contiguous and y.shape == shape):
                raise ValueError(f"out: expected a C-contiguous float32 array of shape {shape}")
        attention = np.empty((x.shape[0], self.num_kernels), dtype=np.float32)
        self._call("forward", self._live(), _ptr(x), _ptr(y), _ptr(attention), None, 0)
        self.attention = attention
        return y

    def _backward(self, x, grad_output):
        x = self._input(x)
        gy = _as_float32(grad_output, "grad_output", self.output_shape(x.shape))
        self._reshape(x.shape)
        return self._gradients(x, gy)

    def _gradients(self, x, gy):
        """Runs the backward on the current shape: {"input": dx, state_dict name: grad}."""
        grads = {"input": np.empty(x.shape, dtype=np.float32)}
        by_slot = {slot: np.empty(shape, dtype=np.float32)
                   for slot, shape in self._param_shapes.items()}
        struct = _lib.Gradients(input=_ptr(grads["input"]),
                                **{slot: _ptr(a) for slot, a in by_slot.items()})
        handle = self._live()
        if not self._backward_ready:
            self._call("prepare_backward", handle, None)
            self._backward_ready = True
        self._call("backward", handle, _ptr(x), _ptr(gy), ctypes.byref(struct), 0, None, 0)
        for slot, g in by_slot.items():
            grads[self.names[slot]] = g.reshape(self._name_shapes[slot])
        return grads

    def _destroy(self, handle):
        getattr(self._lib, f"{self._prefix}_destroy")(handle)

    def __call__(self, x, out=None):
        return self.forward(x, out)


class Conv2d(_Layer):
    """A dynamic convolution: per sample, pi = softmax(fc2(relu(fc1(mean_hw(x)))) / T), then
    y = conv2d(x, sum_k pi_k weight_k, sum_k pi_k bias_k).

    weight [K, C_out, C_in/groups, kh, kw]; bias [K, C_out] or None; fc1_weight [hidden, C_in]
    (or [hidden, C_in, 1, 1]); fc1_bias [hidden] or None; fc2_weight [K, hidden] (or
    [K, hidden, 1, 1]); fc2_bias [K] or None. Arrays are converted to float32 (see the module's
    dtype policy). The library keeps its own copy of the weights, unless borrow=True: then it
    reads the float32 C-contiguous arrays given (which must be so already) in place, so that
    changing them changes the layer. `names` maps the slots (weight, bias, fc1_weight, ...) to
    the state_dict names under which backward() returns the gradients (default: weight, bias,
    attention.fc1.weight, ...).
    """

    _prefix = "dynconv_conv2d"

    def __init__(self, weight, fc1_weight, fc2_weight, bias=None, fc1_bias=None, fc2_bias=None,
                 *, stride=1, padding=0, dilation=1, groups=1, temperature=1.0, names=None,
                 borrow=False):
        self._lib = _lib.library()
        given = self._take(borrow, weight, bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias)
        weight = _as_float32(weight, "weight")
        if weight.ndim != 5:
            raise ValueError(f"weight: expected [K, C_out, C_in/groups, kh, kw], got "
                             f"{weight.shape}")
        k, c_out, _, kh, kw = weight.shape
        fc1 = _as_float32(_matrix(fc1_weight, "fc1_weight"), "fc1_weight")
        hidden, c_in = fc1.shape
        fc2 = _as_float32(_matrix(fc2_weight, "fc2_weight"), "fc2_weight", (k, hidden))
        arrays = {
            "weight": weight, "fc1_weight": fc1, "fc2_weight": fc2,
            **_biases(given, k, c_out, hidden)}
        stride, padding, dilation = (_pair(stride, "stride", 1), _pair(padding, "padding", 0),
                                     _pair(dilation, "dilation", 1))
        # The library sees only pointers: a weight whose C_in/groups disagrees with fc1's C_in
        # would be read beyond its end. (A group count that does not divide the channels is
        # the library's to refuse.) The C reader checks the same (dcio_layer_load).
        g = int(groups)
        if g >= 1 and c_in % g == 0 and c_in // g != weight.shape[2]:
            hint = (f"; set groups = {c_in // weight.shape[2]}"
                    if weight.shape[2] > 0 and c_in % weight.shape[2] == 0 else "")
            raise ValueError(f"fc1_weight has C_in = {c_in} but weight {weight.shape} with "
                             f"groups = {g} implies C_in = {g} * {weight.shape[2]}{hint}")
        self._geometry = _lib.Geometry(c_in, c_out, kh, kw, stride[0], stride[1], padding[0],
                                       padding[1], dilation[0], dilation[1], int(groups), k,
                                       hidden)
        self._setup(arrays, names, temperature, borrow, self._fn("create"))
        self.in_channels, self.out_channels, self.num_kernels, self.hidden = c_in, c_out, k, hidden
        self.kernel_size, self.stride, self.padding = (kh, kw), stride, padding
        self.dilation, self.groups = dilation, int(groups)

    @classmethod
    def from_safetensors(cls, path, prefix="", *, stride=None, padding=None, dilation=None,
                         groups=None, temperature=None):
        """The convolution saved under `prefix` in a safetensors file (as by dynconv-export).
        stride, padding, dilation, groups and temperature come from the file's metadata; a
        keyword argument replaces the file's value. There are no defaults: a file without
        them (saved from a bare state_dict) needs every missing one as a keyword argument,
        and the ValueError names those missing."""
        tensors, names, meta = _read_layer(path, prefix, 5)
        given = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups,
                 "temperature": temperature}
        missing = [k for k in _GEOMETRY_KEYS if given[k] is None and meta(k) is None]
        if missing:
            raise ValueError(f"{path}: no metadata {', '.join(repr(k) for k in missing)} for "
                             f"the convolution under prefix {prefix!r} (a file saved from a "
                             "bare state_dict has none): pass "
                             f"{', '.join(k + '=...' for k in missing)}, or save the file with "
                             "dynconv-export")
        try:
            values = {k: layer_format.parse_pair(meta(k), k, layer_format.PAIR_MINIMUM[k])
                      if given[k] is None else given[k] for k in ("stride", "padding",
                                                                  "dilation")}
            values["groups"] = (layer_format.parse_groups(meta("groups"))
                                if groups is None else groups)
            values["temperature"] = (layer_format.parse_temperature(meta("temperature"))
                                     if temperature is None else temperature)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        return cls(tensors["weight"], tensors["fc1_weight"], tensors["fc2_weight"],
                   bias=tensors["bias"], fc1_bias=tensors["fc1_bias"],
                   fc2_bias=tensors["fc2_bias"], stride=values["stride"],
                   padding=values["padding"], dilation=values["dilation"],
                   groups=int(values["groups"]), temperature=float(values["temperature"]),
                   names=names)

    def output_shape(self, input_shape):
        n, _, h, w = input_shape
        out = [n, self.out_channels]
        for size, k, s, p, d in zip((h, w), self.kernel_size, self.stride, self.padding,
                                    self.dilation):
            out.append((size + 2 * p - d * (k - 1) - 1) // s + 1)
        return tuple(out)

    def _input(self, x):
        x = _as_float32(x, "input")
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"input: expected [N, {self.in_channels}, H, W], got {x.shape}")
        return x

    def _reshape(self, shape):
        if self._shape != shape:
            self._call("reshape", self._live(), shape[0], shape[2], shape[3], None, None, None)
            self._shape = shape

    def forward(self, x, out=None):
        """y [N, C_out, H_out, W_out] for x [N, C_in, H, W] (converted to C-contiguous float32
        when it is not). The attention [N, K] is kept in self.attention. `out`, when given,
        is a C-contiguous float32 array of y's shape to write into."""
        return self._forward(x, out)

    def backward(self, x, grad_output):
        """Gradients of L for dL/dy = grad_output at input x (the layer's current weights and
        temperature): a dict with "input" [N, C_in, H, W] and, under its state_dict name and
        in the shape it was given in, every parameter the layer has (e.g. "weight",
        "attention.fc1.weight" [hidden, C_in, 1, 1])."""
        return self._backward(x, grad_output)

    def __repr__(self):
        if self._handle is None:
            return "dynconv.Conv2d(closed)"
        extra = "".join(f", {name}={value}" for name, value, default in (
            ("stride", self.stride, (1, 1)), ("padding", self.padding, (0, 0)),
            ("dilation", self.dilation, (1, 1)), ("groups", self.groups, 1))
            if value != default)
        return (f"dynconv.Conv2d({self.in_channels}, {self.out_channels}, "
                f"kernel_size={self.kernel_size}{extra}, num_kernels={self.num_kernels}, "
                f"hidden={self.hidden}, bias={'bias' in self._param_shapes}, "
                f"temperature={self.temperature:g})")


class Linear(_Layer):
    """A dynamic linear layer (dynamic perceptron): per sample, pi = softmax(fc2(relu(fc1(x)))
    / T), y = (sum_k pi_k weight_k) x + sum_k pi_k bias_k.

    weight [K, D_out, D_in]; bias [K, D_out] or None; fc1_weight [hidden, D_in] (or [hidden,
    D_in, 1, 1]); fc1_bias [hidden] or None; fc2_weight [K, hidden] (or [K, hidden, 1, 1]);
    fc2_bias [K] or None. Conversions, borrow and
    names as for Conv2d.
    """

    _prefix = "dynconv_linear"

    def __init__(self, weight, fc1_weight, fc2_weight, bias=None, fc1_bias=None, fc2_bias=None,
                 *, temperature=1.0, names=None, borrow=False):
        self._lib = _lib.library()
        given = self._take(borrow, weight, bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias)
        weight = _as_float32(weight, "weight")
        if weight.ndim != 3:
            raise ValueError(f"weight: expected [K, D_out, D_in], got {weight.shape}")
        k, d_out, d_in = weight.shape
        fc1 = _as_float32(_matrix(fc1_weight, "fc1_weight"), "fc1_weight")
        if fc1.shape[1] != d_in:
            raise ValueError(f"fc1_weight: expected [hidden, D_in = {d_in}], got {fc1.shape}")
        hidden = fc1.shape[0]
        arrays = {
            "weight": weight, "fc1_weight": fc1,
            "fc2_weight": _as_float32(_matrix(fc2_weight, "fc2_weight"), "fc2_weight",
                                      (k, hidden)),
            **_biases(given, k, d_out, hidden)}
        self._geometry = _lib.LinearGeometry(d_in, d_out, k, hidden)
        self._setup(arrays, names, temperature, borrow, self._fn("create"))
        self.in_features, self.out_features, self.num_kernels, self.hidden = d_in, d_out, k, hidden

    @classmethod
    def from_safetensors(cls, path, prefix="", *, temperature=None):
        """The linear layer saved under `prefix` in a safetensors file; the temperature comes
        from the metadata or the keyword argument (required when the file has none)."""
        tensors, names, meta = _read_layer(path, prefix, 3)
        t = temperature
        if t is None and meta("temperature") is None:
            raise ValueError(f"{path}: no metadata 'temperature' for the linear layer under "
                             f"prefix {prefix!r}: pass temperature=..., or save the file with "
                             "dynconv-export")
        if t is None:
            try:
                t = layer_format.parse_temperature(meta("temperature"))
            except ValueError as e:
                raise ValueError(f"{path}: {e}") from None
        return cls(tensors["weight"], tensors["fc1_weight"], tensors["fc2_weight"],
                   bias=tensors["bias"], fc1_bias=tensors["fc1_bias"],
                   fc2_bias=tensors["fc2_bias"], temperature=float(t), names=names)

    def _input(self, x):
        x = _as_float32(x, "input")
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"input: expected [N, {self.in_features}], got {x.shape}")
        return x

    def output_shape(self, input_shape):
        return (input_shape[0], self.out_features)

    def _reshape(self, shape):
        if self._shape != shape:
            self._call("reshape", self._live(), shape[0], None)
            self._shape = shape

    def forward(self, x, out=None):
        """y [N, D_out] for x [N, D_in]; the attention [N, K] is kept in self.attention."""
        return self._forward(x, out)

    def backward(self, x, grad_output):
        """{"input": dL/dx [N, D_in], state_dict name: gradient} as for Conv2d.backward."""
        return self._backward(x, grad_output)

    def __repr__(self):
        if self._handle is None:
            return "dynconv.Linear(closed)"
        return (f"dynconv.Linear({self.in_features}, {self.out_features}, "
                f"num_kernels={self.num_kernels}, hidden={self.hidden}, "
                f"bias={'bias' in self._param_shapes}, temperature={self.temperature:g})")
