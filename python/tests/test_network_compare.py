"""bench/network_compare.py's tables on made-up results whose ratios are known: ratios are the
medians of the per-repeat ratios (not ratios of medians), per (batch, threads) subset, and the
dynamic / static rows pair each dynamic model with its static twin."""

import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "bench"))
import network_compare  # noqa: E402


def case(model, batch, threads, lib, torch, scale=1.0):
    return {"model": model, "batch": batch, "threads": threads, "agreement": 0.0,
            "peak_bytes": 1, "lib_ms": [v * scale for v in lib],
            "torch_ms": [v * scale for v in torch],
            "lib_cpu_ms": [v * scale for v in lib], "torch_cpu_ms": [v * scale for v in torch]}


class Tables(unittest.TestCase):
    def test_ratios_are_paired_per_repeat(self):
        # per repeat: torch / lib = 2, 1.5, 3 -> median 2; the ratio of the medians would be 1.5
        lib, torch = [10.0, 20.0, 30.0], [20.0, 30.0, 90.0]
        results = [{"cases": [case("dy_resnet18", 1, 1, lib, torch),
                              case("resnet18", 1, 1, [5.0, 10.0, 10.0], [10.0, 10.0, 30.0]),
                              case("dy_resnet18", 16, 1, lib, torch, 16.0)]}]
        text = network_compare.table(results)
        rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| 1 |")]
        first = next(r for r in rows if r[2] == "dy_resnet18")
        self.assertEqual(first[5], "2.00x")
        self.assertEqual(first[3], "20.0 (10.0 - 30.0)")
        # dynamic / static per repeat: lib 2, 2, 3 -> 2; torch 2, 3, 3 -> 3
        twin = next(r for r in rows if r[2] == "dy_resnet18 / resnet18")
        self.assertEqual(twin[3:5], ["2.00x", "3.00x"])
        # batch 16 has no static twin measured: no dynamic / static row for it
        self.assertFalse([line for line in text.splitlines()
                          if line.startswith("| 16 |") and "/ resnet18" in line])
        self.assertIn("| 16 | 1 | dy_resnet18 | 320.0 (160.0 - 480.0)", text)

    def test_paired(self):
        self.assertEqual(network_compare.paired([4, 9, 1], [2, 3, 1]), 2.0)


if __name__ == "__main__":
    unittest.main()
