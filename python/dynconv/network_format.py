"""The network section of the file (docs/file-format.md, "Networks"): the graph schema that the
exporter (dynconv.export.export_network) writes and the readers (dynconv.network_ref, and the C
library's dynconv_network_create_*, src/net/graph.c, which refuses the same files) check,
written once.

A network file is a safetensors file whose `__metadata__` holds the graph as one JSON string
under GRAPH_KEY. This module parses that string and checks it against the tensors of the file:
every rule a reader must enforce before running a single op is here, so that the exporter
refuses what a reader would refuse. Pure Python (no numpy): shapes come in as tuples.
"""

import json
import math

GRAPH_KEY = "dynconv.graph"
SCHEMA = "dynconv.network"
VERSION = 1

# op -> (number of inputs (None: one or more), required attributes, required tensor slots,
# optional tensor slots). The attributes' types are checked by _check_attrs.
OPS = {
    "conv2d": (1, ("stride", "padding", "dilation", "groups"), ("weight",), ("bias",)),
    "dynamic_conv2d": (1, ("stride", "padding", "dilation", "groups", "temperature"),
                       ("weight", "fc1_weight", "fc2_weight"),
                       ("bias", "fc1_bias", "fc2_bias")),
    "linear": (1, (), ("weight",), ("bias",)),
    "dynamic_linear": (1, ("temperature",), ("weight", "fc1_weight", "fc2_weight"),
                       ("bias", "fc1_bias", "fc2_bias")),
    "batchnorm2d": (1, ("eps",), ("weight", "bias", "running_mean", "running_var"), ()),
    "relu": (1, (), (), ()),
    "relu6": (1, (), (), ()),
    "add": (2, (), (), ()),
    "max_pool2d": (1, ("kernel_size", "stride", "padding", "dilation"), (), ()),
    "avg_pool2d": (1, ("kernel_size", "stride", "padding", "count_include_pad"), (), ()),
    "global_avg_pool2d": (1, (), (), ()),
    "flatten": (1, (), (), ()),
    "cat": (None, ("axis",), (), ()),
}
# Pairs [height, width] and the smallest value each may take.
PAIR_ATTRS = {"stride": 1, "padding": 0, "dilation": 1, "kernel_size": 1}
# The node fields: all required, nothing else.
NODE_FIELDS = ("name", "op", "inputs", "attrs", "tensors", "module", "shape")
GRAPH_FIELDS = ("schema", "version", "inputs", "outputs", "nodes")


class GraphError(ValueError):
    """A graph the readers refuse: the message names the node, field and value."""


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _check_pair(where, key, value, minimum):
    if not (isinstance(value, list) and len(value) == 2 and all(_is_int(v) for v in value) and
            all(v >= minimum for v in value)):
        raise GraphError(f"{where}: attribute '{key}' = {value!r} is not [a, b] with integers "
                         f">= {minimum}")


def _check_attrs(where, op, attrs):
    _, required, _, _ = OPS[op]
    if not isinstance(attrs, dict):
        raise GraphError(f"{where}: 'attrs' is not an object")
    missing = [k for k in required if k not in attrs]
    extra = sorted(k for k in attrs if k not in required)
    if missing or extra:
        raise GraphError(f"{where}: op '{op}' takes attributes {list(required)}"
                         + (f"; missing {missing}" if missing else "")
                         + (f"; unknown {extra}" if extra else ""))
    for key, value in attrs.items():
        if key in PAIR_ATTRS:
            _check_pair(where, key, value, PAIR_ATTRS[key])
        elif key == "groups":
            if not _is_int(value) or value < 1:
                raise GraphError(f"{where}: attribute 'groups' = {value!r} is not an integer "
                                 ">= 1")
        elif key in ("temperature", "eps"):
            ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and
                  math.isfinite(value) and value > 0 if key == "temperature" else
                  isinstance(value, (int, float)) and not isinstance(value, bool) and
                  math.isfinite(value) and value >= 0)
            if not ok:
                raise GraphError(f"{where}: attribute '{key}' = {value!r} is not a finite "
                                 f"number {'> 0' if key == 'temperature' else '>= 0'}")
        elif key == "count_include_pad":
            if not isinstance(value, bool):
                raise GraphError(f"{where}: attribute 'count_include_pad' = {value!r} is not "
                                 "true or false")
        elif key == "axis":
            if value != 1:
                raise GraphError(f"{where}: attribute 'axis' = {value!r}: only 1 (channels) "
                                 "is supported")


def _check_pool(where, op, attrs):
    # As PyTorch: padding at most half the kernel, so that no window lies wholly in the
    # padding (a max over padding alone has no value).
    if op in ("max_pool2d", "avg_pool2d"):
        for k, p in zip(attrs["kernel_size"], attrs["padding"]):
            if 2 * p > k:
                raise GraphError(f"{where}: padding {attrs['padding']} is more than half the "
                                 f"kernel {attrs['kernel_size']}")


def _check_tensor_shapes(where, op, attrs, slots, shapes):
    """The shapes of a node's tensors agree with each other (the input's channel count is
    checked when the network runs)."""
    def shape(slot):
        return shapes[slots[slot]] if slot in slots else None

    def expect(slot, wanted):
        got = shape(slot)
        if got is not None and tuple(got) != tuple(wanted):
            raise GraphError(f"{where}: tensor '{slots[slot]}' ({slot}) has shape {list(got)}, "
                             f"expected {list(wanted)}")

    w = shape("weight")
    if op == "conv2d":
        if len(w) != 4:
            raise GraphError(f"{where}: weight '{slots['weight']}' has rank {len(w)}, expected "
                             "4 [C_out, C_in/groups, kh, kw]")
        if w[0] % attrs["groups"]:
            raise GraphError(f"{where}: C_out = {w[0]} is not a multiple of groups = "
                             f"{attrs['groups']}")
        expect("bias", (w[0],))
    elif op == "linear":
        if len(w) != 2:
            raise GraphError(f"{where}: weight '{slots['weight']}' has rank {len(w)}, expected "
                             "2 [D_out, D_in]")
        expect("bias", (w[0],))
    elif op in ("dynamic_conv2d", "dynamic_linear"):
        rank = 5 if op == "dynamic_conv2d" else 3
        if len(w) != rank:
            raise GraphError(f"{where}: weight '{slots['weight']}' has rank {len(w)}, expected "
                             f"{rank}")
        k = w[0]
        fc1, fc2 = shape("fc1_weight"), shape("fc2_weight")
        for slot, s in (("fc1_weight", fc1), ("fc2_weight", fc2)):
            if len(s) != 2:
                raise GraphError(f"{where}: tensor '{slots[slot]}' has shape {list(s)}, "
                                 "expected a matrix [rows, cols]")
        hidden, c_in = fc1
        c_in_w = w[2] * attrs["groups"] if op == "dynamic_conv2d" else w[2]
        if c_in != c_in_w:
            raise GraphError(f"{where}: the attention takes {c_in} inputs, the kernels "
                             f"{c_in_w}")
        if op == "dynamic_conv2d" and w[1] % attrs["groups"]:
            raise GraphError(f"{where}: C_out = {w[1]} is not a multiple of groups = "
                             f"{attrs['groups']}")
        expect("fc2_weight", (k, hidden))
        expect("bias", (k, w[1]))
        expect("fc1_bias", (hidden,))
        expect("fc2_bias", (k,))
    elif op == "batchnorm2d":
        c = shape("running_mean")
        if len(c) != 1:
            raise GraphError(f"{where}: running_mean has shape {list(c)}, expected [C]")
        for slot in ("weight", "bias", "running_var"):
            expect(slot, c)


def parse_graph(metadata, shapes):
    """The graph of a network file, checked, with its nodes in an order that runs (each node
    after the nodes it reads). `metadata` is the file's `__metadata__` (a dict of strings),
    `shapes` {tensor name: shape tuple} of its tensors (all float32). GraphError says what is
    wrong: no graph, another schema or version, a malformed node, an unknown op, a tensor the
    file lacks, an edge to nothing (dangling), a cycle."""
    if GRAPH_KEY not in metadata:
        raise GraphError(f"no network graph: the metadata has no '{GRAPH_KEY}' key (a layer "
                         "file? read it with dynconv.load_layer)")
    try:
        # Strict JSON as the container's header: no NaN/Infinity, no duplicate keys (which
        # JSON readers resolve differently).
        graph = json.loads(metadata[GRAPH_KEY],
                           parse_constant=lambda c: _raise(f"'{c}' is not JSON"),
                           object_pairs_hook=_no_duplicates)
    except ValueError as e:
        raise GraphError(f"'{GRAPH_KEY}' is not valid JSON: {e}") from None
    if not isinstance(graph, dict):
        raise GraphError(f"'{GRAPH_KEY}' is not a JSON object")
    if graph.get("schema") != SCHEMA:
        raise GraphError(f"'{GRAPH_KEY}': schema {graph.get('schema')!r} is not {SCHEMA!r}")
    version = graph.get("version")
    if not _is_int(version) or version != VERSION:
        raise GraphError(f"'{GRAPH_KEY}': schema version {version!r} is not supported (this "
                         f"reader knows version {VERSION})")
    unknown = sorted(k for k in graph if k not in GRAPH_FIELDS)
    if unknown:
        raise GraphError(f"'{GRAPH_KEY}': unknown fields {unknown}")
    inputs, outputs, nodes = graph.get("inputs"), graph.get("outputs"), graph.get("nodes")
    if not (isinstance(inputs, list) and len(inputs) == 1 and isinstance(inputs[0], dict) and
            isinstance(inputs[0].get("name"), str) and inputs[0]["name"] and
            isinstance(inputs[0].get("shape"), list) and len(inputs[0]["shape"]) == 4 and
            all(_is_int(v) and v > 0 for v in inputs[0]["shape"]) and
            sorted(inputs[0]) == ["name", "shape"]):
        raise GraphError("'inputs' must be one input {\"name\": ..., \"shape\": [N, C, H, W]}")
    if not (isinstance(outputs, list) and outputs and all(isinstance(o, str) for o in outputs)):
        raise GraphError("'outputs' must be a non-empty list of value names")
    if not isinstance(nodes, list) or not nodes:
        raise GraphError("'nodes' must be a non-empty list")

    input_name = inputs[0]["name"]
    by_name = {}
    used_tensors = {}
    for i, node in enumerate(nodes):
        where = f"node {i}"
        if not isinstance(node, dict):
            raise GraphError(f"{where} is not an object")
        if sorted(node) != sorted(NODE_FIELDS):
            raise GraphError(f"{where}: fields must be exactly {list(NODE_FIELDS)}, got "
                             f"{sorted(node)}")
        name = node["name"]
        if not isinstance(name, str) or not name:
            raise GraphError(f"{where}: 'name' is not a non-empty string")
        where = f"node '{name}'"
        if name in by_name or name == input_name:
            raise GraphError(f"{where}: the name is used twice")
        op = node["op"]
        if op not in OPS:
            raise GraphError(f"{where}: unknown op {op!r} (known: {', '.join(OPS)})")
        arity, _, required, optional = OPS[op]
        ins = node["inputs"]
        if not (isinstance(ins, list) and all(isinstance(v, str) for v in ins) and
                (len(ins) == arity if arity else len(ins) >= 1)):
            raise GraphError(f"{where}: op '{op}' takes "
                             f"{arity if arity else 'one or more'} input(s), got {ins!r}")
        if not isinstance(node["module"], str):
            raise GraphError(f"{where}: 'module' is not a string")
        if not (isinstance(node["shape"], list) and all(_is_int(v) and v >= 0
                                                        for v in node["shape"])):
            raise GraphError(f"{where}: 'shape' is not a list of integers")
        _check_attrs(where, op, node["attrs"])
        _check_pool(where, op, node["attrs"])
        slots = node["tensors"]
        if not isinstance(slots, dict) or not all(isinstance(v, str) for v in slots.values()):
            raise GraphError(f"{where}: 'tensors' is not an object of tensor names")
        missing = [s for s in required if s not in slots]
        extra = sorted(s for s in slots if s not in required + optional)
        if missing or extra:
            raise GraphError(f"{where}: op '{op}' takes tensors {list(required)} (optional "
                             f"{list(optional)})" + (f"; missing {missing}" if missing else "")
                             + (f"; unknown {extra}" if extra else ""))
        for slot, tensor in slots.items():
            if tensor not in shapes:
                raise GraphError(f"{where}: tensor '{tensor}' ({slot}) is not in the file")
            used_tensors[tensor] = name
        _check_tensor_shapes(where, op, node["attrs"], slots, shapes)
        by_name[name] = node

    # Edges: every input names the graph input or a node; then Kahn's algorithm orders the
    # nodes and finds any cycle (a node that never becomes ready).
    for node in nodes:
        for v in node["inputs"]:
            if v != input_name and v not in by_name:
                raise GraphError(f"node '{node['name']}': input '{v}' is neither the graph "
                                 "input nor a node (dangling edge)")
    for o in outputs:
        if o != input_name and o not in by_name:
            raise GraphError(f"output '{o}' is neither the graph input nor a node "
                             "(dangling edge)")
    waiting = {n["name"]: len({v for v in n["inputs"] if v != input_name}) for n in nodes}
    readers = {}
    for n in nodes:
        for v in {v for v in n["inputs"] if v != input_name}:
            readers.setdefault(v, []).append(n["name"])
    ready = [n["name"] for n in nodes if waiting[n["name"]] == 0]
    order = []
    while ready:
        name = ready.pop(0)
        order.append(by_name[name])
        for r in readers.get(name, ()):
            waiting[r] -= 1
            if waiting[r] == 0:
                ready.append(r)
    if len(order) != len(nodes):
        # Every node left waits for another one left: walking back along such inputs must
        # come round to a node already seen, and that loop is a cycle to name.
        stuck = {n["name"] for n in nodes if waiting[n["name"]] > 0}
        path, seen = [], {}
        name = next(n["name"] for n in nodes if n["name"] in stuck)
        while name not in seen:
            seen[name] = len(path)
            path.append(name)
            name = next(v for v in by_name[name]["inputs"] if v in stuck)
        cycle = path[seen[name]:] + [name]
        shown = cycle if len(cycle) <= 10 else cycle[:9] + ["...", name]
        raise GraphError("the graph has a cycle: " + " <- ".join(
            v if v == "..." else f"'{v}'" for v in shown)
                         + " (each node reads the next)")
    unused = sorted(set(shapes) - set(used_tensors))
    if unused:
        raise GraphError(f"tensor(s) {', '.join(unused[:8])} belong to no node")
    return {"input": inputs[0], "outputs": outputs, "nodes": order}


def _raise(message):
    raise ValueError(message)


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    for k in keys:
        if keys.count(k) > 1:
            raise ValueError(f"duplicate key {k!r}")
    return dict(pairs)


def dumps(graph):
    """The graph as the exporter writes it: compact JSON, keys in a fixed order."""
    return json.dumps(graph, separators=(",", ":"), allow_nan=False)
