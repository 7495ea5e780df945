"""A small plain-JAX CNN on Fashion-MNIST at batch size 8: ``tralgo.optax.tradam`` against
``optax.adam`` (same initial weights, same batch order, same learning rate).

    python examples/jax_fashion_mnist.py --epochs 3

Needs the ``jax`` extra (``pip install "tralgo[jax]"``) and the Fashion-MNIST IDX files, looked
for as ``tralgo train`` looks for them (``--data-dir``, ``$TRALGO_DATA``, ``~/.cache/tralgo``,
``/usr/share/datasets/fashion-mnist``); ``--download`` fetches them.

TRAdam uses the authors' setting (lr 1e-3, ``lambda_w = 1e-4``, i.e. ``lam = 2 * lambda_w / lr =
0.2`` with ``lam_scaling="inverse_lr"``, S = 10) and restarts its inner loop at every epoch, as
the authors' training loop does. One epoch is a single ``lax.scan`` under ``jit``.
"""
from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tralgo import optax as tro
from tralgo.experiments.data import load_dataset


def init_cnn(key: jax.Array) -> dict:
    """conv3x3(1->16) - relu - maxpool2 - conv3x3(16->32) - relu - maxpool2 - dense(1568->10)."""
    k1, k2, k3 = jax.random.split(key, 3)

    def he(k, shape, fan_in):
        return jax.random.normal(k, shape) * jnp.sqrt(2.0 / fan_in)

    return {
        "conv1": {"w": he(k1, (3, 3, 1, 16), 9), "b": jnp.zeros(16)},
        "conv2": {"w": he(k2, (3, 3, 16, 32), 9 * 16), "b": jnp.zeros(32)},
        "dense": {"w": he(k3, (7 * 7 * 32, 10), 7 * 7 * 32), "b": jnp.zeros(10)},
    }


def _conv(x, layer):
    y = jax.lax.conv_general_dilated(x, layer["w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jax.nn.relu(y + layer["b"])


def _pool(x):
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def logits(params: dict, images: jax.Array) -> jax.Array:
    x = _pool(_conv(images, params["conv1"]))
    x = _pool(_conv(x, params["conv2"]))
    return x.reshape(x.shape[0], -1) @ params["dense"]["w"] + params["dense"]["b"]


def loss_fn(params: dict, images: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits(params, images), labels).mean()


def make_step(opt: optax.GradientTransformation):
    # A Python loop over a jitted step: XLA:CPU ran this conv net 6x slower per step inside a
    # lax.scan (jax 0.10.2, measured on this example).
    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, state, images, labels):
        loss, grads = jax.value_and_grad(loss_fn)(params, images, labels)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    return step


@jax.jit
def _eval_chunk(params, images, labels):
    out = logits(params, images)
    return (optax.softmax_cross_entropy_with_integer_labels(out, labels).sum(),
            (out.argmax(-1) == labels).sum())


def evaluate(params, images, labels, chunk: int = 1000) -> tuple[float, float]:
    loss = correct = 0.0
    for start in range(0, len(images), chunk):
        l, c = _eval_chunk(params, images[start:start + chunk], labels[start:start + chunk])
        loss, correct = loss + float(l), correct + float(c)
    return loss / len(images), correct / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--train-size", type=int, default=12000, help="first N training images")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--download", action="store_true")
    args = parser.parse_args()

    data = load_dataset("fashion-mnist", args.data_dir, download=args.download)
    mean, std = data.mean[0], data.std[0]

    def prepare(images):  # uint8 [N, 1, 28, 28] -> normalised float32 [N, 28, 28, 1]
        return ((images.numpy().transpose(0, 2, 3, 1) / 255.0 - mean) / std).astype(np.float32)

    n = min(args.train_size, len(data.train_labels)) // args.batch_size * args.batch_size
    train_x, train_y = prepare(data.train_images[:n]), data.train_labels[:n].numpy().astype(np.int32)
    test_x, test_y = prepare(data.test_images), data.test_labels.numpy().astype(np.int32)
    steps = n // args.batch_size

    optimizers = {
        "optax.adam": (optax.adam(args.lr), False),
        "tralgo.optax.tradam": (tro.tradam(args.lr, lam=0.2, inner_steps=10, lam_scaling="inverse_lr"), True),
    }
    init = init_cnn(jax.random.PRNGKey(args.seed))
    print(f"Fashion-MNIST: {n} training images, batch {args.batch_size} ({steps} steps/epoch), "
          f"{len(test_y)} test images; {sum(x.size for x in jax.tree.leaves(init))} parameters; "
          f"jax {jax.__version__}, optax {optax.__version__}, {jax.devices()[0].platform}")
    results = {}
    for name, (opt, restart) in optimizers.items():
        params = jax.tree.map(jnp.copy, init)  # the step donates its inputs
        state = opt.init(params)
        step = make_step(opt)
        rows = []
        for epoch in range(args.epochs):
            if restart:
                state = tro.restart_inner_loop(state)
            order = np.asarray(jax.random.permutation(jax.random.PRNGKey(1000 + epoch), n))  # same for both
            start = time.perf_counter()
            losses = []
            for i in range(steps):
                rows_i = order[i * args.batch_size:(i + 1) * args.batch_size]
                params, state, loss = step(params, state, train_x[rows_i], train_y[rows_i])
                losses.append(loss)
            train_loss = float(jnp.mean(jnp.stack(losses)))
            seconds = time.perf_counter() - start
            test_loss, test_acc = evaluate(params, test_x, test_y)
            rows.append((train_loss, test_loss, test_acc, seconds))
            print(f"  {name:20s} epoch {epoch + 1}: train loss {train_loss:.4f}  test loss {test_loss:.4f}  "
                  f"test acc {100 * test_acc:.2f}%  ({seconds:.1f} s)", flush=True)
        results[name] = rows

    print(f"\n{'epoch':>5}  " + "  ".join(f"{name:>34s}" for name in results))
    print(f"{'':>5}  " + "  ".join(f"{'train loss / test loss / test acc':>34s}" for _ in results))
    for epoch in range(args.epochs):
        cells = [f"{r[epoch][0]:.4f} / {r[epoch][1]:.4f} / {100 * r[epoch][2]:.2f}%" for r in results.values()]
        print(f"{epoch + 1:>5}  " + "  ".join(f"{c:>34s}" for c in cells))


if __name__ == "__main__":
    main()
