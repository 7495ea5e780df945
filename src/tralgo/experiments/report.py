"""``tralgo report RUNS... --out DIR``: summarise run folders into a Markdown report with plots.

Per study (a table or figure of a sweep spec; folders not made by a sweep are grouped by their
settings), the report gives

* per configuration: final test accuracy as mean ± std over seeds and the number of seeds, with
  the diverged, failed and unfinished runs counted (never dropped silently);
* for every TR optimizer and control: the paired difference to its base over the seeds both
  finished, with a 95% t confidence interval, and TR minus each control; the t-test p, Holm's
  correction over the study's declared family of contrasts, two one-sided tests (TOST) at its
  equivalence margin and the smallest detectable difference (see ``comparisons``);
* plots like the paper's Figures 1-3: the mean curve over seeds with a ±1 std band;
* a "Findings" section that says, in words, whether TR beats its base and which control explains
  a gain; and how busy the sweep kept its workers (wall time against the sum of run times).

It reads only small JSON files (its statistics use scipy and statsmodels, about 1.2 s of CPU to
import), so 500 runs take seconds.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shlex
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tralgo.experiments import config as config_lib
from tralgo.experiments import stats
from tralgo.experiments.io import atomic_write_text, read_jsonl

METRIC = "test_acc"
CURVES = (("train_loss", "train loss"), ("test_loss", "test loss"), ("train_acc", "train accuracy"),
          ("test_acc", "test accuracy"))
# Stale folders (moved aside by a sweep after a spec change), e.g. ``seed-1.stale-2``: not results.
STALE_FOLDER = re.compile(r"\.stale-\d+$")


# --------------------------------------------------------------------------- loading


@dataclass
class RunRecord:
    folder: Path
    config: dict
    memberships: list[dict]
    status: str                   # finished / diverged / failed / unfinished / not started
    final: dict | None            # the final metrics record (finished runs): the curve's last
    curve: list[dict]             # metrics.jsonl records
    error: str | None = None      # last line of a failed run's error
    code: dict = field(default_factory=dict)  # {"git_commit": sha or None, "git_dirty": bool or None}

    @property
    def seed(self) -> Any:
        return self.config.get("seed")


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None


def find_run_folders(paths: list[Path]) -> tuple[list[Path], list[Path], list[Path]]:
    """Run folders (holding config.json or sweep.json), sweep event logs, and the stale folders
    a sweep moved aside (``<folder>.stale-<n>``, skipped) under ``paths``."""
    runs, events, stale = [], [], []
    for root in paths:
        if not root.exists():
            raise FileNotFoundError(f"RUNS: {str(root)!r} does not exist")
        for dirpath, dirnames, filenames in os.walk(root):
            for name in [d for d in dirnames if STALE_FOLDER.search(d)]:
                stale.append(Path(dirpath) / name)
                dirnames.remove(name)
            if "sweep_events.jsonl" in filenames:
                events.append(Path(dirpath) / "sweep_events.jsonl")
            if "config.json" in filenames or "sweep.json" in filenames:
                runs.append(Path(dirpath))
                dirnames[:] = []  # a run folder holds no further runs
            else:
                dirnames.sort()
    return sorted(set(runs)), sorted(set(events)), sorted(set(stale))


def load_run(folder: Path) -> RunRecord:
    config = _read_json(folder / "config.json") or {}
    sweep = _read_json(folder / "sweep.json")
    code = {"git_commit": config.get("git_commit"), "git_dirty": config.get("git_dirty")}
    if sweep is not None:
        if not config:
            config = dict(sweep.get("config") or sweep.get("options", {}))
            code = {k: (sweep.get("code") or {}).get(k) for k in ("git_commit", "git_dirty")}
        memberships = sweep.get("memberships", [])
    else:
        memberships = []  # filled in by derive_memberships, which needs every run
    result = _read_json(folder / "result.json")
    curve = list(read_jsonl(folder / "metrics.jsonl")) if (folder / "metrics.jsonl").is_file() else []
    status_file = _read_json(folder / "sweep_status.json")
    error = None
    if result is not None and result.get("status") in ("finished", "diverged"):
        status = result["status"]
        if not curve and result.get("final"):
            curve = [result["final"]]
    elif status_file is not None and status_file.get("status") == "failed":
        status = "failed"
        error = (str(status_file.get("error", "")).strip().splitlines() or [""])[-1]
    elif (folder / "config.json").is_file() or curve:
        status = "unfinished"
    else:
        status = "not started"
    final = curve[-1] if status == "finished" and curve else None
    return RunRecord(folder, config, memberships, status, final, curve, error, code)


def _setting_label(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _uses(optimizer: str, detail: str) -> bool:
    """Whether ``optimizer`` uses the TR/Lookahead hyperparameter ``detail``."""
    if detail.startswith("lookahead_"):
        return optimizer.startswith("lookahead-")
    return optimizer.startswith("tr")


def derive_memberships(runs: list[RunRecord]) -> None:
    """Study "runs" for the folders not made by a sweep, grouped by every setting that differs
    among them (all of TrainConfig but the seed, experiments/config.py). TR and Lookahead
    hyperparameters name the variant (``trsgd-lam0.2-inverse_lr-S10``) so that TR pairs with its
    base at the same other settings, which form the grid point (``lr 0.05, batch_size 8``). A
    hyperparameter an optimizer does not use (lam for sgd) does not separate its runs."""
    plain = [r for r in runs if not r.memberships]
    if not plain:
        return
    keys = config_lib.grouping_keys()

    def value(run: RunRecord, key: str) -> Any:
        v = config_lib.recorded_setting(run.config, key)
        return float(v) if isinstance(v, int) and not isinstance(v, bool) and isinstance(
            config_lib.TRAIN_FIELDS[key].default, float) else v

    differing = [k for k in keys if len({json.dumps(value(r, k)) for r in plain}) > 1]
    details = set(config_lib.OPTIMIZER_DETAILS)
    for run in plain:
        opt = str(value(run, "optimizer"))
        name = opt
        if opt.startswith("tr"):
            name += f"-lam{_setting_label(value(run, 'lam'))}-{value(run, 'lam_scaling')}-S{value(run, 'inner_steps')}"
        shown = {"lam", "lam_scaling", "inner_steps"} if opt.startswith("tr") else set()
        for k in differing:
            if k in details and k not in shown and _uses(opt, k):
                name += f"-{k}{_setting_label(value(run, k))}"
        grid = {k: _setting_label(value(run, k)) for k in differing if k not in details and k != "optimizer"}
        grid["seed"] = str(run.seed)
        tr = opt.startswith("tr")
        run.memberships = [{"study": "runs", "variant": name, "role": "tr" if tr else "base",
                            "base": opt[2:] if tr else None, "grid": grid, "tuning": False, "report": {}}]


def load_runs(paths: list[Path]) -> tuple[list[RunRecord], list[Path], list[Path]]:
    """Every run under ``paths`` (memberships derived for folders not made by a sweep), the sweep
    event logs and the skipped stale folders."""
    folders, events, stale = find_run_folders(paths)
    runs = [load_run(f) for f in folders]
    derive_memberships(runs)
    return runs, events, stale


# --------------------------------------------------------------------------- grouping


@dataclass
class Cell:
    """One configuration of a study: a variant at one grid point, over seeds."""

    study: str
    variant: str
    role: str
    base: str | None
    point: tuple            # ((axis, label), ...) without the seed
    label: str
    runs: list[RunRecord] = field(default_factory=list)

    def values(self, metric: str = METRIC) -> dict:
        """seed -> final metric of the finished runs."""
        out = {}
        for run in self.runs:
            if run.status == "finished" and run.final and run.final.get(metric) is not None:
                out[run.seed] = float(run.final[metric])
        return out

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.runs)


@dataclass
class Study:
    name: str
    report: dict
    cells: dict = field(default_factory=dict)        # (variant, point) -> Cell
    tuning: list = field(default_factory=list)       # (membership, RunRecord)
    variant_rank: dict = field(default_factory=dict)  # variant -> position in the spec
    index: int = 0                                   # position of the study in its spec

    @property
    def variant_order(self) -> list[str]:
        return sorted(self.variant_rank, key=lambda v: (self.variant_rank[v], v))

    def cell(self, variant: str, point: tuple) -> Cell | None:
        return self.cells.get((variant, point))

    def points(self) -> list[tuple]:
        """Grid points, numeric axis values in increasing order, others in order of appearance."""
        seen = []
        for (_, point) in self.cells:
            if point not in seen:
                seen.append(point)

        return sorted(seen, key=lambda point: [_label_key(label) for _, label in point])

    def ordered_cells(self) -> list[Cell]:
        """Cells by grid point, then by the variants' order in the spec."""
        return [c for p in self.points() for v in self.variant_order if (c := self.cell(v, p)) is not None]


def _label_key(label: str) -> tuple:
    """Numbers in increasing order, other labels in natural order (bs8 < bs32 < bs128)."""
    try:
        return (0, float(label), [])
    except ValueError:
        return (1, 0.0, [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", label)])


def group(runs: list[RunRecord]) -> dict[str, Study]:
    """Runs into studies and cells. Two runs of one cell with the same seed are an error (one
    would silently replace the other in every paired statistic), and so are two runs of one cell
    with different settings (they would be pooled)."""
    studies: dict[str, Study] = {}
    for run in runs:
        for m in run.memberships:
            study = studies.setdefault(m["study"], Study(m["study"], m.get("report") or {},
                                                         index=int(m.get("study_index", 0))))
            if m.get("tuning"):
                study.tuning.append((m, run))
                continue
            point = tuple((a, str(v)) for a, v in m.get("grid", {}).items() if a != "seed")
            key = (m["variant"], point)
            if key not in study.cells:
                label = m.get("label") or _variant_label(m["variant"], study)
                study.cells[key] = Cell(m["study"], m["variant"], m.get("role", "base"), m.get("base"), point, label)
            study.variant_rank[m["variant"]] = int(m.get("variant_index", len(study.variant_rank)))
            cell = study.cells[key]
            twin = next((r for r in cell.runs if r.seed == run.seed), None)
            if twin is not None:
                raise ValueError(f"{twin.folder} and {run.folder} are the same configuration (study {m['study']!r}, "
                                 f"{m['variant']}, {_point_text(point)}) with the same seed {run.seed}; "
                                 "report one of them, or give them different seeds")
            _check_same_configuration(cell, run, m["study"])
            cell.runs.append(run)
    return studies


def _check_same_configuration(cell: Cell, run: RunRecord, study: str) -> None:
    """A cell's runs differ only in the seed; folders of two specs that name a study, variant and
    grid point alike but ran other settings are an error, never pooled."""
    if run.status == "not started":  # its record may hold the spec's unresolved options only
        return
    other = next((r for r in cell.runs if r.status != "not started"), None)
    if other is None:
        return
    optimizer = str(config_lib.recorded_setting(run.config, "optimizer"))
    keys = [k for k in config_lib.grouping_keys() if k not in config_lib.OPTIMIZER_DETAILS or _uses(optimizer, k)]
    changed = [f"{key} {config_lib.recorded_setting(other.config, key)!r} vs "
               f"{config_lib.recorded_setting(run.config, key)!r}" for key in keys
               if not config_lib.same_value(config_lib.recorded_setting(other.config, key),
                                            config_lib.recorded_setting(run.config, key))]
    if changed:
        raise ValueError(f"{other.folder} and {run.folder} are both study {study!r}, {cell.variant}, "
                         f"{_point_text(cell.point)} but ran different settings ({'; '.join(changed)}); "
                         "report them separately")


def _variant_label(variant: str, study: Study) -> str:
    labels = study.report.get("labels", {})
    return labels.get(variant, variant)


def _point_text(point: tuple) -> str:
    return ", ".join(f"{a} {l}" for a, l in point) or "-"


# --------------------------------------------------------------------------- tables


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def cell_row(cell: Cell, base: Cell | None) -> list[str]:
    summary = stats.summarize(list(cell.values().values()))
    n_runs = len(cell.runs)
    other = n_runs - cell.count("finished") - cell.count("diverged")
    diff = "" if base is None or base is cell else stats.paired_difference(cell.values(), base.values()).format(scale=100)
    return [cell.label, summary.format(scale=100), f"{cell.count('diverged')}/{n_runs}",
            str(other) if other else "0", diff]


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _configuration_table(header: list[str], rows: list[list[str]], points: list[tuple]) -> str:
    """A table whose first column names each row's grid point ("configuration"); a study without
    grid axes (besides seeds) has one unnamed point, so the column would only repeat "-": drop it."""
    if points and not any(points):
        header, rows = header[1:], [row[1:] for row in rows]
    return _md_table(header, rows)


def _prefix(point: tuple) -> str:
    """'batch_size 8: ' before a finding about that grid point; nothing when the study has no axes."""
    return f"{_point_text(point)}: " if point else ""


def _base_cell(study: Study, cell: Cell) -> Cell | None:
    if cell.base is None:
        return None
    # The base may ignore some grid axes (e.g. SGD in the S study): match on the axes it has.
    for (variant, point), candidate in study.cells.items():
        if variant == cell.base and set(point) <= set(cell.point):
            return candidate
    return None


def study_table(study: Study) -> str:
    header = ["configuration", "variant", "test acc % mean ± std (n)", "diverged", "failed/unfinished",
              "paired diff vs base, pp [95% CI] (pairs)"]
    rows, points = [], []
    for point in study.points():
        for variant in study.variant_order:
            cell = study.cell(variant, point)
            if cell is None:
                continue
            rows.append([_point_text(point)] + cell_row(cell, _base_cell(study, cell)))
            points.append(point)
    return _configuration_table(header, rows, points)


def pivot_table(study: Study, axis: str) -> str:
    """Paper-style table: one row per variant, one column per value of ``axis``."""
    columns = []
    for point in study.points():
        value = dict(point).get(axis)
        if value is not None and value not in columns:
            columns.append(value)
    rows = []
    for variant in study.variant_order:
        cells = {dict(p).get(axis): c for (v, p), c in study.cells.items() if v == variant}
        label = next(iter(cells.values())).label
        if list(cells) == [None]:  # a variant that ignores the axis (e.g. SGD in the S study)
            label += " (same runs in every column)"
            cells = dict.fromkeys(columns, cells[None])
        rows.append([label] + [stats.summarize(list(cells[c].values().values())).format(scale=100)
                               if c in cells else "–" for c in columns])
    return _md_table(["variant"] + [f"{axis} {c}" for c in columns], rows)


# Statistics of a study (see tralgo.experiments.stats): every contrast is a paired difference over
# seeds; the family a study declares in advance ([study.report] contrasts) gets Holm's correction
# for the t-tests and, separately, for the equivalence tests (TOST at [study.report]
# equivalence_margin). Claims in words ("better", "worse", "equivalent", "explained by") are made
# only for family members after the correction; everything else is shown as exploratory numbers.
REPORT_STAT_KEYS = ("equivalence_margin", "contrasts")


def check_report_settings(report: Any, variants: list[str], where: str) -> None:
    """Validate the statistical keys of a study's ``[study.report]`` table (one-line ValueError).

    ``equivalence_margin``: a number > 0 in metric units (accuracy as a fraction: 0.01 = 1 pp).
    ``contrasts``: a list of ``[a, b]`` pairs of distinct variant names of the study, meaning
    ``a - b``; the study's primary family, at every grid point where both have runs.
    """
    if not isinstance(report, dict):
        raise ValueError(f"{where}: [study.report] must be a table, got {report!r}")
    margin = report.get("equivalence_margin")
    if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float))
                               or not 0 < margin < 1):
        raise ValueError(f"{where} [study.report]: equivalence_margin must be a number in (0, 1) "
                         f"(accuracy units: 0.01 = 1 pp), got {margin!r}")
    contrasts = report.get("contrasts")
    if contrasts is None:
        return
    if not isinstance(contrasts, list) or not contrasts:
        raise ValueError(f"{where} [study.report]: contrasts must be a non-empty list of [a, b] variant pairs, "
                         f"got {contrasts!r}")
    seen = set()
    for pair in contrasts:
        if (not isinstance(pair, list) or len(pair) != 2 or not all(isinstance(v, str) for v in pair)
                or pair[0] == pair[1]):
            raise ValueError(f"{where} [study.report]: each contrast must be a pair [a, b] of two different "
                             f"variant names, got {pair!r}")
        unknown = [v for v in pair if v not in variants]
        if unknown:
            raise ValueError(f"{where} [study.report]: contrast {pair!r} names {unknown[0]!r}, not a variant of "
                             f"the study ({', '.join(variants)})")
        if tuple(pair) in seen:
            raise ValueError(f"{where} [study.report]: contrast {pair!r} appears twice")
        seen.add(tuple(pair))


@dataclass
class Contrast:
    """``a - b`` over the seeds both cells finished, with its tests."""

    a: Cell
    b: Cell
    diff: stats.PairedDifference
    margin: float | None          # equivalence margin of the study (metric units), None: not declared
    in_family: bool = False
    family_size: int = 0
    family_declared: bool = False  # the study names its family; else the default family
    p_holm: float = math.nan      # Holm-adjusted t-test p over the family
    tost_p: float = math.nan      # TOST p at the margin (unadjusted)
    tost_holm: float = math.nan   # Holm-adjusted TOST p over the family
    mde: float = math.nan         # detectable difference (power 0.8) at the level the claim is tested
    seeds_needed: int | None = None  # paired seeds for TOST at the margin with power 0.8, if truly equal

    @property
    def name(self) -> str:
        return f"{self.a.label} − {self.b.label}"

    @property
    def different(self) -> bool:
        """Significant after Holm over the declared family."""
        return self.in_family and self.p_holm < stats.ALPHA

    @property
    def equivalent(self) -> bool:
        """Shown equivalent within the margin by TOST, after Holm over the declared family."""
        return self.in_family and self.tost_holm < stats.ALPHA


def _contrast(a: Cell, b: Cell, margin: float | None) -> Contrast:
    diff = stats.paired_difference(a.values(), b.values())
    return Contrast(a, b, diff, margin, tost_p=diff.tost_p(margin) if margin else math.nan)


def _cell_of(study: Study, variant: str, point: tuple) -> Cell | None:
    """The cell of ``variant`` at ``point``, or at the part of it the variant's grid has (it may ignore axes)."""
    exact = study.cell(variant, point)
    if exact is not None:
        return exact
    for (v, p), candidate in study.cells.items():
        if v == variant and set(p) <= set(point):
            return candidate
    return None


def comparisons(study: Study) -> list[dict]:
    """Every TR cell against its base and against each control of the same base and point, plus the
    study's declared contrasts; the family gets Holm's correction (see ``_apply_family``)."""
    margin = study.report.get("equivalence_margin")
    # One Contrast per (a, b, point), however many entries show it: two TR variants with the same
    # controls share "control − base", which must be one row and, if declared, one family member.
    made: dict[tuple, Contrast] = {}

    def contrast(a: Cell, b: Cell) -> Contrast:
        key = (a.variant, b.variant, a.point)
        if key not in made:
            made[key] = _contrast(a, b, margin)
        return made[key]

    out = []
    ordered = study.ordered_cells()
    for cell in ordered:
        if cell.role != "tr":
            continue
        base = _base_cell(study, cell)
        if base is None:
            continue
        entry = {"cell": cell, "base": base, "vs_base": contrast(cell, base), "controls": [],
                 "declared": False}
        for other in ordered:
            if other.role == "control" and other.base == cell.base and other.point == cell.point:
                entry["controls"].append({"cell": other, "control_vs_base": contrast(other, base),
                                          "tr_vs_control": contrast(cell, other)})
        out.append(entry)
    for a_name, b_name in study.report.get("contrasts") or []:
        for point in study.points():
            a, b = study.cell(a_name, point), _cell_of(study, b_name, point)
            if a is None or b is None or (a_name, b_name, point) in made:
                continue
            out.append({"cell": a, "base": b, "vs_base": contrast(a, b), "controls": [], "declared": True})
    _apply_family(study, _entry_contrasts(out), untested=len(_untested_contrasts(study, out)))
    return out


def _untested_contrasts(study: Study, entries: list[dict]) -> list[tuple[str, str]]:
    """Declared contrasts with no cell pair at any grid point (a side not run yet)."""
    present = {(c.a.variant, c.b.variant) for c in _entry_contrasts(entries)}
    return [tuple(pair) for pair in study.report.get("contrasts") or [] if tuple(pair) not in present]


def _entry_contrasts(entries: list[dict]) -> list[Contrast]:
    """The entries' contrasts in order of appearance, each once (entries share control − base)."""
    out: dict[int, Contrast] = {}
    for e in entries:
        out.setdefault(id(e["vs_base"]), e["vs_base"])
        for ctl in e["controls"]:
            for c in (ctl["control_vs_base"], ctl["tr_vs_control"]):
                out.setdefault(id(c), c)
    return list(out.values())


def _apply_family(study: Study, contrasts: list[Contrast], untested: int = 0) -> None:
    """Mark the family and fill in its Holm-adjusted p-values and detectable differences.

    The family is the study's declared ``contrasts`` at every grid point; a study that declares none
    gets every TR − base and TR − control contrast (the claims its findings make). The detectable
    difference of a family member is computed at alpha / (family size), the level of Holm's first
    step, so it is detected whatever the other members' p-values are; other contrasts at alpha.
    ``untested`` declared contrasts without runs count in the family as p = 1 (see ``stats.holm``).
    """
    declared = study.report.get("contrasts")
    if declared:
        wanted = {tuple(pair) for pair in declared}
        family = [c for c in contrasts if (c.a.variant, c.b.variant) in wanted]
    else:
        family = [c for c in contrasts if c.a.role == "tr" and c.b.variant != c.a.variant]
    missing = [math.nan] * untested
    p_holm = stats.holm([c.diff.p for c in family] + missing)
    tost_holm = (stats.holm([c.tost_p for c in family] + missing) if study.report.get("equivalence_margin")
                 else [math.nan] * len(family))
    for c, p, q in zip(family, p_holm, tost_holm):
        c.in_family, c.family_size, c.p_holm, c.tost_holm = True, len(family) + untested, p, q
    for c in contrasts:
        c.family_declared = bool(declared)
        alpha = stats.ALPHA / c.family_size if c.in_family else stats.ALPHA
        c.mde = c.diff.mde(alpha=alpha)
        if c.margin and c.diff.n >= 2 and c.diff.std > 0:
            try:  # the power analysis for the next study: this spread, a true difference of 0
                c.seeds_needed = stats.seeds_for_equivalence(c.margin, c.diff.std, alpha=alpha)
            except ValueError:  # more than stats' max_n: shown as such
                c.seeds_needed = -1


_p = stats.format_p


def _pp(x: float) -> str:
    return "–" if math.isnan(x) else f"{100 * x:.2f}"


def _tost_text(c: Contrast) -> str:
    if not c.margin:
        return "no margin declared"
    if c.diff.n < 2:
        return "needs 2 pairs"
    if not c.in_family:
        return f"p {_p(c.tost_p)} (exploratory)"
    return f"p {_p(c.tost_p)}, Holm {_p(c.tost_holm)}: " + ("**equivalent**" if c.equivalent else "not shown")


def comparison_table(entries: list[dict]) -> str:
    """One row per contrast: paired difference with CI, t-test p (Holm-adjusted for the declared
    family, marked ★), the TOST verdict at the study's margin and the detectable difference."""
    contrasts = _entry_contrasts(entries)
    margin = next((c.margin for c in contrasts if c.margin), None)
    family_size = next((c.family_size for c in contrasts if c.in_family), 0)
    header = ["configuration", "contrast (★ = family)", "diff pp [95% CI] (pairs)", "p", "Holm p",
              f"TOST ±{100 * margin:.2g} pp" if margin else "TOST", "detectable diff pp"]
    rows = [[_point_text(c.a.point), c.name + (" ★" if c.in_family else ""), c.diff.format(scale=100), _p(c.diff.p),
             _p(c.p_holm) if c.in_family else "–", _tost_text(c), _pp(c.mde)] for c in contrasts]
    if margin:
        header.append(f"seeds for ±{100 * margin:.2g} pp")
        for row, c in zip(rows, contrasts):
            row.append("–" if c.seeds_needed is None else ">10000" if c.seeds_needed < 0 else str(c.seeds_needed))
    declared = any(c.family_declared for c in contrasts)
    note = (f"★: the study's family of {family_size} contrasts, Holm-corrected ("
            + ("declared in the spec" if declared else "none declared in the spec: every TR − base and "
               "TR − control contrast") + "). "
            "p: two-sided paired t-test. TOST: two one-sided paired t-tests at the study's equivalence margin "
            f"(each at {stats.ALPHA}). Detectable diff: smallest true difference found with power "
            f"{stats.POWER} (two-sided, at α = {stats.ALPHA}/{family_size or 1} for family members, {stats.ALPHA} "
            "otherwise), from the observed spread of the paired differences."
            + (" Seeds for ±margin: paired seeds the equivalence test needs to pass with power "
               f"{stats.POWER} at the same level if the true difference were 0 and the spread as observed "
               "(a power analysis for a follow-up study)." if margin else ""))
    return note + "\n\n" + _configuration_table(header, rows, [c.a.point for c in contrasts])


def _at_epoch(cell: Cell, epoch: int, metric: str = METRIC) -> dict:
    """seed -> ``metric`` logged at ``epoch`` by the cell's finished runs."""
    out = {}
    for run in cell.runs:
        if run.status != "finished":
            continue
        for rec in run.curve:
            if rec.get("epoch") == epoch and rec.get(metric) is not None:
                out[run.seed] = float(rec[metric])
    return out


def _lr_changes(cell: Cell) -> list[str]:
    """Where the learning rate of ``cell``'s first finished run changes: 'after epoch E (a → b)'."""
    run = next((r for r in cell.runs if r.status == "finished" and r.curve), None)
    if run is None:
        return []
    out, previous = [], None
    for rec in run.curve:
        lr = rec.get("lr")
        if lr is not None and previous is not None and lr != previous[1]:
            out.append(f"after epoch {previous[0]} ({previous[1]:.3g} → {lr:.3g})")
        if lr is not None:
            previous = (rec.get("epoch"), lr)
    return out


def over_epochs_table(entries: list[dict], metric: str = METRIC) -> str:
    """The family's contrasts at every epoch where both sides evaluated the test set: does a
    difference appear, grow or vanish during training (e.g. after the learning-rate drops)?
    Exploratory: one interval per epoch, no multiplicity correction. Empty when the runs
    evaluated fewer than two epochs."""
    family = [c for c in _entry_contrasts(entries) if c.in_family]
    epochs = sorted({rec["epoch"] for c in family for cell in (c.a, c.b) for run in cell.runs
                     if run.status == "finished" for rec in run.curve
                     if rec.get(metric) is not None and isinstance(rec.get("epoch"), int)})
    if len(epochs) < 2 or not family:
        return ""
    rows = []
    for c in family:
        row = [_point_text(c.a.point), c.name]
        for epoch in epochs:
            d = stats.paired_difference(_at_epoch(c.a, epoch, metric), _at_epoch(c.b, epoch, metric))
            row.append("–" if d.n == 0 else f"{100 * d.mean:+.2f}" if d.n < 2 else
                       f"{100 * d.mean:+.2f} ± {100 * d.half_width:.2f}")
        rows.append(row)
    drops = _lr_changes(family[0].b)
    note = (f"The family's contrasts during training: paired difference of {metric.replace('_', ' ')} in pp at "
            "each epoch where the test set was evaluated, mean ± half-width of its 95% interval "
            "(exploratory: an interval per epoch, no multiplicity correction; the verdicts above use the "
            "final epoch only)." + (f" Learning rate of {family[0].b.label}: changes {', '.join(drops)}."
                                    if drops else ""))
    return note + "\n\n" + _configuration_table(["configuration", "contrast", *[f"ep {e}" for e in epochs]], rows,
                                                [c.a.point for c in family])


def _detectable(c: Contrast) -> str:
    return (f"not distinguishable with {c.diff.n} seeds (smallest detectable difference "
            f"{_pp(c.mde)} pp; {c.diff.format(scale=100)} pp)")


def _verdict(c: Contrast) -> str:
    d = c.diff
    if d.n < 2:
        return "cannot be judged yet (fewer than 2 paired seeds)"
    if not c.in_family:
        return (f"exploratory, not in the study's family: {d.format(scale=100)} pp, unadjusted p {_p(d.p)}; "
                "no claim is made")
    if c.different:
        return f"{'better' if d.mean > 0 else 'worse'} ({d.format(scale=100)} pp, Holm p {_p(c.p_holm)})"
    if c.equivalent:
        return (f"equivalent within ±{_pp(c.margin)} pp ({d.format(scale=100)} pp, TOST Holm p "
                f"{_p(c.tost_holm)})")
    return _detectable(c)


def findings(study: Study, entries: list[dict]) -> list[str]:
    """Plain-language statements, one per TR configuration and declared contrast. A gain is
    "explained by" a control only when TR − control is shown equivalent (TOST, Holm)."""
    lines = []
    margin = study.report.get("equivalence_margin")
    for e in entries:
        cell, base, c = e["cell"], e["base"], e["vs_base"]
        text = f"{_prefix(cell.point)}{cell.label} vs {base.label}: {_verdict(c)}."
        explaining = []
        if e["controls"] and c.different and c.diff.mean > 0:
            explaining = [x for x in e["controls"] if x["tr_vs_control"].equivalent]
            if explaining:
                text += " The gain is explained by " + "; ".join(
                    f"{x['cell'].label} (TR − it equivalent within ±{_pp(margin)} pp, TOST Holm p "
                    f"{_p(x['tr_vs_control'].tost_holm)})" for x in explaining) + "."
            elif not margin:
                text += (" Whether a control explains it is not tested: the study declares no "
                         "equivalence_margin.")
        # TR − control contrasts of the family, each with its verdict (better, worse, equivalent or
        # what was detectable); "explained by" above already says the equivalent ones of a gain.
        judged = [x for x in e["controls"] if x["tr_vs_control"].in_family and x["tr_vs_control"].diff.n >= 2
                  and not any(x is y for y in explaining)]
        if judged:
            text += " TR vs " + "; ".join(f"{x['cell'].label}: {_verdict(x['tr_vs_control'])}"
                                          for x in judged) + "."
        diverged = cell.count("diverged") + base.count("diverged")
        if diverged:
            text += f" Diverged runs: {cell.count('diverged')} of {len(cell.runs)} ({cell.label}), " \
                    f"{base.count('diverged')} of {len(base.runs)} ({base.label})."
        lines.append(text)
    for a_name, b_name in _untested_contrasts(study, entries):
        label = {c.variant: c.label for c in study.cells.values()}
        lines.append(f"Declared contrast {label.get(a_name, a_name)} − {label.get(b_name, b_name)}: "
                     "untested, one side has no runs yet (it counts in the Holm family as p = 1).")
    for point in study.points():
        ranked = [(stats.summarize(list(c.values().values())).mean, c.label)
                  for v in study.variant_order if (c := study.cell(v, point)) is not None and c.values()]
        if len(ranked) > 1:
            best = max(ranked)
            text = f"highest mean test accuracy: {best[1]} ({100 * best[0]:.2f}%)."
            lines.append(_prefix(point) + text if point else text[0].upper() + text[1:])
    return lines


def tuning_table(study: Study, metric: str = "val_acc") -> str:
    """Candidates of each tuned variant, their mean validation score (the sweep's own scoring
    rule), and which one the sweep chose for the study's runs."""
    from tralgo.experiments.sweep import _value_label, score

    chosen = []  # (variant, {(axis, label)}) of the values the final runs use
    for cell in study.cells.values():
        for run in cell.runs:
            for m in run.memberships:
                if m.get("study") == study.name and m.get("tuned"):
                    chosen.append((m["variant"], set(cell.point) | {(k, _value_label(v)) for k, v in m["tuned"].items()}))
    groups: dict[tuple, list] = defaultdict(list)
    for m, run in study.tuning:
        point = tuple((a, str(l)) for a, l in m["grid"].items() if a != "seed")
        last = run.curve[-1] if run.curve else None  # the run's data, not its folder: runs.csv rebuilds it
        groups[(m["variant"], point)].append((run.status, score(run.status, last, metric, run.folder)))
    rows = []
    for (variant, point), results in sorted(groups.items()):
        statuses = [s for s, _ in results]
        scores = [x for _, x in results if x is not None]
        mean_score = f"{100 * sum(scores) / len(scores):.2f}" if scores else "–"
        mark = "chosen" if any(v == variant and c == set(point) for v, c in chosen) else ""
        rows.append([variant, _point_text(point), mean_score, f"{statuses.count('finished')}/{len(statuses)}",
                     str(statuses.count("diverged")), mark])
    return _md_table(["variant", "candidate", f"mean {metric} %", "finished", "diverged", ""], rows)


# --------------------------------------------------------------------------- plots


def _curve_band(runs: list[RunRecord], x_key: str, y_key: str):
    """Mean and std of ``y_key`` over runs at each x (only x where the runs logged a value)."""
    by_x: dict[float, list[float]] = defaultdict(list)
    for run in runs:
        for rec in run.curve:
            x, y = rec.get(x_key), rec.get(y_key)
            if x is not None and y is not None and not rec.get("diverged"):
                by_x[float(x)].append(float(y))
    xs = sorted(by_x)
    means = [stats.mean(by_x[x]) for x in xs]
    stds = [0.0 if len(by_x[x]) < 2 else stats.sample_std(by_x[x]) for x in xs]
    return xs, means, stds


MAX_LEGEND_IN_PANEL = 4   # more lines than this, or a longer label than the next: the legend goes below
MAX_LABEL_IN_PANEL = 32   # the panels (inside the first one it hides curves)
LOG_SCALE_RATIO = 20.0    # a loss panel whose means span more than this factor is drawn on a log axis


def _base_optimizer(study: Study) -> dict[str, str]:
    """variant -> the optimizer of the variant at the root of its ``base`` chain (TR and control arms
    go with the optimizer they are compared with; a tuned SGD with SGD)."""
    base = {c.variant: c.base for c in study.cells.values()}
    optimizer = {c.variant: next((str(r.config.get("optimizer", "")) for r in c.runs), "") for c in study.cells.values()}
    out = {}
    for variant in base:
        root, seen = variant, set()
        while base.get(root) in base and root not in seen:
            seen.add(root)
            root = base[root]
        out[variant] = optimizer.get(root) or root
    return out


def plot_lines(study: Study) -> list[tuple[str, dict[str, list[RunRecord]]]]:
    """Figures of a study: (title, {line label: runs}); lines differ in ``lines_by``.

    With lines by variant, no ``plot_variants`` and more variants than one legend holds, the arms
    are drawn in one figure per base optimizer (SGD's arms, Adam's arms): eleven curves on one
    axis would hide the comparisons the study makes, which are all within a family."""
    lines_by = study.report.get("lines_by", "variant")
    wanted = study.report.get("plot_variants")
    figures: dict[tuple, dict[str, list[RunRecord]]] = {}
    cells = study.ordered_cells()
    if lines_by != "variant":
        cells.sort(key=lambda c: _label_key(dict(c.point).get(lines_by, "")))
    family = _base_optimizer(study)
    by_family = (lines_by == "variant" and not wanted and len(study.variant_rank) > MAX_LEGEND_IN_PANEL
                 and len(set(family.values())) > 1)
    for cell in cells:
        variant, point = cell.variant, cell.point
        if wanted and variant not in wanted:
            continue
        if lines_by == "variant":
            fig_key = point + ((("base optimizer", family[variant]),) if by_family else ())
            line = cell.label
        else:
            fig_key = tuple(p for p in point if p[0] != lines_by) + (("variant", variant),)
            line = f"{lines_by} {dict(point).get(lines_by, '?')}"
        figures.setdefault(fig_key, {}).setdefault(line, []).extend(cell.runs)
    return [(_point_text(k) if k else "", v) for k, v in figures.items()]  # "": the study's only figure


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "all"


@dataclass(frozen=True)
class PlotJob:
    """One figure, reduced to numbers: (panel title, [(line label, xs, means, stds)]) x 4."""

    path: Path
    title: str
    x_label: str
    panels: tuple


def plot_jobs(study: Study, out: Path) -> list[PlotJob]:
    x_key = study.report.get("x", "epoch")
    jobs = []
    for title, lines in plot_lines(study):
        panels = []
        for key, name in CURVES:
            series = []
            for line, runs in lines.items():
                xs, means, stds = _curve_band(runs, x_key, key)
                if xs:
                    diverged = sum(r.status == "diverged" for r in runs)
                    label = f"{line} ({len(runs)} runs" + (f", {diverged} diverged)" if diverged else ")")
                    series.append((label, xs, means, stds))
            panels.append((name, series))
        jobs.append(PlotJob(out / f"{_slug(study.name)}__{_slug(title)}.png",
                            f"{study.report.get('figure', study.name)}{f' — {title}' if title else ''} "
                            "(mean ± std over seeds)",
                            x_key, tuple(panels)))
    return jobs


def draw(job: PlotJob) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = max((len(series) for _, series in job.panels), default=0)
    longest = max((len(s[0]) for _, series in job.panels for s in series), default=0)
    many = lines > MAX_LEGEND_IN_PANEL or longest > MAX_LABEL_IN_PANEL  # would hide the first panel's curves
    legend_rows = math.ceil(lines / 3) if many else 0  # three labels per row below the figure
    height = 3.8 + 0.22 * legend_rows
    fig, axes = plt.subplots(1, 4, figsize=(16, height))
    for ax, (name, series) in zip(axes, job.panels):
        for i, (label, xs, means, stds) in enumerate(series):
            # matplotlib's cycle has 10 colours: lines beyond it are dashed, not look-alikes
            (handle,) = ax.plot(xs, means, marker="o", ms=3, label=label, linestyle="-" if i < 10 else "--")
            ax.fill_between(xs, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                            color=handle.get_color(), alpha=0.2, linewidth=0)
        positive = [m for _, _, means, _ in series for m in means if m > 0]
        if "loss" in name and positive and max(positive) > LOG_SCALE_RATIO * min(positive):
            ax.set_yscale("log")  # a loss that falls by decades (training to convergence)
            name += " (log scale)"
        ax.set_title(name)
        ax.set_xlabel(job.x_label)
        ax.grid(alpha=0.3)
    fig.suptitle(job.title, fontsize=10)
    # Fixed margins: tight_layout would draw every figure twice.
    if many:
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7, frameon=False)
        bottom = (0.14 * 3.8 + 0.22 * legend_rows + 0.1) / height
        fig.subplots_adjust(left=0.04, right=0.99, bottom=bottom, top=1 - 0.16 * 3.8 / height, wspace=0.22)
    else:
        axes[0].legend(fontsize=7)
        fig.subplots_adjust(left=0.04, right=0.99, bottom=0.14, top=0.84, wspace=0.22)
    fig.savefig(job.path, dpi=80)
    plt.close(fig)


def draw_all(jobs: list[PlotJob]) -> None:
    """Figures are independent and cost ~0.3 s of CPU each in matplotlib: draw them on every core."""
    workers = min(len(jobs), os.cpu_count() or 1)
    if workers < 2 or "fork" not in __import__("multiprocessing").get_all_start_methods():
        for job in jobs:
            draw(job)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401  (imported once here, inherited by the forked workers)

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        list(pool.map(draw, jobs))


# --------------------------------------------------------------------------- coverage


def coverage_section(spec_path: Path, out: Path | None) -> str:
    """Runs the spec plans, per study, by state: what was run and what was not."""
    from tralgo.experiments import sweep

    spec = sweep.load_spec(spec_path)
    root = out or sweep._default_out(spec, str(spec_path))
    runs, notes = sweep.plan(spec, root)
    states = ("finished", "diverged", "failed", "interrupted", "stale", "new")
    counts: dict[str, dict[str, int]] = {}
    for run in runs:
        state = sweep.run_status(run.folder)
        if state != "new" and sweep.stale_differences(run):
            state = "stale"
        for m in run.identity()["memberships"]:
            key = m["study"] + (" (tuning)" if m["tuning"] else "")
            row = counts.setdefault(key, dict.fromkeys(states, 0))
            row[state] += 1
    rows = [[k, str(sum(v.values()))] + [str(v[s]) for s in states] for k, v in counts.items()]
    text = (f"Spec `{spec_path}` (run folders under `{root}`); \"interrupted\" = started, not finished; "
            "\"stale\" = its folder holds other settings than the spec (the sweep reruns it); "
            "\"new\" = never started.\n\n")
    text += _md_table(["study", "planned runs", *states], rows)
    if notes:
        text += "\n\n" + "\n".join(f"- {n} (not counted above)" for n in notes)
    return text


# --------------------------------------------------------------------------- compute use


def sweep_sessions(event_files: list[Path]) -> list[dict]:
    """Per sweep session: command, workers, wall time, summed run time, utilization."""
    sessions: dict[str, dict] = {}
    for path in event_files:
        for e in read_jsonl(path):
            s = sessions.setdefault(e["session"], {"session": e["session"], "busy_s": 0.0, "runs": 0,
                                                   "first": e["time"], "last": e["time"], "ended": False})
            s["last"] = max(s["last"], e["time"])
            if e.get("event") == "session_start":
                s.update(argv=e.get("argv"), workers=e.get("workers"), first=e["time"])
            elif e.get("event") == "run_end":
                s["busy_s"] += float(e.get("wall_s", 0.0))
                s["runs"] += 1
            elif e.get("event") == "session_end":
                s.update(ended=True, wall_s=float(e.get("wall_s", 0.0)), busy_s=float(e.get("busy_s", s["busy_s"])))
    from datetime import datetime

    for s in sessions.values():
        if "wall_s" not in s:  # killed without its end event: up to its last recorded event
            s["wall_s"] = (datetime.fromisoformat(s["last"]) - datetime.fromisoformat(s["first"])).total_seconds()
        workers = s.get("workers") or 1
        s["utilization"] = s["busy_s"] / (workers * s["wall_s"]) if s["wall_s"] > 0 else float("nan")
    return sorted(sessions.values(), key=lambda s: s["first"])


def compute_section(sessions: list[dict], runs: list[RunRecord]) -> str:
    if not sessions:
        return "No sweep event log was found under RUNS (runs made outside `tralgo sweep`)."
    rows = []
    for s in sessions:
        rows.append([s["first"], shlex.join(s.get("argv") or ["?"]), str(s.get("workers", "?")), str(s["runs"]),
                     f"{s['wall_s'] / 60:.1f}", f"{s['busy_s'] / 60:.1f}", f"{100 * s['utilization']:.0f}%",
                     "" if s["ended"] else "no end record: running, or killed"])
    wall = sum(s["wall_s"] for s in sessions)
    busy = sum(s["busy_s"] for s in sessions)
    train_s = sum(float(r.final.get("wall_s", 0.0)) for r in runs if r.final)
    text = _md_table(["started (UTC)", "command", "workers", "runs ended", "wall min", "sum of run times min",
                      "worker utilization", ""], rows)
    text += (f"\n\nIn all: {wall / 60:.1f} min of sweep wall time, {busy / 60:.1f} min of run time "
             f"(process start to exit, summed over runs), of which {train_s / 60:.1f} min inside training and "
             "evaluation as the trainer measures it (the rest is process start-up and data loading). "
             "Utilization = sum of run times / (workers × wall time).")
    return text


# --------------------------------------------------------------------------- document


def machine_text() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from importlib import metadata

    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "not installed"
    return (f"{os.cpu_count()} CPU cores ({cpu}), {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, torch {torch_version}")


def steps_to_target(run: RunRecord, metric: str, value: float) -> int | None:
    """Optimizer steps at the first evaluation where ``metric`` reached ``value`` (None: never).
    With ``eval_every`` > 1 the resolution is the evaluation interval."""
    for record in run.curve:
        if record.get("diverged"):
            return None
        if record.get(metric) is not None and record[metric] >= value and record.get("step") is not None:
            return int(record["step"])
    return None


def cost_table(study: Study) -> str:
    """Per configuration: what a run costs (optimizer steps, training + evaluation time as the
    trainer measures it), how far it fitted its training data (the last epoch's train accuracy, as
    the trainer counts it over that epoch's minibatches in train mode: mean, and the lowest seed,
    which is what "converged" has to hold for) and, with ``[study.report] target =
    { metric, value }``, how many seeds reach the target and in how many steps (the median over
    those that do), as AlgoPerf scores."""
    target = study.report.get("target")
    header = ["configuration", "variant", "finished runs", "steps per run", "train + eval min per run",
              "last-epoch train acc % mean (lowest)"]
    if target:
        header += [f"reached {target['metric']} ≥ {target['value']:g}", "median steps to target"]
    rows, cells = [], study.ordered_cells()
    for cell in cells:
        done = [r for r in cell.runs if r.status == "finished" and r.final]
        steps = [float(r.final["step"]) for r in done if r.final.get("step") is not None]
        wall = [float(r.final["wall_s"]) / 60 for r in done if r.final.get("wall_s") is not None]
        fit = [100 * float(r.final["train_acc"]) for r in done if r.final.get("train_acc") is not None]
        row = [_point_text(cell.point), cell.label, f"{len(done)}/{len(cell.runs)}",
               f"{stats.mean(steps):.0f}" if steps else "–", f"{stats.mean(wall):.2f}" if wall else "–",
               f"{stats.mean(fit):.2f} ({min(fit):.2f})" if fit else "–"]
        if target:
            reached = sorted(s for r in cell.runs if (s := steps_to_target(r, target["metric"], target["value"])) is not None)
            middle = (reached[(len(reached) - 1) // 2] + reached[len(reached) // 2]) / 2 if reached else None
            row += [f"{len(reached)}/{len(cell.runs)}", "–" if middle is None else f"{middle:.0f}"]
        rows.append(row)
    table = _configuration_table(header, rows, [cell.point for cell in cells])
    if not target:
        return table
    gaps: set[int] = set()
    for run in study_runs(study):
        steps = [int(rec["step"]) for rec in run.curve
                 if rec.get(target["metric"]) is not None and rec.get("step") is not None]
        gaps.update(b - a for a, b in zip(steps, steps[1:]))
    gaps = sorted(gaps)
    spacing = (f"every {gaps[0]} steps" if len(gaps) == 1 else f"every {gaps[0]}-{gaps[-1]} steps") if gaps else ""
    return table + ("\n\nSteps to target are counted at the evaluations of " + target["metric"] +
                    (f" ({spacing})" if spacing else "") + ", so they are resolved to the evaluation interval.")


def study_runs(study: Study) -> list[RunRecord]:
    """The runs of the study's cells (tuning runs not included)."""
    return [r for c in study.ordered_cells() for r in c.runs]


def code_lines(runs: list[RunRecord]) -> list[str]:
    """The code the runs were trained with, flagged when it differs between runs or was dirty."""
    commits: dict[str, int] = defaultdict(int)
    for r in runs:
        if r.status != "not started":
            commits[str(r.code.get("git_commit") or "unknown")] += 1
    dirty = sum(bool(r.code.get("git_dirty")) for r in runs)
    lines = []
    if len(commits) > 1:
        lines.append("- **Warning: these results mix code versions**: " + ", ".join(
            f"commit {c[:12]} ({n} runs)" for c, n in sorted(commits.items(), key=lambda kv: (-kv[1], kv[0]))) +
            ". Differences between configurations may be differences between versions of the code.")
    elif list(commits) == ["unknown"]:
        lines.append("- Code: the runs do not record a git commit.")
    elif commits:
        lines.append(f"- Code: commit {next(iter(commits))[:12]} for every run.")
    if dirty:
        lines.append(f"- **Warning: {dirty} run(s) ran from a checkout with uncommitted changes** (`git_dirty`); "
                     "their code is not the commit's.")
    return lines


def run_time_text(runs: list[RunRecord]) -> str:
    train_s = sum(float(r.final.get("wall_s", 0.0)) for r in runs if r.final and r.final.get("wall_s") is not None)
    return (f"Training and evaluation time summed over the finished runs, as the trainer measures it: "
            f"{train_s / 60:.1f} min. Sweep sessions (wall time, worker utilization) are in `compute.md` when "
            "the report is built from run folders with their `sweep_events.jsonl`.")


def build_report(paths: list[Path] | None, out: Path, *, title: str, command: str = "", plots: bool = True,
                 spec: Path | None = None, spec_out: Path | None = None,
                 runs: list[RunRecord] | None = None, export_csv: Path | None = None) -> str:
    """Write ``out/report.md`` (and the plots) from the run folders under ``paths``, or from
    ``runs`` (e.g. read from a runs.csv). report.md depends only on the runs' data, so the same
    runs give the same bytes wherever and whenever it is built; the sweep sessions' timing goes
    to ``out/compute.md``. ``export_csv`` also writes the runs as runs.csv."""
    started = time.perf_counter()
    sessions: list[dict] = []
    if runs is None:
        runs, event_files, _ = load_runs(paths or [])
        sessions = sweep_sessions(event_files)
    studies = group(runs)
    out.mkdir(parents=True, exist_ok=True)
    status_counts = defaultdict(int)
    for r in runs:
        status_counts[r.status] += 1
    parts = [f"# {title}", "",
             f"- Runs: {len(runs)} (" + ", ".join(f"{v} {k}" for k, v in sorted(status_counts.items())) + ")",
             *code_lines(runs),
             "- Metric: final-epoch test accuracy on the full test set, in %; mean ± sample std (number of seeds). "
             "Diverged runs are not averaged in; they are counted in their own column and in the findings. "
             "Paired differences use the seeds that both configurations finished (same seed = same "
             "initialisation and data order) with a 95% Student-t interval. Words (better, worse, equivalent, "
             "explained by) are used only for a study's family of contrasts after Holm's correction; "
             "\"equivalent\" needs two one-sided tests at the study's declared equivalence margin.",
             ""]
    all_findings = []
    body = []
    jobs: list[PlotJob] = []
    for name in sorted(studies, key=lambda n: _study_order(studies[n])):
        study = studies[name]
        body += [f"## {study.report.get('title', name)}", "", f"Study `{name}`.", ""]
        if study.cells and study.report.get("pivot"):
            body += [f"Test accuracy % by {study.report['pivot']} (mean ± std (seeds)):", "",
                     pivot_table(study, study.report["pivot"]), ""]
        if study.cells:
            body += [study_table(study), ""]
        entries = comparisons(study)
        if entries:
            body += ["TR against its base and against each control (paired over seeds, percentage points):", "",
                     comparison_table(entries), ""]
            during = over_epochs_table(entries)
            if during:
                body += [during, ""]
        if study.cells:
            body += ["Cost of each configuration (means over its finished runs):", "", cost_table(study), ""]
        if study.tuning:
            body += ["Tuning runs (score: final validation accuracy on the held-out training images; "
                     "the test set is not used for the choice):", "", tuning_table(study), ""]
        if plots and study.cells:
            for job in plot_jobs(study, out):
                jobs.append(job)
                body += [f"![{job.title}]({job.path.name})", ""]
        failed = [r for c in study.cells.values() for r in c.runs if r.status == "failed"]
        for r in failed[:10]:
            body += [f"- failed: `{r.folder}`: {r.error or ''}"]
        if failed:
            body += [""]
        study_findings = findings(study, entries)
        if study_findings:
            all_findings += [f"**{study.report.get('title', name)}**", ""] + [f"- {t}" for t in study_findings] + [""]
    parts += ["## Findings (generated from the tables below)", ""] + (all_findings or ["No comparisons yet.", ""])
    parts += body
    if spec is not None:
        parts += ["## Coverage: what the spec plans and what ran", "", coverage_section(spec, spec_out), ""]
    parts += ["## Compute", "", run_time_text(runs), ""]
    draw_all(jobs)
    text = "\n".join(parts) + "\n"
    atomic_write_text(out / "report.md", text)
    if sessions:
        atomic_write_text(out / "compute.md", "# Sweep sessions\n\n" + compute_section(sessions, runs) + "\n\n"
                          f"Machine that built this report: {machine_text()}.\n")
    if export_csv is not None:
        from tralgo.experiments import runs_csv

        runs_csv.write_runs_csv(runs, export_csv)
    if command:
        print(f"{command}: {len(runs)} runs in {time.perf_counter() - started:.1f} s")
    return text


def _study_order(study: Study) -> tuple:
    """Studies in spec order (as recorded by the sweep), then by name."""
    return (study.index, study.name)


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tralgo report", description="Summarise run folders (as made by tralgo train "
                                "or tralgo sweep), or a runs.csv exported from them, into DIR/report.md with PNG "
                                "plots. The same runs give the same report.md from either source.")
    p.add_argument("runs", nargs="*", help="run folders, or folders searched recursively for run folders")
    p.add_argument("--from", dest="from_csv", metavar="RUNS_CSV",
                   help="build the report from a runs.csv (written by --export-csv; a name ending in .gz is read "
                        "gzip-compressed) instead of run folders")
    p.add_argument("--out", required=True, help="folder for report.md and the plots")
    p.add_argument("--export-csv", metavar="PATH",
                   help="also write every run's settings and per-epoch metrics to PATH (one row per run, study "
                        "membership and epoch), from which --from rebuilds this report; a PATH ending in .gz is written "
                        "gzip-compressed")
    p.add_argument("--title", default="tralgo report", help="heading of the report")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots (tables only)")
    p.add_argument("--spec", help="the sweep spec of RUNS: adds a coverage table of planned runs that did not "
                   "run or finish (reads the run folders)")
    p.add_argument("--spec-out", help="run-folder root of --spec (default: the spec's 'out')")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    command = shlex.join(["tralgo", "report", *argv])
    if bool(args.runs) == bool(args.from_csv):
        print("tralgo report: error: give run folders (RUNS) or --from RUNS_CSV, not both and not neither",
              file=sys.stderr)
        return 2
    try:
        runs = None
        if args.from_csv:
            from tralgo.experiments import runs_csv

            runs = runs_csv.read_runs_csv(Path(args.from_csv))
        else:
            _, _, stale = find_run_folders([Path(p) for p in args.runs])
            if stale:
                print(f"note: skipped {len(stale)} stale folder(s) a sweep moved aside after a spec change "
                      f"(e.g. {stale[0]})")
        build_report([Path(p) for p in args.runs], Path(args.out), title=args.title, command=command,
                     plots=not args.no_plots, spec=Path(args.spec) if args.spec else None,
                     spec_out=Path(args.spec_out) if args.spec_out else None, runs=runs,
                     export_csv=Path(args.export_csv) if args.export_csv else None)
    except (OSError, ValueError) as exc:
        print(f"tralgo report: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {Path(args.out) / 'report.md'}" + (f" and {args.export_csv}" if args.export_csv else ""))
    return 0
