"""libdynconv as torch.nn.Modules: forward and backward of dynamic convolution and dynamic linear
layers run in libdynconv (through the ctypes binding), the rest of the model in PyTorch.

    from dynconv.torch import DynamicConv2d, DynamicLinear, convert
    conv = DynamicConv2d(64, 128, 3, padding=1, num_kernels=4, temperature=30.0)
    model = convert(model)      # every dynamic convolution of a model, in place

Parameters and state_dict keys are those of kaijieshi7's Dynamic_conv2d (the original authors'
PyTorch re-implementation), so its checkpoints load with load_state_dict(strict=True):
    weight                [K, C_out, C_in/groups, kh, kw]
    bias                  [K, C_out]                       (bias=True)
    attention.fc1.weight  [hidden, C_in, 1, 1]             (a 1x1 convolution without bias)
    attention.fc2.weight  [K, hidden, 1, 1]
    attention.fc2.bias    [K]
with hidden = K for a 3-channel input (an RGB stem) and int(C_in * 0.25) + 1 otherwise, as in
kaijieshi7's attention2d, unless `hidden` is given. DynamicLinear has weight [K, D_out, D_in],
bias [K, D_out], attention.fc1.weight [hidden, D_in] (nn.Linear without bias),
attention.fc2.weight [K, hidden], attention.fc2.bias [K], hidden = int(D_in * 0.25) + 1.

What runs, per sample n: pi = softmax(fc2(relu(fc1(mean_hw(x)))) / T) (for the linear layer
fc1 acts on x itself), then the layer with the kernel sum_k pi_k weight_k and the bias
sum_k pi_k bias_k. The attention's submodules hold its parameters; their own forward (pure
PyTorch) is only for inspecting pi, the layer's forward never calls it.

Policies:
  - dtype and device: float32 CPU tensors only (libdynconv computes in float32 on the CPU);
    anything else is refused with a TypeError saying so, rather than converted behind the
    autograd graph's back. Inputs that are not contiguous are made so (a copy).
  - threads: `module.threads` (None: follow torch.get_num_threads(), so torch.set_num_threads
    governs both PyTorch and libdynconv); the backward runs in the calling thread.
  - the library reads the parameters in place (no copy per step): an optimizer's in-place
    update is seen at the next forward; a parameter that is replaced (new storage, e.g. by
    .to()) is noticed and the library's handle rebuilt.
"""

import ctypes
import math

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from . import _lib, layer_format
from .layer import Conv2d as _Conv2dLayer
from .layer import Linear as _LinearLayer

_SLOTS = layer_format.SLOTS
_float_p = ctypes.POINTER(ctypes.c_float)


def _ptr(t):
    return None if t is None else ctypes.cast(ctypes.c_void_p(t.data_ptr()), _float_p)


def _pair(v, name):
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(a) for a in v)
    if len(v) == 1:
        v = v * 2
    if len(v) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
    return v


def _check_tensor(t, what, owner):
    if t.device.type != "cpu" or t.dtype != torch.float32:
        raise TypeError(f"{owner}: {what} is a {t.dtype} tensor on {t.device}; libdynconv "
                        "computes in float32 on the CPU (convert with .float().cpu())")


class _DynamicFunction(torch.autograd.Function):
    """y = layer(x) with libdynconv's forward; its backward gives dL/dx and every parameter's
    gradient (those autograd asks for; the others are skipped in the library too)."""

    @staticmethod
    def forward(ctx, module, temperature, x, *params):
        layer = module._library_layer(params)
        layer.temperature = temperature
        x = x.contiguous()
        y = torch.empty(module._output_shape(x.shape), dtype=torch.float32)
        layer.forward(x.detach().numpy(), out=y.numpy())
        module.last_attention = torch.from_numpy(layer.attention)
        ctx.module = module
        ctx.temperature = temperature
        ctx.save_for_backward(x, *params)
        return y

    @staticmethod
    @once_differentiable  # the library's backward is not itself differentiable: say so
    def backward(ctx, grad_output):
        x, *params = ctx.saved_tensors
        module = ctx.module
        layer = module._library_layer(params)
        # The backward recomputes the attention: it must see the forward's temperature.
        layer.temperature = ctx.temperature
        gy = grad_output.contiguous()
        _check_tensor(gy, "the output gradient", type(module).__name__)
        need = ctx.needs_input_grad[2:]
        gx = torch.empty_like(x) if need[0] else None
        grads = [torch.empty_like(p) if (p is not None and need[1 + i]) else None
                 for i, p in enumerate(params)]
        layer._reshape(tuple(x.shape))
        if not layer._backward_ready:
            layer._call("prepare_backward", layer._live(), None)
            layer._backward_ready = True
        if gx is not None or any(g is not None for g in grads):
            struct = _lib.Gradients(input=_ptr(gx),
                                    **{slot: _ptr(g) for slot, g in zip(_SLOTS, grads)})
            layer._call("backward", layer._live(), _ptr(x), _ptr(gy), ctypes.byref(struct), 0,
                        None, 0)
        return (None, None, gx, *grads)


class _DynamicBase(nn.Module):
    """The machinery both modules share: where each parameter lives (its state_dict name),
    where the temperature lives, the library handle built on the parameters."""


    def _init_common(self, paths, temperature_owner):
        # slot -> dotted parameter name ("attention.fc1.weight"), for the slots the layer has
        self._paths = paths
        # (submodule path or "", attribute): the temperature stays where the original layout
        # keeps it, so that code updating it there (attention.temperature) keeps working
        self._temperature_owner = temperature_owner
        self.threads = None
        self.last_attention = None  # [N, K] of the last forward (detached)
        self._schedule = None
        self._dc_layer = None
        self._dc_key = None
        self._threads_set = None

    # -- temperature -------------------------------------------------------------------------
    def _owner(self):
        path, attr = self._temperature_owner
        return (self.get_submodule(path) if path else self), attr

    @property
    def temperature(self):
        """The softmax temperature T (> 0); assigning it ends a schedule."""
        owner, attr = self._owner()
        return float(getattr(owner, attr))

    @temperature.setter
    def temperature(self, value):
        value = float(value)
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"temperature must be a finite number > 0, got {value!r}")
        owner, attr = self._owner()
        setattr(owner, attr, value)
        self._schedule = None

    def set_temperature_schedule(self, t0, t1, steps):
        """T moves linearly from t0 to t1 over `steps` calls of step_temperature (the paper
        anneals 30 -> 1 over the first epochs, one step per iteration); T = t0 now (t1 when
        steps == 0). As libdynconv's dynconv_*_set_temperature_schedule."""
        t0, t1, steps = float(t0), float(t1), int(steps)
        for t in (t0, t1):
            if not (t > 0 and math.isfinite(t)):
                raise ValueError(f"temperatures must be finite numbers > 0, got {t!r}")
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        self.temperature = t1 if steps == 0 else t0
        self._schedule = [t0, t1, steps, 0]

    def step_temperature(self):
        """Advances the schedule by one step (call it after the iteration's backward);
        returns the new T."""
        if self._schedule is None:
            raise RuntimeError(f"{type(self).__name__}: no temperature schedule (call "
                               "set_temperature_schedule first)")
        t0, t1, steps, done = self._schedule
        done += 1
        t = t1 if done >= steps else t0 + (t1 - t0) * done / steps
        owner, attr = self._owner()
        setattr(owner, attr, float(t))
        self._schedule[3] = done
        return float(t)

    # -- parameters and the library handle ----------------------------------------------------
    def _params(self):
        return [None if self._paths.get(slot) is None else self.get_parameter(self._paths[slot])
                for slot in _SLOTS]

    def _library_layer(self, params):
        """The binding's layer reading these parameter tensors in place (rebuilt when one of
        them has moved to other storage or changed shape)."""
        key = tuple(None if p is None else (p.data_ptr(), tuple(p.shape)) for p in params)
        if self._dc_layer is not None and key == self._dc_key:
            return self._dc_layer
        name = type(self).__name__
        arrays = {}
        for slot, p in zip(_SLOTS, params):
            if p is None:
                continue
            _check_tensor(p, f"parameter '{self._paths[slot]}'", name)
            if not p.is_contiguous():
                raise TypeError(f"{name}: parameter '{self._paths[slot]}' is not contiguous; "
                                "libdynconv reads parameters in place")
            arrays[slot] = p.detach().numpy()
        layer = self._make_layer(arrays)
        if self._dc_layer is not None:
            self._dc_layer.close()
        self._dc_layer, self._dc_key = layer, key
        self._threads_set = None
        return layer

    def _prepare(self, x):
        name = type(self).__name__
        _check_tensor(x, "the input", name)
        params = self._params()
        layer = self._library_layer(params)
        threads = self.threads if self.threads is not None else torch.get_num_threads()
        if self._threads_set != threads:
            layer.threads = threads
            self._threads_set = threads
        return params

    def forward(self, x, temperature=None):
        """y for x; `temperature` replaces self.temperature for this call (TArdelean's layers
        take it as a forward argument)."""
        self._check_input(x)
        params = self._prepare(x)
        t = self.temperature if temperature is None else float(temperature)
        return _DynamicFunction.apply(self, t, x, *params)

    def __getstate__(self):
        # The ctypes handle is process-local: pickles and deep copies rebuild it on first use.
        state = self.__dict__.copy()
        state["_dc_layer"] = None
        state["_dc_key"] = None
        return state

    def _apply(self, fn, *args, **kwargs):
        self._dc_layer, self._dc_key = None, None  # parameters may move: rebuild the handle
        return super()._apply(fn, *args, **kwargs)


class _Attention2d(nn.Module):
    """kaijieshi7's attention2d layout: fc1, fc2 1x1 convolutions, temperature attribute."""

    def __init__(self, in_planes, hidden, num_kernels, temperature):
        super().__init__()
        self.fc1 = nn.Conv2d(in_planes, hidden, 1, bias=False)
        self.fc2 = nn.Conv2d(hidden, num_kernels, 1, bias=True)
        self.temperature = float(temperature)

    def forward(self, x):
        """pi [N, K] in PyTorch (for inspection; DynamicConv2d computes its own)."""
        z = self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))).flatten(1)
        return torch.softmax(z / self.temperature, dim=1)


class _AttentionLinear(nn.Module):
    """The dynamic linear layer's attention: fc1, fc2 linear layers on the input itself."""

    def __init__(self, features, hidden, num_kernels, temperature):
        super().__init__()
        self.fc1 = nn.Linear(features, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, num_kernels, bias=True)
        self.temperature = float(temperature)

    def forward(self, x):
        return torch.softmax(self.fc2(torch.relu(self.fc1(x))) / self.temperature, dim=1)


def _default_paths(bias, attention="attention", first="fc1", second="fc2", fc1_bias=False,
                   fc2_bias=True):
    return {"weight": "weight", "bias": "bias" if bias else None,
            "fc1_weight": f"{attention}.{first}.weight",
            "fc1_bias": f"{attention}.{first}.bias" if fc1_bias else None,
            "fc2_weight": f"{attention}.{second}.weight",
            "fc2_bias": f"{attention}.{second}.bias" if fc2_bias else None}


def _reset_kernels(weight, bias):
    # Each of the K kernels Kaiming-uniform for a ReLU (bound sqrt(6 / fan_in)), as kaijieshi7's
    # and External-Attention's layers do. nn.Conv2d's gentler default (a = sqrt(5)) is too
    # small here: the attention averages K kernels, which shrinks every layer's output (and
    # gradient) further, and a deep DY-CNN then barely trains.
    for k in range(weight.shape[0]):
        nn.init.kaiming_uniform_(weight[k], nonlinearity="relu")
    if bias is not None:
        fan_in = weight[0, 0].numel()
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        nn.init.uniform_(bias, -bound, bound)


def _reset_attention(attention):
    for m in (attention.fc1, attention.fc2):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class DynamicConv2d(_DynamicBase):
    """A dynamic convolution (Chen et al., CVPR 2020) computed by libdynconv; see the module
    docstring for its parameters. forward(x) takes x [N, C_in, H, W] float32 on the CPU."""


    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, num_kernels=4, hidden=None, temperature=1.0):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"groups = {groups} must divide in_channels = {in_channels} and "
                             f"out_channels = {out_channels}")
        kh, kw = _pair(kernel_size, "kernel_size")
        if hidden is None:
            hidden = num_kernels if in_channels == 3 else int(in_channels * 0.25) + 1
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = (kh, kw)
        self.stride, self.padding = _pair(stride, "stride"), _pair(padding, "padding")
        self.dilation, self.groups = _pair(dilation, "dilation"), int(groups)
        self.num_kernels, self.hidden = num_kernels, hidden
        self.weight = nn.Parameter(torch.empty(num_kernels, out_channels,
                                               in_channels // groups, kh, kw))
        if bias:
            self.bias = nn.Parameter(torch.empty(num_kernels, out_channels))
        else:
            self.register_parameter("bias", None)
        self.attention = _Attention2d(in_channels, hidden, num_kernels, temperature)
        self._init_common(_default_paths(bias), ("attention", "temperature"))
        self.temperature = temperature
        self.reset_parameters()

    def reset_parameters(self):
        _reset_kernels(self.weight, self.bias)
        _reset_attention(self.attention)

    def _make_layer(self, arrays):
        return _Conv2dLayer(arrays["weight"], arrays["fc1_weight"], arrays["fc2_weight"],
                            bias=arrays.get("bias"), fc1_bias=arrays.get("fc1_bias"),
                            fc2_bias=arrays.get("fc2_bias"), stride=self.stride,
                            padding=self.padding, dilation=self.dilation, groups=self.groups,
                            temperature=self.temperature, borrow=True)

    def _check_input(self, x):
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__}: expected input [N, {self.in_channels}, "
                             f"H, W], got {list(x.shape)}")

    def _output_shape(self, shape):
        n, _, h, w = shape
        out = [n, self.out_channels]
        for size, k, s, p, d in zip((h, w), self.kernel_size, self.stride, self.padding,
                                    self.dilation):
            out.append((size + 2 * p - d * (k - 1) - 1) // s + 1)
        return out

    def update_temperature(self):
        """kaijieshi7's schedule step: T -= 3 unless T == 1 (its models start at 34 or 31)."""
        if self.temperature != 1:
            self.temperature = self.temperature - 3

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        return (s + f", bias={self._paths['bias'] is not None}, num_kernels={self.num_kernels}"
                f", hidden={self.hidden}, temperature={self.temperature:g}")


class DynamicLinear(_DynamicBase):
    """A dynamic linear layer (dynamic perceptron) computed by libdynconv; forward(x) takes
    x [N, D_in] float32 on the CPU."""


    def __init__(self, in_features, out_features, bias=True, num_kernels=4, hidden=None,
                 temperature=1.0):
        super().__init__()
        if hidden is None:
            hidden = int(in_features * 0.25) + 1
        self.in_features, self.out_features = in_features, out_features
        self.num_kernels, self.hidden = num_kernels, hidden
        self.weight = nn.Parameter(torch.empty(num_kernels, out_features, in_features))
        if bias:
            self.bias = nn.Parameter(torch.empty(num_kernels, out_features))
        else:
            self.register_parameter("bias", None)
        self.attention = _AttentionLinear(in_features, hidden, num_kernels, temperature)
        self._init_common(_default_paths(bias), ("attention", "temperature"))
        self.temperature = temperature
        self.reset_parameters()

    def reset_parameters(self):
        _reset_kernels(self.weight, self.bias)
        _reset_attention(self.attention)

    def _make_layer(self, arrays):
        return _LinearLayer(arrays["weight"], arrays["fc1_weight"], arrays["fc2_weight"],
                            bias=arrays.get("bias"), fc1_bias=arrays.get("fc1_bias"),
                            fc2_bias=arrays.get("fc2_bias"), temperature=self.temperature,
                            borrow=True)

    def _check_input(self, x):
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"{type(self).__name__}: expected input [N, {self.in_features}], "
                             f"got {list(x.shape)}")

    def _output_shape(self, shape):
        return [shape[0], self.out_features]

    def extra_repr(self):
        return (f"{self.in_features}, {self.out_features}, bias={self._paths['bias'] is not None}"
                f", num_kernels={self.num_kernels}, hidden={self.hidden}, "
                f"temperature={self.temperature:g}")


# ---- convert ---------------------------------------------------------------------------------

_ATTENTION_LAYERS = layer_format.ATTENTION_LAYOUTS


def _attention_layout(module):
    from .export import _attention_layout as layout
    return layout(module.attention)


def _check_attention(module, layout, where):
    """The attention must be exactly pool -> layer -> ReLU -> layer -> softmax: refuse any
    other parameter or buffer (a batch norm, say), which libdynconv would not compute."""
    first, second = _ATTENTION_LAYERS[layout]
    allowed = {f"{n}.{p}" for n in (first, second) for p in ("weight", "bias")}
    for name, _ in list(module.attention.named_parameters()) + list(
            module.attention.named_buffers()):
        if name not in allowed:
            raise ValueError(f"{where}: the attention holds '{name}', which libdynconv does "
                             "not compute (only two 1x1 convolution or linear layers with a "
                             "ReLU between them)")
    for n in (first, second):
        layer = module.attention.get_submodule(n)
        if isinstance(layer, nn.Conv2d) and (layer.kernel_size != (1, 1) or layer.groups != 1
                                             or layer.stride != (1, 1)
                                             or layer.padding != (0, 0)):
            raise ValueError(f"{where}: attention.{n} is not a plain 1x1 convolution")
    return first, second


def _converted(module, where, temperature):
    """The libdynconv module taking over `module`'s parameters (the same Parameter objects,
    under the same names), or None when it is not a dynamic layer."""
    from .export import layer_kind

    if isinstance(module, _DynamicBase):
        return None
    kind = layer_kind(module)
    if kind is None:
        return None
    layout = _attention_layout(module)
    first, second = _check_attention(module, layout, where)
    att = module.attention
    weight_name = "kernels_weights" if kind == "tardelean" else "weight"
    bias_name = "kernels_bias" if kind == "tardelean" else "bias"
    weight = getattr(module, weight_name)
    bias = getattr(module, bias_name, None)
    bias = bias if isinstance(bias, torch.Tensor) else None  # kaijieshi7 may leave a bool
    cls = DynamicLinear if kind == "linear" else DynamicConv2d
    new = cls.__new__(cls)
    nn.Module.__init__(new)
    new.register_parameter(weight_name, weight)
    new.register_parameter(bias_name, bias)
    new.attention = att
    fc1, fc2 = att.get_submodule(first), att.get_submodule(second)
    paths = {"weight": weight_name, "bias": bias_name if bias is not None else None,
             "fc1_weight": f"attention.{first}.weight",
             "fc1_bias": f"attention.{first}.bias" if fc1.bias is not None else None,
             "fc2_weight": f"attention.{second}.weight",
             "fc2_bias": f"attention.{second}.bias" if fc2.bias is not None else None}
    # The temperature stays where the layout keeps it; TArdelean's layers have none (their
    # forward takes it): the converted module keeps one of its own.
    owner = None
    for path, obj in (("", module), ("attention", att)):
        for attr in ("temperature", "temprature"):
            if isinstance(getattr(obj, attr, None), (int, float)):
                owner = (path, attr)
                break
        if owner is not None:
            break
    if owner is None or owner[0] == "":
        new._own_temperature = float(
            getattr(module, owner[1]) if owner is not None else
            (temperature if temperature is not None else 1.0))
        owner = ("", "_own_temperature")
    new._init_common(paths, owner)
    k = weight.shape[0]
    new.num_kernels, new.hidden = k, fc1.weight.shape[0]
    if kind == "linear":
        new.out_features, new.in_features = weight.shape[1], weight.shape[2]
        return new
    new.out_channels = weight.shape[1]
    new.in_channels = fc1.weight.shape[1]
    new.kernel_size = tuple(weight.shape[3:])
    args = getattr(module, "conv_args", {}) if kind == "tardelean" else {}
    new.stride = _pair(args.get("stride", getattr(module, "stride", 1)), "stride")
    new.padding = _pair(args.get("padding", getattr(module, "padding", 0)), "padding")
    new.dilation = _pair(args.get("dilation", getattr(module, "dilation", 1)), "dilation")
    new.groups = int(getattr(module, "groups", 1))
    if new.in_channels != weight.shape[2] * new.groups:
        raise ValueError(f"{where}: weight {list(weight.shape)} with groups = {new.groups} "
                         f"does not take the attention's {new.in_channels} input channels")
    return new


def convert(model, temperature=None):
    """Replaces, in place, every dynamic convolution (and dynamic linear layer) of `model` by
    the libdynconv module computing the same function, and returns the model (or, when
    `model` itself is such a layer, its replacement).

    Recognised: kaijieshi7's Dynamic_conv2d (weight, bias, attention.fc1/fc2, temperature on
    the attention), External-Attention's DynamicConv (attention.net.0/net.2, `temprature`),
    TArdelean's DynamicConvolution (kernels_weights, kernels_bias, attention.to_scores.0/2
    linear layers with biases, stride/padding/dilation in conv_args), and layers of this
    module. The replacement takes over the original Parameter objects under the same names:
    state_dict keys, shapes and an optimizer built before the conversion all stay valid (a
    TArdelean layer keeps kernels_weights / kernels_bias / attention.to_scores.*). It also
    keeps the original attention submodule, whose temperature attribute (temperature or
    temprature) stays the one that counts, so existing annealing code keeps working.
    TArdelean's layers take the temperature as a forward argument: the converted layer
    accepts forward(x, temperature) too, and otherwise uses its own `temperature` attribute,
    which starts at `temperature` (default 1.0, their forward's default).
    Layers whose attention holds anything else (a batch norm, say) raise ValueError.
    Code that finds the layers by their class (kaijieshi7's ResNet.update_temperature looks for
    Dynamic_conv2d instances) no longer finds them afterwards: use dynamic_layers(model),
    set_temperature, set_temperature_schedule / step_temperature of this module instead."""
    top = _converted(model, "the model", temperature)
    if top is not None:
        return top
    for name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            where = f"{name}.{child_name}" if name else child_name
            new = _converted(child, where, temperature)
            if new is not None:
                setattr(parent, child_name, new)
    return model


def dynamic_layers(model):
    """The libdynconv modules of a model."""
    return [m for m in model.modules() if isinstance(m, _DynamicBase)]


def set_temperature(model, value):
    """Sets T of every libdynconv layer of the model."""
    for m in dynamic_layers(model):
        m.temperature = value


def set_temperature_schedule(model, t0, t1, steps):
    """Gives every libdynconv layer of the model the schedule t0 -> t1 over `steps` steps."""
    for m in dynamic_layers(model):
        m.set_temperature_schedule(t0, t1, steps)


def step_temperature(model):
    """One schedule step for every libdynconv layer; returns the new T (of the last layer),
    None for a model without one."""
    t = None
    for m in dynamic_layers(model):
        t = m.step_temperature()
    return t


__all__ = ["DynamicConv2d", "DynamicLinear", "convert", "dynamic_layers", "set_temperature",
           "set_temperature_schedule", "step_temperature"]
