"""The network exporter behind dynconv.export.export_network: traces a PyTorch model with
torch.fx, keeps its dynamic layers (the layouts dynconv.export recognises) as leaves, maps every
other call to one op of the network schema (dynconv.network_format, docs/file-format.md) and
writes one safetensors file with the tensors and the graph.

Anything it cannot map exactly is refused, naming the operation and the module it sits in, and
nothing is written: a reader guessing at an op would compute another network.
"""

import inspect
import operator

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.passes.shape_prop import ShapeProp

from . import export as layer_export
from . import layer_format
from . import network_format

# File name of a dynamic layer's tensor (under its prefix) -> its slot, for both attention
# naming schemes: the network file always uses the first scheme's names.
_SLOT_OF = {name: slot for slot, name in layer_format.DEFAULT_NAMES.items()}
_SLOT_OF.update(zip(layer_format.FC_NAMES[1], layer_format.SLOTS[2:]))

_DROPOUTS = (nn.Dropout, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


class ExportError(ValueError):
    """What cannot be exported, naming the operation and the module path."""


class _Tracer(torch.fx.Tracer):
    """Keeps dynamic layers as leaves, and records in each node the module path it was created
    in, so that a refusal can say where the op sits."""

    def __init__(self, model):
        super().__init__()
        self._stack = []
        # Found before tracing: while it traces, torch.fx turns a module's parameters into
        # proxies, and the layout check (which reads their ranks) would no longer see them.
        self._dynamic = {id(m) for m in model.modules() if layer_export.is_dynamic_conv(m)}

    def is_leaf_module(self, m, qualname):
        if id(m) in self._dynamic:
            return True
        return super().is_leaf_module(m, qualname)

    def call_module(self, m, forward, args, kwargs):
        self._stack.append(self.path_of_module(m))
        try:
            return super().call_module(m, forward, args, kwargs)
        finally:
            self._stack.pop()

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None):
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        node.meta["dynconv_module"] = self._stack[-1] if self._stack else ""
        return node


def _pair(value):
    if isinstance(value, int):
        return [value, value]
    value = [int(v) for v in value]
    return value * 2 if len(value) == 1 else value


def _callable_name(target):
    if isinstance(target, str):
        return target
    module = getattr(target, "__module__", None) or ""
    name = getattr(target, "__name__", None) or repr(target)
    return f"{module}.{name}" if module else name


def _arg(node, index, name, default):
    """Argument `name` of a call node, given by position `index` or keyword."""
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


class _Mapper:
    def __init__(self, model, gm):
        self.model = model
        self.gm = gm
        self.values = {}     # fx node -> value name in the network graph (aliases included)
        self.batch = {}      # fx node -> the tensor node whose batch size (dim 0) it is
        self.shape_of = {}   # fx node -> the tensor node whose .shape it is
        self.skipped = set()
        self.params = {}     # get_attr node -> the tensor's path (its state_dict name)
        self.nodes = []
        self.tensors = {}
        self.metadata = {}

    # -- helpers --------------------------------------------------------------------------
    def fail(self, node, what):
        path = node.meta.get("dynconv_module", "")
        where = f"module '{path}'" if path else "the top-level forward"
        raise ExportError(f"{what} in {where} (node '{node.name}'): not supported by the "
                          "network format")

    def shape(self, node):
        meta = node.meta.get("tensor_meta")
        return list(meta.shape) if meta is not None and hasattr(meta, "shape") else None

    def tensor_input(self, node, value):
        if isinstance(value, torch.fx.Node) and value in self.params:
            self.fail(node, f"'{_callable_name(node.target)}' of the tensor "
                            f"'{self.params[value]}' (a module's tensor can only be the "
                            "weight or bias of a convolution or linear layer)")
        if not isinstance(value, torch.fx.Node) or value not in self.values:
            self.fail(node, f"'{_callable_name(node.target)}' with a non-tensor operand "
                            f"{value!r}")
        return value

    def param_input(self, node, value, what):
        """The file name of a weight or bias that a functional call reads from the model."""
        if not isinstance(value, torch.fx.Node) or value not in self.params:
            self.fail(node, f"'{_callable_name(node.target)}' whose {what} is computed, not a "
                            "parameter of the model")
        name = self.params[value]
        if name not in self.tensors:
            owner, _, attr = name.rpartition(".")
            tensor = getattr(self.model.get_submodule(owner) if owner else self.model, attr)
            self.add_tensor(name, tensor)
        return name

    def add_tensor(self, name, tensor):
        self.tensors[name] = layer_export._float32(tensor, name)
        return name

    def emit(self, node, op, inputs, attrs=None, tensors=None):
        self.nodes.append({"name": node.name, "op": op,
                           "inputs": [self.values[i] for i in inputs],
                           "attrs": attrs or {}, "tensors": tensors or {},
                           "module": node.meta.get("dynconv_module", ""),
                           "shape": self.shape(node)})
        self.values[node] = node.name

    def alias(self, node, source):
        self.values[node] = self.values[source]

    def rank(self, node, value, wanted):
        s = self.shape(value)
        if s is None or len(s) not in wanted:
            self.fail(node, f"'{node.target}' on a tensor of shape {s} (rank "
                            f"{' or '.join(map(str, wanted))} expected)")
        return s

    # -- modules --------------------------------------------------------------------------
    def module(self, node):
        path = node.target
        m = self.model.get_submodule(path)
        kind = layer_export.layer_kind(m)
        if kind is not None:
            return self.dynamic(node, path, m, kind)
        if len(node.args) != 1 or node.kwargs:
            self.fail(node, f"{type(m).__name__} called with extra arguments")
        x = self.tensor_input(node, node.args[0])
        if isinstance(m, _DROPOUTS) or isinstance(m, nn.Identity):
            return self.alias(node, x)
        if isinstance(m, nn.Conv2d):
            self.rank(node, x, (4,))
            if m.padding_mode != "zeros":
                self.fail(node, f"Conv2d with padding_mode '{m.padding_mode}'")
            if isinstance(m.padding, str):
                if m.padding != "valid":
                    self.fail(node, f"Conv2d with padding '{m.padding}'")
                padding = [0, 0]
            else:
                padding = _pair(m.padding)
            tensors = {"weight": self.add_tensor(f"{path}.weight", m.weight)}
            if m.bias is not None:
                tensors["bias"] = self.add_tensor(f"{path}.bias", m.bias)
            return self.emit(node, "conv2d", [x], {"stride": _pair(m.stride),
                                                   "padding": padding,
                                                   "dilation": _pair(m.dilation),
                                                   "groups": int(m.groups)}, tensors)
        if isinstance(m, nn.BatchNorm2d):
            self.rank(node, x, (4,))
            if not m.track_running_stats or m.running_mean is None:
                self.fail(node, "BatchNorm2d without running statistics")
            c = m.num_features
            weight = m.weight if m.weight is not None else torch.ones(c)
            bias = m.bias if m.bias is not None else torch.zeros(c)
            tensors = {"weight": self.add_tensor(f"{path}.weight", weight),
                       "bias": self.add_tensor(f"{path}.bias", bias),
                       "running_mean": self.add_tensor(f"{path}.running_mean", m.running_mean),
                       "running_var": self.add_tensor(f"{path}.running_var", m.running_var)}
            return self.emit(node, "batchnorm2d", [x], {"eps": float(m.eps)}, tensors)
        if type(m) is nn.ReLU:
            return self.emit(node, "relu", [x])
        if type(m) is nn.ReLU6 or (type(m) is nn.Hardtanh and m.min_val == 0.0 and
                                   m.max_val == 6.0):
            return self.emit(node, "relu6", [x])
        if isinstance(m, nn.MaxPool2d):
            self.rank(node, x, (4,))
            if m.ceil_mode or m.return_indices:
                self.fail(node, "MaxPool2d with ceil_mode or return_indices")
            return self.emit(node, "max_pool2d", [x], {
                "kernel_size": _pair(m.kernel_size),
                "stride": _pair(m.stride if m.stride is not None else m.kernel_size),
                "padding": _pair(m.padding), "dilation": _pair(m.dilation)})
        if isinstance(m, nn.AvgPool2d):
            self.rank(node, x, (4,))
            if m.ceil_mode or m.divisor_override is not None:
                self.fail(node, "AvgPool2d with ceil_mode or divisor_override")
            return self.emit(node, "avg_pool2d", [x], {
                "kernel_size": _pair(m.kernel_size),
                "stride": _pair(m.stride if m.stride is not None else m.kernel_size),
                "padding": _pair(m.padding), "count_include_pad": bool(m.count_include_pad)})
        if isinstance(m, nn.AdaptiveAvgPool2d):
            return self.global_pool(node, x, m.output_size, "AdaptiveAvgPool2d")
        if isinstance(m, nn.Flatten):
            return self.flatten(node, x, m.start_dim, m.end_dim)
        if isinstance(m, nn.Linear):
            self.rank(node, x, (2,))
            tensors = {"weight": self.add_tensor(f"{path}.weight", m.weight)}
            if m.bias is not None:
                tensors["bias"] = self.add_tensor(f"{path}.bias", m.bias)
            return self.emit(node, "linear", [x], {}, tensors)
        self.fail(node, f"module {type(m).__name__} ({type(m).__module__}."
                        f"{type(m).__qualname__})")

    def dynamic(self, node, path, m, kind):
        args = list(node.args)
        x = self.tensor_input(node, args[0] if args else None)
        temperature = args[1] if len(args) > 1 else node.kwargs.get("temperature")
        if len(args) > 2 or set(node.kwargs) - {"temperature"}:
            self.fail(node, f"dynamic layer '{path}' called with extra arguments")
        if isinstance(temperature, torch.fx.Node):
            self.fail(node, f"dynamic layer '{path}' with a traced temperature (give the "
                            "model's temperature argument in concrete_args)")
        if temperature is not None and not isinstance(temperature, (int, float)):
            self.fail(node, f"dynamic layer '{path}' with temperature {temperature!r}")
        try:
            meta = layer_export.layer_metadata(m, temperature)
            if temperature is not None:  # given at the call: it wins over the module's own
                meta["temperature"] = layer_format.format_temperature(temperature)
            named = layer_export._layer_tensors(m, kind)
        except ValueError as e:
            raise ExportError(f"dynamic layer '{path}': {e}") from None
        if any(isinstance(sub, nn.modules.batchnorm._BatchNorm)
               for sub in m.attention.modules()):
            raise ExportError(f"dynamic layer '{path}': a batch norm inside the attention is "
                              "not supported by libdynconv")
        tensors = {}
        for name, tensor in named.items():
            slot = _SLOT_OF[name]
            if slot in ("fc1_weight", "fc2_weight") and tensor.dim() == 4:
                tensor = tensor.reshape(tensor.shape[0], tensor.shape[1])  # 1x1 conv
            file_name = f"{path}.{layer_format.DEFAULT_NAMES[slot]}"
            tensors[slot] = self.add_tensor(file_name, tensor)
        t = float(meta["temperature"])
        # The layer readers' keys too, so that dynconv.load_layer(file, prefix=path) reads
        # this layer out of the network file.
        for key, value in meta.items():
            self.metadata[f"{path}.{key}"] = value
        if kind == "linear":
            self.rank(node, x, (2,))
            return self.emit(node, "dynamic_linear", [x], {"temperature": t}, tensors)
        self.rank(node, x, (4,))
        attrs = {key: list(layer_format.parse_pair(meta[key], key,
                                                   layer_format.PAIR_MINIMUM[key]))
                 for key in ("stride", "padding", "dilation")}
        attrs["groups"] = layer_format.parse_groups(meta["groups"])
        attrs["temperature"] = t
        return self.emit(node, "dynamic_conv2d", [x], attrs, tensors)

    # -- shared by modules and functions ---------------------------------------------------
    def global_pool(self, node, x, output_size, what):
        if output_size not in (1, (1, 1), [1, 1]):
            self.fail(node, f"{what} to {output_size!r} (only 1x1 is supported)")
        self.rank(node, x, (4,))
        return self.emit(node, "global_avg_pool2d", [x])

    def flatten(self, node, x, start, end):
        s = self.rank(node, x, (2, 3, 4))
        if start != 1 or end not in (-1, len(s) - 1):
            self.fail(node, f"flatten from dim {start} to {end} (only [N, ...] -> [N, C])")
        return self.emit(node, "flatten", [x])

    # -- functions and methods ------------------------------------------------------------
    def call(self, node):
        t = node.target
        name = t if node.op == "call_method" else getattr(t, "__name__", "")
        args = node.args

        if node.op == "call_function" and t is getattr and len(args) == 2 and \
                args[1] == "shape" and args[0] in self.values:
            self.shape_of[node] = args[0]
            return
        if name == "size" and node.op == "call_method":
            dim = _arg(node, 1, "dim", None)
            if dim == 0 and args[0] in self.values:
                self.batch[node] = args[0]
                return
            self.fail(node, f"size({dim!r}) (only the batch size, size(0), is supported)")
        if node.op == "call_function" and t is operator.getitem and args[0] in self.shape_of:
            if args[1] == 0:
                self.batch[node] = self.shape_of[args[0]]
                return
            self.fail(node, f"shape[{args[1]!r}] (only the batch size, shape[0])")

        if name in ("relu", "relu_") and t in (F.relu, torch.relu, torch.relu_, "relu",
                                               "relu_"):
            return self.emit(node, "relu", [self.tensor_input(node, args[0])])
        if t is F.relu6:
            return self.emit(node, "relu6", [self.tensor_input(node, args[0])])
        if t in (F.hardtanh, F.hardtanh_):
            if (_arg(node, 1, "min_val", -1.0), _arg(node, 2, "max_val", 1.0)) == (0.0, 6.0):
                return self.emit(node, "relu6", [self.tensor_input(node, args[0])])
            self.fail(node, "hardtanh other than relu6")
        if t in (operator.add, operator.iadd, torch.add, "add", "add_"):
            if len(args) != 2 or set(node.kwargs) - {"alpha"} or \
                    node.kwargs.get("alpha", 1) != 1:
                self.fail(node, f"'{_callable_name(t)}' with arguments {args} {node.kwargs}")
            a, b = (self.tensor_input(node, v) for v in args)
            if self.shape(a) != self.shape(b):
                self.fail(node, f"add of shapes {self.shape(a)} and {self.shape(b)} (no "
                                "broadcasting)")
            return self.emit(node, "add", [a, b])
        if t is torch.conv2d:
            x = self.tensor_input(node, args[0])
            self.rank(node, x, (4,))
            weight = _arg(node, 1, "weight", None)
            bias = _arg(node, 2, "bias", None)
            padding = _arg(node, 4, "padding", 0)
            if isinstance(padding, str):
                if padding != "valid":
                    self.fail(node, f"conv2d with padding '{padding}'")
                padding = 0
            tensors = {"weight": self.param_input(node, weight, "weight")}
            if bias is not None:
                tensors["bias"] = self.param_input(node, bias, "bias")
            attrs = {"stride": _pair(_arg(node, 3, "stride", 1)), "padding": _pair(padding),
                     "dilation": _pair(_arg(node, 5, "dilation", 1)),
                     "groups": int(_arg(node, 6, "groups", 1))}
            return self.emit(node, "conv2d", [x], attrs, tensors)
        if t is F.linear:
            x = self.tensor_input(node, args[0])
            self.rank(node, x, (2,))
            tensors = {"weight": self.param_input(node, _arg(node, 1, "weight", None),
                                                  "weight")}
            bias = _arg(node, 2, "bias", None)
            if bias is not None:
                tensors["bias"] = self.param_input(node, bias, "bias")
            return self.emit(node, "linear", [x], {}, tensors)
        if t in (torch.flatten, "flatten"):
            x = self.tensor_input(node, args[0])
            return self.flatten(node, x, _arg(node, 1, "start_dim", 0),
                                _arg(node, 2, "end_dim", -1))
        if t in ("view", "reshape") or t is torch.reshape:
            return self.view(node)
        if t in (F.adaptive_avg_pool2d,):
            x = self.tensor_input(node, args[0])
            size = _arg(node, 1, "output_size", None)
            return self.global_pool(node, x, tuple(size) if isinstance(size, list) else size,
                                    "adaptive_avg_pool2d")
        if t in (torch.mean, "mean"):
            return self.mean(node)
        if t is F.dropout or t is F.dropout2d:
            if _arg(node, 2, "training", True):
                self.fail(node, f"{_callable_name(t)} with training=True (pass "
                                "training=self.training)")
            return self.alias(node, self.tensor_input(node, args[0]))
        if t == "contiguous":
            return self.alias(node, self.tensor_input(node, args[0]))
        if t is torch.cat:
            tensors = _arg(node, 0, "tensors", None)
            dim = _arg(node, 1, "dim", 0)
            if not isinstance(tensors, (list, tuple)) or not tensors:
                self.fail(node, "cat of a non-list")
            inputs = [self.tensor_input(node, v) for v in tensors]
            shapes = [self.shape(v) for v in inputs]
            if any(s is None or len(s) != 4 for s in shapes) or dim not in (1, -3):
                self.fail(node, f"cat along dim {dim} of shapes {shapes} (only channels of "
                                "[N, C, H, W])")
            if len({(s[0], s[2], s[3]) for s in shapes}) != 1:
                self.fail(node, f"cat of shapes {shapes}")
            return self.emit(node, "cat", inputs, {"axis": 1})
        what = (f"method '.{t}()'" if node.op == "call_method" else
                f"operation '{name or t}' ({_callable_name(t)})")
        self.fail(node, what)

    def view(self, node):
        x = self.tensor_input(node, node.args[0])
        sizes = list(node.args[1:])
        if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)):
            sizes = list(sizes[0])
        if "shape" in node.kwargs:
            sizes = list(node.kwargs["shape"])
        s = self.rank(node, x, (2, 3, 4))
        rest = 1
        for v in s[1:]:
            rest *= v
        # [N, -1] or [N, C*H*W] with N the batch size of x: a flatten. A literal batch size
        # would tie the network to the traced batch, so it is refused.
        if len(sizes) == 2 and self.batch.get(sizes[0]) is x and sizes[1] in (-1, rest):
            return self.emit(node, "flatten", [x])
        self.fail(node, f"{node.target}{tuple(sizes)} (only x.{node.target}(x.size(0), -1))")

    def mean(self, node):
        x = self.tensor_input(node, node.args[0])
        dims = _arg(node, 1, "dim", None)
        keepdim = _arg(node, 2, "keepdim", False)
        s = self.rank(node, x, (4,))
        if not isinstance(dims, (list, tuple)) or sorted(d % len(s) for d in dims) != [2, 3] \
                or node.kwargs.keys() - {"dim", "keepdim"}:
            self.fail(node, f"mean over {dims!r} (only the spatial dims (2, 3))")
        if keepdim:
            return self.emit(node, "global_avg_pool2d", [x])
        # x.mean((2, 3)) = flatten(global_avg_pool2d(x)): two ops, the first one under a
        # name no fx node has.
        taken = {n.name for n in self.gm.graph.nodes} | {n["name"] for n in self.nodes}
        pool_name = node.name + "_pool"
        while pool_name in taken:
            pool_name += "_"
        pooled = {"name": pool_name, "op": "global_avg_pool2d",
                  "inputs": [self.values[x]], "attrs": {}, "tensors": {},
                  "module": node.meta.get("dynconv_module", ""),
                  "shape": s[:2] + [1, 1]}
        self.nodes.append(pooled)
        self.nodes.append({"name": node.name, "op": "flatten", "inputs": [pooled["name"]],
                           "attrs": {}, "tensors": {},
                           "module": pooled["module"], "shape": self.shape(node)})
        self.values[node] = node.name

    # -- the whole graph ------------------------------------------------------------------
    def run(self, specialised):
        outputs = None
        input_name = None
        for node in self.gm.graph.nodes:
            if node in self.skipped:
                continue
            if node.op == "placeholder":
                if node in specialised:
                    continue
                input_name = node.name
                self.values[node] = node.name
            elif node.op == "call_module":
                self.module(node)
            elif node.op in ("call_function", "call_method"):
                self.call(node)
            elif node.op == "get_attr":
                # A parameter or buffer read in a forward (nn.Conv2d.forward run inside a
                # subclass that is traced through): usable as the weight of F.conv2d or
                # F.linear only, which check it (param_input).
                self.params[node] = node.target
            elif node.op == "output":
                result = node.args[0]
                result = list(result) if isinstance(result, (list, tuple)) else [result]
                outputs = []
                for r in result:
                    if not isinstance(r, torch.fx.Node) or r not in self.values:
                        self.fail(node, f"output {r!r} that is not a tensor of the network")
                    outputs.append(self.values[r])
        return input_name, outputs


def _specialised(graph, concrete):
    """The placeholders that concrete_args fixed, and the checks torch.fx adds for them
    (operator.eq feeding torch._assert): not part of the network."""
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    fixed, checks = set(), set()
    for node, name in zip(placeholders, concrete):
        if name is None:
            continue
        fixed.add(node)
        for user in node.users:
            if user.target is operator.eq:
                checks.add(user)
                checks.update(u for u in user.users if u.target is torch._assert)
            elif user.target is torch._assert:
                checks.add(user)
    return fixed, checks


def _prune(nodes, outputs):
    """Only the nodes the outputs depend on (a dead branch computes nothing)."""
    by_name = {n["name"]: n for n in nodes}
    live, stack = set(), list(outputs)
    while stack:
        v = stack.pop()
        if v in by_name and v not in live:
            live.add(v)
            stack.extend(by_name[v]["inputs"])
    return [n for n in nodes if n["name"] in live]


def export_network(model, example_input, path, concrete_args=None):
    """Writes the whole network `model` (a torch.nn.Module in eval mode) to `path`: one
    safetensors file holding every tensor (float32) and the graph (docs/file-format.md,
    "Networks"). `example_input` [N, C, H, W] is the one tensor argument of forward; any other
    argument (TArdelean's temperature) must be given in `concrete_args` {name: value}. Returns
    the graph (a dict). Raises ExportError (a ValueError) naming the op and module path of
    anything the format cannot hold; nothing is written then."""
    if not isinstance(model, nn.Module):
        raise ExportError(f"model is a {type(model).__name__}, not a torch.nn.Module")
    training = [name or "(the model)" for name, m in model.named_modules() if m.training]
    if training:
        raise ExportError(f"the model is in training mode ({', '.join(training[:3])}"
                          f"{' ...' if len(training) > 3 else ''}): call model.eval() first "
                          "(batch norm and dropout compute another function in training)")
    if not (isinstance(example_input, torch.Tensor) and example_input.dim() == 4 and
            example_input.is_floating_point()):
        raise ExportError("example_input must be a floating-point tensor [N, C, H, W]")
    concrete_args = dict(concrete_args or {})
    params = [p for p in inspect.signature(model.forward).parameters.values()]
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        raise ExportError("forward(*args, **kwargs) cannot be traced: name its arguments")
    unknown = set(concrete_args) - {p.name for p in params}
    if unknown:
        raise ExportError(f"concrete_args {sorted(unknown)} are not arguments of forward")
    free = [p.name for p in params if p.name not in concrete_args]
    if not free:
        raise ExportError("concrete_args fixes every argument of forward: the tensor input "
                          "must stay free")
    if len(free) != 1:
        raise ExportError(f"forward takes the tensor input and {free[1:] if free else []}: "
                          "give every other argument in concrete_args")

    tracer = _Tracer(model)
    try:
        graph = tracer.trace(model, concrete_args=concrete_args or None)
    except ExportError:
        raise
    except Exception as e:  # torch.fx cannot trace data-dependent control flow and the like
        reason = " ".join(str(e).split())[:300]
        raise ExportError(f"torch.fx cannot trace the model: {type(e).__name__}: "
                          f"{reason}") from None
    gm = torch.fx.GraphModule(tracer.root, graph)
    run_args = [concrete_args[p.name] if p.name in concrete_args else example_input
                for p in params]
    with torch.no_grad():
        ShapeProp(gm).propagate(*run_args)

    fixed, checks = _specialised(graph, [p.name if p.name in concrete_args else None
                                         for p in params])
    mapper = _Mapper(model, gm)
    mapper.skipped = checks
    input_name, outputs = mapper.run(fixed)
    nodes = _prune(mapper.nodes, outputs)
    if not nodes:
        raise ExportError("the network computes nothing (its output is its input)")
    used = {t for n in nodes for t in n["tensors"].values()}
    tensors = {k: v for k, v in mapper.tensors.items() if k in used}
    graph_json = {"schema": network_format.SCHEMA, "version": network_format.VERSION,
                  "inputs": [{"name": input_name, "shape": list(example_input.shape)}],
                  "outputs": outputs, "nodes": nodes}
    dynamic_prefixes = {n["module"] for n in nodes if n["op"].startswith("dynamic_")}
    metadata = {k: v for k, v in mapper.metadata.items()
                if k.rsplit(".", 1)[0] in dynamic_prefixes}
    metadata[network_format.GRAPH_KEY] = network_format.dumps(graph_json)
    # The exporter refuses what the readers refuse: check the graph as they will.
    try:
        network_format.parse_graph(metadata, {k: tuple(v.shape) for k, v in tensors.items()})
    except network_format.GraphError as e:
        raise ExportError(f"internal: the graph does not pass its own checks: {e}") from None
    layer_export.write_safetensors(path, tensors, metadata)
    return graph_json
