"""Steps/s of the trainer's inner loop vs a minimal hand-written PyTorch loop, batch size 8.

Both train the same small CNN (same init) on the same in-memory uint8 images with the same
per-batch work (gather, ``prepare_batch`` normalisation/augmentation, forward, cross-entropy,
backward, optimizer step), in one process, in interleaved repetitions (alternating which goes first) so that machine-load
drift hits both alike. The trainer side is ``Trainer.train_steps``: the real inner loop of
``tralgo train`` (loss/accuracy bookkeeping and the divergence check included), without
evaluation or file I/O. Fashion-MNIST when it is installed, else synthetic images of its shape.

    python benchmarks/train_throughput.py [--steps 400] [--repeats 5] [--optimizer sgd] [--threads 1,2]

``--threads 1,2`` also interleaves thread counts (torch.set_num_threads between repetitions), which
is how the trainer's CPU default of one thread was chosen.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from tralgo.experiments.augment import default_augmentation, prepare_batch
from tralgo.experiments.data import DataError, load_dataset
from tralgo.experiments.models import build_model
from tralgo.experiments.optimizers import build_optimizer
from tralgo.experiments.trainer import Trainer, TrainConfig, synthetic_dataset


def load(subset: int, data_dir: str | None):
    try:
        return load_dataset("fashion-mnist", data_dir), "Fashion-MNIST"
    except DataError:
        return synthetic_dataset(n_train=subset, n_test=100), "synthetic uint8 28x28 (Fashion-MNIST not found)"


class HandWrittenLoop:
    """What a user would write: shuffle, slice, normalise, forward, backward, step."""

    def __init__(self, config: TrainConfig, dataset) -> None:
        images, labels = dataset.train_images[: config.subset], dataset.train_labels[: config.subset]
        self.images, self.labels, self.mean, self.std = images, labels, dataset.mean, dataset.std
        torch.manual_seed(config.seed)
        self.model = build_model(config.model, dataset.num_classes, dataset.in_channels, config.width)
        self.optimizer = build_optimizer(self.model.parameters(), config.optimizer_settings())
        self.augmentation = default_augmentation(config.dataset)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.batch_size = config.batch_size
        self._batches: list[torch.Tensor] = []

    def train_steps(self, n: int) -> None:
        self.model.train()
        for _ in range(n):
            if not self._batches:
                self._batches = list(torch.randperm(len(self.labels), generator=self.generator).split(self.batch_size))
            indices = self._batches.pop(0)
            x = prepare_batch(self.images[indices], self.mean, self.std, self.augmentation, self.generator)
            loss = F.cross_entropy(self.model(x), self.labels[indices])
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()


def steps_per_s(loop, steps: int) -> float:
    start = time.perf_counter()
    loop.train_steps(steps)
    return steps / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=400, help="optimizer steps per timed repetition")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repetitions (median reported)")
    p.add_argument("--optimizer", default="sgd", help="optimizer of both loops (sgd, trsgd, adam, ...)")
    p.add_argument("--subset", type=int, default=10000, help="training images held in memory")
    p.add_argument("--threads", default="1", help="torch threads; a comma list (1,2) compares them")
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST folder (else the standard places)")
    args = p.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    dataset, source = load(args.subset, args.data_dir)
    config = TrainConfig(model="cnn", optimizer=args.optimizer, lr=0.01 if "sgd" in args.optimizer else None,
                         batch_size=8, subset=min(args.subset, len(dataset.train_labels)), seed=0)
    trainer, hand = Trainer(config, dataset), HandWrittenLoop(config.resolved(), dataset)
    loops = {"trainer": trainer, "hand-written": hand}
    for count in threads:  # warm-up: allocator, oneDNN kernel selection per thread count
        torch.set_num_threads(count)
        for loop in loops.values():
            loop.train_steps(50)
    rates = {(name, count): [] for count in threads for name in loops}
    for repeat in range(args.repeats):
        for count in threads:
            torch.set_num_threads(count)
            # Alternate which loop goes first (ABBA...), so that neither always runs in the other's wake.
            order = list(loops.items()) if repeat % 2 == 0 else list(loops.items())[::-1]
            for name, loop in order:
                rates[name, count].append(steps_per_s(loop, args.steps))
    median = {key: statistics.median(values) for key, values in rates.items()}
    print(f"data: {source}; model cnn; optimizer {args.optimizer}; batch size 8; "
          f"{args.repeats} x {args.steps} steps per loop and thread count, interleaved")
    for (name, count), values in rates.items():
        print(f"{name:>13}, {count} thread(s): median {median[name, count]:7.1f} steps/s  "
              f"(runs: {', '.join(f'{v:.1f}' for v in values)})")
    for count in threads:
        print(f"ratio trainer / hand-written, {count} thread(s): "
              f"{median['trainer', count] / median['hand-written', count]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
