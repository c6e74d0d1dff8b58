#!/usr/bin/python3
"""Generate train_golden.c: results of the training building blocks computed by PyTorch
(torch.nn.functional and torch.optim, autograd for the gradients), for test_train_golden.c.

Run with Debian's system interpreter (it has python3-torch and python3-numpy):

    /usr/bin/python3 tests/train/generate_train_golden.py

Deterministic: every case seeds torch from its name, so cases are independent of each other.
Everything is computed in float32, as the C code does.
"""

import os
import zlib

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OUTPUT = os.path.join(HERE, "train_golden.c")


def seed(name):
    torch.manual_seed(zlib.crc32(name.encode()))


def rand(*shape, lo=-1.0, hi=1.0):
    return torch.rand(*shape, dtype=torch.float32) * (hi - lo) + lo


def flit(v):
    """A C float literal that round-trips the float32 value (9 significant digits suffice)."""
    s = "%.9g" % float(v)
    if "." not in s and "e" not in s:
        s += ".0"
    return s + "f"


class Writer:
    def __init__(self):
        self.arrays = []

    def array(self, name, t, ctype="float"):
        values = t.detach().contiguous().view(-1).tolist()
        items = [flit(v) if ctype == "float" else str(int(v)) for v in values]
        lines = [", ".join(items[i:i + 8]) for i in range(0, len(items), 8)]
        body = ",\n    ".join(lines)
        self.arrays.append(f"static const {ctype} {name}[{len(values)}] = {{\n    {body}}};")
        return name


def batchnorm_cases(w):
    cases = []
    for name, (n, c, h, wd), eps, momentum, offset in [
        ("bn_4x3x5x5", (4, 3, 5, 5), 1e-5, 0.1, 0.0),
        ("bn_2x4x3x2_eps", (2, 4, 3, 2), 1e-3, 0.3, 0.0),
        ("bn_1d_8x5", (8, 5, 1, 1), 1e-5, 0.1, 0.0),
        ("bn_offset_mean", (3, 2, 4, 4), 1e-5, 1.0, 50.0),
    ]:
        seed(name)
        x = (rand(n, c, h, wd, lo=-2, hi=2) + offset).requires_grad_()
        gamma = rand(c, lo=0.5, hi=1.5).requires_grad_()
        beta = rand(c, lo=-0.5, hi=0.5).requires_grad_()
        rm0, rv0 = rand(c, lo=-0.2, hi=0.2), rand(c, lo=0.5, hi=1.5)
        dy = rand(n, c, h, wd)
        rm, rv = rm0.clone(), rv0.clone()
        y = F.batch_norm(x, rm, rv, gamma, beta, training=True, momentum=momentum, eps=eps)
        y.backward(dy)
        y_eval = F.batch_norm(x.detach(), rm, rv, gamma.detach(), beta.detach(), training=False,
                              eps=eps)
        p = name + "_"
        cases.append(dict(
            name=name, n=n, c=c, h=h, w=wd, eps=eps, momentum=momentum,
            x=w.array(p + "x", x), gamma=w.array(p + "gamma", gamma),
            beta=w.array(p + "beta", beta), running_mean_in=w.array(p + "rm_in", rm0),
            running_var_in=w.array(p + "rv_in", rv0), dy=w.array(p + "dy", dy),
            y=w.array(p + "y", y), running_mean_out=w.array(p + "rm_out", rm),
            running_var_out=w.array(p + "rv_out", rv), y_eval=w.array(p + "y_eval", y_eval),
            dx=w.array(p + "dx", x.grad), dgamma=w.array(p + "dgamma", gamma.grad),
            dbeta=w.array(p + "dbeta", beta.grad)))
    return cases


def linear_cases(w):
    cases = []
    for name, (n, din, dout) in [("linear_5x7x3", (5, 7, 3)), ("linear_1x16x10", (1, 16, 10)),
                                 ("linear_32x24x6", (32, 24, 6))]:
        seed(name)
        x = rand(n, din).requires_grad_()
        weight = rand(dout, din).requires_grad_()
        bias = rand(dout).requires_grad_()
        dy = rand(n, dout)
        y = F.linear(x, weight, bias)
        y.backward(dy)
        p = name + "_"
        cases.append(dict(name=name, n=n, din=din, dout=dout, x=w.array(p + "x", x),
                          weight=w.array(p + "weight", weight), bias=w.array(p + "bias", bias),
                          dy=w.array(p + "dy", dy), y=w.array(p + "y", y),
                          dx=w.array(p + "dx", x.grad), dweight=w.array(p + "dweight", weight.grad),
                          dbias=w.array(p + "dbias", bias.grad)))
    return cases


def ce_cases(w):
    cases = []
    for name, (n, k), scale in [("ce_6x5", (6, 5), 3.0), ("ce_4x10_large", (4, 10), 80.0),
                                ("ce_1x2", (1, 2), 1.0)]:
        seed(name)
        logits = rand(n, k, lo=-scale, hi=scale).requires_grad_()
        labels = torch.randint(0, k, (n,), dtype=torch.int64)
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        correct = int((logits.argmax(1) == labels).sum())
        p = name + "_"
        cases.append(dict(name=name, n=n, k=k, logits=w.array(p + "logits", logits),
                          labels=w.array(p + "labels", labels, "int32_t"),
                          loss=flit(loss), correct=correct,
                          dlogits=w.array(p + "dlogits", logits.grad)))
    return cases


def maxpool_cases(w):
    cases = []
    for name, (n, c, h, wd), k, s in [("maxpool_2x3x6x7_k2s2", (2, 3, 6, 7), 2, 2),
                                      ("maxpool_1x2x7x7_k3s2", (1, 2, 7, 7), 3, 2),
                                      ("maxpool_2x1x5x6_k3s1", (2, 1, 5, 6), 3, 1)]:
        seed(name)
        x = rand(n, c, h, wd).requires_grad_()
        y, idx = F.max_pool2d(x, k, s, return_indices=True)
        dy = rand(*y.shape)
        y.backward(dy)
        p = name + "_"
        cases.append(dict(name=name, n=n, c=c, h=h, w=wd, k=k, s=s, oh=y.shape[2],
                          ow=y.shape[3], x=w.array(p + "x", x), y=w.array(p + "y", y),
                          argmax=w.array(p + "argmax", idx, "int64_t"),
                          dy=w.array(p + "dy", dy), dx=w.array(p + "dx", x.grad)))
    return cases


def sgd_cases(w):
    cases = []
    steps = 4
    for name, count, lr, momentum, wd in [("sgd_momentum_decay", 10, 0.1, 0.9, 1e-2),
                                          ("sgd_plain", 6, 0.5, 0.0, 0.0),
                                          ("sgd_momentum", 7, 0.05, 0.5, 0.0)]:
        seed(name)
        param = torch.nn.Parameter(rand(count))
        start = param.detach().clone()
        opt = torch.optim.SGD([param], lr=lr, momentum=momentum, weight_decay=wd)
        grads = rand(steps, count)
        trajectory = []
        for i in range(steps):
            opt.zero_grad()
            param.grad = grads[i].clone()
            opt.step()
            trajectory.append(param.detach().clone())
        p = name + "_"
        cases.append(dict(name=name, count=count, lr=lr, momentum=momentum, wd=wd, steps=steps,
                          start=w.array(p + "start", start), grads=w.array(p + "grads", grads),
                          trajectory=w.array(p + "trajectory", torch.stack(trajectory))))
    return cases


def fmt(v):
    return flit(v)


def main():
    w = Writer()
    bn, lin, ce, mp, sgd = (batchnorm_cases(w), linear_cases(w), ce_cases(w), maxpool_cases(w),
                            sgd_cases(w))
    out = ["/* Generated by generate_train_golden.py with PyTorch " + torch.__version__.split("a")[0]
           + ". Do not edit. */", "#include \"train_golden.h\"", ""]
    out += w.arrays
    out.append("")
    out.append("const golden_bn_case golden_bn_cases[] = {")
    for c in bn:
        out.append(f"    {{\"{c['name']}\", {c['n']}, {c['c']}, {c['h']}, {c['w']}, "
                   f"{fmt(c['eps'])}, {fmt(c['momentum'])}, {c['x']}, {c['gamma']}, "
                   f"{c['beta']}, {c['running_mean_in']}, {c['running_var_in']}, {c['dy']}, "
                   f"{c['y']}, {c['running_mean_out']}, {c['running_var_out']}, "
                   f"{c['y_eval']}, {c['dx']}, {c['dgamma']}, {c['dbeta']}}},")
    out.append("};")
    out.append("const size_t golden_bn_case_count = sizeof golden_bn_cases / sizeof *golden_bn_cases;")
    out.append("")
    out.append("const golden_linear_train_case golden_linear_train_cases[] = {")
    for c in lin:
        out.append(f"    {{\"{c['name']}\", {c['n']}, {c['din']}, {c['dout']}, {c['x']}, "
                   f"{c['weight']}, {c['bias']}, {c['dy']}, {c['y']}, {c['dx']}, "
                   f"{c['dweight']}, {c['dbias']}}},")
    out.append("};")
    out.append("const size_t golden_linear_train_case_count = "
               "sizeof golden_linear_train_cases / sizeof *golden_linear_train_cases;")
    out.append("")
    out.append("const golden_ce_case golden_ce_cases[] = {")
    for c in ce:
        out.append(f"    {{\"{c['name']}\", {c['n']}, {c['k']}, {c['logits']}, {c['labels']}, "
                   f"{c['loss']}, {c['dlogits']}, {c['correct']}}},")
    out.append("};")
    out.append("const size_t golden_ce_case_count = sizeof golden_ce_cases / sizeof *golden_ce_cases;")
    out.append("")
    out.append("const golden_maxpool_case golden_maxpool_cases[] = {")
    for c in mp:
        out.append(f"    {{\"{c['name']}\", {c['n']}, {c['c']}, {c['h']}, {c['w']}, {c['k']}, "
                   f"{c['s']}, {c['oh']}, {c['ow']}, {c['x']}, {c['y']}, {c['argmax']}, "
                   f"{c['dy']}, {c['dx']}}},")
    out.append("};")
    out.append("const size_t golden_maxpool_case_count = "
               "sizeof golden_maxpool_cases / sizeof *golden_maxpool_cases;")
    out.append("")
    out.append("const golden_sgd_case golden_sgd_cases[] = {")
    for c in sgd:
        out.append(f"    {{\"{c['name']}\", {c['count']}, {fmt(c['lr'])}, {fmt(c['momentum'])}, "
                   f"{fmt(c['wd'])}, {c['steps']}, {c['start']}, {c['grads']}, "
                   f"{c['trajectory']}}},")
    out.append("};")
    out.append("const size_t golden_sgd_case_count = sizeof golden_sgd_cases / sizeof *golden_sgd_cases;")
    with open(OUTPUT, "w") as f:
        f.write("\n".join(out) + "\n")
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
