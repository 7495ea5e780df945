"""Adam vs TRAdam vs the inner-decay-equivalent-lr Adam control, over seeds: a table shaped like
the paper's Tables 2-3 (GT, then one row per optimizer; mean +- std over seeds)."""
from __future__ import annotations

import dataclasses
import io
import json
import statistics
from pathlib import Path
from typing import Callable

import numpy as np

from tralgo.experiments.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from tralgo.gan.data import png_bytes, to_image
from tralgo.gan.evaluate import EVAL_FILE, evaluate_run, file_digest
from tralgo.gan.train import GANConfig, val_tensors, build_datasets, generate, inner_decay_equivalent_lr, \
    load_generator, train

METHODS = ("adam", "tradam", "adam_equiv_lr")
METHOD_LABELS = {"adam": "Adam", "tradam": "TRAdam", "adam_equiv_lr": "Adam, lr x H_S/S"}
METRICS = ("per_pixel_acc", "per_class_acc", "class_iou")


def method_config(base: GANConfig, method: str, seed: int) -> GANConfig:
    """The run config of one table row: the base config with the method's optimizer and lr."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    changes = {"seed": seed, "optimizer": "tradam" if method == "tradam" else "adam"}
    if method == "adam_equiv_lr":
        changes["lr"] = inner_decay_equivalent_lr(base.lr, base.inner_steps)
    return dataclasses.replace(base, **changes)


def run_dir_of(out: Path, method: str, seed: int) -> Path:
    return out / "runs" / f"{method}_seed{seed}"


def run_all(base: GANConfig, out: str | Path, methods, seeds, judge_path: str | Path,
            log: Callable[[str], None] = print) -> dict:
    """Train (resuming unfinished runs), evaluate (unless already evaluated with this judge), summarise."""
    out = Path(out)
    for seed in seeds:
        for method in methods:
            run_dir = run_dir_of(out, method, seed)
            log(f"== {method} seed {seed} -> {run_dir}")
            train(method_config(base, method, seed), run_dir, resume=True, log=log)
            eval_path = run_dir / EVAL_FILE
            # read the judge only now: it may still be training when the first run starts
            digest = file_digest(judge_path)
            if not eval_path.exists() or json.loads(eval_path.read_text()).get("judge_sha256") != digest:
                evaluate_run(run_dir, judge_path, base.device)
    return summarise(out, methods, seeds)


def _mean_std(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def summarise(out: str | Path, methods, seeds) -> dict:
    """summary.json + table.md from the runs' eval.json files (runs without one are listed as missing)."""
    out = Path(out)
    rows, missing, gt = {}, [], None
    for method in methods:
        evals = []
        for seed in seeds:
            path = run_dir_of(out, method, seed) / EVAL_FILE
            if path.exists():
                evals.append(json.loads(path.read_text()))
            else:
                missing.append(f"{method}_seed{seed}")
        if evals:
            rows[method] = {m: _mean_std([e["fake"][m] for e in evals]) for m in METRICS}
            rows[method]["val_l1"] = _mean_std([e["val_l1"] for e in evals])
            rows[method]["per_class_iou"] = _mean_per_class([e["fake"]["per_class_iou"] for e in evals])
            rows[method]["wall_s"] = _mean_std([_wall(run_dir_of(out, method, s)) for s in seeds
                                                if (run_dir_of(out, method, s) / EVAL_FILE).exists()])
            gt = gt or evals[0]["gt"]
    summary = {"rows": rows, "gt": gt, "seeds": list(seeds), "methods": list(methods), "missing": missing,
               "paired": _paired_differences(out, methods, seeds)}
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "table.md", format_table(summary))
    return summary


def _comparison_pairs(methods) -> list[tuple[str, str]]:
    """(method, reference) pairs: everything against Adam, and TRAdam against its equal-step control."""
    pairs = [(m, "adam") for m in methods if m != "adam" and "adam" in methods]
    if "tradam" in methods and "adam_equiv_lr" in methods:
        pairs.append(("tradam", "adam_equiv_lr"))
    return pairs


def _paired_differences(out: Path, methods, seeds) -> dict:
    """Per-seed differences ``method - reference`` (same seed = same init, data order and dropout
    stream), mean +- std over the seeds where both runs were evaluated."""
    paired = {}
    for method, reference in _comparison_pairs(methods):
        diffs = {m: [] for m in (*METRICS, "val_l1")}
        for seed in seeds:
            a, b = run_dir_of(out, reference, seed) / EVAL_FILE, run_dir_of(out, method, seed) / EVAL_FILE
            if a.exists() and b.exists():
                ea, eb = json.loads(a.read_text()), json.loads(b.read_text())
                for m in METRICS:
                    diffs[m].append(eb["fake"][m] - ea["fake"][m])
                diffs["val_l1"].append(eb["val_l1"] - ea["val_l1"])
        if diffs["val_l1"]:
            paired[f"{method} - {reference}"] = {"method": method, "reference": reference,
                                                  **{m: _mean_std(v) for m, v in diffs.items()}}
    return paired


def _mean_per_class(per_seed: list[list]) -> list:
    """Mean IoU of each class over seeds (None where a class is absent from ground truth and predictions)."""
    return [None if any(v is None for v in values) else statistics.fmean(values) for values in zip(*per_seed)]


def _per_class_table(summary: dict) -> list[str]:
    from tralgo.gan.data import CITYSCAPES_CLASSES

    gt = summary["gt"]["per_class_iou"]
    present = [c for c, v in enumerate(gt) if v is not None]
    lines = ["", "Class IoU per class, mean over seeds:", "",
             "| Method | " + " | ".join(CITYSCAPES_CLASSES[c] for c in present) + " |",
             "|---|" + "---|" * len(present),
             "| GT (real photos) | " + " | ".join(f"{gt[c]:.2f}" for c in present) + " |"]
    for method, row in summary["rows"].items():
        values = row["per_class_iou"]
        lines.append(f"| {METHOD_LABELS[method]} | " + " | ".join(
            "-" if values[c] is None else f"{values[c]:.2f}" for c in present) + " |")
    return lines


def _wall(run_dir: Path) -> float:
    result = run_dir / "result.json"
    return json.loads(result.read_text()).get("wall_s", float("nan")) if result.exists() else float("nan")


def format_table(summary: dict) -> str:
    n = len(summary["seeds"])
    lines = [f"| Method | Per-pixel acc. | Per-class acc. | Class IoU | val L1 | seeds |",
             "|---|---|---|---|---|---|"]
    gt = summary.get("gt")
    if gt:
        lines.append(f"| GT (real photos) | {gt['per_pixel_acc']:.3f} | {gt['per_class_acc']:.3f} | "
                     f"{gt['class_iou']:.3f} | 0 | - |")
    for method, row in summary["rows"].items():
        cells = [f"{row[m]['mean']:.3f} ± {row[m]['std']:.3f}" for m in METRICS]
        cells.append(f"{row['val_l1']['mean']:.4f} ± {row['val_l1']['std']:.4f}")
        lines.append(f"| {METHOD_LABELS[method]} | " + " | ".join(cells) + f" | {len(row['val_l1']['values'])}/{n} |")
    if summary.get("paired"):
        lines += ["", "Paired differences (same seed: same initialisation, data order and dropout stream), mean ± std "
                  "over seeds; positive accuracy/IoU = better, negative L1 = better:", "",
                  "| Difference | Per-pixel acc. | Per-class acc. | Class IoU | val L1 | seeds with higher IoU |",
                  "|---|---|---|---|---|---|"]
        for row in summary["paired"].values():
            cells = [f"{row[m]['mean']:+.3f} ± {row[m]['std']:.3f}" for m in METRICS]
            cells.append(f"{row['val_l1']['mean']:+.4f} ± {row['val_l1']['std']:.4f}")
            better = sum(v > 0 for v in row["class_iou"]["values"])
            name = f"{METHOD_LABELS[row['method']]} − {METHOD_LABELS[row['reference']]}"
            lines.append(f"| {name} | " + " | ".join(cells) +
                         f" | {better}/{len(row['class_iou']['values'])} |")
    if gt and summary["rows"]:
        lines += _per_class_table(summary)
    if summary.get("missing"):
        lines.append("")
        lines.append("Missing runs: " + ", ".join(summary["missing"]))
    return "\n".join(lines) + "\n"


def comparison_grid(out: str | Path, methods, seed: int, count: int = 6, path: str | Path | None = None) -> Path:
    """PNG: one column per validation image; rows label map, real photo, then each method's output."""
    out = Path(out)
    rows = None
    for method in methods:
        G, config = load_generator(run_dir_of(out, method, seed))
        _, val = build_datasets(config)
        inputs, reals = val_tensors(val, count)
        fakes = generate(G, inputs, seed=0)
        if rows is None:
            rows = [np.concatenate([to_image(x) for x in inputs], 1), np.concatenate([to_image(x) for x in reals], 1)]
        rows.append(np.concatenate([to_image(x) for x in fakes], 1))
    names = ["label map", "real photo", *(METHOD_LABELS[m] for m in methods)]
    path = Path(path) if path else out / f"comparison_seed{seed}.png"
    atomic_write_bytes(path, png_bytes(_with_row_names(np.concatenate(rows, 0), names, scale=2)))
    return path


def _with_row_names(grid: np.ndarray, names: list[str], scale: int) -> np.ndarray:
    """Upscale a grid of equal-height rows (nearest) and write each row's name in a left margin."""
    from PIL import Image, ImageDraw

    grid = grid.repeat(scale, 0).repeat(scale, 1)
    row_height = grid.shape[0] // len(names)
    canvas = Image.new("RGB", (grid.shape[1] + 120, grid.shape[0]), "white")
    canvas.paste(Image.fromarray(grid), (120, 0))
    draw = ImageDraw.Draw(canvas)
    for i, name in enumerate(names):
        draw.text((4, i * row_height + row_height // 2 - 6), name, fill="black")
    return np.asarray(canvas)


def plot_curves(out: str | Path, methods, seeds, path: str | Path | None = None) -> Path:
    """PNG: training L1 (per logging interval) and validation L1 (per checkpoint) against
    iterations, mean over seeds with min-max bands, one colour per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tralgo.experiments.io import read_jsonl

    out = Path(out)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for method in methods:
        for ax, kind, key in ((axes[0], "train", "loss_G_L1"), (axes[1], "val", "val_l1")):
            curves = []
            for seed in seeds:
                metrics = run_dir_of(out, method, seed) / "metrics.jsonl"
                if metrics.exists():
                    curves.append({r["iter"]: r[key] for r in read_jsonl(metrics) if r.get("kind") == kind})
            if not curves:
                continue
            iters = sorted(set.intersection(*(set(c) for c in curves)))
            values = np.array([[c[i] for i in iters] for c in curves])
            line, = ax.plot(iters, values.mean(0), label=f"{METHOD_LABELS[method]} ({len(curves)} seeds)")
            ax.fill_between(iters, values.min(0), values.max(0), color=line.get_color(), alpha=0.2)
    axes[0].set(title="generator L1 (train, per 50 iterations)", xlabel="iteration", ylabel="L1")
    axes[1].set(title="validation L1 (test-mode G)", xlabel="iteration", ylabel="L1")
    axes[0].legend()
    fig.tight_layout()
    path = Path(path) if path else out / "curves.png"
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path
