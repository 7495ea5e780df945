"""Is the FCN-score judge a realism score? ``tralgo gan validate-judge``.

The FCN-score asks a segmentation network trained on real photos to recover the label map a
generated photo came from. A judge that rewards layout alone would score a photo-free rendering of
the label map highly; a judge that rewards realism scores real photos highly and degenerate images
that keep the layout but lose the appearance (``label_map``, ``class_mean``, ``blurred``), or keep
the appearance but lose the layout (``shuffled_pixels``, ``shuffled_patches``), lower. Every input
kind is built from the validation split's scenes and scored against their true label maps, with
judges of several seeds trained with the study's recorded configuration, so the seed-to-seed
spread of the judge itself is measured too.

``judge_check.csv`` holds one row per (judge seed, input kind); ``judge_check.md`` is regenerated
from it alone (``--from``), optionally with the GAN study's paired differences (``--study runs.csv``)
set against the judge's seed-to-seed spread.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from tralgo.gan.data import NUM_CLASSES, ProceduralScenes, labels_to_color, to_unit_range

INPUT_KINDS = ("real", "label_map", "class_mean", "blurred", "shuffled_patches", "shuffled_pixels")
INPUT_LABELS = {
    "real": "real photo",
    "label_map": "label map (palette colours)",
    "class_mean": "class-mean image",
    "blurred": "blurred real photo",
    "shuffled_patches": "real photo, patches shuffled",
    "shuffled_pixels": "real photo, pixels shuffled",
}
METRICS = ("per_pixel_acc", "per_class_acc", "class_iou")
METRIC_LABELS = {"per_pixel_acc": "Per-pixel acc.", "per_class_acc": "Per-class acc.", "class_iou": "Class IoU"}
CSV_NAME, TABLE_NAME = "judge_check.csv", "judge_check.md"
CSV_COLUMNS = ("judge_seed", "input", *METRICS)
# The two degenerate kinds closest to a generator's output: layout kept, the real photo's texture lost.
ALIKE = ("class_mean", "blurred")
# The judge hyper-parameters that must match the recorded configuration (the seed is what varies).
JUDGE_KEYS = ("size", "num_images", "iters", "batch_size", "lr", "width", "num_classes")


# -- the degenerate inputs -------------------------------------------------------------------------

def class_mean_colours(labels: Tensor, photos: Tensor, num_classes: int = NUM_CLASSES) -> Tensor:
    """``num_classes`` x 3 mean colour of each class over ``photos`` (N x 3 x H x W) labelled ``labels``
    (N x H x W). A class with no pixel (or an ignored label) gets the mean colour of all pixels."""
    flat = labels.reshape(-1)
    pixels = photos.permute(0, 2, 3, 1).reshape(-1, photos.shape[1]).double()
    keep = (flat >= 0) & (flat < num_classes)
    sums = torch.zeros(num_classes, photos.shape[1], dtype=torch.float64).index_add_(0, flat[keep], pixels[keep])
    counts = torch.bincount(flat[keep], minlength=num_classes).double()
    means = pixels.mean(0).expand(num_classes, -1).clone()
    present = counts > 0
    means[present] = sums[present] / counts[present, None]
    return means.to(photos.dtype)


def class_mean_image(labels: Tensor, colours: Tensor) -> Tensor:
    """N x 3 x H x W images whose every pixel is its class's colour (``class_mean_colours``); pixels
    with an ignored label get the mean of the class colours."""
    table = torch.cat([colours, colours.mean(0, keepdim=True)])
    index = torch.where((labels >= 0) & (labels < len(colours)), labels, torch.full_like(labels, len(colours)))
    return table[index].permute(0, 3, 1, 2).contiguous()


def label_map_image(labels: Tensor) -> Tensor:
    """The label map in Cityscapes' palette, in [-1, 1]: the generator's own input."""
    return torch.stack([to_unit_range(labels_to_color(label.numpy().astype(np.uint8))) for label in labels])


def gaussian_blur(photos: Tensor, sigma: float) -> Tensor:
    """Each channel blurred by a Gaussian of ``sigma`` pixels. The boundary is the half-sample
    mirror (scipy's ``reflect``), under which a symmetric kernel is a symmetric, row-stochastic
    operator, so the blur keeps each channel's mean."""
    from scipy.ndimage import gaussian_filter

    if not (isinstance(sigma, (int, float)) and not isinstance(sigma, bool) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"blur sigma must be a finite number > 0, got {sigma!r}")
    blurred = gaussian_filter(photos.double().numpy(), sigma=(0, 0, sigma, sigma), mode="reflect")
    return torch.from_numpy(blurred).to(photos.dtype)


def shuffle_patches(photos: Tensor, patch: int, generator: torch.Generator) -> Tensor:
    """Each image's ``patch`` x ``patch`` tiles in a random order (``patch`` 1: its pixels permuted),
    one permutation per image, the same for every channel."""
    n, c, h, w = photos.shape
    if isinstance(patch, bool) or not isinstance(patch, int) or patch < 1 or h % patch or w % patch:
        raise ValueError(f"patch must be an int >= 1 dividing the image side {h}x{w}, got {patch!r}")
    rows, cols = h // patch, w // patch
    tiles = photos.reshape(n, c, rows, patch, cols, patch).permute(0, 2, 4, 1, 3, 5).reshape(n, rows * cols, -1)
    order = torch.stack([torch.randperm(rows * cols, generator=generator) for _ in range(n)])
    tiles = torch.gather(tiles, 1, order[:, :, None].expand_as(tiles))
    return tiles.reshape(n, rows, cols, c, patch, patch).permute(0, 3, 1, 4, 2, 5).reshape(n, c, h, w)


def build_inputs(val_labels: Tensor, val_photos: Tensor, class_colours: Tensor, *, blur_sigma: float,
                 patch: int, seed: int = 0) -> dict[str, Tensor]:
    """Every input kind of ``INPUT_KINDS`` for the validation scenes (photos in [-1, 1])."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "real": val_photos,
        "label_map": label_map_image(val_labels),
        "class_mean": class_mean_image(val_labels, class_colours),
        "blurred": gaussian_blur(val_photos, blur_sigma),
        "shuffled_patches": shuffle_patches(val_photos, patch, generator),
        "shuffled_pixels": shuffle_patches(val_photos, 1, generator),
    }


# -- judges ----------------------------------------------------------------------------------------

def recorded_config(path: str | Path) -> dict:
    """The judge configuration of a ``tralgo gan judge`` result.json (e.g. docs/gan/results/judge_result.json)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config: {str(path)!r} does not exist")
    try:
        config = json.loads(path.read_text()).get("config")
    except (json.JSONDecodeError, AttributeError) as error:
        raise ValueError(f"--config: {str(path)!r} is not a judge result.json ({error})") from None
    if not isinstance(config, dict) or any(k not in config for k in JUDGE_KEYS):
        raise ValueError(f"--config: {str(path)!r} has no judge config with the keys {', '.join(JUDGE_KEYS)}")
    return config


def judge_path(judges_dir: Path, seed: int) -> Path:
    return judges_dir / f"judge_seed{seed}.pt"


def ensure_judge(judges_dir: Path, seed: int, config: dict, val_images: int, log=print) -> Path:
    """``judges_dir/judge_seed<seed>.pt``: loaded if there (its configuration must be ``config`` with
    this seed), else trained with ``config`` and this seed (result.json kept as judge_seed<seed>.json)."""
    from tralgo.experiments.io import atomic_write_bytes, atomic_write_json
    from tralgo.gan.judge import train_judge

    path = judge_path(judges_dir, seed)
    if path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        found = saved.get("config", {}) if isinstance(saved, dict) else {}
        differ = [k for k in JUDGE_KEYS if found.get(k) != config[k]] + ([] if found.get("seed") == seed else ["seed"])
        if differ:
            raise ValueError(f"judge {str(path)!r} was trained with another configuration than --config "
                             f"(differs in {', '.join(differ)}); remove it to retrain")
        return path
    log(f"training judge seed {seed} into {path}")
    with tempfile.TemporaryDirectory() as tmp:
        result = train_judge(tmp, size=config["size"], num_images=config["num_images"], iters=config["iters"],
                             batch_size=config["batch_size"], lr=config["lr"], width=config["width"], seed=seed,
                             val_images=val_images, log=log)
        atomic_write_json(path.with_suffix(".json"), result)
        atomic_write_bytes(path, (Path(tmp) / "judge.pt").read_bytes())
    return path


def score_inputs(judge, inputs: dict[str, Tensor], labels: Tensor, batch_size: int = 50) -> dict[str, dict]:
    """FCN-score of every input kind against the true label maps."""
    from tralgo.gan.metrics import fcn_score

    scores = {}
    for kind, photos in inputs.items():
        batches = ((photos[i:i + batch_size], labels[i:i + batch_size]) for i in range(0, len(photos), batch_size))
        scores[kind] = fcn_score(judge, batches, NUM_CLASSES)
    return scores


# -- the raw CSV and the table regenerated from it -------------------------------------------------

def csv_text(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    # repr: reading a float back gives the very same number, so the table regenerates byte for byte
    writer.writerows([[row["judge_seed"], row["input"], *[repr(float(row[m])) for m in METRICS]] for row in rows])
    return buffer.getvalue()


def read_csv(path: str | Path) -> list[dict]:
    from tralgo.gan.compare import read_csv_table

    path = Path(path)
    table = read_csv_table(path, CSV_COLUMNS, f"a {CSV_NAME}")
    rows = []
    for line, row in enumerate(table, start=2):
        where = f"{path}, line {line}"
        if row["input"] not in INPUT_KINDS:
            raise ValueError(f"{where}: input must be one of {INPUT_KINDS}, got {row['input']!r}")
        try:
            rows.append({"judge_seed": int(row["judge_seed"]), "input": row["input"],
                         **{m: float(row[m]) for m in METRICS}})
        except ValueError:
            raise ValueError(f"{where}: judge_seed must be an int and {', '.join(METRICS)} numbers") from None
    return rows


def _by_seed(rows: list[dict], kind: str, metric: str) -> dict[int, float]:
    return {r["judge_seed"]: r[metric] for r in rows if r["input"] == kind}


def _spread(rows: list[dict], kind: str, metric: str) -> tuple[float, float, list[float]]:
    values = [v for _, v in sorted(_by_seed(rows, kind, metric).items())]
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan, values


def _difference_spread(rows: list[dict], a: str, b: str, metric: str) -> float:
    """Std over judge seeds of ``score(a) - score(b)``, each judge scoring both kinds."""
    va, vb = _by_seed(rows, a, metric), _by_seed(rows, b, metric)
    diffs = [va[s] - vb[s] for s in sorted(va) if s in vb]
    return statistics.stdev(diffs) if len(diffs) > 1 else math.nan


def format_table(rows: list[dict], study: dict | None = None) -> str:
    """judge_check.md from the CSV rows (and the GAN study's summary, ``compare.read_raw``)."""
    seeds = sorted({r["judge_seed"] for r in rows})
    kinds = [k for k in INPUT_KINDS if any(r["input"] == k for r in rows)]
    lines = [f"FCN-score of each input kind on the validation scenes, mean ± std over {len(seeds)} judge seeds "
             f"({', '.join(map(str, seeds))}); per seed in brackets:", "",
             "| Input | " + " | ".join(METRIC_LABELS[m] for m in METRICS) + " |",
             "|---|" + "---|" * len(METRICS)]
    for kind in kinds:
        cells = []
        for metric in METRICS:
            mean, std, values = _spread(rows, kind, metric)
            cells.append(f"{mean:.3f} ± {std:.4f} ({' / '.join(f'{v:.3f}' for v in values)})")
        lines.append(f"| {INPUT_LABELS[kind]} | " + " | ".join(cells) + " |")
    if study is not None:
        lines += ["", *_study_table(rows, kinds, study)]
    return "\n".join(lines) + "\n"


def _study_table(rows: list[dict], kinds: list[str], study: dict) -> list[str]:
    """The study's paired differences against two measures of the judge's seed-to-seed spread.

    The study compared two sets of generated images scored by one judge. How much another judge seed
    would move such a difference depends on how alike that judge's errors on the two sets are, which
    cannot be measured without the generators; the degenerate inputs bracket it. s_hi: sqrt(2) x the
    largest std of one kind's score (errors on the two sets independent); s_lo: the std of the difference
    between the two ``ALIKE`` kinds (errors shared, as a judge's errors on two sets of similar images)."""
    from tralgo.gan.compare import METHOD_LABELS

    high, low = {}, {}
    for m in METRICS:
        worst = max(kinds, key=lambda k: _spread(rows, k, m)[1])
        high[m] = (math.sqrt(2) * _spread(rows, worst, m)[1], worst)
        low[m] = (_difference_spread(rows, *ALIKE, m), " − ".join(ALIKE))
    ratio = lambda d, s: f"{abs(d) / s:.1f}" if s > 0 else "inf"  # noqa: E731
    lines = ["The GAN study's paired differences (mean over its seeds, scored by one judge) against the judge's "
             "own seed-to-seed spread. s_hi = sqrt(2) × the largest std over judge seeds of one input kind's "
             "score (if a judge's errors on two image sets were independent); s_lo = the std over judge seeds of "
             "the difference class-mean image − blurred photo, the two inputs that, like a generator's output, keep "
             "the layout and lose the photo's texture (errors shared by two sets alike). Each cell: "
             "the study's difference, then |difference| / s_lo and |difference| / s_hi.", "",
             "| Difference | " + " | ".join(METRIC_LABELS[m] for m in METRICS) + " |",
             "|---|" + "---|" * len(METRICS),
             "| s_lo | " + " | ".join(f"{low[m][0]:.4f} ({low[m][1]})" for m in METRICS) + " |",
             "| s_hi | " + " | ".join(f"{high[m][0]:.4f} (sqrt(2) × {high[m][1]})" for m in METRICS) + " |"]
    for pair in study["paired"].values():
        name = f"{METHOD_LABELS[pair['method']]} − {METHOD_LABELS[pair['reference']]}"
        cells = [f"{pair[m]['mean']:+.3f}; {ratio(pair[m]['mean'], low[m][0])}, {ratio(pair[m]['mean'], high[m][0])}"
                 for m in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


# -- the command -----------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help=f"folder for {CSV_NAME} and {TABLE_NAME}")
    parser.add_argument("--from", dest="from_file", default=None, metavar="CSV",
                        help=f"score nothing: rebuild --out/{TABLE_NAME} from a {CSV_NAME}")
    parser.add_argument("--config", default=None, help="a judge result.json whose config the judges are trained "
                        "with (the study's: docs/gan/results/judge_result.json); required unless --from")
    parser.add_argument("--judges-dir", default=None, help="judge_seed<s>.pt files: loaded if there, trained "
                        "(recorded config, seed s) if not (default: <out>/judges)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="judge seeds (default 1 2 3)")
    parser.add_argument("--val-images", type=int, default=100, help="validation scenes scored (default 100, the study's)")
    parser.add_argument("--train-images", type=int, default=1000,
                        help="training scenes the class-mean colours are taken from (default 1000, the study's)")
    parser.add_argument("--blur-sigma", type=float, default=1.5, help="Gaussian blur sigma in pixels (default 1.5)")
    parser.add_argument("--patch", type=int, default=8, help="side of the shuffled patches in pixels (default 8)")
    parser.add_argument("--study", default=None, metavar="RUNS_CSV",
                        help="the GAN study's runs.csv: add its paired differences against the judge-seed spread")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")


def _check_args(args: argparse.Namespace) -> None:
    if not args.seeds or len(set(args.seeds)) != len(args.seeds):
        raise ValueError(f"--seeds must be distinct ints, got {args.seeds}")
    if len(args.seeds) < 2:
        raise ValueError(f"--seeds needs at least 2 judge seeds to measure their spread, got {args.seeds}")
    for name in ("val_images", "train_images"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be an int >= 1, got {getattr(args, name)}")
    if not (math.isfinite(args.blur_sigma) and args.blur_sigma > 0):
        raise ValueError(f"--blur-sigma must be a finite number > 0, got {args.blur_sigma}")


def run_cli(args: argparse.Namespace, log=print) -> str:
    from tralgo.experiments.io import atomic_write_text
    from tralgo.gan.compare import read_raw
    from tralgo.gan.judge import load_judge

    out = Path(args.out)
    study = read_raw(args.study) if args.study else None
    if args.from_file is not None:
        rows = read_csv(args.from_file)
    else:
        _check_args(args)
        if args.config is None:
            raise ValueError("--config is required unless --from is given (the judge result.json to train with)")
        config = recorded_config(args.config)
        size = config["size"]
        if args.patch < 1 or size % args.patch:
            raise ValueError(f"--patch must be an int >= 1 dividing the image side {size}, got {args.patch}")
        judges_dir = Path(args.judges_dir) if args.judges_dir else out / "judges"
        paths = {s: ensure_judge(judges_dir, s, config, args.val_images, log=log) for s in args.seeds}
        log(f"rendering {args.train_images} training and {args.val_images} validation scenes")
        train = ProceduralScenes("train", args.train_images, size)
        val = ProceduralScenes("val", args.val_images, size)
        colours = class_mean_colours(train.labels, train.targets)
        inputs = build_inputs(val.labels, val.targets, colours, blur_sigma=args.blur_sigma, patch=args.patch)
        rows = []
        for seed, path in paths.items():
            scores = score_inputs(load_judge(path), inputs, val.labels)
            rows += [{"judge_seed": seed, "input": k, **{m: scores[k][m] for m in METRICS}} for k in INPUT_KINDS]
            log(f"judge seed {seed}: " + ", ".join(f"{k} {scores[k]['per_pixel_acc']:.3f}" for k in INPUT_KINDS))
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / CSV_NAME, csv_text(rows))
        log(f"wrote {out / CSV_NAME}")
    table = format_table(rows, study)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / TABLE_NAME, table)
    log(f"wrote {out / TABLE_NAME}")
    return table
