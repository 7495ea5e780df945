"""Step cost of ``tralgo.optax.trsgd`` / ``tradam`` against ``optax.sgd`` / ``optax.adam`` under jit.

Parameters shaped like the CIFAR ResNet-18 of ``tralgo.experiments.models`` (float32), random
gradients. Each configuration is one jitted ``update + apply_updates`` that donates its params and
state, compiled before timing. In each round every configuration takes one step, in a shuffled
order, so machine noise hits all of them alike. Prints the median step time of each, the TR/base
ratios side by side, and the optimizer-state bytes per parameter.

    python benchmarks/optax_step_cost.py                 # defaults: 1 XLA thread, 40 rounds
    python benchmarks/optax_step_cost.py --rounds 80 --threads 0   # 0: XLA's default threading
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import time


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1, help="1: single-threaded XLA:CPU; 0: XLA's default")
    return parser.parse_args()


ARGS = parse_args()
if ARGS.threads == 1:  # must be set before jax starts its CPU backend
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from tralgo import optax as tro  # noqa: E402
from tralgo.experiments.models import build_model  # noqa: E402

PAIRS = {  # name: (TR configuration, its base)
    "SGD-momentum": (tro.trsgd(0.1, momentum=0.9, lam=0.2, inner_steps=10), optax.sgd(0.1, momentum=0.9)),
    "Adam": (tro.tradam(1e-3, lam=0.2, inner_steps=10), optax.adam(1e-3)),
}


def resnet18_params(key: jax.Array) -> list[jax.Array]:
    shapes = [tuple(p.shape) for p in build_model("resnet18", num_classes=10).parameters()]
    keys = jax.random.split(key, len(shapes))
    return [jax.random.normal(k, s, jnp.float32) for k, s in zip(keys, shapes)]


def make_step(opt: optax.GradientTransformation):
    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1))


def main() -> None:
    key = jax.random.PRNGKey(0)
    template = resnet18_params(key)
    grads = [1e-2 * g for g in resnet18_params(jax.random.PRNGKey(1))]
    n_params = sum(p.size for p in template)
    runners = {}
    for pair, opts in PAIRS.items():
        for opt, label in zip(opts, ("TR", "base")):
            params = [jnp.copy(p) for p in template]
            state = opt.init(params)
            step = make_step(opt)
            params, state = step(params, state, grads)  # compile and warm up
            jax.block_until_ready(params)
            state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state) if x.ndim > 0)
            runners[(pair, label)] = {"step": step, "carry": (params, state), "times": [], "state_bytes": state_bytes}

    order = list(runners)
    rng = random.Random(0)
    for _ in range(ARGS.rounds):
        rng.shuffle(order)
        for name in order:
            r = runners[name]
            start = time.perf_counter()
            params, state = r["step"](*r["carry"], grads)
            jax.block_until_ready(params)
            r["times"].append(time.perf_counter() - start)
            r["carry"] = (params, state)

    print(f"ResNet-18 parameter shapes: {n_params:,} float32 parameters in {len(template)} arrays; "
          f"jax {jax.__version__}, optax {optax.__version__}, {jax.devices()[0].platform}, "
          f"XLA threads: {'1' if ARGS.threads == 1 else 'default'}, {ARGS.rounds} rounds, median step time")
    print(f"{'base':14s} {'optax base':>12s} {'tralgo TR':>12s} {'TR / base':>10s} "
          f"{'state B/param base':>19s} {'TR':>5s}")
    for pair in PAIRS:
        tr, base = runners[(pair, "TR")], runners[(pair, "base")]
        t_tr, t_base = statistics.median(tr["times"]), statistics.median(base["times"])
        print(f"{pair:14s} {1e3 * t_base:10.2f}ms {1e3 * t_tr:10.2f}ms {t_tr / t_base:9.2f}x "
              f"{base['state_bytes'] / n_params:19.1f} {tr['state_bytes'] / n_params:5.1f}")


if __name__ == "__main__":
    main()
