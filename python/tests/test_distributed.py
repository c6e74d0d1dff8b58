"""dynconv.torch under DistributedDataParallel (CPU, gloo): two processes on 127.0.0.1, each on
half of a batch, must get the gradients a single process gets on the whole batch (the loss is
a mean, which DDP's gradient averaging reproduces), and the same parameters after two steps."""

import os
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import torch

import cases

WORKER = os.path.join(cases.HERE, "ddp_worker.py")
TIMEOUT = 120  # seconds for the whole group; a hung rendezvous must not hang the suite


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(rank, world, port, out):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([cases.PACKAGE, cases.HERE]),
               OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, WORKER, str(rank), str(world), str(port), out],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_all(procs):
    """Waits for every process within TIMEOUT; kills the rest on a failure or the timeout.
    Returns [(returncode, stderr)]."""
    deadline = time.monotonic() + TIMEOUT
    results = [None] * len(procs)
    try:
        while any(r is None for r in results):
            for i, p in enumerate(procs):
                if results[i] is None and p.poll() is not None:
                    results[i] = (p.returncode, p.stderr.read())
                    if p.returncode != 0:
                        raise RuntimeError(f"worker {i} failed: {results[i][1][-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers still running after {TIMEOUT} s")
            time.sleep(0.05)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            p.stdout.close()
            p.stderr.close()
    return results


class Distributed(unittest.TestCase):
    def test_two_processes_match_one(self):
        with tempfile.TemporaryDirectory() as tmp:
            single = os.path.join(tmp, "single.pt")
            ranks = [os.path.join(tmp, f"rank{r}.pt") for r in range(2)]
            port = free_port()
            procs = [start(0, 1, 0, single)] + [start(r, 2, port, ranks[r]) for r in range(2)]
            wait_all(procs)
            want = torch.load(single)
            got = [torch.load(path) for path in ranks]
        # 3 layers of 5 tensors: weight, bias, attention.fc1.weight, attention.fc2.weight/bias
        self.assertEqual(len(want["grads"]), 15)
        for r, result in enumerate(got):
            self.assertEqual(sorted(result["grads"]), sorted(want["grads"]))
            for name, g in want["grads"].items():
                self.assertGreater(float(g.abs().max()), 0, name)
                cases.assert_close(self, result["grads"][name], g, f"rank {r} d{name}")
            for name, p in want["params"].items():
                cases.assert_close(self, result["params"][name], p, f"rank {r} {name}, step 2")


if __name__ == "__main__":
    unittest.main()
