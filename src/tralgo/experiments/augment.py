"""Batched, vectorised data augmentation and normalisation.

The authors augment CIFAR with torchvision's ``RandomCrop(32, padding=4)`` and
``RandomHorizontalFlip()`` on PIL images, one sample at a time. Here the same transforms run on a
whole uint8 batch at once: the batch is zero-padded once, and each sample's crop offset and flip
become one gather with per-sample row/column indices. Zero padding happens on the raw pixels,
before normalisation, exactly like padding a PIL image with black.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["Augmentation", "default_augmentation", "prepare_batch"]


@dataclass(frozen=True)
class Augmentation:
    crop_padding: int = 0  # random crop back to the original size after zero-padding (0 = off)
    hflip: bool = False  # random horizontal flip with probability 0.5

    def __post_init__(self):
        if isinstance(self.crop_padding, bool) or not isinstance(self.crop_padding, int) \
                or self.crop_padding < 0:
            raise ValueError(f"crop_padding must be an integer >= 0, got {self.crop_padding!r}")
        if not isinstance(self.hflip, bool):
            raise ValueError(f"hflip must be True or False, got {self.hflip!r}")

    @property
    def is_identity(self) -> bool:
        return self.crop_padding == 0 and not self.hflip


_DEFAULTS = {
    "cifar10": Augmentation(crop_padding=4, hflip=True),  # the authors' CIFAR pipeline
    "cifar100": Augmentation(crop_padding=4, hflip=True),
    "fashion-mnist": Augmentation(),
    "mnist": Augmentation(),
}


def default_augmentation(dataset_name: str) -> Augmentation:
    """The training augmentation used for ``dataset_name``: crop 4 + flip for CIFAR, none else."""
    try:
        return _DEFAULTS[dataset_name]
    except KeyError:
        raise ValueError(f"dataset_name must be one of {', '.join(_DEFAULTS)}, "
                         f"got {dataset_name!r}") from None


def _random_crop_flip(images: torch.Tensor, augmentation: Augmentation,
                      generator: torch.Generator | None) -> torch.Tensor:
    """Per-sample random crop (after zero padding) and horizontal flip as one gather."""
    batch, channels, height, width = images.shape
    pad = augmentation.crop_padding
    rng_device = generator.device if generator is not None else torch.device("cpu")
    # Draw in a fixed order (rows, cols, flips) so a seed always gives the same batch.
    row_offsets = torch.randint(0, 2 * pad + 1, (batch,), generator=generator, device=rng_device)
    col_offsets = torch.randint(0, 2 * pad + 1, (batch,), generator=generator, device=rng_device)
    flips = torch.rand(batch, generator=generator, device=rng_device) < 0.5
    if not augmentation.hflip:
        flips = torch.zeros_like(flips)
    row_offsets, col_offsets, flips = (t.to(images.device) for t in (row_offsets, col_offsets, flips))

    padded = F.pad(images, (pad, pad, pad, pad)) if pad else images
    padded_width = width + 2 * pad
    rows = row_offsets[:, None] + torch.arange(height, device=images.device)  # [B, H]
    cols = torch.arange(width, device=images.device).expand(batch, width)
    # A flipped crop reads its columns right to left.
    cols = torch.where(flips[:, None], cols.flip(1), cols) + col_offsets[:, None]  # [B, W]
    # One gather over the flattened padded image (much faster than 4-tensor advanced indexing).
    flat_index = (rows[:, :, None] * padded_width + cols[:, None, :]).view(batch, 1, height * width)
    flat = padded.reshape(batch, channels, -1)
    return flat.gather(2, flat_index.expand(batch, channels, height * width)).view(
        batch, channels, height, width)


def prepare_batch(images: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                  augmentation: Augmentation | None,
                  generator: torch.Generator | None) -> torch.Tensor:
    """uint8 [B, C, H, W] -> float32 normalised [B, C, H, W], augmented per sample.

    ``augmentation=None`` is evaluation: plain normalisation, the generator is not used.
    Deterministic given the generator's state (``None`` uses torch's global generator).
    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"images must be a uint8 tensor [B, C, H, W], got {images.dtype} "
                         f"with shape {list(images.shape)}")
    channels = images.shape[1]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"mean and std must have one entry per channel ({channels}), got "
                         f"{len(mean)} and {len(std)}")
    if any(s <= 0 for s in std):
        raise ValueError(f"std entries must be > 0, got {tuple(std)}")
    if augmentation is not None and not augmentation.is_identity:
        images = _random_crop_flip(images, augmentation, generator)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return (images.float().div_(255.0) - mean_t) / std_t
