"""Data for pix2pix label -> photo: procedural street scenes, aligned A|B folders, Cityscapes.

Every dataset yields dicts with
    ``input``  3 x H x W float in [-1, 1]: the colour-coded label map (the generator's input),
    ``target`` 3 x H x W float in [-1, 1]: the photo,
    ``label``  H x W int64 Cityscapes trainIds (255 = ignore), when labels are available,
    ``name``   a string naming the image (the Cityscapes base name for prepared Cityscapes).

(a) ``ProceduralScenes``: a stand-in for Cityscapes that runs anywhere. Label maps use
    Cityscapes' trainIds and colour palette (road, sidewalk, building, pole, traffic sign,
    vegetation, sky, person, car); the photos are rendered with per-instance colours (a car can be
    any colour, a building any facade), textures (windows, leaves, paving, lane marks), random
    illumination and sensor noise. One label map therefore has many plausible photos: an L1 loss
    alone regresses to their blurry mean, and the adversarial term is what makes outputs sharp.
    Each image is a pure function of ``(split seed, index)``: train / val / judge splits use
    different seeds and never share a scene.
(b) ``AlignedFolder``: pix2pix's layout, ``root/<split>/*.png|jpg`` with A and B side by side,
    optional ``root/<split>_labels/<name>.png`` trainId maps for evaluation.
(c) ``prepare_cityscapes``: turns ``gtFine`` + ``leftImg8bit`` into (b), photo | colour labels
    (pix2pix's Cityscapes convention, so labels -> photo is ``direction="BtoA"``), keeping the
    Cityscapes base names and writing the trainId maps the FCN-score needs.
"""
from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from tralgo.experiments.io import atomic_write_bytes

# -- Cityscapes' 19 evaluation classes (trainIds 0..18) and their colours ------------------------
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)
CITYSCAPES_PALETTE = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
], dtype=np.uint8)
NUM_CLASSES = len(CITYSCAPES_CLASSES)
IGNORE_LABEL = 255
# Cityscapes labelIds -> trainIds (every id not listed is ignored).
LABEL_ID_TO_TRAIN_ID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                        25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}

ROAD, SIDEWALK, BUILDING, POLE, SIGN, VEGETATION, SKY, PERSON, CAR = 0, 1, 2, 5, 7, 8, 10, 11, 13
PROCEDURAL_CLASSES = (ROAD, SIDEWALK, BUILDING, POLE, SIGN, VEGETATION, SKY, PERSON, CAR)
# Separate seeds per split: the judge never sees a training or validation scene.
SPLIT_SEEDS = {"train": 1_000_003, "val": 2_000_003, "judge": 3_000_017}


def labels_to_color(labels: np.ndarray) -> np.ndarray:
    """H x W trainIds -> H x W x 3 uint8 Cityscapes colours (ignored pixels black)."""
    table = np.zeros((256, 3), dtype=np.uint8)
    table[:NUM_CLASSES] = CITYSCAPES_PALETTE
    return table[labels]


def to_unit_range(image: np.ndarray) -> torch.Tensor:
    """H x W x 3 image in [0, 1] (float) or [0, 255] (uint8) -> 3 x H x W tensor in [-1, 1]."""
    array = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))) * 2.0 - 1.0


def to_image(tensor: torch.Tensor) -> np.ndarray:
    """3 x H x W tensor in [-1, 1] -> H x W x 3 uint8."""
    array = ((tensor.detach().cpu().float().clamp(-1, 1) + 1.0) * 127.5).round().byte()
    return array.permute(1, 2, 0).numpy()


# -- (a) procedural street scenes ------------------------------------------------------------------

def _smooth_noise(rng: np.random.Generator, size: int, cells: int, channels: int = 1) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: a random cells x cells grid, bilinearly upsampled."""
    grid = torch.from_numpy(rng.uniform(-1, 1, (1, channels, cells, cells)).astype(np.float32))
    return F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False)[0].numpy().transpose(1, 2, 0)


class _Canvas:
    """Label map, photo and the painting primitives of one scene."""

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.size, self.rng = size, rng
        coords = (np.arange(size, dtype=np.float32) + 0.5) / size
        self.y, self.x = np.meshgrid(coords, coords, indexing="ij")
        self.label = np.full((size, size), SKY, dtype=np.uint8)
        self.photo = np.zeros((size, size, 3), dtype=np.float32)

    def paint(self, mask: np.ndarray, cls: int, colour: np.ndarray) -> None:
        self.label[mask] = cls
        self.photo[mask] = np.broadcast_to(colour, self.photo.shape)[mask] if np.ndim(colour) == 3 else colour

    def texture(self, amplitude: float) -> np.ndarray:
        return self.rng.normal(0.0, amplitude, (self.size, self.size, 1)).astype(np.float32)


def _random_colour(rng: np.random.Generator, hue_range=(0.0, 1.0), sat=(0.2, 0.9), val=(0.2, 0.9)) -> np.ndarray:
    h = rng.uniform(*hue_range) % 1.0
    s, v = rng.uniform(*sat), rng.uniform(*val)
    i, f = int(h * 6) % 6, h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], dtype=np.float32)


def _paint_sky(c: _Canvas) -> None:
    rng = c.rng
    if rng.random() < 0.6:  # clear: blue overhead fading to pale at the horizon
        top, bottom = _random_colour(rng, (0.55, 0.62), (0.4, 0.8), (0.6, 0.95)), np.array([0.85, 0.9, 0.95])
    else:  # overcast
        grey = rng.uniform(0.55, 0.9)
        top, bottom = np.full(3, grey * 0.85), np.full(3, grey)
    t = c.y[..., None]
    clouds = 0.12 * _smooth_noise(rng, c.size, 6).clip(0, 1)
    c.photo[:] = (1 - t) * top + t * bottom + clouds


def _paint_buildings(c: _Canvas, horizon: float) -> None:
    rng = c.rng
    x = 0.0
    while x < 1.0:
        width = rng.uniform(0.12, 0.35)
        if rng.random() < 0.15:  # a gap: sky shows through
            x += width
            continue
        top = rng.uniform(0.02, horizon - 0.08)
        mask = (c.x >= x) & (c.x < x + width) & (c.y >= top) & (c.y < horizon + 0.02)
        facade = _random_colour(rng, (0.0, 0.15), (0.05, 0.5), (0.3, 0.85))
        # windows: a per-building grid of darker (or reflective) rectangles
        pitch_x, pitch_y = rng.uniform(0.04, 0.09), rng.uniform(0.05, 0.1)
        fx, fy = ((c.x - x) / pitch_x) % 1.0, ((c.y - top) / pitch_y) % 1.0
        window = (fx > 0.3) & (fx < 0.8) & (fy > 0.3) & (fy < 0.8)
        glass = _random_colour(rng, (0.5, 0.7), (0.0, 0.4), (0.1, 0.5))
        colour = np.where(window[..., None], glass, facade) + c.texture(0.03)
        c.paint(mask, BUILDING, colour)
        x += width


def _paint_ground(c: _Canvas, horizon: float) -> tuple[float, np.ndarray, np.ndarray]:
    """Road in perspective with sidewalks and verges; returns (vanishing x, road half-width, kerb)."""
    rng = c.rng
    vanish = rng.uniform(0.35, 0.65)
    depth = np.clip((c.y - horizon) / (1.0 - horizon), 0.0, 1.0)  # 0 at the horizon, 1 at the bottom
    road_half = 0.02 + depth * rng.uniform(0.45, 0.7)
    kerb = road_half + 0.01 + depth * rng.uniform(0.15, 0.35)
    below = c.y >= horizon
    dist = np.abs(c.x - vanish)
    verge = below & (dist >= kerb)
    c.paint(verge, VEGETATION, _random_colour(rng, (0.2, 0.35), (0.4, 0.8), (0.2, 0.55)) + c.texture(0.08))
    paving = _random_colour(rng, (0.0, 0.1), (0.0, 0.3), (0.45, 0.8))
    tiles = ((c.x * 40) % 1.0 < 0.1) | ((c.y * 40) % 1.0 < 0.1)
    c.paint(below & (dist >= road_half) & (dist < kerb), SIDEWALK,
            np.where(tiles[..., None], paving * 0.8, paving) + c.texture(0.03))
    asphalt = rng.uniform(0.15, 0.4) * np.ones(3, dtype=np.float32) + rng.uniform(-0.03, 0.03, 3)
    road = below & (dist < road_half)
    marks = (dist < 0.004 + 0.012 * depth) & ((depth * 12 + rng.random()) % 1.0 < 0.5)
    c.paint(road, ROAD, np.where(marks[..., None], np.float32(0.9), asphalt) + c.texture(0.04))
    return vanish, road_half, kerb


def _paint_trees(c: _Canvas, horizon: float) -> None:
    rng = c.rng
    for _ in range(rng.integers(0, 4)):
        cx, cy = rng.uniform(0, 1), horizon - rng.uniform(0.0, 0.15)
        rx, ry = rng.uniform(0.05, 0.15), rng.uniform(0.06, 0.18)
        wobble = 0.25 * _smooth_noise(rng, c.size, 8)[..., 0]
        mask = ((c.x - cx) / rx) ** 2 + ((c.y - cy) / ry) ** 2 < 1.0 + wobble
        leaves = _random_colour(rng, (0.18, 0.38), (0.4, 0.9), (0.15, 0.6))
        c.paint(mask, VEGETATION, leaves * (1 + c.texture(0.25)))


def _row_of(c: _Canvas, y: float) -> int:
    return min(c.size - 1, max(0, int(y * c.size)))


def _paint_poles(c: _Canvas, horizon: float, vanish: float, kerb: np.ndarray) -> None:
    rng = c.rng
    for _ in range(rng.integers(0, 4)):
        base = rng.uniform(horizon + 0.05, 0.98)
        side = rng.choice([-1.0, 1.0])
        cx = vanish + side * float(kerb[_row_of(c, base), 0]) * rng.uniform(0.85, 1.0)  # on the sidewalk's outer edge
        scale = (base - horizon) / (1 - horizon)
        width, top = 0.006 + 0.02 * scale, base - rng.uniform(0.3, 0.6) * (0.3 + scale)
        mask = (np.abs(c.x - cx) < width) & (c.y > top) & (c.y < base)
        c.paint(mask, POLE, _random_colour(rng, (0, 1), (0.0, 0.2), (0.25, 0.6)) + c.texture(0.02))
        if rng.random() < 0.6:  # a sign on top: a disc or a plate
            r = 0.02 + 0.05 * scale
            if rng.random() < 0.5:
                sign = ((c.x - cx) ** 2 + (c.y - top) ** 2) < r ** 2
            else:
                sign = (np.abs(c.x - cx) < r) & (np.abs(c.y - top) < 0.7 * r)
            c.paint(sign, SIGN, _random_colour(rng, (0, 1), (0.6, 1.0), (0.6, 1.0)))


def _paint_people(c: _Canvas, horizon: float, vanish: float, road_half: np.ndarray, kerb: np.ndarray) -> None:
    rng = c.rng
    for _ in range(rng.integers(0, 4)):
        base = rng.uniform(horizon + 0.05, 0.98)
        row = _row_of(c, base)
        inner, outer = float(road_half[row, 0]), float(kerb[row, 0])
        cx = vanish + rng.choice([-1.0, 1.0]) * rng.uniform(inner, max(inner, outer))
        scale = (base - horizon) / (1 - horizon)
        height, width = 0.08 + 0.35 * scale, 0.02 + 0.07 * scale
        cy = base - height / 2
        body = ((c.x - cx) / width) ** 2 + ((c.y - cy) / (height / 2)) ** 2 < 1.0
        upper = _random_colour(rng)
        lower = _random_colour(rng, (0, 1), (0.0, 0.6), (0.1, 0.5))
        colour = np.where((c.y < cy)[..., None], upper, lower)
        head = (c.y < base - 0.85 * height)[..., None]
        c.paint(body, PERSON, np.where(head, np.array([0.85, 0.65, 0.5], np.float32), colour))


def _paint_cars(c: _Canvas, horizon: float, vanish: float, road_half: np.ndarray) -> None:
    rng = c.rng
    bases = np.sort(rng.uniform(horizon + 0.04, 1.05, rng.integers(0, 5)))  # far to near
    for base in bases:
        scale = (min(base, 1.0) - horizon) / (1 - horizon)
        half = float(road_half[_row_of(c, min(base, 0.999)), 0])
        cx = vanish + rng.uniform(-0.8, 0.8) * half
        width, height = 0.06 + 0.5 * scale, 0.04 + 0.25 * scale
        body = (np.abs(c.x - cx) < width / 2) & (c.y > base - 0.6 * height) & (c.y < base)
        cabin = (np.abs(c.x - cx) < width / 3) & (c.y > base - height) & (c.y <= base - 0.6 * height)
        paint = _random_colour(rng, (0, 1), (0.0, 1.0), (0.1, 0.95))
        shadow = (np.abs(c.x - cx) < width * 0.55) & (c.y >= base) & (c.y < base + 0.03 * (0.3 + scale))
        c.photo[shadow & (c.label == ROAD)] *= 0.5  # contact shadow: photo only, still road
        glass = np.float32(rng.uniform(0.05, 0.3))
        colour = np.where(cabin[..., None], glass, paint) + c.texture(0.02)
        wheels = body & (c.y > base - 0.2 * height) & (np.abs(np.abs(c.x - cx) - width / 3) < width / 10)
        colour = np.where(wheels[..., None], np.float32(0.05), colour)
        c.paint(body | cabin, CAR, colour)


def render_scene(seed: int, index: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The scene ``index`` of the split seeded ``seed``: (H x W uint8 trainIds, H x W x 3 photo in [0, 1])."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an int >= 8, got {size!r}")
    rng = np.random.default_rng([seed, index])
    c = _Canvas(size, rng)
    horizon = rng.uniform(0.38, 0.55)
    _paint_sky(c)
    _paint_buildings(c, horizon)
    _paint_trees(c, horizon)
    vanish, road_half, kerb = _paint_ground(c, horizon)
    _paint_poles(c, horizon, vanish, kerb)
    _paint_people(c, horizon, vanish, road_half, kerb)
    _paint_cars(c, horizon, vanish, road_half)
    # illumination: exposure, colour temperature, a left-right light falloff; then sensor noise
    exposure = rng.uniform(0.65, 1.25)
    tint = 1.0 + rng.uniform(-0.08, 0.08, 3).astype(np.float32)
    falloff = 1.0 + rng.uniform(-0.25, 0.25) * (c.x[..., None] - 0.5)
    photo = c.photo * exposure * tint * falloff + rng.normal(0, rng.uniform(0.005, 0.03), c.photo.shape)
    return c.label, np.clip(photo, 0.0, 1.0).astype(np.float32)


class ProceduralScenes(Dataset):
    """``num_images`` procedural street scenes of one split, rendered once and kept in memory.

    Args:
        split: ``"train"``, ``"val"`` or ``"judge"`` (each has its own seed, ``SPLIT_SEEDS``).
        num_images: how many scenes (>= 1).
        size: image side in pixels (>= 8).
        seed: overrides the split's seed (for experiments on a different draw of the data).
    """

    def __init__(self, split: str = "train", num_images: int = 400, size: int = 64, seed: int | None = None) -> None:
        if split not in SPLIT_SEEDS:
            raise ValueError(f"split must be one of {tuple(SPLIT_SEEDS)}, got {split!r}")
        if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
            raise ValueError(f"num_images must be an int >= 1, got {num_images!r}")
        self.split, self.size = split, size
        self.seed = SPLIT_SEEDS[split] if seed is None else seed
        scenes = [render_scene(self.seed, i, size) for i in range(num_images)]
        self.labels = torch.from_numpy(np.stack([label for label, _ in scenes])).long()
        self.inputs = torch.stack([to_unit_range(labels_to_color(label)) for label, _ in scenes])
        self.targets = torch.stack([to_unit_range(photo) for _, photo in scenes])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"input": self.inputs[index], "target": self.targets[index], "label": self.labels[index],
                "name": f"{self.split}_{index:05d}"}


# -- (b) pix2pix aligned folders -------------------------------------------------------------------

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _load_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _resize(image: np.ndarray, size: int, nearest: bool) -> np.ndarray:
    from PIL import Image

    if image.shape[0] == size and image.shape[1] == size:
        return image
    resample = Image.NEAREST if nearest else Image.BICUBIC
    return np.asarray(Image.fromarray(image).resize((size, size), resample))


class AlignedFolder(Dataset):
    """pix2pix's aligned dataset: ``root/<split>/<name>.png|jpg`` holding A | B side by side.

    Args:
        root: the dataset folder.
        split: sub-folder (``"train"``, ``"val"``, ...).
        direction: ``"AtoB"`` (left half is the input) or ``"BtoA"`` (right half is the input;
            pix2pix's and ``prepare_cityscapes``'s layout for Cityscapes labels -> photo).
        size: side of the images returned (``crop_size`` in pix2pix).
        jitter: pix2pix's training augmentation: resize to ``load_size`` (default
            ``size * 286 // 256``), random ``size`` crop, random horizontal flip.
        seed: seeds the jitter (with the epoch, see ``set_epoch``), so augmentation is reproducible.

    Label maps ``root/<split>_labels/<name>.png`` (trainIds) are returned as ``label`` when present.
    """

    def __init__(self, root: str | Path, split: str = "train", direction: str = "BtoA", size: int = 256,
                 jitter: bool = False, load_size: int | None = None, seed: int = 0) -> None:
        if direction not in ("AtoB", "BtoA"):
            raise ValueError(f"direction must be 'AtoB' or 'BtoA', got {direction!r}")
        self.folder = Path(root) / split
        if not self.folder.is_dir():
            raise FileNotFoundError(f"aligned dataset folder {str(self.folder)!r} does not exist")
        self.paths = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise FileNotFoundError(f"no .png/.jpg images in {str(self.folder)!r}")
        self.label_folder = Path(root) / f"{split}_labels"
        self.direction, self.size, self.jitter = direction, size, jitter
        self.load_size = load_size or (size * 286) // 256
        if self.load_size < size:
            raise ValueError(f"load_size must be >= size ({size}), got {self.load_size}")
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Jitter is a function of (seed, epoch, index), so a resumed run sees the same crops."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        ab = _load_rgb(path)
        half = ab.shape[1] // 2
        a, b = ab[:, :half], ab[:, half:2 * half]
        source, target = (a, b) if self.direction == "AtoB" else (b, a)
        label_path = self.label_folder / f"{path.stem}.png"
        label = None
        if label_path.exists():
            from PIL import Image

            with Image.open(label_path) as image:
                label = np.asarray(image)
        # The colour label map is resized like a label (nearest), never blended.
        side = self.load_size if self.jitter else self.size
        source, target = _resize(source, side, nearest=True), _resize(target, side, nearest=False)
        label = None if label is None else _resize(label, side, nearest=True)
        if self.jitter:
            rng = random.Random(f"{self.seed}-{self.epoch}-{index}")
            top, left = rng.randint(0, side - self.size), rng.randint(0, side - self.size)
            flip = rng.random() < 0.5
            crop = lambda im: im[top:top + self.size, left:left + self.size]  # noqa: E731
            source, target = crop(source), crop(target)
            label = None if label is None else crop(label)
            if flip:
                source, target = source[:, ::-1], target[:, ::-1]
                label = None if label is None else label[:, ::-1]
        item = {"input": to_unit_range(source), "target": to_unit_range(target), "name": path.stem}
        if label is not None:
            item["label"] = torch.from_numpy(np.array(label, dtype=np.int64))
        return item


def png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_aligned_folder(dataset: Dataset, root: str | Path, split: str) -> int:
    """Write a dataset as pix2pix A | B images (A = photo, B = colour labels) plus trainId maps."""
    root = Path(root)
    for index in range(len(dataset)):
        item = dataset[index]
        ab = np.concatenate([to_image(item["target"]), to_image(item["input"])], axis=1)
        atomic_write_bytes(root / split / f"{item['name']}.png", png_bytes(ab))
        if "label" in item:
            atomic_write_bytes(root / f"{split}_labels" / f"{item['name']}.png",
                               png_bytes(item["label"].numpy().astype(np.uint8)))
    return len(dataset)


# -- (c) Cityscapes -> aligned folders -------------------------------------------------------------

def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    table = np.full(256, IGNORE_LABEL, dtype=np.uint8)
    for label_id, train_id in LABEL_ID_TO_TRAIN_ID.items():
        table[label_id] = train_id
    return table[label_ids]


def prepare_cityscapes(gtfine: str | Path, leftimg: str | Path, out: str | Path, size: int = 256,
                       splits: tuple[str, ...] = ("train", "val")) -> dict[str, int]:
    """Write ``out/<split>/<base>.png`` = photo | colour labels (each ``size`` x ``size``) and
    ``out/<split>_labels/<base>.png`` = trainIds, for every ``<base>_leftImg8bit.png`` under
    ``leftimg/<split>/<city>/`` with its ``gtFine/<split>/<city>/<base>_gtFine_{color,labelIds}.png``.

    ``<base>`` is the Cityscapes name (``aachen_000000_000019``), so every output traces back to
    its source files. Returns the number of images written per split.
    """
    gtfine, leftimg, out = Path(gtfine), Path(leftimg), Path(out)
    counts = {}
    for split in splits:
        photo_dir = leftimg / split
        if not photo_dir.is_dir():
            raise FileNotFoundError(f"leftImg8bit split folder {str(photo_dir)!r} does not exist")
        photos = sorted(photo_dir.glob("*/*_leftImg8bit.png"))
        if not photos:
            raise FileNotFoundError(f"no */*_leftImg8bit.png files under {str(photo_dir)!r}")
        for photo_path in photos:
            base = photo_path.name[: -len("_leftImg8bit.png")]
            label_dir = gtfine / split / photo_path.parent.name
            colour_path = label_dir / f"{base}_gtFine_color.png"
            ids_path = label_dir / f"{base}_gtFine_labelIds.png"
            for needed in (colour_path, ids_path):
                if not needed.exists():
                    raise FileNotFoundError(f"missing gtFine file {str(needed)!r} for {photo_path.name}")
            from PIL import Image

            with Image.open(ids_path) as image:
                train_ids = label_ids_to_train_ids(np.asarray(image))
            photo = _resize(_load_rgb(photo_path), size, nearest=False)
            colour = _resize(_load_rgb(colour_path), size, nearest=True)
            atomic_write_bytes(out / split / f"{base}.png", png_bytes(np.concatenate([photo, colour], axis=1)))
            atomic_write_bytes(out / f"{split}_labels" / f"{base}.png", png_bytes(_resize(train_ids, size, nearest=True)))
        counts[split] = len(photos)
    return counts
