"""FCN-score of a trained run: generate the validation photos, segment them with the judge."""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F

from tralgo.experiments.io import atomic_write_json
from tralgo.gan.data import NUM_CLASSES
from tralgo.gan.judge import load_judge
from tralgo.gan.metrics import fcn_score
from tralgo.gan.train import val_tensors, build_datasets, generate, load_generator

EVAL_FILE = "eval.json"


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


def evaluate_run(run_dir: str | Path, judge_path: str | Path, device: str = "cpu", seed: int = 0) -> dict:
    """FCN-score of the run's generator on the whole validation set, and of the real photos (GT).

    Writes and returns ``eval.json``: ``{"fake": scores, "gt": scores, "val_l1": ..., "judge": ...}``.
    """
    G, config = load_generator(run_dir, device)
    _, val = build_datasets(config)
    inputs, reals = val_tensors(val)
    labels = _labels(val)
    judge = load_judge(judge_path, device)
    judge_size = getattr(judge, "config", {}).get("size")  # known for tralgo's own judges
    if judge_size is not None and judge_size != config.size:
        raise ValueError(f"the judge in {str(judge_path)!r} was trained on {judge_size}x{judge_size} photos but the run "
                         f"generates {config.size}x{config.size}; train a judge with --size {config.size}")
    fakes = generate(G, inputs, seed=seed)
    with torch.no_grad():
        fake_scores = fcn_score(lambda x: judge(x.to(device)).cpu(), _batches(fakes, labels), NUM_CLASSES)
        gt_scores = fcn_score(lambda x: judge(x.to(device)).cpu(), _batches(reals, labels), NUM_CLASSES)
    result = {"fake": fake_scores, "gt": gt_scores, "val_l1": float(F.l1_loss(fakes, reals)),
              "val_images": len(labels), "judge": str(judge_path), "judge_sha256": file_digest(judge_path),
              "seed": seed}
    atomic_write_json(Path(run_dir) / EVAL_FILE, result)
    return result
