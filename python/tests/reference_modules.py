"""PyTorch dynamic convolution modules in the two layouts of the common re-implementations, used
as the oracle of the tests. Their forward is the usual batch-as-groups formulation (one grouped
conv over the whole batch), which is independent of libdynconv's im2col + GEMM path."""

import torch
import torch.nn as nn
import torch.nn.functional as F


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def dynamic_conv_forward(x, attention, weight, bias, stride, padding, dilation, groups):
    """y for x [N, C_in, H, W] given the per-sample attention [N, K]."""
    n, _, h, w = x.shape
    k, c_out = weight.shape[:2]
    agg_w = torch.mm(attention, weight.reshape(k, -1)).reshape(n * c_out, *weight.shape[2:])
    agg_b = torch.mm(attention, bias).reshape(-1) if bias is not None else None
    y = F.conv2d(x.reshape(1, -1, h, w), agg_w, agg_b, stride, padding, dilation, groups * n)
    return y.reshape(n, c_out, y.shape[-2], y.shape[-1])


class Attention2d(nn.Module):
    """The original authors' layout: attention.fc1 / attention.fc2, 1x1 convolutions (or linear
    layers with linear=True), temperature in `temperature`."""

    def __init__(self, in_planes, hidden, k, temperature, fc1_bias=False, fc2_bias=True,
                 linear=False):
        super().__init__()
        layer = nn.Linear if linear else (lambda a, b, bias: nn.Conv2d(a, b, 1, bias=bias))
        self.fc1 = layer(in_planes, hidden, bias=fc1_bias)
        self.fc2 = layer(hidden, k, bias=fc2_bias)
        self.temperature = temperature
        self.linear = linear

    def forward(self, x):
        if self.linear:
            z = self.fc2(F.relu(self.fc1(x.mean((2, 3)))))
        else:
            z = self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))).flatten(1)
        return F.softmax(z / self.temperature, dim=1)


class DynamicConv2dFC(nn.Module):
    """kaijieshi7-style Dynamic_conv2d: weight [K, C_out, C_in/g, kh, kw], bias [K, C_out]."""

    def __init__(self, in_planes, out_planes, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, K=4, hidden=None, temperature=34.0, fc1_bias=False,
                 fc2_bias=True, linear=False):
        super().__init__()
        if hidden is None:
            hidden = K if in_planes == 3 else int(in_planes * 0.25) + 1
        kh, kw = _pair(kernel_size)
        self.stride, self.padding, self.dilation = _pair(stride), _pair(padding), _pair(dilation)
        self.groups = groups
        self.attention = Attention2d(in_planes, hidden, K, temperature, fc1_bias, fc2_bias,
                                     linear)
        self.weight = nn.Parameter(torch.randn(K, out_planes, in_planes // groups, kh, kw) * 0.3)
        self.bias = nn.Parameter(torch.randn(K, out_planes) * 0.3) if bias else None

    def forward(self, x):
        return dynamic_conv_forward(x, self.attention(x), self.weight, self.bias, self.stride,
                                    self.padding, self.dilation, self.groups)


class AttentionNet(nn.Module):
    """The External-Attention collection's layout: attention.net = Sequential(conv 1x1, ReLU,
    conv 1x1), temperature in `temprature` (sic)."""

    def __init__(self, in_planes, ratio, K, temprature, net_bias=False):
        super().__init__()
        hidden = max(in_planes // ratio, 1)
        self.net = nn.Sequential(nn.Conv2d(in_planes, hidden, 1, bias=net_bias), nn.ReLU(),
                                 nn.Conv2d(hidden, K, 1, bias=net_bias))
        self.temprature = temprature

    def forward(self, x):
        z = self.net(F.adaptive_avg_pool2d(x, 1)).flatten(1)
        return F.softmax(z / self.temprature, dim=-1)


class DynamicConvNet(nn.Module):
    """External-Attention-style DynamicConv."""

    def __init__(self, in_planes, out_planes, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, K=4, temprature=30.0, ratio=4, net_bias=False):
        super().__init__()
        kh, kw = _pair(kernel_size)
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.attention = AttentionNet(in_planes, ratio, K, temprature, net_bias)
        self.weight = nn.Parameter(torch.randn(K, out_planes, in_planes // groups, kh, kw) * 0.3)
        self.bias = nn.Parameter(torch.randn(K, out_planes) * 0.3) if bias else None

    def forward(self, x):
        return dynamic_conv_forward(x, self.attention(x), self.weight, self.bias,
                                    _pair(self.stride), _pair(self.padding),
                                    _pair(self.dilation), self.groups)


class TwoLayerNet(nn.Module):
    """A model with two dynamic layers, to exercise prefixes and per-layer metadata."""

    def __init__(self):
        super().__init__()
        self.stem = DynamicConv2dFC(3, 8, 3, stride=2, padding=1, K=3, temperature=5.0)
        self.block = nn.Sequential(nn.ReLU(),
                                   DynamicConvNet(8, 8, 3, padding=2, dilation=2, groups=2,
                                                  temprature=2.0))

    def forward(self, x):
        return self.block(self.stem(x))


class ScoresAttention(nn.Module):
    """TArdelean/DynamicConvolution's attention layout: attention.to_scores = Sequential(Linear,
    ReLU, Linear), both with biases; the temperature is an argument of forward."""

    def __init__(self, channels, hidden, k):
        super().__init__()
        self.to_scores = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(),
                                       nn.Linear(hidden, k))

    def forward(self, x, temperature=1.0):
        return F.softmax(self.to_scores(x.mean((2, 3))) / temperature, dim=-1)


class KernelsDynamicConv(nn.Module):
    """TArdelean-style DynamicConvolution: kernels_weights [K, C_out, C_in/g, kh, kw],
    kernels_bias [K, C_out], stride/padding/dilation in conv_args, hidden = max(1, C_in //
    reduce), forward(x, temperature)."""

    def __init__(self, k, reduce, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True):
        super().__init__()
        kh, kw = _pair(kernel_size)
        self.groups = groups
        self.conv_args = {"stride": stride, "padding": padding, "dilation": dilation}
        self.attention = ScoresAttention(in_channels, max(1, in_channels // reduce), k)
        self.kernels_weights = nn.Parameter(
            torch.randn(k, out_channels, in_channels // groups, kh, kw) * 0.3)
        if bias:
            self.kernels_bias = nn.Parameter(torch.randn(k, out_channels) * 0.3)
        else:
            self.register_parameter("kernels_bias", None)

    def forward(self, x, temperature=1.0):
        args = self.conv_args
        return dynamic_conv_forward(x, self.attention(x, temperature), self.kernels_weights,
                                    self.kernels_bias, _pair(args["stride"]),
                                    _pair(args["padding"]), _pair(args["dilation"]), self.groups)


class LinearAttention(nn.Module):
    """The attention of a dynamic linear layer: fc1 / fc2 linear layers on the input itself."""

    def __init__(self, features, hidden, k, temperature, fc1_bias=False, fc2_bias=True):
        super().__init__()
        self.fc1 = nn.Linear(features, hidden, bias=fc1_bias)
        self.fc2 = nn.Linear(hidden, k, bias=fc2_bias)
        self.temperature = temperature

    def forward(self, x):
        return F.softmax(self.fc2(F.relu(self.fc1(x))) / self.temperature, dim=1)


class DynamicLinearRef(nn.Module):
    """Dynamic perceptron: weight [K, D_out, D_in], bias [K, D_out]; y = (sum_k pi_k W_k) x +
    sum_k pi_k b_k, written with einsum (no aggregated-matrix GEMM as in the library)."""

    def __init__(self, in_features, out_features, bias=True, K=4, hidden=None, temperature=1.0,
                 fc1_bias=False, fc2_bias=True):
        super().__init__()
        hidden = hidden or int(in_features * 0.25) + 1
        self.attention = LinearAttention(in_features, hidden, K, temperature, fc1_bias, fc2_bias)
        self.weight = nn.Parameter(torch.randn(K, out_features, in_features) * 0.3)
        self.bias = nn.Parameter(torch.randn(K, out_features) * 0.3) if bias else None

    def forward(self, x):
        pi = self.attention(x)
        y = torch.einsum("nk,koi,ni->no", pi, self.weight, x)
        if self.bias is not None:
            y = y + pi @ self.bias
        return y
