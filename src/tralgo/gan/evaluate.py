"""FCN-score of a trained run: generate the validation photos, segment them with the judge."""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tralgo.experiments.io import atomic_write_bytes, atomic_write_json
from tralgo.gan.data import NUM_CLASSES, to_image
from tralgo.gan.judge import load_judge
from tralgo.gan.metrics import fcn_score
from tralgo.gan.train import val_tensors, build_datasets, generate, load_config, load_generator

EVAL_FILE = "eval.json"
OUTPUTS_FILE = "val_outputs.npz"  # the generated validation photos, 8-bit: what any judge scores


def _labels(dataset) -> torch.Tensor:
    if "label" not in dataset[0]:
        raise FileNotFoundError("the validation set has no label maps (for an aligned folder: <root>/val_labels/*.png)")
    return torch.stack([dataset[i]["label"] for i in range(len(dataset))])


def _batches(photos: torch.Tensor, labels: torch.Tensor, size: int = 25):
    for start in range(0, len(photos), size):
        yield photos[start:start + size], labels[start:start + size]


def file_digest(path: str | Path) -> str:
    path = Path(path)
    if path.is_dir():
        path = path / "judge.pt"
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def val_outputs(run_dir: str | Path, device: str = "cpu", seed: int = 0) -> np.ndarray:
    """The run's generated validation photos as 8-bit images (N x H x W x 3 uint8).

    Generated once from the trained generator (test mode, dropout noise drawn from ``seed``) and
    kept in the run folder as ``val_outputs.npz``. They are the study's raw output: the FCN-score
    and the L1 are computed from them, as pix2pix scores the images it saved, so a committed copy
    lets anyone score the runs with another judge without the generators (``checkpoint.pt``)."""
    path = Path(run_dir) / OUTPUTS_FILE
    if path.exists():
        with np.load(path) as saved:
            if int(saved["seed"]) == seed:
                return saved["images"]
    G, config = load_generator(run_dir, device)
    _, val = build_datasets(config)
    inputs, _ = val_tensors(val)
    images = np.stack([to_image(x) for x in generate(G, inputs, seed=seed)])
    buffer = io.BytesIO()
    np.savez_compressed(buffer, images=images, seed=np.int64(seed))
    atomic_write_bytes(path, buffer.getvalue())
    return images


def from_images(images: np.ndarray) -> torch.Tensor:
    """8-bit N x H x W x 3 images -> N x 3 x H x W in [-1, 1] (the inverse of ``to_image`` on its grid)."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def evaluate_run(run_dir: str | Path, judge_path: str | Path, device: str = "cpu", seed: int = 0) -> dict:
    """FCN-score of the run's generated validation photos (``val_outputs``, 8-bit) on the whole
    validation set, and of the real photos (GT); the L1 distance of the same images to the real ones.

    Writes and returns ``eval.json``: ``{"fake": scores, "gt": scores, "val_l1": ..., "judge": ...}``.
    """
    fakes = from_images(val_outputs(run_dir, device, seed))
    config = load_config(run_dir, device)
    _, val = build_datasets(config)
    _, reals = val_tensors(val)
    labels = _labels(val)
    judge = load_judge(judge_path, device)
    judge_size = getattr(judge, "config", {}).get("size")  # known for tralgo's own judges
    if judge_size is not None and judge_size != config.size:
        raise ValueError(f"the judge in {str(judge_path)!r} was trained on {judge_size}x{judge_size} photos but the run "
                         f"generates {config.size}x{config.size}; train a judge with --size {config.size}")
    with torch.no_grad():
        fake_scores = fcn_score(lambda x: judge(x.to(device)).cpu(), _batches(fakes, labels), NUM_CLASSES)
        gt_scores = fcn_score(lambda x: judge(x.to(device)).cpu(), _batches(reals, labels), NUM_CLASSES)
    result = {"fake": fake_scores, "gt": gt_scores, "val_l1": float(F.l1_loss(fakes, reals)),
              "val_images": len(labels), "images": "8-bit", "judge": str(judge_path),
              "judge_sha256": file_digest(judge_path), "seed": seed}
    atomic_write_json(Path(run_dir) / EVAL_FILE, result)
    return result
