"""Optimizer-step cost of tralgo's TR step against torch's own SGD-momentum and Adam steps.

Parameters shaped like a CIFAR ResNet-18 (11,173,962 parameters in 62 tensors, float32), random
gradients, one thread by default. Every configuration owns its own copy of the parameters; in each
round every configuration takes one step, in a shuffled order, so machine noise hits all of them
alike. Prints the median step time of each configuration, every ratio the targets are stated in,
and the extra optimizer-state bytes per parameter.

    python benchmarks/step_overhead.py                 # defaults: 1 thread, 40 rounds
    python benchmarks/step_overhead.py --rounds 80 --threads 2
    python benchmarks/step_overhead.py --device cuda    # times each step between cuda.synchronize()
"""
from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

import tralgo

IMPLS = {"for-loop": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}
BASES = {
    "SGD-momentum": (torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=1e-4)),
    "Adam": (torch.optim.Adam, dict(lr=1e-3, weight_decay=1e-4)),
}
TR_CLASSES = {"SGD-momentum": tralgo.TRSGD, "Adam": tralgo.TRAdam}


def resnet18_shapes() -> list[torch.Size]:
    """Parameter shapes of the CIFAR ResNet-18 (BasicBlock [2,2,2,2], 3x3 stem, 10 classes)."""
    shapes = [torch.Size([64, 3, 3, 3]), torch.Size([64]), torch.Size([64])]
    in_planes = 64
    for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            s = stride if block == 0 else 1
            shapes += [torch.Size([planes, in_planes, 3, 3]), torch.Size([planes]), torch.Size([planes]),
                       torch.Size([planes, planes, 3, 3]), torch.Size([planes]), torch.Size([planes])]
            if s != 1 or in_planes != planes:
                shapes += [torch.Size([planes, in_planes, 1, 1]), torch.Size([planes]), torch.Size([planes])]
            in_planes = planes
    shapes += [torch.Size([10, 512]), torch.Size([10])]
    return shapes


def make_params(shapes, seed: int, device: str = "cpu") -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    params = []
    for shape in shapes:
        p = torch.randn(shape, generator=g).to(device).requires_grad_(True)
        p.grad = (torch.randn(shape, generator=g) * 1e-2).to(device)
        params.append(p)
    return params


def state_bytes(opt: torch.optim.Optimizer) -> int:
    return sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values()
               if torch.is_tensor(v) and v.dim() > 0)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40, help="timed steps per configuration (after warm-up)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per configuration first")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the parameters live")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available here (torch.cuda.is_available() is False)")
    torch.set_num_threads(args.threads)
    # CUDA steps are asynchronous: each timed step starts and ends with the device idle.
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)

    shapes = resnet18_shapes()
    numel = sum(s.numel() for s in shapes)
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"{args.threads} thread(s)"
    print(f"torch {torch.__version__}, tralgo {tralgo.__version__}, {args.device} ({where}), "
          f"{numel:,} parameters in {len(shapes)} tensors (float32), {args.rounds} rounds")

    configs = {}
    for base_name, (cls, kwargs) in BASES.items():
        for impl_name, impl in IMPLS.items():
            configs[(base_name, impl_name, "torch")] = cls(make_params(shapes, 0, args.device), **kwargs, **impl)
            base = cls(make_params(shapes, 0, args.device), **kwargs, **impl)
            configs[(base_name, impl_name, "tralgo")] = tralgo.TrajectoryRegularized(base, lam=0.1, inner_steps=10)

    compile_s = {}
    for base_name, (cls, kwargs) in BASES.items():
        opt = TR_CLASSES[base_name](make_params(shapes, 0, args.device), **kwargs, lam=0.1, inner_steps=10,
                                    fused="compiled")
        opt.step()  # the base initialises its state eagerly
        sync()
        start = time.perf_counter()
        opt.step()  # torch.compile generates the fused TR kernel
        sync()
        compile_s[base_name] = time.perf_counter() - start
        if not opt._compiled_kernel.available:
            print(f"{base_name}: fused='compiled' unavailable here, skipped")
            continue
        configs[(base_name, "compiled", "tralgo")] = opt

    times = {key: [] for key in configs}
    keys = list(configs)
    rng = random.Random(0)
    for round_index in range(args.warmup + args.rounds):
        rng.shuffle(keys)
        for key in keys:
            sync()
            start = time.perf_counter()
            configs[key].step()
            sync()
            elapsed = time.perf_counter() - start
            if round_index >= args.warmup:
                times[key].append(elapsed)
    median = {key: statistics.median(v) * 1e3 for key, v in times.items()}

    print(f"\n{'base':<14}{'implementation':<16}{'torch ms':>10}{'tralgo ms':>11}{'tralgo/torch':>14}")
    for base_name in BASES:
        for impl_name in IMPLS:
            t, r = median[(base_name, impl_name, "torch")], median[(base_name, impl_name, "tralgo")]
            print(f"{base_name:<14}{impl_name:<16}{t:>10.2f}{r:>11.2f}{r / t:>13.2f}x")
    print()
    for base_name in BASES:
        if (base_name, "compiled", "tralgo") in median:
            print(f"{base_name:<14}{'compiled (TR)':<16}{'':>10}{median[(base_name, 'compiled', 'tralgo')]:>11.2f}"
                  f"{median[(base_name, 'compiled', 'tralgo')] / median[(base_name, 'fused', 'torch')]:>13.2f}x vs torch fused"
                  f"   (one-time compile {compile_s[base_name]:.1f} s)")
    print()
    for base_name in BASES:
        fastest_torch = min(IMPLS, key=lambda i: median[(base_name, i, "torch")])
        tr_impls = [i for i in (*IMPLS, "compiled") if (base_name, i, "tralgo") in median]
        fastest_tr = min(tr_impls, key=lambda i: median[(base_name, i, "tralgo")])
        ratio = median[(base_name, fastest_tr, "tralgo")] / median[(base_name, fastest_torch, "torch")]
        print(f"{base_name}: fastest tralgo ({fastest_tr}) / fastest torch ({fastest_torch}) = {ratio:.2f}x")
    print()
    for base_name in BASES:
        extra = state_bytes(configs[(base_name, "fused", "tralgo")]) - state_bytes(configs[(base_name, "fused", "torch")])
        print(f"{base_name}: extra optimizer state = {extra / numel:.2f} bytes/parameter "
              f"({extra / (numel * 4):.2f} copies of the float32 parameters: the anchor)")


if __name__ == "__main__":
    main()
