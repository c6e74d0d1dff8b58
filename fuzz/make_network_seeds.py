"""Writes the seed inputs of the fuzz_network target (fuzz/corpus/network/seed-*): small
network files exported from plain PyTorch modules, so that the fuzzer starts from valid
containers and graphs of every op. The golden network tests/networks/mixed.safetensors (dynamic
layers) is copied in as a seed too. Run with the system interpreter (torch):
    /usr/bin/python3 fuzz/make_network_seeds.py
"""
import os
import shutil
import sys

import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))
from dynconv.network_export import export_network  # noqa: E402

OUT = os.path.join(ROOT, "fuzz", "corpus", "network")


class Small(nn.Module):
    """conv + BN + ReLU, a max pool, a residual add, an average pool, cat, flatten, linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.avg = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        y = self.pool(y)
        z = nn.functional.relu6(self.conv2(y)) + y
        c = torch.cat([self.avg(z), y], dim=1)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(c, 1), 1))


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    for name, model, shape in (("small", Small(), (1, 3, 8, 8)), ("tiny", Tiny(), (1, 2, 4, 4))):
        model.eval()
        export_network(model, torch.randn(*shape), os.path.join(OUT, f"seed-{name}"))
    shutil.copy(os.path.join(ROOT, "tests", "networks", "mixed.safetensors"),
                os.path.join(OUT, "seed-mixed"))


if __name__ == "__main__":
    main()
