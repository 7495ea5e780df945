"""Adam vs TRAdam vs the inner-decay-equivalent-lr Adam control, over seeds: a table shaped like
the paper's Tables 2-3 (GT, then one row per optimizer; mean +- std over seeds).

Next to ``table.md`` and ``summary.json``, ``compare`` writes the raw per-run table ``runs.csv`` (+
``per_class_iou.csv``) and the per-iteration ``curves.csv``; ``tralgo gan compare --from runs.csv
--out DIR`` rebuilds ``table.md`` (and ``curves.png`` where ``curves.csv`` is there) from them alone,
and ``--from summary.json`` exports an older study whose run folders are gone (``export_summary``)."""
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
from tralgo.gan.evaluate import EVAL_FILE, evaluate_run, file_digest, val_outputs
from tralgo.gan.train import GANConfig, val_tensors, build_datasets, inner_decay_equivalent_lr, load_config, train

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


# -- the raw per-run table -------------------------------------------------------------------------
#
# runs.csv: one row per (method, seed) in the order the table lists them, plus one "gt" row (the judge
# on the real photos); status "evaluated" or "missing" (a run without eval.json is listed, never
# dropped). per_class_iou.csv: the class IoUs of the same rows, one column per Cityscapes class
# (empty: the class is absent from ground truth and predictions). Floats are written with repr, so
# reading them back gives the very same numbers and table.md regenerates byte for byte.
RUNS_CSV, PER_CLASS_CSV = "runs.csv", "per_class_iou.csv"
RUN_COLUMNS = ("method", "seed", "status", *METRICS, "val_l1", "wall_s")
# A study exported from a summary.json, which keeps only the per-class means over seeds.
MEAN_SEED = "mean"


def collect_runs(out: str | Path, methods, seeds) -> tuple[list[dict], dict | None]:
    """Per-run records from the run folders' eval.json files, and the judge's GT scores."""
    out = Path(out)
    records, gt = [], None
    for method in methods:
        for seed in seeds:
            path = run_dir_of(out, method, seed) / EVAL_FILE
            if not path.exists():
                records.append({"method": method, "seed": seed, "status": "missing"})
                continue
            e = json.loads(path.read_text())
            records.append({"method": method, "seed": seed, "status": "evaluated",
                            **{m: e["fake"][m] for m in METRICS}, "val_l1": e["val_l1"],
                            "wall_s": _wall(run_dir_of(out, method, seed)),
                            "per_class_iou": e["fake"]["per_class_iou"]})
            gt = gt or e["gt"]
    return records, gt


def summary_from_runs(records: list[dict], gt: dict | None, methods, seeds,
                      per_class_means: dict | None = None) -> dict:
    """The summary (table rows, paired differences, missing runs) of per-run records.

    ``per_class_means``: method -> class IoUs averaged over seeds, for records that lack their own
    (a study exported from a summary.json)."""
    rows, missing = {}, []
    by_method = {m: [r for r in records if r["method"] == m] for m in methods}
    for method in methods:
        evaluated = [r for r in by_method[method] if r["status"] == "evaluated"]
        missing += [f"{method}_seed{r['seed']}" for r in by_method[method] if r["status"] != "evaluated"]
        if not evaluated:
            continue
        rows[method] = {m: _mean_std([r[m] for r in evaluated]) for m in METRICS}
        rows[method]["val_l1"] = _mean_std([r["val_l1"] for r in evaluated])
        if all(r.get("per_class_iou") is not None for r in evaluated):
            rows[method]["per_class_iou"] = _mean_per_class([r["per_class_iou"] for r in evaluated])
        else:
            rows[method]["per_class_iou"] = (per_class_means or {}).get(method)
        rows[method]["wall_s"] = _mean_std([r["wall_s"] for r in evaluated])
    return {"rows": rows, "gt": gt, "seeds": list(seeds), "methods": list(methods), "missing": missing,
            "paired": _paired_differences(records, methods, seeds)}


def summarise(out: str | Path, methods, seeds) -> dict:
    """summary.json, table.md and the raw runs.csv + per_class_iou.csv from the runs' eval.json files
    (runs without one are listed as missing)."""
    out = Path(out)
    records, gt = collect_runs(out, methods, seeds)
    summary = summary_from_runs(records, gt, methods, seeds)
    atomic_write_json(out / "summary.json", summary)
    write_raw(out, records, gt)
    atomic_write_text(out / "table.md", format_table(summary))
    return summary


def _cell(value) -> str:
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


def _csv_text(header, rows) -> str:
    import csv

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[_cell(v) for v in row] for row in rows])
    return buffer.getvalue()


def write_raw(out: str | Path, records: list[dict], gt: dict | None, per_class_means: dict | None = None) -> None:
    """runs.csv and per_class_iou.csv of ``records`` (see the comment above ``RUN_COLUMNS``)."""
    from tralgo.gan.data import CITYSCAPES_CLASSES

    out = Path(out)
    rows = [[r.get(c) for c in RUN_COLUMNS] for r in records]
    class_rows = [[r["method"], r["seed"], *r["per_class_iou"]] for r in records if r.get("per_class_iou") is not None]
    class_rows += [[method, MEAN_SEED, *values] for method, values in (per_class_means or {}).items()]
    if gt is not None:
        rows.append(["gt", "", "evaluated", *[gt[m] for m in METRICS], None, None])
        class_rows.append(["gt", "", *gt["per_class_iou"]])
    atomic_write_text(out / RUNS_CSV, _csv_text(RUN_COLUMNS, rows))
    atomic_write_text(out / PER_CLASS_CSV, _csv_text(("method", "seed", *CITYSCAPES_CLASSES), class_rows))


def _float(text: str, where: str) -> float | None:
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{where}: {text!r} is not a number") from None


def read_csv_table(path: Path, columns: tuple[str, ...], what: str) -> list[dict]:
    """The rows of the ``--from`` CSV at ``path``, refused unless it exists and has exactly
    ``columns`` (``what`` names the file the option expects)."""
    import csv

    if not path.is_file():
        raise FileNotFoundError(f"--from: {str(path)!r} does not exist")
    with path.open(newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    if not table or tuple(table[0]) != columns:
        raise ValueError(f"--from: {str(path)!r} is not {what} (expected the columns {', '.join(columns)})")
    return table


def read_raw(path: str | Path) -> dict:
    """The summary (as ``summarise`` makes it) of a runs.csv and the per_class_iou.csv next to it."""
    import csv

    from tralgo.gan.data import CITYSCAPES_CLASSES

    path = Path(path)
    table = read_csv_table(path, RUN_COLUMNS, "a runs.csv of tralgo gan compare")
    class_path = path.with_name(PER_CLASS_CSV)
    if not class_path.is_file():
        raise FileNotFoundError(f"--from: {str(class_path)!r} (the class IoUs next to {path.name}) does not exist")
    with class_path.open(newline="", encoding="utf-8") as f:
        per_class = {(row["method"], row["seed"]): [_float(row[c], str(class_path)) for c in CITYSCAPES_CLASSES]
                     for row in csv.DictReader(f)}
    records, gt, methods, seeds = [], None, [], []
    for i, row in enumerate(table, start=2):
        where = f"{path}, line {i}"
        if row["method"] == "gt":
            gt = {m: _float(row[m], where) for m in METRICS}
            gt["per_class_iou"] = per_class[("gt", "")]
            continue
        if row["method"] not in METHODS:
            raise ValueError(f"{where}: method must be one of {METHODS}, got {row['method']!r}")
        seed = int(row["seed"])
        methods += [row["method"]] if row["method"] not in methods else []
        seeds += [seed] if seed not in seeds else []
        record = {"method": row["method"], "seed": seed, "status": row["status"]}
        if row["status"] == "evaluated":
            record.update({c: _float(row[c], where) for c in (*METRICS, "val_l1", "wall_s")})
            record["per_class_iou"] = per_class.get((row["method"], row["seed"]))
        records.append(record)
    means = {m: per_class[(m, MEAN_SEED)] for m in methods if (m, MEAN_SEED) in per_class}
    return summary_from_runs(records, gt, methods, seeds, means)


def export_summary(summary: dict, out: str | Path) -> dict:
    """Write runs.csv + per_class_iou.csv for a summary.json whose run folders are gone.

    Per run it holds every scalar metric (``values`` in seed order) but only the per-class IoU means,
    which go to per_class_iou.csv with seed "mean". Returns the summary rebuilt from the records."""
    methods, seeds = summary["methods"], summary["seeds"]
    missing = set(summary.get("missing", []))
    records, means = [], {}
    for method in methods:
        row = summary["rows"].get(method)
        present = [s for s in seeds if f"{method}_seed{s}" not in missing]
        for seed in seeds:
            if seed not in present:
                records.append({"method": method, "seed": seed, "status": "missing"})
                continue
            i = present.index(seed)
            records.append({"method": method, "seed": seed, "status": "evaluated",
                            **{m: row[m]["values"][i] for m in (*METRICS, "val_l1", "wall_s")}})
        if row is not None:
            means[method] = row["per_class_iou"]
    write_raw(out, records, summary.get("gt"), means)
    return summary_from_runs(records, summary.get("gt"), methods, seeds, means)


def _comparison_pairs(methods) -> list[tuple[str, str]]:
    """(method, reference) pairs: everything against Adam, and TRAdam against its equal-step control."""
    pairs = [(m, "adam") for m in methods if m != "adam" and "adam" in methods]
    if "tradam" in methods and "adam_equiv_lr" in methods:
        pairs.append(("tradam", "adam_equiv_lr"))
    return pairs


def _paired_differences(records: list[dict], methods, seeds) -> dict:
    """Per-seed differences ``method - reference`` (same seed = same init, data order and dropout
    stream), mean +- std over the seeds where both runs were evaluated."""
    evaluated = {(r["method"], r["seed"]): r for r in records if r["status"] == "evaluated"}
    paired = {}
    for method, reference in _comparison_pairs(methods):
        diffs = {m: [] for m in (*METRICS, "val_l1")}
        for seed in seeds:
            a, b = evaluated.get((reference, seed)), evaluated.get((method, seed))
            if a is not None and b is not None:
                for m in diffs:
                    diffs[m].append(b[m] - a[m])
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
        values = row["per_class_iou"] or [None] * len(gt)
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
        lines += _paired_ci_table(summary)
    if gt and summary["rows"]:
        lines += _per_class_table(summary)
    if summary.get("missing"):
        lines.append("")
        lines.append("Missing runs: " + ", ".join(summary["missing"]))
    return "\n".join(lines) + "\n"


def _paired_ci_table(summary: dict) -> list[str]:
    """The paired differences as 95% t-intervals with the paired t-test's p-value, Holm-adjusted over
    every difference of the table (the study's family), and the smallest detectable difference: what
    the seeds can and cannot tell apart (a difference inside its interval's reach is not "no effect")."""
    from tralgo.experiments import stats

    metrics = (*((m, 3) for m in METRICS), ("val_l1", 4))
    diffs = [[stats.mean_ci95(row[metric]["values"]) for metric, _ in metrics] for row in summary["paired"].values()]
    adjusted = iter(stats.holm([d.p for row in diffs for d in row]))
    family = sum(len(row) for row in diffs)
    lines = ["", "The same paired differences as a 95% Student-t interval over the seeds, the paired t-test's p-value "
             f"with Holm's adjustment over the table's {family} differences, and the smallest true difference that "
             f"many pairs detect (power {stats.POWER}, two-sided α = {stats.ALPHA}, from the observed spread of the "
             "differences):", "",
             "| Difference | Per-pixel acc. | Per-class acc. | Class IoU | val L1 |", "|---|---|---|---|---|"]
    for row, row_diffs in zip(summary["paired"].values(), diffs):
        cells = []
        for (metric, digits), d in zip(metrics, row_diffs):
            holm = next(adjusted)
            if d.n < 2:
                cells.append(f"{d.mean:+.{digits}f} (1 pair)")
                continue
            cells.append(f"{d.mean:+.{digits}f} [{d.low:+.{digits}f}, {d.high:+.{digits}f}], p {stats.format_p(d.p)} "
                         f"(Holm {stats.format_p(holm)}), detectable {d.mde():.{digits}f}")
        name = f"{METHOD_LABELS[row['method']]} − {METHOD_LABELS[row['reference']]}"
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def comparison_grid(out: str | Path, methods, seed: int, count: int = 6, path: str | Path | None = None) -> Path:
    """PNG: one column per validation image; rows label map, real photo, then each method's output."""
    out = Path(out)
    rows = None
    for method in methods:
        run_dir = run_dir_of(out, method, seed)
        fakes = val_outputs(run_dir)[:count]  # the images the FCN-score read
        if rows is None:
            _, val = build_datasets(load_config(run_dir))
            inputs, reals = val_tensors(val, count)
            rows = [np.concatenate([to_image(x) for x in inputs], 1), np.concatenate([to_image(x) for x in reals], 1)]
        rows.append(np.concatenate(list(fakes), 1))
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


# curves.csv: the per-iteration raw data of curves.png, one row per (method, seed, curve, iteration).
CURVES_CSV = "curves.csv"
CURVE_COLUMNS = ("method", "seed", "curve", "iter", "value")
CURVES = (("train", "loss_G_L1"), ("val", "val_l1"))  # (metrics.jsonl kind, key) = the curve's name


def collect_curves(out: str | Path, methods, seeds) -> list[tuple]:
    """(method, seed, curve, iter, value) rows from the runs' metrics.jsonl files."""
    from tralgo.experiments.io import read_jsonl

    rows = []
    for method in methods:
        for seed in seeds:
            metrics = run_dir_of(Path(out), method, seed) / "metrics.jsonl"
            if metrics.exists():
                records = list(read_jsonl(metrics))
                for kind, key in CURVES:
                    rows += [(method, seed, key, r["iter"], r[key]) for r in records if r.get("kind") == kind]
    return rows


def read_curves(path: str | Path) -> list[tuple]:
    import csv

    with Path(path).open(newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    if table and tuple(table[0]) != CURVE_COLUMNS:
        raise ValueError(f"{str(path)!r} is not a curves.csv of tralgo gan compare (columns {', '.join(CURVE_COLUMNS)})")
    return [(r["method"], int(r["seed"]), r["curve"], int(r["iter"]), _float(r["value"], str(path))) for r in table]


def plot_curves(out: str | Path, methods, seeds, path: str | Path | None = None) -> Path:
    """curves.csv (the raw per-iteration values) and curves.png from the runs' metrics.jsonl."""
    out = Path(out)
    rows = collect_curves(out, methods, seeds)
    atomic_write_text(out / CURVES_CSV, _csv_text(CURVE_COLUMNS, rows))
    return draw_curves(rows, Path(path) if path else out / "curves.png")


def draw_curves(rows: list[tuple], path: Path) -> Path:
    """PNG: training L1 (per logging interval) and validation L1 (per checkpoint) against
    iterations, mean over seeds with min-max bands, one colour per method (in the rows' order)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r[0] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for method in methods:
        for ax, (_, key) in zip(axes, CURVES):
            by_seed: dict[int, dict[int, float]] = {}
            for m, seed, curve, it, value in rows:
                if m == method and curve == key:
                    by_seed.setdefault(seed, {})[it] = value
            curves = list(by_seed.values())
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
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path
