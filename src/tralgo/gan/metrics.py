"""FCN-score (Isola et al. 2017): segment generated photos with a frozen judge network and compare
its labels with the label maps the photos were generated from.

The arithmetic follows pix2pix's Cityscapes evaluation: one confusion matrix ``hist[gt, pred]``
is accumulated over every pixel of the whole validation set (pixels whose ground truth is not in
``0 .. num_classes-1``, e.g. 255, are ignored), then

* per-pixel accuracy = trace(hist) / sum(hist),
* per-class accuracy = mean over classes of hist[c, c] / sum_row(c),
* class IoU          = mean over classes of hist[c, c] / (sum_row(c) + sum_col(c) - hist[c, c]),

where a class whose ratio is 0/0 (never in the ground truth, never predicted) is left out of the
mean (``nanmean``). A class absent from the ground truth but predicted has IoU 0 and counts.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
from torch import Tensor


def confusion_matrix(gt: Tensor, pred: Tensor, num_classes: int) -> Tensor:
    """``num_classes`` x ``num_classes`` int64 counts ``hist[gt, pred]``; out-of-range gt ignored."""
    if gt.shape != pred.shape:
        raise ValueError(f"gt and pred must have the same shape, got {tuple(gt.shape)} and {tuple(pred.shape)}")
    gt, pred = gt.reshape(-1).long(), pred.reshape(-1).long()
    keep = (gt >= 0) & (gt < num_classes)
    index = num_classes * gt[keep] + pred[keep].clamp(0, num_classes - 1)
    return torch.bincount(index, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def _nanmean(values: Tensor) -> float:
    values = values[~torch.isnan(values)]
    return float(values.mean()) if values.numel() else math.nan


def fcn_scores(hist: Tensor) -> dict:
    """Per-pixel accuracy, per-class accuracy and class IoU of a confusion matrix ``hist[gt, pred]``."""
    hist = hist.double()
    diag, gt_total, pred_total = hist.diag(), hist.sum(1), hist.sum(0)
    with torch.no_grad():
        class_acc = diag / gt_total  # 0/0 -> nan: class absent from the ground truth
        class_iou = diag / (gt_total + pred_total - diag)
    total = float(hist.sum())
    return {
        "per_pixel_acc": float(diag.sum()) / total if total else math.nan,
        "per_class_acc": _nanmean(class_acc),
        "class_iou": _nanmean(class_iou),
        "per_class_iou": [None if math.isnan(v) else v for v in class_iou.tolist()],
    }


class ConfusionAccumulator:
    """Sum of confusion matrices over batches; ``scores()`` gives the FCN-score of the total."""

    def __init__(self, num_classes: int) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        self.num_classes = num_classes
        self.hist = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, gt: Tensor, pred: Tensor) -> None:
        self.hist += confusion_matrix(gt.cpu(), pred.cpu(), self.num_classes)

    def scores(self) -> dict:
        return fcn_scores(self.hist)


@torch.no_grad()
def segment(judge: Callable[[Tensor], Tensor], photos: Tensor, size: tuple[int, int]) -> Tensor:
    """Judge labels for photos in [-1, 1]; logits are resized to the label maps' size."""
    logits = judge(photos)
    if logits.shape[-2:] != torch.Size(size):
        logits = torch.nn.functional.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    return logits.argmax(1)


@torch.no_grad()
def fcn_score(judge: Callable[[Tensor], Tensor], batches: Iterable[tuple[Tensor, Tensor]], num_classes: int) -> dict:
    """FCN-score over ``(photos, labels)`` batches: one confusion matrix for the whole set."""
    acc = ConfusionAccumulator(num_classes)
    for photos, labels in batches:
        acc.update(labels, segment(judge, photos, tuple(labels.shape[-2:])))
    result = acc.scores()
    result["pixels"] = int(acc.hist.sum())
    return result
