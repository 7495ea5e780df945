"""Training steps/s of ResNet-18 (the harness's CIFAR-style model, batch 8) with SGD-momentum
against TRSGD (default eager path and ``fused="compiled"``), same init, same synthetic 3x32x32 batch.

Configurations take turns in interleaved repetitions (the order rotates), so machine drift hits all
alike; prints the median steps/s of each and its ratio to SGD.

    python benchmarks/resnet_throughput.py --device cuda            # ~1 min on a GPU
    python benchmarks/resnet_throughput.py --steps 5 --repeats 2    # a CPU smoke run
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import tralgo
from tralgo.experiments.models import build_model

SGD = dict(lr=0.05, momentum=0.9, weight_decay=5e-4)
CONFIGS = {
    "SGD": lambda p: torch.optim.SGD(p, **SGD),
    "SGD fused": lambda p: torch.optim.SGD(p, **SGD, fused=True),
    "TRSGD": lambda p: tralgo.TRSGD(p, **SGD, lam=0.1, inner_steps=10),
    "TRSGD compiled": lambda p: tralgo.TRSGD(p, **SGD, lam=0.1, inner_steps=10, fused="compiled"),
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=100, help="timed steps per configuration and repetition")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=12, help="untimed steps first (the compiled kernel compiles here)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here (torch.cuda.is_available() is False)")
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, 3, 32, 32, generator=g).to(args.device)
    y = torch.randint(0, 10, (args.batch_size,), generator=g).to(args.device)
    runs = {}
    for name, make in CONFIGS.items():
        torch.manual_seed(0)
        model = build_model("resnet18", 10, 3).to(args.device)
        runs[name] = (model, make(model.parameters()))

    def steps(name: str, n: int) -> float:
        model, opt = runs[name]
        sync()
        start = time.perf_counter()
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
        sync()
        return n / (time.perf_counter() - start)

    for name in runs:
        steps(name, args.warmup)
    rates = {name: [] for name in runs}
    names = list(runs)
    for repeat in range(args.repeats):
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            rates[name].append(steps(name, args.steps))
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu, {torch.get_num_threads()} thread(s)"
    print(f"ResNet-18, batch {args.batch_size}, {where}, torch {torch.__version__}: "
          f"median of {args.repeats} x {args.steps} steps")
    sgd = statistics.median(rates["SGD"])
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"{name:<16}{rate:>9.1f} steps/s{rate / sgd:>8.2f}x of SGD")
    compiled = runs["TRSGD compiled"][1]
    if not compiled._compiled_kernel.available:
        print("note: fused='compiled' fell back to the eager path (see the warning above)")


if __name__ == "__main__":
    main()
