"""bench/report.py's verdicts: a target judged on the whole workload and on each batch size and
thread count apart, with the worst case and the cases below target, on made-up dynconv-bench
results whose ratios are known."""

import json
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import report  # noqa: E402
import workload  # noqa: E402

LAYERS = b"big_3x3 128 128 3 1 1 1 8\nsmall_1x1 8 8 1 1 0 1 4\n"
BATCHES, THREADS = (1, 16), (1, 2)
# dynamic / static is 1.0 everywhere but on small_1x1 at N=16 with 2 threads, where it is 1.5:
# the whole workload's mean (1.5^(1/8) = 1.05) meets the 1.10 target, N=16 alone (1.5^(1/4) =
# 1.107) misses it.
SLOW = ("small_1x1", 16, 2)


def results():
    """(name, wall ms, cpu ms) of every run, with the sgemm reference."""
    out = []
    for name in ("big_3x3", "small_1x1"):
        for b in BATCHES:
            for t in THREADS:
                static = 1.0 + b + t
                dyn = static * (1.5 if (name, b, t) == SLOW else 1.0)
                out.append((f"layer/{name}/b{b}/t{t}/dynamic", dyn, dyn * t))
                out.append((f"layer/{name}/b{b}/t{t}/static", static, static * t))
    for t in THREADS:
        out.append((f"sgemm/64/t{t}", 1.0, 1.0 * t))
    return out


def gbench_json(path):
    benchmarks = [{"name": n + "/process_time/real_time", "run_name": n + "/process_time/real_time",
                   "run_type": "iteration", "real_time": wall, "cpu_time": cpu,
                   "time_unit": "ms"} for n, wall, cpu in results()]
    with open(path, "w") as f:
        json.dump({"context": {}, "benchmarks": benchmarks}, f)


class Verdicts(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.layers_path = os.path.join(self.dir.name, "layers.txt")
        with open(self.layers_path, "wb") as f:
            f.write(LAYERS)
        self.json_path = os.path.join(self.dir.name, "lib.json")
        gbench_json(self.json_path)
        layers = workload.read_layers(self.layers_path)
        _, lib, cpu = report.read_gbench([self.json_path])
        self.rows, self.batches, self.threads = report.build_rows(layers, lib, {}, 64, cpu, {})
        specs = report.target_specs(self.rows, have_torch=False)
        self.self_ratio = next(s for s in specs if "dynamic / static" in s["name"])

    def tearDown(self):
        self.dir.cleanup()

    def test_mean_met_on_the_whole_missed_on_a_subset(self):
        self.assertEqual(len(self.rows), 8)
        by_label = {label: report.judge(self.self_ratio, sub)
                    for label, sub in report.subsets(self.rows, self.batches, self.threads)}
        self.assertEqual(by_label["whole workload"]["verdict"], "met")
        self.assertEqual(by_label["whole workload"]["measured"], "1.05x")
        self.assertEqual(by_label["N=1"]["verdict"], "met")
        self.assertEqual(by_label["N=16"]["verdict"], "missed")
        self.assertEqual(by_label["N=16"]["measured"], "1.11x")
        self.assertEqual(by_label["1 thread"]["verdict"], "met")
        self.assertEqual(by_label["2 threads"]["verdict"], "missed")
        self.assertEqual(by_label["N=16, 2T"]["verdict"], "missed")
        self.assertEqual(by_label["N=16, 1T"]["verdict"], "met")
        for j in by_label.values():
            if j["below"]:
                self.assertIn("small_1x1 N=16 2T", j["worst"])
        self.assertEqual(by_label["whole workload"]["worst"], "1.50x (small_1x1 N=16 2T)")
        self.assertEqual([(r["layer"]["name"], r["batch"], r["threads"])
                          for r, _ in by_label["whole workload"]["below"]], [SLOW])
        self.assertEqual(by_label["whole workload"]["count"], 8)

    def test_every_case_rule(self):
        # A target every case must pass: the one slow case decides, wherever it is included.
        spec = dict(self.self_ratio, goal=1.2, rule="every")
        by_label = {label: report.judge(spec, sub)
                    for label, sub in report.subsets(self.rows, self.batches, self.threads)}
        self.assertEqual(by_label["whole workload"]["measured"], "1.00x to 1.50x")
        self.assertEqual(by_label["whole workload"]["verdict"], "missed")
        self.assertEqual(by_label["N=1"]["measured"], "1.00x")
        self.assertEqual(by_label["N=1"]["verdict"], "met")
        self.assertEqual(by_label["1 thread"]["verdict"], "met")
        self.assertEqual(by_label["N=16, 2T"]["verdict"], "missed")

    def test_report_names_the_cases_below_target(self):
        md = os.path.join(self.dir.name, "report.md")
        r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "report.py"),
                            "--dynconv", self.json_path, "--layers", self.layers_path,
                            "--sgemm", "64", "--md", md], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("missed on N=16: libdynconv dynamic / static", r.stdout)
        with open(md) as f:
            text = f.read()
        self.assertIn("## Targets per batch size and thread count", text)
        self.assertIn("| N=16 | 1.11x | 1.50x (small_1x1 N=16 2T) | 1 of 4 | **missed** |", text)
        self.assertIn("| whole workload | 1.05x | 1.50x (small_1x1 N=16 2T) | 1 of 8 | **met** |",
                      text)
        self.assertIn("Below target: small_1x1 N=16 2T (1.50x).", text)


if __name__ == "__main__":
    unittest.main()
