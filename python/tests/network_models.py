"""Small networks in the module structure (and with the tensor names) of the PyTorch
dynamic-convolution models the network exporter meets, for its tests and for
tests/networks/generate_networks.py. Each is width-reduced, so that a round trip takes a
fraction of a second:

  - DyResNet: kaijieshi7-style DY-ResNet (Dynamic_conv2d in the blocks' 3x3 layers and the
    1x1 downsamples, static 7x7 stem, batch norms, `out += identity`, max pool, adaptive
    average pool, torch.flatten, fc);
  - DyMobileNetV2: TArdelean-style (DynamicConvolution layers, forward(x, temperature) passed
    down through a sequential container, ReLU6, depthwise layers, x.view(x.size(0), -1));
  - MixedNet: the rest of the schema in one graph (External-Attention's DynamicConv,
    dynconv.torch's DynamicConv2d and DynamicLinear, cat, average pool, dropout, hardtanh,
    mean over (2, 3)).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from reference_modules import DynamicConv2dFC, DynamicConvNet, DynamicLinearRef, KernelsDynamicConv


def randomize_batchnorms(model, generator, calibrate=None):
    """Affine parameters away from (1, 0) and running statistics away from (0, 1), so that a
    batch norm the exporter dropped or misread changes the logits. With `calibrate` (a
    function running the model on a batch) the statistics are those of that batch, as after
    training: random statistics in a deep random network let the logits barely depend on the
    input, and a test comparing them would check little."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for m in bns:
            c = m.num_features
            if m.affine:
                m.weight.copy_(torch.rand(c, generator=generator) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(c, generator=generator) * 0.1)
            m.running_mean.copy_(torch.randn(c, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=generator) * 0.5 + 0.75)
        if calibrate is not None:
            for m in bns:
                m.reset_running_stats()
                m.momentum = None  # a plain average over the calibration batch
            model.train()
            calibrate(model)
    return model.eval()


class BasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1, downsample=None, temperature=34.0):
        super().__init__()
        self.conv1 = DynamicConv2dFC(inplanes, planes, 3, stride=stride, padding=1, bias=False,
                                     temperature=temperature)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = DynamicConv2dFC(planes, planes, 3, padding=1, bias=False,
                                     temperature=temperature)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class DyResNet(nn.Module):
    def __init__(self, widths=(8, 16, 32, 64), blocks=(1, 1, 1, 1), num_classes=10,
                 temperature=34.0):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = widths[0]
        for i, (planes, n) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            layers = []
            for b in range(n):
                down = None
                if b == 0 and (stride != 1 or inplanes != planes):
                    down = nn.Sequential(DynamicConv2dFC(inplanes, planes, 1, stride=stride,
                                                         bias=False,
                                                         temperature=temperature),
                                         nn.BatchNorm2d(planes))
                layers.append(BasicBlock(inplanes, planes, stride if b == 0 else 1, down,
                                         temperature))
                inplanes = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(inplanes, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class TempModule(nn.Module):
    """A module whose forward takes (x, temperature), as in TArdelean's models."""


class TempDynamicConv(KernelsDynamicConv, TempModule):
    pass


class ConvIgnoringArgs(nn.Conv2d):
    """TArdelean's static baseline layer: an nn.Conv2d whose forward accepts (and ignores) a
    temperature. torch.fx traces through it (it is not a torch.nn class): the network
    exporter then meets F.conv2d on the module's own weight."""

    def forward(self, x, *args, **kwargs):
        return super().forward(x)


class TempSequential(TempModule):
    """Passes the temperature to the children that take one (TempModules); the children
    live in a ModuleList `layers`, so their paths read `conv.layers.3`."""

    def __init__(self, *layers):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x, temperature):
        for m in self.layers:
            x = m(x, temperature) if isinstance(m, TempModule) else m(x)
        return x


def _dyn(inp, oup, kernel, stride=1, padding=0, groups=1):
    return TempDynamicConv(4, 4, inp, oup, kernel, stride, padding, groups=groups, bias=False)


def _static(inp, oup, kernel, stride=1, padding=0, groups=1):
    return ConvIgnoringArgs(inp, oup, kernel, stride, padding, groups=groups, bias=False)


class InvertedResidual(TempModule):
    def __init__(self, inp, oup, stride, expand_ratio, conv=_dyn):
        super().__init__()
        hidden = round(inp * expand_ratio)
        self.identity = stride == 1 and inp == oup
        layers = []
        if expand_ratio != 1:
            layers += [conv(inp, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [conv(hidden, hidden, 3, stride, 1, groups=hidden), nn.BatchNorm2d(hidden),
                   nn.ReLU6(inplace=True), conv(hidden, oup, 1), nn.BatchNorm2d(oup)]
        self.conv = TempSequential(*layers)

    def forward(self, x, temperature):
        if self.identity:
            return x + self.conv(x, temperature)
        return self.conv(x, temperature)


class DyMobileNetV2(nn.Module):
    # t, c, n, s as in MobileNetV2, channels and repeats reduced
    CFGS = ((1, 8, 1, 1), (6, 12, 2, 2), (6, 16, 2, 2), (6, 24, 1, 1))

    def __init__(self, num_classes=10, last=64, dynamic=True):
        """dynamic=False: TArdelean's static baseline (ConvIgnoringArgs everywhere)."""
        super().__init__()
        conv = _dyn if dynamic else _static
        layers = [TempSequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8),
                                 nn.ReLU6(inplace=True))]
        inp = 8
        for t, c, n, s in self.CFGS:
            for i in range(n):
                layers.append(InvertedResidual(inp, c, s if i == 0 else 1, t, conv))
                inp = c
        self.features = TempSequential(*layers)
        self.conv = TempSequential(conv(inp, last, 1), nn.BatchNorm2d(last),
                                   nn.ReLU6(inplace=True))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x, temperature):
        x = self.conv(self.features(x, temperature), temperature)
        x = self.avgpool(x)
        x = x.view(x.size(0), -1)
        return self.classifier(x)


class MixedNet(nn.Module):
    """Every other op of the schema, and the two remaining dynamic layouts."""

    def __init__(self, num_classes=6, library_layers=True):
        """library_layers: dynconv.torch's DynamicConv2d and DynamicLinear (computed by
        libdynconv) in two places; False puts the pure-PyTorch modules of the same layout
        there instead (for golden data, which must not come from the library)."""
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=True)
        self.branch_a = DynamicConvNet(8, 8, 3, padding=2, dilation=2, groups=2,
                                       temprature=3.0, ratio=4, net_bias=True)
        if library_layers:
            import dynconv.torch as dt
            self.branch_b = dt.DynamicConv2d(8, 8, (3, 1), padding=(1, 0), num_kernels=3,
                                             temperature=2.0)
            self.head = dt.DynamicLinear(16, 12, num_kernels=4, temperature=1.5)
        else:
            self.branch_b = DynamicConv2dFC(8, 8, (3, 1), padding=(1, 0), K=3, temperature=2.0)
            self.head = DynamicLinearRef(16, 12, K=4, temperature=1.5)
        self.pool = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.pool2 = nn.AvgPool2d(2)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(12, num_classes)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = torch.cat([self.branch_a(x), F.hardtanh(self.branch_b(x), 0.0, 6.0)], dim=1)
        x = self.pool2(self.pool(x))
        x = self.drop(x.mean((2, 3)))
        return self.fc(F.relu(self.head(x)))
