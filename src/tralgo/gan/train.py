"""pix2pix training with Adam or TRAdam on the generator and the discriminator.

One iteration (batch size 1 by default, as pix2pix): the generator maps the label image A to a
photo; the discriminator step minimises ``0.5 * (BCE(D(A, B), 1) + BCE(D(A, G(A)), 0))``; then the
generator step minimises ``BCE(D(A, G(A)), 1) + lambda_L1 * |G(A) - B|_1`` with D frozen. G and D
each have their own optimizer, so each TRAdam has its own anchors and inner counter. Both
learning rates follow pix2pix's policy: constant for ``iters`` iterations, then linear decay over
``decay_iters`` (a ``LambdaLR`` stepped every iteration on the optimizer itself).

A run folder holds ``config.json``, ``metrics.jsonl`` (one line per ``log_every`` iterations, plus
a validation-L1 line per checkpoint), ``checkpoint.pt`` (G, D, both optimizer states and
schedulers, the RNG state and the partial logging sums: ``--resume`` continues bit for bit),
``samples/iter_*.png`` grids and, when finished, ``result.json``.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import tralgo
from tralgo.experiments.io import (FolderLock, append_jsonl, atomic_torch_save, atomic_write_bytes,
                                   atomic_write_json, atomic_write_text, read_jsonl, remove_stale_temp_files)
from tralgo.gan.data import AlignedFolder, ProceduralScenes, to_image, png_bytes
from tralgo.gan.networks import NLayerDiscriminator, UnetGenerator, init_weights

OPTIMIZERS = ("adam", "tradam")
TR_TARGETS = ("both", "G", "D")
LAM_SCALINGS = ("constant", "inverse_lr")
CONFIG_FILE, METRICS_FILE, CHECKPOINT_FILE, RESULT_FILE = "config.json", "metrics.jsonl", "checkpoint.pt", "result.json"
LOCK_FILE = "lock"  # held by the one training process of the folder (+ "lock.holder")
# Settings that may change on --resume without changing the run's arithmetic.
RUNTIME_FIELDS = ("device", "threads")


@dataclass
class GANConfig:
    """Everything that defines a run (saved as config.json; a resume must match it)."""

    data: str = "procedural"  # "procedural" or the path of a pix2pix aligned folder
    direction: str = "BtoA"  # aligned folders only: which half is the label image
    size: int = 64
    train_images: int = 400  # procedural only
    val_images: int = 100  # procedural only (aligned folders use their whole val split)
    jitter: bool = False  # pix2pix's resize-crop-flip augmentation (aligned folders)
    num_downs: int = 0  # 0: log2(size), i.e. down to 1x1 (8 for unet_256)
    ngf: int = 64
    ndf: int = 64
    n_layers: int = 3
    dropout: bool = True
    optimizer: str = "tradam"  # "adam" | "tradam"
    tr_on: str = "both"  # with tradam: "both", "G" only or "D" only (the other gets Adam)
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lam: float = 0.2  # paper's lambda 0.1 in the authors' convention (lambda_w = 0.1 lr): 2 * 0.1
    lam_scaling: str = "inverse_lr"
    inner_steps: int = 10
    inner_lr_decay: bool = True
    lambda_l1: float = 100.0
    batch_size: int = 1
    iters: int = 1000  # iterations at constant lr
    decay_iters: int = 1000  # then linear decay to 0
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 500
    sample_every: int = 500
    device: str = "cpu"
    threads: int = 1

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def positive_int(name: str, minimum: int = 1) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")

        for name in ("size", "train_images", "val_images", "ngf", "ndf", "n_layers", "inner_steps", "batch_size",
                     "log_every", "checkpoint_every", "sample_every", "threads"):
            positive_int(name)
        for name in ("num_downs", "iters", "decay_iters", "seed"):
            positive_int(name, 0)
        if self.iters + self.decay_iters < 1:
            raise ValueError("iters + decay_iters must be >= 1")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.tr_on not in TR_TARGETS:
            raise ValueError(f"tr_on must be one of {TR_TARGETS}, got {self.tr_on!r}")
        if self.lam_scaling not in LAM_SCALINGS:
            raise ValueError(f"lam_scaling must be one of {LAM_SCALINGS}, got {self.lam_scaling!r}")
        if self.direction not in ("AtoB", "BtoA"):
            raise ValueError(f"direction must be 'AtoB' or 'BtoA', got {self.direction!r}")
        for name in ("lr", "lam", "lambda_l1"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value!r}")
        downs = self.generator_depth()
        if downs < 5 or self.size % (2 ** downs):
            raise ValueError(
                f"size {self.size} with num_downs {downs}: the U-Net needs num_downs >= 5 and size divisible by "
                f"2**num_downs (size 64 -> num_downs 6, 256 -> 8)"
            )

    def generator_depth(self) -> int:
        return self.num_downs or int(round(math.log2(self.size)))

    @property
    def total_iters(self) -> int:
        return self.iters + self.decay_iters

    def arithmetic(self) -> dict:
        """The fields that define the run's numbers (everything but device and threads)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in RUNTIME_FIELDS}


def inner_decay_equivalent_lr(lr: float, inner_steps: int) -> float:
    """The constant lr whose S steps move as far as TRAdam's lr/(k+1), k = 0..S-1: lr * H_S / S
    (0.293 x at S = 10): the control that tells TRAdam's regulariser from its smaller steps."""
    return lr * sum(1.0 / (k + 1) for k in range(inner_steps)) / inner_steps


# -- building blocks -------------------------------------------------------------------------------

def build_networks(config: GANConfig) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(config.seed)
    generator = init_weights(UnetGenerator(3, 3, config.generator_depth(), config.ngf, config.dropout))
    discriminator = init_weights(NLayerDiscriminator(6, config.ndf, config.n_layers))
    return generator, discriminator


def build_optimizer(params, config: GANConfig, use_tr: bool) -> torch.optim.Optimizer:
    betas = (config.beta1, config.beta2)
    if use_tr:
        return tralgo.TRAdam(params, lr=config.lr, betas=betas, lam=config.lam, inner_steps=config.inner_steps,
                             inner_lr_decay=config.inner_lr_decay, lam_scaling=config.lam_scaling)
    return torch.optim.Adam(params, lr=config.lr, betas=betas)


def uses_tr(config: GANConfig) -> dict[str, bool]:
    tr = config.optimizer == "tradam"
    return {"G": tr and config.tr_on in ("both", "G"), "D": tr and config.tr_on in ("both", "D")}


def pix2pix_lr_factor(config: GANConfig) -> Callable[[int], float]:
    """Constant for ``iters`` iterations, then linear decay over ``decay_iters`` (pix2pix's rule)."""
    def factor(it: int) -> float:
        return 1.0 - max(0, it + 1 - config.iters) / float(config.decay_iters + 1)
    return factor


def build_datasets(config: GANConfig):
    if config.data == "procedural":
        return (ProceduralScenes("train", config.train_images, config.size),
                ProceduralScenes("val", config.val_images, config.size))
    train = AlignedFolder(config.data, "train", config.direction, config.size, jitter=config.jitter, seed=config.seed)
    val = AlignedFolder(config.data, "val", config.direction, config.size)
    return train, val


def batch_at(dataset, config: GANConfig, it: int) -> dict:
    """The batch of iteration ``it``: epochs are seeded permutations, so this needs no state."""
    per_epoch = max(1, len(dataset) // config.batch_size)
    epoch, slot = divmod(it, per_epoch)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(config.seed * 1_000_003 + epoch))
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    items = [dataset[int(i)] for i in order[slot * config.batch_size:(slot + 1) * config.batch_size]]
    return {"input": torch.stack([x["input"] for x in items]), "target": torch.stack([x["target"] for x in items])}


def _gan_loss(logits: Tensor, real: bool) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, 1.0 if real else 0.0))


def train_step(G, D, opt_G, opt_D, real_A: Tensor, real_B: Tensor, lambda_l1: float) -> dict[str, float]:
    """One pix2pix iteration: D step on (real, detached fake), then G step with D frozen."""
    fake_B = G(real_A)
    for p in D.parameters():
        p.requires_grad_(True)
    opt_D.zero_grad(set_to_none=True)
    loss_D_fake = _gan_loss(D(torch.cat([real_A, fake_B.detach()], 1)), False)
    loss_D_real = _gan_loss(D(torch.cat([real_A, real_B], 1)), True)
    loss_D = 0.5 * (loss_D_fake + loss_D_real)
    loss_D.backward()
    opt_D.step()
    for p in D.parameters():  # D's weights are constants in G's loss
        p.requires_grad_(False)
    opt_G.zero_grad(set_to_none=True)
    loss_G_GAN = _gan_loss(D(torch.cat([real_A, fake_B], 1)), True)
    loss_G_L1 = F.l1_loss(fake_B, real_B)
    (loss_G_GAN + lambda_l1 * loss_G_L1).backward()
    opt_G.step()
    return {"loss_D": loss_D.item(), "loss_D_real": loss_D_real.item(), "loss_D_fake": loss_D_fake.item(),
            "loss_G_GAN": loss_G_GAN.item(), "loss_G_L1": loss_G_L1.item()}


def pix2pix_test_mode_copy(G: nn.Module) -> nn.Module:
    """A copy of G run as pix2pix runs it at test time: dropout on, BatchNorm on the test batch's
    statistics (train mode). A copy, so the running statistics of the trained G stay untouched."""
    return copy.deepcopy(G).train()


@torch.no_grad()
def generate(G: nn.Module, inputs: Tensor, seed: int) -> Tensor:
    """Test-mode outputs for ``inputs`` one image at a time (batch 1, as pix2pix tests), with the
    dropout noise drawn from ``seed`` so evaluations are reproducible."""
    G_test = pix2pix_test_mode_copy(G)
    device = next(G.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return torch.cat([G_test(x[None].to(device)).cpu() for x in inputs])


def save_sample_grid(path: Path, inputs: Tensor, fakes: Tensor, reals: Tensor) -> None:
    """PNG with one column per example: label image, generated photo, real photo."""
    columns = [np.concatenate([to_image(a), to_image(f), to_image(r)], axis=0) for a, f, r in zip(inputs, fakes, reals)]
    atomic_write_bytes(path, png_bytes(np.concatenate(columns, axis=1)))


def val_tensors(val, count: int | None = None) -> tuple[Tensor, Tensor]:
    n = len(val) if count is None else min(count, len(val))
    items = [val[i] for i in range(n)]
    return torch.stack([x["input"] for x in items]), torch.stack([x["target"] for x in items])


# -- the run folder --------------------------------------------------------------------------------

class RunExistsError(RuntimeError):
    pass


def _prepare_run_dir(run_dir: Path, config: GANConfig, resume: bool) -> None:
    config_path = run_dir / CONFIG_FILE
    if config_path.exists():
        if not resume:
            raise RunExistsError(f"run folder {str(run_dir)!r} already holds a run; pass --resume to continue it")
        saved = json.loads(config_path.read_text())
        saved = {k: v for k, v in saved.items() if k not in RUNTIME_FIELDS}
        if saved != config.arithmetic():
            changed = sorted(k for k in set(saved) | set(config.arithmetic()) if saved.get(k) != config.arithmetic().get(k))
            raise RunExistsError(f"--resume with a different configuration than {str(config_path)!r} (differs in: "
                                 f"{', '.join(changed)})")
    else:
        atomic_write_json(config_path, dataclasses.asdict(config))


def _run_dir_path(run_dir: str | Path) -> Path:
    if not str(run_dir).strip():
        raise ValueError("--run must name a run folder, got an empty path (it would mean the current folder; "
                         "pass --run . to use that on purpose)")
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).exists() and run_dir.is_dir():
        ours = {LOCK_FILE, LOCK_FILE + ".holder"}  # a start killed before it wrote config.json
        foreign = sorted(e.name for e in run_dir.iterdir() if e.name not in ours and not e.name.endswith(".tmp"))
        if foreign:
            raise RunExistsError(f"{str(run_dir)!r} is not a GAN run folder (no {CONFIG_FILE}, but it holds "
                                 f"{', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}): "
                                 "pick a new or empty folder")
    return run_dir


def train(config: GANConfig, run_dir: str | Path, resume: bool = False, log: Callable[[str], None] = print,
          stop_after: int | None = None) -> dict:
    """Train (or resume) the run in ``run_dir``; returns result.json's content.

    ``stop_after`` returns ``{"status": "stopped"}`` at the first checkpoint at or after that many
    iterations, without writing result.json: the state a kill right after a checkpoint leaves.
    One process at a time trains in a folder (a second one fails at once: FolderInUseError).
    """
    run_dir = _run_dir_path(run_dir)
    with FolderLock(run_dir, "GAN training process", LOCK_FILE):
        # Only this process writes the run's files now: temporary files are a killed writer's.
        stale = remove_stale_temp_files(run_dir, (CONFIG_FILE, METRICS_FILE, CHECKPOINT_FILE, RESULT_FILE))
        if stale:
            log(f"{run_dir}: removed {len(stale)} temporary file(s) left by a killed process")
        return _train(config, run_dir, resume, log, stop_after)


def _train(config: GANConfig, run_dir: Path, resume: bool, log: Callable[[str], None],
           stop_after: int | None) -> dict:
    _prepare_run_dir(run_dir, config, resume)
    if (run_dir / RESULT_FILE).exists():
        return json.loads((run_dir / RESULT_FILE).read_text())
    device = torch.device(config.device)
    train_set, val_set = build_datasets(config)
    G, D = build_networks(config)
    G.to(device)
    D.to(device)
    tr = uses_tr(config)
    opt_G, opt_D = build_optimizer(G.parameters(), config, tr["G"]), build_optimizer(D.parameters(), config, tr["D"])
    factor = pix2pix_lr_factor(config)
    sched_G = torch.optim.lr_scheduler.LambdaLR(opt_G, factor)
    sched_D = torch.optim.lr_scheduler.LambdaLR(opt_D, factor)
    sample_inputs, sample_reals = val_tensors(val_set, 6)

    start_it, elapsed, sums, count = 0, 0.0, {}, 0
    checkpoint_path = run_dir / CHECKPOINT_FILE
    if checkpoint_path.exists():
        ckpt = torch.load(checkpoint_path, map_location=device, weights_only=False)
        for obj, key in ((G, "G"), (D, "D"), (opt_G, "opt_G"), (opt_D, "opt_D"), (sched_G, "sched_G"),
                         (sched_D, "sched_D")):
            obj.load_state_dict(ckpt[key])
        torch.set_rng_state(ckpt["rng"])
        if device.type == "cuda" and ckpt.get("cuda_rng") is not None:  # dropout noise on the GPU
            torch.cuda.set_rng_state(ckpt["cuda_rng"], device)
        start_it, elapsed, sums, count = ckpt["iter"], ckpt["elapsed_s"], ckpt["sums"], ckpt["count"]
        _truncate_metrics(run_dir / METRICS_FILE, start_it)
        log(f"resumed {run_dir} at iteration {start_it}")
    else:
        torch.manual_seed(config.seed + 1)  # dropout noise, independent of the init draw
        (run_dir / METRICS_FILE).unlink(missing_ok=True)

    G.train()
    D.train()
    t0 = time.time() - elapsed
    for it in range(start_it, config.total_iters):
        batch = batch_at(train_set, config, it)
        losses = train_step(G, D, opt_G, opt_D, batch["input"].to(device), batch["target"].to(device), config.lambda_l1)
        lr_used = opt_G.param_groups[0]["lr"]
        sched_G.step()
        sched_D.step()
        for key, value in losses.items():
            sums[key] = sums.get(key, 0.0) + value
        count += 1
        done = it + 1
        if done % config.log_every == 0 or done == config.total_iters:
            record = {"kind": "train", "iter": done, "lr": lr_used, "elapsed_s": round(time.time() - t0, 3),
                      **{k: v / count for k, v in sums.items()}}
            append_jsonl(run_dir / METRICS_FILE, record)
            log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
            sums, count = {}, 0
        if done % config.sample_every == 0 or done == config.total_iters:
            fakes = generate(G, sample_inputs, seed=config.seed)
            save_sample_grid(run_dir / "samples" / f"iter_{done:07d}.png", sample_inputs, fakes, sample_reals)
        if done % config.checkpoint_every == 0 or done == config.total_iters:
            val_inputs, val_targets = val_tensors(val_set)
            val_l1 = float(F.l1_loss(generate(G, val_inputs, seed=config.seed), val_targets))
            append_jsonl(run_dir / METRICS_FILE, {"kind": "val", "iter": done, "val_l1": val_l1})
            atomic_torch_save({"iter": done, "G": G.state_dict(), "D": D.state_dict(), "opt_G": opt_G.state_dict(),
                               "opt_D": opt_D.state_dict(), "sched_G": sched_G.state_dict(),
                               "sched_D": sched_D.state_dict(), "rng": torch.get_rng_state(),
                               "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                               "elapsed_s": time.time() - t0, "sums": sums, "count": count}, checkpoint_path)
            if stop_after is not None and done >= stop_after:
                return {"status": "stopped", "iter": done}
    last = list(read_jsonl(run_dir / METRICS_FILE))
    result = {"status": "completed", "iters": config.total_iters, "wall_s": round(time.time() - t0, 3),
              "last_train": next((r for r in reversed(last) if r.get("kind") == "train"), None),
              "last_val": next((r for r in reversed(last) if r.get("kind") == "val"), None),
              "tr": tr}
    atomic_write_json(run_dir / RESULT_FILE, result)
    return result


def _truncate_metrics(path: Path, upto: int) -> None:
    """Drop metric lines written after the checkpoint (they will be written again on resume)."""
    if not path.exists():
        return
    kept = [r for r in read_jsonl(path) if r.get("iter", 0) <= upto]
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in kept))


def load_config(run_dir: str | Path, device: str = "cpu") -> GANConfig:
    """The run's config (config.json), to be used on ``device``."""
    config_path = Path(run_dir) / CONFIG_FILE
    if not config_path.exists():
        raise FileNotFoundError(f"{str(run_dir)!r} is not a GAN run folder (no config.json)")
    return GANConfig(**{**json.loads(config_path.read_text()), "device": device})


def load_generator(run_dir: str | Path, device: str = "cpu") -> tuple[nn.Module, GANConfig]:
    """The generator of a run's checkpoint and the run's config."""
    run_dir = Path(run_dir)
    config_path, checkpoint_path = run_dir / CONFIG_FILE, run_dir / CHECKPOINT_FILE
    if not config_path.exists() or not checkpoint_path.exists():
        raise FileNotFoundError(f"{str(run_dir)!r} is not a trained GAN run (no config.json / checkpoint.pt)")
    config = load_config(run_dir, device)
    G, _ = build_networks(config)
    G.load_state_dict(torch.load(checkpoint_path, map_location=device, weights_only=False)["G"])
    return G.to(device), config
