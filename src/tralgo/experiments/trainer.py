"""The resumable image-classification trainer behind ``tralgo train``.

Two layers:

* :class:`Trainer` holds the model, optimizer, schedule, data split and RNGs and knows how to
  take a step, run an epoch, evaluate and (de)serialise itself. It does no file I/O, so the
  throughput benchmark measures exactly the inner loop runs use (:meth:`Trainer.train_steps`).
* :func:`run_training` owns a run folder (the contract below) and drives a Trainer epoch by
  epoch, resuming exactly after a kill.

Run folder ``<out>/``:

``config.json``
    every setting (resolved), seed, versions, git commit, hostname, device, world_size.
``metrics.jsonl``
    one line per epoch: epoch (1-based), train_loss, train_acc, test_loss, test_acc,
    [val_loss, val_acc], lr (the epoch's lr), wall_s (cumulative, across resumes), steps_per_s
    (optimizer steps per second of the training phase), step (global optimizer steps).
``checkpoint.pt``
    model, optimizer (with tralgo's anchors and counters), scheduler, every rank's RNG states,
    epoch, step, wall_s; written atomically after each epoch's metrics line.
``checkpoint.prev.pt``
    the checkpoint before, rotated atomically; resumed from when checkpoint.pt is damaged.
``result.json``
    ``{"status": "finished" | "diverged", "epochs_completed", "final", "wall_s"}``.
``lock``
    held (flock) by the one process training in the folder; a second one fails at once.

Distributed runs (``torchrun``) shard one seeded permutation per epoch into equal slices, one per
rank; only rank 0 writes files and every logged number is all-reduced over ranks.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import tralgo
from tralgo.experiments import optimizers as opt_lib
from tralgo.experiments.io import (FolderInUseError, FolderLock, append_jsonl, atomic_torch_save, atomic_write_json,
                                   read_jsonl, remove_stale_temp_files)

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"
PREVIOUS_CHECKPOINT_FILE = "checkpoint.prev.pt"  # the one before: resumed from when checkpoint.pt is damaged
RESULT_FILE = "result.json"
RUN_FILES = (CONFIG_FILE, METRICS_FILE, CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE, RESULT_FILE)
LOCK_FILE = "lock"  # held by the one training process of the folder (FolderLock; + "lock.holder")
# Everything tralgo itself keeps in a run folder (the trainer's files, the lock, tensorboard
# logs, the sweep's and the cluster executor's bookkeeping): --overwrite refuses a folder holding
# anything else, which is not a run folder (e.g. `--out .` in a project).
RUN_FOLDER_ENTRIES = frozenset({*RUN_FILES, LOCK_FILE, LOCK_FILE + ".holder", "tensorboard", "train.log",
                                "sweep.json", "sweep_status.json", "train.pid", "cluster_job.json"})
CHECKPOINT_FORMAT = 1

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_DIVERGED = 3


class RunError(Exception):
    """A user-facing problem with a run folder or the settings; the message is complete."""


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------

# TrainConfig (what a run computes) and RunOptions (where and how it runs) live in config.py,
# the single source of the CLI options, the sweep spec's keys, run identity and runs.csv columns.
from tralgo.experiments.config import RunOptions, TrainConfig, code_version, differences, identity  # noqa: E402


# ---------------------------------------------------------------------------------------------
# Processes and devices
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a (possibly one-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be one of auto, cpu, cuda; got {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but torch.cuda.is_available() is False; use --device cpu")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device_name: str) -> tuple[DistContext, torch.device]:
    """Join the torchrun job described by the environment (WORLD_SIZE > 1), or run alone."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world_size <= 1:
        return DistContext(), device
    import torch.distributed as dist

    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank), device


def shutdown_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _all_reduce_sum(values: Tensor, ctx: DistContext) -> Tensor:
    if ctx.distributed:
        import torch.distributed as dist

        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DataSplit:
    """The in-memory uint8 images a run trains, validates and tests on."""

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    val_images: Tensor | None
    val_labels: Tensor | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    in_channels: int


def split_dataset(dataset, subset: int | None, val_split: int, seed: int, val_from: str = "subset") -> DataSplit:
    """The first ``subset`` training images, minus ``val_split`` of them held out by a permutation
    seeded with ``seed`` (the same hold-out for every optimizer of a comparison); with
    ``val_from="after_subset"`` the validation images are the ``val_split`` that follow the first
    ``subset`` instead, so tuning trains on exactly the images the final runs train on."""
    images, labels = dataset.train_images, dataset.train_labels
    if val_split > 0 and val_from == "after_subset":
        if subset is None or subset + val_split > len(images):
            raise ValueError(f"val_from 'after_subset' needs subset + val_split <= the training set size "
                             f"{len(images)}, got subset {subset} and val_split {val_split}")
        return DataSplit(images[:subset], labels[:subset], dataset.test_images, dataset.test_labels,
                         images[subset:subset + val_split], labels[subset:subset + val_split],
                         tuple(dataset.mean), tuple(dataset.std), dataset.num_classes, dataset.in_channels)
    if subset is not None:
        if subset > len(images):
            raise ValueError(f"subset must be at most the training set size {len(images)}, got {subset}")
        images, labels = images[:subset], labels[:subset]
    if val_split >= len(images):
        raise ValueError(f"val_split must be smaller than the number of training images {len(images)}, got {val_split}")
    val_images = val_labels = None
    if val_split > 0:
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
        held_out, kept = order[:val_split], order[val_split:].sort().values
        val_images, val_labels = images[held_out], labels[held_out]
        images, labels = images[kept], labels[kept]
    return DataSplit(images, labels, dataset.test_images, dataset.test_labels, val_images, val_labels,
                     tuple(dataset.mean), tuple(dataset.std), dataset.num_classes, dataset.in_channels)


# ---------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------

@dataclass
class EpochStats:
    loss_sum: float = 0.0
    correct: int = 0
    count: int = 0
    steps: int = 0
    seconds: float = 0.0
    diverged: bool = False

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.count, 1)

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.count, 1)


StepCallback = Callable[[int, int, float], None]  # (steps done, steps in epoch, running loss)


class Trainer:
    """Model, optimizer, schedule, data and RNGs of one run; no file I/O.

    ``dataset`` (an ``ImageDataset``) may be passed in to skip loading (tests, the benchmark);
    else it is loaded from ``data_dir`` (None: the standard places).
    """

    def __init__(self, config: TrainConfig, dataset=None, *, device: torch.device | str = "cpu",
                 ctx: DistContext = DistContext(), data_dir: str | None = None) -> None:
        from tralgo.experiments.augment import default_augmentation
        from tralgo.experiments.models import build_model

        self.config = config.resolved()
        self.ctx = ctx
        self.device = torch.device(device)
        if dataset is None:
            from tralgo.experiments.data import load_dataset

            dataset = load_dataset(self.config.dataset, data_dir)
        self.data = split_dataset(dataset, self.config.subset, self.config.val_split, self.config.seed,
                                  self.config.val_from)
        self.augmentation = default_augmentation(self.config.dataset) if self.config.augment else None

        torch.manual_seed(self.config.seed)  # identical initial weights on every rank
        self.model = build_model(self.config.model, self.data.num_classes, self.data.in_channels,
                                 self.config.width).to(self.device)
        self.net: nn.Module = self.model
        if ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.optimizer = opt_lib.build_optimizer(self.model.parameters(), self.config.optimizer_settings())
        self.scheduler = opt_lib.build_scheduler(self.optimizer, self.config.schedule, self.config.epochs)

        # Shuffling is identical on all ranks (one permutation, sharded); augmentation and any
        # randomness inside the model (dropout) differ per rank.
        self.shuffle_generator = torch.Generator().manual_seed(self.config.seed)
        self.augment_generator = torch.Generator().manual_seed(self.config.seed + 1_000_003 * (ctx.rank + 1))
        torch.manual_seed(self.config.seed + 7_919 * (ctx.rank + 1))

        self.epoch = 0  # completed epochs
        self.step = 0  # optimizer steps taken
        self.wall_s = 0.0  # training wall time, across resumes
        self._step_stream: Iterator[Tensor] | None = None

    # -- batches -------------------------------------------------------------------------------

    @property
    def steps_per_epoch(self) -> int:
        per_rank = len(self.data.train_labels) // self.ctx.world_size
        return math.ceil(per_rank / (self.config.batch_size * self.config.accumulate))

    def _epoch_step_indices(self) -> list[Tensor]:
        """This rank's training indices of the next epoch, one tensor per optimizer step."""
        n = len(self.data.train_labels)
        order = torch.randperm(n, generator=self.shuffle_generator)
        if self.ctx.distributed:
            per_rank = n // self.ctx.world_size  # equal shards: every rank takes the same steps
            order = order[: per_rank * self.ctx.world_size][self.ctx.rank :: self.ctx.world_size]
        return list(order.split(self.config.batch_size * self.config.accumulate))

    def _inputs(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        from tralgo.experiments.augment import prepare_batch

        images = prepare_batch(self.data.train_images[indices], self.data.mean, self.data.std,
                               self.augmentation, self.augment_generator)
        labels = self.data.train_labels[indices]
        return images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)

    # -- one optimizer step --------------------------------------------------------------------

    def _optimizer_step(self, indices: Tensor) -> tuple[Tensor, Tensor, bool]:
        """Forward/backward over ``indices`` in micro-batches of ``batch_size``, one optimizer
        step. Returns (summed loss, number correct) over the indices as detached tensors, and
        whether the loss was finite on every rank."""
        micro_batches = indices.split(self.config.batch_size)
        total = len(indices)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        for position, micro in enumerate(micro_batches):
            images, labels = self._inputs(micro)
            sync = position == len(micro_batches) - 1 or not self.ctx.distributed
            with (self.net.no_sync() if not sync else contextlib.nullcontext()):
                logits = self.net(images)
                summed = F.cross_entropy(logits, labels, reduction="sum")
                # Scaled so that the accumulated gradient is that of the mean over the step's batch.
                (summed / total).backward()
            loss_sum += summed.detach()
            correct += (logits.detach().argmax(dim=1) == labels).sum()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return loss_sum, correct, self._step_is_finite(loss_sum)

    def _step_is_finite(self, loss_sum: Tensor) -> bool:
        # Every rank must take the same decision, or one would wait for the others forever.
        flag = torch.isfinite(loss_sum).to(torch.float32).reshape(1)
        return bool(_all_reduce_sum(flag, self.ctx).item() == self.ctx.world_size)

    # -- epochs --------------------------------------------------------------------------------

    def train_epoch(self, on_step: StepCallback | None = None) -> EpochStats:
        """One pass over this rank's shard; stops at the first non-finite loss (diverged)."""
        if self.config.restart_inner_each_epoch:
            opt_lib.restart_inner_loop(self.optimizer)
        self.net.train()
        stats = EpochStats()
        loss_total = torch.zeros((), dtype=torch.float64, device=self.device)
        correct_total = torch.zeros((), dtype=torch.long, device=self.device)
        start = time.perf_counter()
        batches = self._epoch_step_indices()
        for done, indices in enumerate(batches, start=1):
            loss_sum, correct, finite = self._optimizer_step(indices)
            loss_total += loss_sum
            correct_total += correct
            stats.count += len(indices)
            stats.steps = done
            if not finite:
                stats.diverged = True
                break
            if on_step is not None:
                on_step(done, len(batches), float(loss_total) / stats.count)
        stats.seconds = time.perf_counter() - start
        totals = _all_reduce_sum(torch.stack([loss_total, correct_total.to(torch.float64),
                                              torch.tensor(float(stats.count), dtype=torch.float64, device=self.device)]),
                                 self.ctx)
        stats.loss_sum, stats.correct, stats.count = float(totals[0]), int(totals[1]), int(totals[2])
        return stats

    def train_steps(self, n: int) -> float:
        """Take ``n`` optimizer steps of the real inner loop, continuing through epochs'
        shuffles, without evaluation, logging or file I/O (for benchmarks). Returns the mean
        training loss over those steps; stops early, returning a non-finite value, if the loss
        stops being finite."""
        self.net.train()
        loss_total, count = torch.zeros((), dtype=torch.float64, device=self.device), 0
        for _ in range(n):
            indices = self._next_stream_indices()
            loss_sum, _, finite = self._optimizer_step(indices)
            loss_total += loss_sum
            count += len(indices)
            if not finite:
                break
        return float(loss_total) / max(count, 1)

    def _next_stream_indices(self) -> Tensor:
        while True:
            if self._step_stream is None:
                self._step_stream = iter(self._epoch_step_indices())
            indices = next(self._step_stream, None)
            if indices is not None:
                return indices
            self._step_stream = None

    @torch.no_grad()
    def evaluate(self, images: Tensor, labels: Tensor) -> tuple[float, float]:
        """(mean loss, accuracy) in eval mode; ranks split the images and all-reduce the sums."""
        from tralgo.experiments.augment import prepare_batch

        self.model.eval()
        mine = torch.arange(self.ctx.rank, len(labels), self.ctx.world_size)
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)
        for chunk in mine.split(self.config.eval_batch_size):
            batch = prepare_batch(images[chunk], self.data.mean, self.data.std, None, None).to(self.device)
            target = labels[chunk].to(self.device)
            logits = self.model(batch)
            sums[0] += F.cross_entropy(logits, target, reduction="sum").double()
            sums[1] += (logits.argmax(dim=1) == target).sum().double()
            sums[2] += len(chunk)
        sums = _all_reduce_sum(sums, self.ctx)
        count = max(float(sums[2]), 1.0)
        return float(sums[0]) / count, float(sums[1]) / count

    def run_epoch(self, on_step: StepCallback | None = None) -> dict[str, Any]:
        """Train one epoch, step the schedule, evaluate; return the epoch's metrics record.

        A diverged epoch returns a record with ``"diverged": True`` and leaves ``self.epoch``
        unchanged (its weights are not worth evaluating)."""
        start = time.perf_counter()
        lr = float(self.optimizer.param_groups[0]["lr"])
        train = self.train_epoch(on_step)
        record: dict[str, Any] = {"epoch": self.epoch + 1, "lr": lr, "step": self.step,
                                  "steps_per_s": train.steps / max(train.seconds, 1e-9)}
        if train.diverged:
            self.wall_s += time.perf_counter() - start
            record.update(train_loss=None, train_acc=train.accuracy, test_loss=None, test_acc=None,
                          wall_s=self.wall_s, diverged=True)
            if self.data.val_images is not None:
                record.update(val_loss=None, val_acc=None)
            return record
        self.scheduler.step()
        self._sync_buffers()
        record.update(train_loss=train.loss, train_acc=train.accuracy)
        if self.evaluates_after(self.epoch + 1):
            if self.data.val_images is not None:
                record["val_loss"], record["val_acc"] = self.evaluate(self.data.val_images, self.data.val_labels)
            record["test_loss"], record["test_acc"] = self.evaluate(self.data.test_images, self.data.test_labels)
        self.epoch += 1
        self.wall_s += time.perf_counter() - start
        record["wall_s"] = self.wall_s
        return record

    def evaluates_after(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (1-based) ends with an evaluation: every ``eval_every`` epochs
        and always the last. Evaluation draws no random numbers, so skipping it changes nothing
        else (resume stays exact)."""
        return epoch == self.config.epochs or epoch % self.config.eval_every == 0

    def _sync_buffers(self) -> None:
        # DDP broadcasts buffers (BatchNorm statistics) at the start of each forward, so after the
        # last one every rank's differ by its own last batch: make rank 0's the truth.
        if self.ctx.distributed:
            import torch.distributed as dist

            for buffer in self.model.buffers():
                dist.broadcast(buffer, src=0)

    # -- checkpoints ---------------------------------------------------------------------------

    def _rng_state(self) -> dict[str, Tensor]:
        state = {"shuffle": self.shuffle_generator.get_state(), "augment": self.augment_generator.get_state(),
                 "torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly; collective in distributed runs (RNG states of
        every rank are gathered), so every rank must call it."""
        rng = [self._rng_state()]
        if self.ctx.distributed:
            import torch.distributed as dist

            rng = [None] * self.ctx.world_size
            dist.all_gather_object(rng, self._rng_state())
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": self.epoch,
            "step": self.step,
            "wall_s": self.wall_s,
            "world_size": self.ctx.world_size,
            "config": identity(self.config),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise RunError(f"checkpoint format {state.get('format')!r} is not {CHECKPOINT_FORMAT}")
        if state["world_size"] != self.ctx.world_size:
            raise RunError(f"the checkpoint was written by {state['world_size']} process(es); resume it with "
                           f"the same number (this job has {self.ctx.world_size})")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        rng = state["rng"][self.ctx.rank]
        self.shuffle_generator.set_state(rng["shuffle"])
        self.augment_generator.set_state(rng["augment"])
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        self.epoch, self.step, self.wall_s = int(state["epoch"]), int(state["step"]), float(state["wall_s"])
        self._step_stream = None


# ---------------------------------------------------------------------------------------------
# Run folders
# ---------------------------------------------------------------------------------------------

def environment_record(device: torch.device, ctx: DistContext) -> dict[str, Any]:
    code = code_version()
    return {
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "tralgo": tralgo.__version__},
        "git_commit": code["git_commit"],
        "git_dirty": code["git_dirty"],
        "hostname": socket.gethostname(),
        "device": str(device),
        "world_size": ctx.world_size,
    }


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path} is unreadable ({e}); use --overwrite to start the run again") from None


def _prepare_folder(out: Path, config: TrainConfig, options: RunOptions) -> str:
    """Decide what to do with ``out``: "fresh", "resume", or "done" (finished/diverged already).
    Raises RunError when the folder holds another run or a finished one without --resume.
    The caller holds the folder's lock."""
    if options.overwrite:  # _decide has refused a folder that is not a run's
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
        return "fresh"
    result = read_json(out / RESULT_FILE)
    has_run = any((out / name).exists() for name in RUN_FILES)
    if not has_run:
        return "fresh"
    saved = read_json(out / CONFIG_FILE)
    if saved is not None:
        check_same_settings(saved, config, out)
    if result is not None:
        if not options.resume:
            raise RunError(f"{out} holds a run that already {result.get('status')}; pass --resume to "
                           "accept it or --overwrite to run it again")
        return "done"
    if not options.resume:
        raise RunError(f"{out} holds an unfinished run; pass --resume to continue it or --overwrite to start again")
    return "resume"


def check_same_settings(saved: dict[str, Any], config: TrainConfig, where: Path) -> None:
    """Raise RunError naming every setting in which ``saved`` differs from ``config``."""
    changed = differences(saved, config)
    if changed:
        raise RunError(f"{where} holds a run with different settings ({'; '.join(changed)}); "
                       "use another --out, or --overwrite to replace it")


def _is_run_entry(name: str) -> bool:
    if name.startswith(".") and name.endswith(".tmp"):  # an atomic write's temporary file
        return any(name.startswith(f".{known}.") for known in RUN_FOLDER_ENTRIES)
    return name in RUN_FOLDER_ENTRIES


def _refuse_foreign_folder(out: Path) -> None:
    """--overwrite deletes files: only in a folder that holds nothing but a run's."""
    try:
        foreign = sorted(entry.name for entry in out.iterdir() if not _is_run_entry(entry.name))
    except FileNotFoundError:
        return
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise RunError(f"{out} is not a run folder (it also holds {shown}); --overwrite only replaces "
                       "a folder holding nothing but a run: pick another --out")


def _read_checkpoint(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(state, None), or (None, why it is unusable); (None, None) when there is no file."""
    if not path.exists():
        return None, None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types on a damaged file; all mean "unreadable"
        # torch's own messages run over many lines and suggest unsafe loading; keep it to one.
        return None, f"not a complete checkpoint: {type(e).__name__}"
    if not isinstance(state, dict) or "epoch" not in state:
        return None, "not a tralgo checkpoint"
    return state, None


def _load_checkpoint(out: Path, log: Callable[[str], None]) -> dict[str, Any] | None:
    """The latest good checkpoint of the run in ``out``: checkpoint.pt, or the one before it
    (checkpoint.prev.pt) when checkpoint.pt is damaged or missing. None when there is none."""
    path, previous = out / CHECKPOINT_FILE, out / PREVIOUS_CHECKPOINT_FILE
    state, problem = _read_checkpoint(path)
    if state is not None:
        return state
    fallback, fallback_problem = _read_checkpoint(previous)
    if fallback is not None:
        if problem is None:
            log(f"{out}: no {CHECKPOINT_FILE} (killed while replacing it); resuming from {previous} "
                f"(epoch {fallback['epoch']})")
        else:
            # Gone, so that the next save does not keep the damaged file as the "previous" one.
            path.unlink()
            log(f"{path} is unreadable ({problem}); deleted it and resuming from the previous checkpoint "
                f"{previous} (epoch {fallback['epoch']})")
        return fallback
    if problem is None and fallback_problem is None:
        return None
    unusable = [f"{p} is unreadable ({why})" for p, why in ((path, problem), (previous, fallback_problem)) if why]
    raise RunError(f"{'; '.join(unusable)}, and there is no earlier good checkpoint; "
                   "use --overwrite to start again")


def _truncate_metrics(path: Path, epochs: int) -> list[dict]:
    """Keep the records of the first ``epochs`` epochs (a crash after the metrics line but
    before the checkpoint leaves one too many); rewrite atomically when something is dropped."""
    from tralgo.experiments.io import atomic_write_text

    if not path.exists():
        return []
    raw = path.read_text(encoding="utf-8")
    records = list(read_jsonl(path))
    kept = [r for r in records if isinstance(r.get("epoch"), int) and r["epoch"] <= epochs and not r.get("diverged")]
    lines = "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in kept)
    if lines != raw:
        atomic_write_text(path, lines)
    return kept


def _format_epoch_line(record: dict[str, Any], epochs: int) -> str:
    def fmt(key: str, spec: str) -> str:
        value = record.get(key)
        return "nan" if value is None else format(value, spec)

    parts = [f"epoch {record['epoch']}/{epochs}", f"train_loss {fmt('train_loss', '.4f')}",
             f"train_acc {fmt('train_acc', '.4f')}"]
    if "val_acc" in record:
        parts.append(f"val_acc {fmt('val_acc', '.4f')}")
    if "test_acc" in record:  # absent on epochs without evaluation (eval_every)
        parts += [f"test_loss {fmt('test_loss', '.4f')}", f"test_acc {fmt('test_acc', '.4f')}"]
    parts += [f"lr {record['lr']:.3g}", f"{record['steps_per_s']:.1f} steps/s", f"wall {record['wall_s']:.1f}s"]
    return "  ".join(parts)


def _require_tensorboard() -> None:
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        raise RunError("--tensorboard needs the 'tensorboard' package (pip install tensorboard); "
                       "run without --tensorboard or install it") from None


def _tensorboard_writer(out: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(out / "tensorboard"))


def run_folder_path(out: str | os.PathLike) -> Path:
    """``--out`` as a path; an empty one is refused (it would mean the current folder)."""
    if not str(out).strip():
        raise RunError("--out must name a run folder, got an empty path (it would mean the current folder; "
                       "pass --out . to use that on purpose)")
    return Path(out)


def run_training(config: TrainConfig, options: RunOptions, *, dataset=None, log: Callable[[str], None] = print) -> int:
    """Train ``config`` in the run folder ``options.out``; return the process exit code
    (0 finished, 3 diverged). Raises RunError/ValueError/DataError for the CLI to report."""
    config = config.resolved()
    out = run_folder_path(options.out)
    if options.tensorboard:
        _require_tensorboard()  # before anything is written
    ctx, device = init_distributed(options.device)
    if device.type == "cpu":
        torch.set_num_threads(options.threads or 1)
    elif options.threads:
        torch.set_num_threads(options.threads)
    lock = FolderLock(out, "training process", LOCK_FILE) if ctx.is_main else None
    try:
        return _train_in_folder(config, options, out, lock, ctx, device, dataset, log)
    finally:
        if lock is not None:
            lock.release()


def _train_in_folder(config: TrainConfig, options: RunOptions, out: Path, lock: FolderLock | None,
                     ctx: DistContext, device: torch.device, dataset, log) -> int:
    # Rank 0 decides and tells the others, so that all ranks act on the same folder state.
    decision = _broadcast_object(_decide(out, config, options, lock, log) if ctx.is_main else None, ctx)
    if isinstance(decision, Exception):
        raise decision
    if decision == "done":
        result = read_json(out / RESULT_FILE) or {}
        status = result.get("status")
        log(f"{out}: already {status} ({result.get('epochs_completed')} epochs); nothing to do")
        return EXIT_DIVERGED if status == "diverged" else EXIT_OK

    trainer = Trainer(config, dataset, device=device, ctx=ctx, data_dir=options.data_dir)
    if decision == "resume":
        state = _resume_state(out, ctx, log)
        if state is not None:
            # config.json may be gone; the checkpoint knows its settings too
            check_same_settings(state["config"], config, out / CHECKPOINT_FILE)
            trainer.load_state_dict(state)
    if ctx.is_main:
        kept = _truncate_metrics(out / METRICS_FILE, trainer.epoch)
        if len(kept) != trainer.epoch:
            raise RunError(f"{out / METRICS_FILE} holds {len(kept)} epochs but the checkpoint {trainer.epoch}; "
                           "use --overwrite to start again")
        run_options = {**dataclasses.asdict(options), "threads": torch.get_num_threads()}
        atomic_write_json(out / CONFIG_FILE, {**dataclasses.asdict(config), **run_options,
                                              **environment_record(device, ctx)})
        if trainer.epoch:
            log(f"{out}: resuming after epoch {trainer.epoch}/{config.epochs}")
    writer = _tensorboard_writer(out) if options.tensorboard and ctx.is_main else None
    show_bar = ctx.is_main and (options.progress if options.progress is not None else _stderr_is_tty())
    try:
        return _epoch_loop(trainer, out, options, writer, show_bar, log)
    finally:
        if writer is not None:
            writer.close()


def _resume_state(out: Path, ctx: DistContext, log) -> dict[str, Any] | None:
    """The checkpoint to resume from: rank 0 picks it (and may delete a damaged one), the other
    ranks read the same file."""
    if ctx.is_main:
        try:
            state = _load_checkpoint(out, log)
        except RunError as e:
            _broadcast_object(e, ctx)
            raise
        _broadcast_object(None if state is None else int(state["epoch"]), ctx)
        return state
    epoch = _broadcast_object(None, ctx)
    if isinstance(epoch, Exception):
        raise epoch
    if epoch is None:
        return None
    for path in (out / CHECKPOINT_FILE, out / PREVIOUS_CHECKPOINT_FILE):
        state, _ = _read_checkpoint(path)
        if state is not None and int(state["epoch"]) == epoch:
            return state
    raise RunError(f"rank {ctx.rank} cannot read the checkpoint of epoch {epoch} that rank 0 resumes from in {out}")


def _decide(out: Path, config: TrainConfig, options: RunOptions, lock: FolderLock, log):
    try:
        if options.overwrite:
            _refuse_foreign_folder(out)  # before the lock leaves its files in a foreign folder
        try:
            lock.acquire()
        except FolderInUseError as e:
            raise RunError(str(e)) from None
        # Only this process writes the run's files now: temporary files are a killed writer's.
        stale = remove_stale_temp_files(out, RUN_FILES)
        if stale:
            log(f"{out}: removed {len(stale)} temporary file(s) left by a killed process "
                f"({', '.join(p.name for p in stale)})")
        return _prepare_folder(out, config, options)
    except RunError as e:
        return e


def _broadcast_object(obj: Any, ctx: DistContext) -> Any:
    if not ctx.distributed:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _stderr_is_tty() -> bool:
    from tralgo.experiments.progress import stream_is_tty

    return stream_is_tty(sys.stderr)


def _epoch_loop(trainer: Trainer, out: Path, options: RunOptions, writer, show_bar: bool, log) -> int:
    from tralgo.experiments.progress import ProgressBar

    config, ctx = trainer.config, trainer.ctx
    epochs_this_process = 0
    while trainer.epoch < config.epochs:
        if options.max_epochs is not None and epochs_this_process >= options.max_epochs:
            return EXIT_OK  # stopped early on request; --resume continues
        bar = ProgressBar(trainer.steps_per_epoch, f"epoch {trainer.epoch + 1}/{config.epochs}") if show_bar else None
        on_step = (lambda done, total, loss: bar.update(done, loss=loss)) if bar is not None else None
        record = trainer.run_epoch(on_step)
        if bar is not None:
            bar.close()
        epochs_this_process += 1
        if record.get("diverged"):
            if ctx.is_main:
                append_jsonl(out / METRICS_FILE, record)
                _write_result(out, "diverged", trainer.epoch, record, trainer.wall_s)
                log(f"epoch {record['epoch']}: training loss is not finite at step {record['step']}: diverged; "
                    f"stopped (result in {out / RESULT_FILE})")
            return EXIT_DIVERGED
        state = trainer.state_dict()  # collective: every rank takes part
        if ctx.is_main:
            append_jsonl(out / METRICS_FILE, record)
            atomic_torch_save(state, out / CHECKPOINT_FILE, previous=out / PREVIOUS_CHECKPOINT_FILE)
            if writer is not None:
                for key, value in record.items():
                    if isinstance(value, (int, float)) and key != "epoch":
                        writer.add_scalar(key, value, record["epoch"])
            log(_format_epoch_line(record, config.epochs))
    if ctx.is_main:
        records = list(read_jsonl(out / METRICS_FILE))
        _write_result(out, "finished", trainer.epoch, records[-1] if records else None, trainer.wall_s)
    return EXIT_OK


def _write_result(out: Path, status: str, epochs_completed: int, final: dict | None, wall_s: float) -> None:
    atomic_write_json(out / RESULT_FILE, {"status": status, "epochs_completed": epochs_completed,
                                          "final": final, "wall_s": wall_s})
    # A run that has ended resumes no more: the fallback checkpoint would only double the disk use.
    (out / PREVIOUS_CHECKPOINT_FILE).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Synthetic data (tests, benchmarks)
# ---------------------------------------------------------------------------------------------

def synthetic_dataset(n_train: int = 256, n_test: int = 128, *, num_classes: int = 10, channels: int = 1,
                      size: int = 28, seed: int = 0, name: str = "fashion-mnist"):
    """A learnable stand-in ``ImageDataset``: uint8 noise plus a bright horizontal band whose
    position encodes the class, shaped like Fashion-MNIST by default."""
    from tralgo.experiments.data import ImageDataset

    generator = torch.Generator().manual_seed(seed)

    def make(n: int) -> tuple[Tensor, Tensor]:
        labels = torch.randint(0, num_classes, (n,), generator=generator)
        images = torch.randint(0, 96, (n, channels, size, size), generator=generator, dtype=torch.uint8)
        band = (labels * (size - 2) // max(num_classes - 1, 1)).tolist()
        for i, row in enumerate(band):
            images[i, :, row : row + 2, :] = 255
        return images, labels

    train_images, train_labels = make(n_train)
    test_images, test_labels = make(n_test)
    return ImageDataset(name, train_images, train_labels, test_images, test_labels, num_classes,
                        (0.5,) * channels, (0.25,) * channels)

