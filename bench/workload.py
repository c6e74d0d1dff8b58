"""What every Python script of bench/ shares: the workload file (bench/layers.txt), the
machine's description, the seed, and the PyTorch layers the benchmarks measure libdynconv
against.

The scripts are run as files (/usr/bin/python3 bench/torch_bench.py ...), so Python puts bench/
first on the path and `import workload` finds this module. Only the PyTorch part needs torch,
and it is imported on first use: bench/report.py reads the workload without it.

The workload file: one layer per line, `name in out kernel stride pad groups size` ('#' starts a
comment, blank lines are skipped). It is read by the same rules as the C tools (dcio_workload_parse in tools/io/workload.c, used by
dynconv-bench and `dynconv bench`), which time the libdynconv side of the same file, so
that a file one side accepts the other does not refuse half-way through a run: whitespace is
space, tab, CR, VT or FF; a name of at most 63 bytes; decimal integers (an optional sign);
channels <= 65536, kernel, stride and padding <= 15, size <= 4096, all positive but the padding
(>= 0); groups dividing both channel counts; the kernel fitting the padded input; a line of
at most 510 bytes. The error messages are dynconv-bench's.
"""

import re

# The dynamic layers of the workload: K kernels, attention hidden size in_channels / REDUCTION
# (what dynconv-bench builds).
KERNELS = 4
REDUCTION = 4
# One seed for every script's random weights and inputs.
SEED = 0

_MAX_CHANNELS, _MAX_KERNEL, _MAX_SIZE = 1 << 16, 15, 4096
_NAME_LEN = 64      # dynconv-bench's NAME_LEN: names of at most 63 bytes
_LINE_BUFFER = 512  # dynconv-bench's fgets buffer: longer lines are refused
_FIELDS = ("c_in", "c_out", "k", "stride", "pad", "groups", "size")
_SPACE = re.compile(rb"[ \t\r\v\f]+")   # what sscanf skips (the line has no '\n' left)
_INTEGER = re.compile(rb"[+-]?[0-9]+")  # what %lld takes whole
_MALFORMED = ("expected 'name in out kernel stride pad groups size' with positive sizes "
              f"(channels <= {_MAX_CHANNELS}, kernel/stride/pad <= {_MAX_KERNEL}, size <= "
              f"{_MAX_SIZE}), groups dividing both channel counts and the kernel fitting the "
              "padded input")


class WorkloadError(ValueError):
    """A workload file that cannot be read; the message names the file and the line."""


def parse_layers(data, origin):
    """The layers of the workload text `data` (bytes), in file order: dicts with name, c_in,
    c_out, k, stride, pad, groups, size. `origin` names the file in the messages."""
    layers = []
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the newline ending the last line starts no line of its own
    for lineno, line in enumerate(lines, 1):
        if len(line) >= _LINE_BUFFER - 1:
            raise WorkloadError(f"{origin}:{lineno}: line too long")
        if b"\0" in line:
            raise WorkloadError(f"{origin}:{lineno}: not a text line (contains NUL bytes)")
        fields = _SPACE.split(line.split(b"#", 1)[0].strip(b" \t\r\v\f"))
        if fields == [b""]:
            continue  # blank or comment
        values = [int(f) for f in fields[1:8] if _INTEGER.fullmatch(f)]
        if len(fields) != 8 or len(values) != 7 or len(fields[0]) >= _NAME_LEN:
            raise WorkloadError(f"{origin}:{lineno}: {_MALFORMED}")
        layer = dict(zip(_FIELDS, values))
        c_in, c_out, k, stride, pad, groups, size = values
        if not (0 < c_in <= _MAX_CHANNELS and 0 < c_out <= _MAX_CHANNELS and
                0 < k <= _MAX_KERNEL and 0 < stride <= _MAX_KERNEL and
                0 <= pad <= _MAX_KERNEL and groups > 0 and c_in % groups == 0 and
                c_out % groups == 0 and 0 < size <= _MAX_SIZE and size + 2 * pad >= k):
            raise WorkloadError(f"{origin}:{lineno}: {_MALFORMED}")
        layer["name"] = fields[0].decode("utf-8", errors="replace")
        layers.append(layer)
    if not layers:
        raise WorkloadError(f"{origin} lists no layers")
    return layers


def read_layers(path):
    """The layers of the workload file at `path` (see parse_layers)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise WorkloadError(f"cannot open layer list {path}: {e.strerror or e}") from None
    return parse_layers(data, path)


def output_size(layer):
    """Output height (= width) of a workload layer (square input, dilation 1)."""
    return (layer["size"] + 2 * layer["pad"] - layer["k"]) // layer["stride"] + 1


def cpu_model():
    """The CPU's "model name" from /proc/cpuinfo, or "unknown": the rule of dcio_cpu_detect
    (tools/io/machine.c), whose string dynconv-bench records as cpu_model."""
    try:
        with open("/proc/cpuinfo", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    colon = line.find(":")
                    return line[colon + 1:].lstrip(" \t").rstrip("\n") if colon >= 0 else \
                        "unknown"
    except OSError:
        pass
    return "unknown"


# ------------------------------------------------------------------------------------------
# PyTorch (imported on first use of one of these names)
# ------------------------------------------------------------------------------------------

_TORCH_NAMES = ("BatchAsGroupsDynamicConv2d", "static_conv2d", "dynamic_conv2d",
                "check_against_definition", "seed")


def __getattr__(name):
    if name in _TORCH_NAMES:
        _define_torch_part()
        return globals()[name]
    raise AttributeError(f"module 'workload' has no attribute {name!r}")


def _define_torch_part():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Attention(nn.Module):
        """pool, fc1 (1x1 conv, no bias), ReLU, fc2 (1x1 conv), softmax(z / T): kaijieshi7's
        attention2d layout, which dynconv.torch.convert and dynconv-export recognise."""

        def __init__(self, in_channels, hidden, kernels, temperature):
            super().__init__()
            self.fc1 = nn.Conv2d(in_channels, hidden, 1, bias=False)
            self.fc2 = nn.Conv2d(hidden, kernels, 1, bias=True)
            self.temperature = temperature

        def forward(self, x):
            z = self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))).flatten(1)
            return F.softmax(z / self.temperature, dim=1)

    class BatchAsGroupsDynamicConv2d(nn.Module):
        """The dynamic convolution as the widely used PyTorch re-implementation computes it:
        the attention, the K kernels (and biases) mixed per sample with one torch.mm, then ONE
        grouped F.conv2d over the batch folded into the channels (groups = groups * batch).

        weight [K, C_out, C_in/groups, k, k] starts as randn / fan_in, bias [K, C_out] (None
        with bias=False) as 0.1 * randn; kaiming_() re-draws the kernels as kaijieshi7's model
        does for training. hidden defaults to the workload's C_in / REDUCTION."""

        def __init__(self, c_in, c_out, k, stride=1, pad=0, groups=1, kernels=KERNELS,
                     hidden=None, bias=True, temperature=1.0):
            super().__init__()
            hidden = max(1, c_in // REDUCTION) if hidden is None else hidden
            self.c_in, self.c_out, self.k, self.hidden = c_in, c_out, k, hidden
            self.stride, self.padding, self.dilation, self.groups = stride, pad, 1, groups
            self.kernels = kernels
            self.attention = Attention(c_in, hidden, kernels, temperature)
            fan_in = c_in // groups * k * k
            self.weight = nn.Parameter(torch.randn(kernels, c_out, c_in // groups, k, k) /
                                       fan_in)
            self.bias = nn.Parameter(0.1 * torch.randn(kernels, c_out)) if bias else None

        def kaiming_(self):
            """Kaiming-uniform kernels for ReLU, one kernel at a time (kaijieshi7's init)."""
            with torch.no_grad():
                for i in range(self.kernels):
                    nn.init.kaiming_uniform_(self.weight[i], nonlinearity="relu")
            return self

        def forward(self, x):
            n, _, h, w = x.shape
            pi = self.attention(x)
            weight = torch.mm(pi, self.weight.view(self.kernels, -1))
            weight = weight.view(n * self.c_out, self.c_in // self.groups, self.k, self.k)
            bias = None if self.bias is None else torch.mm(pi, self.bias).view(-1)
            y = F.conv2d(x.reshape(1, -1, h, w), weight, bias, self.stride, self.padding, 1,
                         self.groups * n)
            return y.view(n, self.c_out, y.size(-2), y.size(-1))

    def dynamic_conv2d(layer, **kwargs):
        """The dynamic layer of one workload line (a dict of read_layers)."""
        return BatchAsGroupsDynamicConv2d(layer["c_in"], layer["c_out"], layer["k"],
                                          layer["stride"], layer["pad"], layer["groups"],
                                          **kwargs)

    def static_conv2d(layer):
        """nn.Conv2d (oneDNN) of the shape of one workload line, with bias."""
        return nn.Conv2d(layer["c_in"], layer["c_out"], layer["k"], layer["stride"],
                         layer["pad"], groups=layer["groups"], bias=True)

    def check_against_definition():
        """The batch-as-groups forward must equal the definition, sample by sample, or the
        timings would mean nothing. Returns an error message, or None."""
        m = BatchAsGroupsDynamicConv2d(6, 4, 3, 2, 1, 2).eval()
        with torch.no_grad():
            m.attention.fc2.bias.normal_()  # spread the attention so every kernel matters
            x = torch.randn(3, 6, 9, 9)
            y = m(x)
            pooled = x.mean((2, 3))
            z = F.linear(F.relu(F.linear(pooled, m.attention.fc1.weight.flatten(1))),
                         m.attention.fc2.weight.flatten(1), m.attention.fc2.bias)
            pi = F.softmax(z, dim=1)
            for n in range(x.shape[0]):
                w = (pi[n].view(-1, 1, 1, 1, 1) * m.weight).sum(0)
                b = (pi[n].view(-1, 1) * m.bias).sum(0)
                ref = F.conv2d(x[n:n + 1], w, b, 2, 1, 1, 2)
                if not torch.allclose(y[n:n + 1], ref, rtol=1e-4, atol=1e-5):
                    return "the batch-as-groups forward disagrees with the definition"
        return None

    def seed():
        """Seeds torch's generator with SEED: every run draws the same weights and inputs."""
        torch.manual_seed(SEED)

    globals().update(BatchAsGroupsDynamicConv2d=BatchAsGroupsDynamicConv2d,
                     dynamic_conv2d=dynamic_conv2d, static_conv2d=static_conv2d,
                     check_against_definition=check_against_definition, seed=seed)
