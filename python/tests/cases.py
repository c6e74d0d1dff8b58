"""The table of layers the Python tests run (PyTorch module, input shape), and helpers."""

import os
import sys
import tempfile
import unittest
import zlib

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PACKAGE = os.path.join(ROOT, "python")
sys.path.insert(0, PACKAGE)

from reference_modules import DynamicConv2dFC, DynamicConvNet  # noqa: E402

RTOL, ATOL = 1e-4, 1e-5

# name -> (constructor, input shape [N, C_in, H, W])
LAYERS = {
    "basic_3x3": (lambda: DynamicConv2dFC(4, 6, 3, padding=1, temperature=1.0), (2, 4, 7, 7)),
    "groups2": (lambda: DynamicConv2dFC(8, 6, 3, padding=1, groups=2, temperature=2.0),
                (2, 8, 6, 6)),
    "depthwise": (lambda: DynamicConv2dFC(6, 6, 3, padding=1, groups=6, temperature=1.5),
                  (3, 6, 7, 5)),
    "depthwise_multiplier": (lambda: DynamicConvNet(4, 8, 3, padding=1, groups=4, ratio=2,
                                                    temprature=1.0), (2, 4, 6, 6)),
    "stride2": (lambda: DynamicConv2dFC(4, 5, 3, stride=2, padding=1, K=3, temperature=1.0),
                (2, 4, 9, 8)),
    "dilation2": (lambda: DynamicConvNet(4, 4, 3, padding=2, dilation=2, ratio=2,
                                         temprature=0.7), (2, 4, 9, 9)),
    "rect_kernel_stride_1x2": (lambda: DynamicConv2dFC(4, 4, (3, 1), stride=(1, 2),
                                                       padding=(1, 0), temperature=1.0),
                               (2, 4, 6, 7)),
    "no_biases": (lambda: DynamicConv2dFC(4, 6, 3, padding=1, bias=False, fc2_bias=False,
                                          temperature=0.5), (2, 4, 5, 5)),
    "all_biases_linear_attention": (lambda: DynamicConv2dFC(5, 4, 3, padding=1, fc1_bias=True,
                                                            linear=True, temperature=1.0),
                                    (2, 5, 6, 6)),
    "net_biases_pointwise": (lambda: DynamicConvNet(8, 6, 1, net_bias=True, ratio=2,
                                                    temprature=0.5), (2, 8, 5, 5)),
    "rgb_stem_stride2": (lambda: DynamicConv2dFC(3, 8, 3, stride=2, padding=1, K=4,
                                                 temperature=1.0), (2, 3, 12, 12)),
    "groups2_stride2_dilation2": (lambda: DynamicConv2dFC(8, 4, 3, stride=2, padding=2,
                                                          dilation=2, groups=2, K=3,
                                                          temperature=1.0), (2, 8, 11, 10)),
}


def seed(name):
    torch.manual_seed(zlib.crc32(name.encode()))
    np.random.seed(zlib.crc32(name.encode()) & 0x7FFFFFFF)


def make(name):
    """(module, x, y, attention) for a case. The attention's layers are scaled up and every
    sample gets its own channel offsets, so that the kernel mixtures are genuine mixtures and
    differ between samples (checked by assert_nontrivial)."""
    seed(name)
    ctor, shape = LAYERS[name]
    module = ctor().eval()
    with torch.no_grad():
        for p in module.attention.parameters():
            p.mul_(1.5)
    x = torch.randn(*shape) + torch.randn(shape[0], shape[1], 1, 1)
    with torch.no_grad():
        y = module(x)
        pi = module.attention(x)
    return module, x, y, pi


def assert_close(test, got, want, what):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    test.assertEqual(got.shape, want.shape, what)
    bad = ~(np.abs(got - want) <= ATOL + RTOL * np.abs(want))
    test.assertFalse(bad.any(), f"{what}: {int(bad.sum())} of {bad.size} differ, worst "
                                f"{np.abs(got - want).max():.3g}")


def assert_nontrivial(test, y, pi, what):
    """A comparison against a mostly-zero output or a uniform attention could not fail."""
    y = np.asarray(y)
    test.assertGreater(np.count_nonzero(y), y.size // 2, f"{what}: output mostly zero")
    test.assertGreater(float(np.ptp(y)), 1e-3, f"{what}: output constant")
    # The attention must mix kernels (some sample without a dominant kernel) and differ between
    # samples: otherwise the layer degenerates into a static convolution for the test.
    pi = np.asarray(pi)
    test.assertLess(float(pi.max(axis=1).min()), 0.9, f"{what}: every sample uses one kernel")
    test.assertGreater(float(np.abs(pi - pi[0]).max()), 0.05, f"{what}: same attention for all")


class TempDirTest(unittest.TestCase):
    """A test with a temporary directory of its own, removed after it: self.dir, and
    self.path(name) for a file inside it."""

    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = tmp.name

    def path(self, name):
        return os.path.join(self.dir, name)
