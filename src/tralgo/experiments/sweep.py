"""``tralgo sweep SPEC``: run a grid of ``tralgo train`` runs described in a TOML file.

A spec holds shared ``[defaults]`` and one or more ``[[study]]`` tables (a study is one table or
figure of the report). A study crosses its ``[study.grid]`` axes with its ``[[study.variant]]``
list (named optimizer configurations); every combination is one run folder
``<out>/<study>/<variant>/<axis>-<value>_...``. See ``experiments/specs/cpu.toml`` for a
commented example. Option names and types are those of ``TrainConfig`` (and the run options
``data_dir``, ``device``, ``threads``) in ``experiments/config.py``, the same as ``tralgo
train``'s with underscores; a misspelled table or key, a value of the wrong type or out of range
is one error before anything is launched.

Guarantees:

* a run's identity is its full resolved configuration (``sweep.json`` records it): a folder whose
  configuration no longer matches its spec entry, finished or not, is never counted for the new
  spec; the sweep says so, moves it to ``<folder>.stale-<n>`` (finished work is never deleted)
  and runs it again;
* the sweep records the git commit of the code it runs in each run's ``sweep.json`` and refuses a
  checkout with uncommitted changes unless ``--allow-dirty`` (recorded too);
* a run whose ``result.json`` says finished or diverged is skipped, an interrupted run (it has a
  checkpoint) is resumed with ``--resume``, a failed run is recorded in its folder
  (``sweep_status.json``, with the tail of ``train.log``) and the others go on;
* runs start in priority order: by the study's ``priority`` (default: its position in the file;
  studies with equal priority are interleaved), then seed-major (every configuration's first
  seed before any second seed), so a sweep stopped early leaves balanced, reportable results;
* ``--dry-run`` prints one command per run (``torchrun`` lines by default) for a scheduler;
* each session appends start / run-end / end events to ``<out>/sweep_events.jsonl``, from which
  the report computes wall time against the sum of run times (how busy the workers were).

A study may tune learning rates first (``[study.tune]``): tuning runs hold out ``val_split``
training images (``val_from = "after_subset"``: the images after the ``subset``, so tuning trains
on exactly the final runs' images), each variant's candidate values are scored by the mean final validation
metric over the tuning seeds (the test set is never looked at), and the study's runs then use
the best values. Those runs are planned as soon as their tuning runs are complete.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import itertools
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from tralgo.experiments import config as config_lib
from tralgo.experiments.io import FolderInUseError, FolderLock, append_jsonl, atomic_write_json, folder_in_use

# A spec may set every TrainConfig field and the RunOptions marked ``spec`` (data_dir, device,
# threads), by their names in experiments/config.py; the sweep itself sets the other run options.
SPEC_OPTIONS = {**config_lib.TRAIN_FIELDS, **config_lib.SPEC_RUN_FIELDS}
VARIANT_META = frozenset({"name", "role", "base", "label", "ignore_grid"})
# The tables and keys a spec may hold at each level; anything else (a misspelled table such as
# [default] or [study.gird]) is an error, since ignoring it would silently run the defaults.
SPEC_KEYS = frozenset({"name", "out", "defaults", "study"})
STUDY_KEYS = frozenset({"name", "priority", "defaults", "grid", "variant", "tune", "report"})
TUNE_KEYS = frozenset({"val_split", "val_from", "seeds", "metric", "search", "trials", "sampler_seed"})
ROLES = ("base", "tr", "control")
DONE_STATUSES = ("finished", "diverged")
DIVERGED_EXIT_CODE = 3
SWEEP_FILE = "sweep.json"          # what the sweep asked this folder to hold (identity)
STATUS_FILE = "sweep_status.json"  # what happened the last time the sweep ran it
STALE_SUFFIX = ".stale-"           # a folder whose settings no longer match the spec is moved to <folder>.stale-<n>
EVENTS_FILE = "sweep_events.jsonl"
LOG_FILE = "train.log"
PID_FILE = "train.pid"             # the training process of a run, so two sweeps never run it twice
CLAIMS_DIR = ".claims"             # <out>/.claims/<run>.lock: held by the sweep that launches and watches a run


class SpecError(ValueError):
    """A spec file that cannot be used; the message names the offending key."""


# --------------------------------------------------------------------------- spec -> runs


@dataclass(frozen=True)
class Run:
    """One training run: its folder, its ``tralgo train`` options and its place in the study."""

    study: str
    variant: str
    role: str
    base: str | None
    grid: dict           # axis -> value label (used for names and for pairing with the base)
    options: dict        # resolved train options, without out/resume
    folder: Path
    order: tuple         # priority key (study index, seed position, ...)
    tuning: bool = False
    report: dict = field(default_factory=dict)
    also: tuple = ()     # memberships of later studies that reuse this very run (same options)
    label: str = ""      # the variant's human-readable name (report tables and legends)
    study_index: int = 0  # the study's position in the spec (report order)
    variant_index: int = 0
    tuned: dict = field(default_factory=dict)  # values chosen by the study's tuning runs

    def membership(self) -> dict:
        return {"study": self.study, "variant": self.variant, "role": self.role, "base": self.base,
                "grid": self.grid, "tuning": self.tuning, "report": self.report,
                "label": self.label or self.variant, "study_index": self.study_index,
                "variant_index": self.variant_index, **({"tuned": self.tuned} if self.tuned else {})}

    def config(self) -> config_lib.TrainConfig:
        """The run's full resolved configuration: its identity. A bad value is a SpecError."""
        train, _ = config_lib.split_options(self.options)
        try:
            return config_lib.TrainConfig(**train).resolved()
        except ValueError as exc:
            raise SpecError(f"study {self.study!r} variant {self.variant!r} ({_folder_name(self.grid)}): {exc}") from None

    def identity(self) -> dict:
        """What ``sweep.json`` records: the spec's options, the full resolved configuration they
        make (a folder holding another configuration is stale) and every (study, variant, grid
        point) the run stands for."""
        return {"options": self.options, "config": config_lib.identity(self.config()),
                "memberships": [self.membership(), *self.also]}


def load_spec(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file {str(path)!r} does not exist")
    try:
        spec = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"spec file {str(path)!r} is not valid TOML: {exc}") from None
    validate_spec(spec)
    return spec


def _check_train_keys(options: Any, where: str) -> None:
    """Names and types of train options, from TrainConfig/RunOptions (experiments/config.py)."""
    if not isinstance(options, dict):
        raise SpecError(f"{where} must be a table of train options, got {options!r}")
    for key, value in options.items():
        if key in config_lib.RUN_FIELDS and key not in SPEC_OPTIONS:
            raise SpecError(f"{where}: {key!r} is set by the sweep, remove it from the spec")
        if key not in SPEC_OPTIONS:
            raise SpecError(f"{where}: unknown train option {key!r}; accepted: {', '.join(sorted(SPEC_OPTIONS))}")
        problem = config_lib.check_value(SPEC_OPTIONS[key], value)
        if problem:
            raise SpecError(f"{where}: {problem}")


def _check_keys(table: Any, accepted: frozenset, where: str) -> None:
    if not isinstance(table, dict):
        raise SpecError(f"{where} must be a table, got {table!r}")
    unknown = sorted(set(table) - accepted)
    if unknown:
        raise SpecError(f"{where}: unknown key or table {unknown[0]!r} (misspelled?); accepted: "
                        f"{', '.join(sorted(accepted))}")


def _table_list(value: Any, what: str) -> list[dict]:
    if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
        raise SpecError(f"{what}, got {value!r}")
    return value


def validate_spec(spec: dict) -> None:
    """Every error is one line naming the key, raised before anything is planned or launched."""
    _check_keys(spec, SPEC_KEYS, "the spec's top level")
    _check_train_keys(spec.get("defaults", {}), "[defaults]")
    studies = _table_list(spec.get("study"), "the spec needs at least one [[study]] table")
    names = set()
    for i, study in enumerate(studies):
        _check_keys(study, STUDY_KEYS, f"study #{i + 1}")
        name = study.get("name")
        if not isinstance(name, str) or not name or "/" in name:
            raise SpecError(f"study #{i + 1}: 'name' must be a non-empty string without '/'")
        if name in names:
            raise SpecError(f"study {name!r} appears twice")
        priority = study.get("priority", 0)
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise SpecError(f"study {name!r}: priority must be an int, got {priority!r}")
        names.add(name)
        where = f"study {name!r}"
        _check_train_keys(study.get("defaults", {}), f"{where} [defaults]")
        if not isinstance(study.get("report", {}), dict):
            raise SpecError(f"{where}: [study.report] must be a table, got {study['report']!r}")
        grid = study.get("grid", {})
        if not isinstance(grid, dict):
            raise SpecError(f"{where}: [study.grid] must be a table of axes, got {grid!r}")
        for axis, values in grid.items():
            if not isinstance(values, list) or not values:
                raise SpecError(f"{where}: grid axis {axis!r} must be a non-empty list")
            for value in values:
                options = {k: x for k, x in value.items() if k != "label"} if isinstance(value, dict) else {axis: value}
                _check_train_keys(options, f"{where} grid axis {axis!r}")
        variants = _table_list(study.get("variant"), f"{where}: needs at least one [[study.variant]] table")
        vnames = [v.get("name") for v in variants]
        for v in variants:
            vname = v.get("name")
            if not isinstance(vname, str) or not vname or "/" in vname:
                raise SpecError(f"{where}: every variant needs a 'name' (a string without '/')")
            if vnames.count(vname) > 1:
                raise SpecError(f"{where}: variant {vname!r} appears twice")
            role = v.get("role", "base")
            if role not in ROLES:
                raise SpecError(f"{where} variant {vname!r}: role must be one of {ROLES}, got {role!r}")
            if role != "base" and v.get("base") not in vnames:
                raise SpecError(f"{where} variant {vname!r}: 'base' must name another variant of the study")
            if "optimizer" not in v and "optimizer" not in study.get("defaults", {}) and "optimizer" not in spec.get("defaults", {}):
                raise SpecError(f"{where} variant {vname!r}: no 'optimizer' set")
            ignore = v.get("ignore_grid", [])
            if not isinstance(ignore, list):
                raise SpecError(f"{where} variant {vname!r}: ignore_grid must be a list of axis names, got {ignore!r}")
            for axis in ignore:
                if axis not in study.get("grid", {}):
                    raise SpecError(f"{where} variant {vname!r}: ignore_grid names unknown axis {axis!r}")
            _check_train_keys({k: x for k, x in v.items() if k not in VARIANT_META}, f"{where} variant {vname!r}")
        target = study.get("report", {}).get("target")
        if target is not None and not (isinstance(target, dict) and set(target) == {"metric", "value"}
                                       and isinstance(target["metric"], str)
                                       and isinstance(target["value"], (int, float))
                                       and not isinstance(target["value"], bool)):
            raise SpecError(f"{where} [study.report]: target must be {{ metric = \"val_acc\", value = 0.9 }} "
                            f"(a metric of metrics.jsonl and the value to reach), got {target!r}")
        try:  # the statistics keys of [study.report] (equivalence_margin, contrasts)
            from tralgo.experiments.report import check_report_settings

            check_report_settings(study.get("report", {}), vnames, where)
        except ValueError as exc:
            raise SpecError(str(exc)) from None
        tune = study.get("tune")
        if tune is not None:
            _validate_tune(tune, vnames, where)


def _validate_tune(tune: dict, vnames: list[str], where: str) -> None:
    _check_keys(tune, TUNE_KEYS, f"{where} [study.tune]")
    val_split = tune.get("val_split")
    if isinstance(val_split, bool) or not isinstance(val_split, int) or val_split < 1:
        raise SpecError(f"{where} [tune]: val_split must be an int >= 1, got {val_split!r}")
    if "val_from" in tune:
        _check_train_keys({"val_from": tune["val_from"]}, f"{where} [tune]")
    seeds = tune.get("seeds")
    if not isinstance(seeds, list) or not seeds:
        raise SpecError(f"{where} [tune]: seeds must be a non-empty list")
    search = tune.get("search", {})
    if not isinstance(search, dict):
        raise SpecError(f"{where} [tune.search] must be a table, got {search!r}")
    for vname, space in search.items():
        if vname not in vnames:
            raise SpecError(f"{where} [tune.search]: {vname!r} is not a variant of the study")
        if not isinstance(space, dict):
            raise SpecError(f"{where} [tune.search]: {vname!r} must be a table of lists, got {space!r}")
        for key, values in space.items():
            _validate_dimension(key, values, "trials" in tune, f"{where} [tune.search.{vname}]")
    trials = tune.get("trials")
    if trials is not None and (isinstance(trials, bool) or not isinstance(trials, int) or trials < 1):
        raise SpecError(f"{where} [tune]: trials must be an int >= 1, got {trials!r}")
    seed = tune.get("sampler_seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise SpecError(f"{where} [tune]: sampler_seed must be an int >= 0, got {seed!r}")


def _validate_dimension(key: str, values: Any, quasi_random: bool, where: str) -> None:
    """A search dimension: a non-empty list of values, or (with ``trials``) a number range
    ``{ log = [low, high] }`` (log-uniform, low > 0) or ``{ range = [low, high] }``."""
    if isinstance(values, dict):
        if not quasi_random:
            raise SpecError(f"{where}: {key!r} is a range, which needs [study.tune] trials = N (quasi-random "
                            "search); a grid search takes a list of values")
        (kind, bounds), = values.items() if len(values) == 1 else ((None, None),)
        numeric = config_lib.field_type(SPEC_OPTIONS[key])[0] is float if key in SPEC_OPTIONS else False
        ok = (kind in ("log", "range") and numeric and isinstance(bounds, list) and len(bounds) == 2
              and all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
              and bounds[0] < bounds[1] and (kind == "range" or bounds[0] > 0))
        if not ok:
            raise SpecError(f"{where}: {key!r} must be a list of values, {{ log = [low, high] }} with 0 < low < high "
                            f"or {{ range = [low, high] }} with low < high, for a number setting; got {values!r}")
        return
    if not isinstance(values, list) or not values:
        raise SpecError(f"{where}: {key!r} must be a non-empty list")
    for value in values:
        _check_train_keys({key: value}, where)


def search_candidates(tune: dict, space: dict) -> list[tuple]:
    """The candidate values of a search space, one tuple per candidate in ``space``'s key order.

    Without ``trials``: every combination of the listed values (grid search). With ``trials = N``:
    N points of a scrambled Halton sequence (``scipy.stats.qmc``, seeded by ``sampler_seed``),
    mapped to each dimension: log-uniform or uniform over a range (3 significant digits, so that
    folder names stay readable), or an index into a list. Every tuned variant of a study gets the
    same N points, the equal-budget protocol of AlgoPerf's external tuning ruleset."""
    keys = list(space)
    if "trials" not in tune:
        return list(itertools.product(*(space[k] for k in keys)))
    from scipy.stats import qmc

    points = qmc.Halton(d=len(keys), scramble=True, seed=tune.get("sampler_seed", 0)).random(tune["trials"])
    candidates = []
    for point in points:
        values = []
        for u, key in zip(point, keys):
            dimension = space[key]
            if isinstance(dimension, list):
                values.append(dimension[min(int(u * len(dimension)), len(dimension) - 1)])
                continue
            (kind, (low, high)), = dimension.items()
            x = math.exp(math.log(low) + u * (math.log(high) - math.log(low))) if kind == "log" else low + u * (high - low)
            values.append(float(f"{x:.3g}"))
        candidates.append(tuple(values))
    return candidates


def check_runs(runs: list[Run]) -> None:
    """Every planned run's options must make a valid TrainConfig (ranges, not just types), so a
    bad value is one error before launch rather than one failure per run after it."""
    seen = set()
    for run in runs:
        key = _options_key(run.options)
        if key in seen:
            continue
        seen.add(key)
        run.config()


def _value_label(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _axis_points(axis: str, values: list) -> list[tuple[str, dict]]:
    """Each grid value as (label, options). A table value sets several options together."""
    points = []
    for value in values:
        if isinstance(value, dict):
            options = {k: v for k, v in value.items() if k != "label"}
            label = value.get("label") or "-".join(_value_label(v) for v in options.values())
            points.append((str(label), options))
        else:
            points.append((_value_label(value), {axis: value}))
    return points


def _folder_name(grid: dict) -> str:
    return "_".join(f"{axis}-{label}" for axis, label in grid.items()) or "run"


def _grid_combinations(grid: dict, ignore: Iterable[str] = ()) -> list[tuple[dict, dict, tuple]]:
    """(labels, options, seed-major order key) for every point of the grid, ``ignore`` axes dropped."""
    axes = [a for a in grid if a not in set(ignore)]
    points = [_axis_points(a, grid[a]) for a in axes]
    seed_axis = axes.index("seed") if "seed" in axes else None
    out = []
    for index in itertools.product(*(range(len(p)) for p in points)):
        labels, options = {}, {}
        for axis, p, i in zip(axes, points, index):
            labels[axis] = p[i][0]
            options.update(p[i][1])
        order = ((index[seed_axis],) if seed_axis is not None else ()) + tuple(
            i for k, i in enumerate(index) if k != seed_axis)
        out.append((labels, options, order))
    return out


def plan(spec: dict, out: str | os.PathLike, only: Iterable[str] | None = None) -> tuple[list[Run], list[str]]:
    """All runs of the spec, in priority order, and notes on runs that cannot be planned yet."""
    out = Path(out)
    only = set(only) if only else None
    runs, notes = [], []
    for s_index, study in enumerate(spec["study"]):
        defaults = {**spec.get("defaults", {}), **study.get("defaults", {})}
        report = study.get("report", {})
        priority = study.get("priority", s_index)
        chosen = None
        if "tune" in study:
            tuning_runs, chosen, waiting = _plan_tuning(study, defaults, out, priority, s_index)
            runs.extend(tuning_runs)
            if waiting:
                seeds = len(study.get("grid", {}).get("seed", [None]))
                notes.append(f"study {study['name']!r}: {waiting} tuned configurations ({waiting * seeds} runs) "
                             "wait for their tuning runs to finish")
        for v_index, variant in enumerate(study["variant"]):
            var_options = {k: x for k, x in variant.items() if k not in VARIANT_META}
            for labels, grid_options, order in _grid_combinations(study.get("grid", {}), variant.get("ignore_grid", [])):
                options = {**defaults, **grid_options, **var_options}
                tuned = {}
                if chosen is not None and variant["name"] in study["tune"].get("search", {}):
                    key = _tune_key(variant["name"], labels)
                    if key not in chosen:
                        continue  # its tuning is not complete yet (counted in ``notes``)
                    tuned = chosen[key]
                    options.update(tuned)
                runs.append(Run(
                    study=study["name"], variant=variant["name"], role=variant.get("role", "base"),
                    base=variant.get("base"), grid=labels, options=options,
                    folder=out / study["name"] / variant["name"] / _folder_name(labels),
                    order=(priority, 1) + order + (s_index, v_index), report=report,
                    label=variant.get("label", ""), study_index=s_index, variant_index=v_index, tuned=tuned,
                ))
    runs = _merge_identical(sorted(runs, key=lambda r: r.order))
    if only is not None:
        runs = [r for r in runs if {m["study"] for m in r.identity()["memberships"]} & only]
        notes = [n for n in notes if any(f"study {name!r}" in n for name in only)]
    return runs, notes


def _options_key(options: dict) -> str:
    return json.dumps(options, sort_keys=True, default=str)


def _merge_identical(runs: list[Run]) -> list[Run]:
    """Runs with identical options are trained once: the first (highest priority) keeps its
    folder and records the later ones as further memberships (e.g. Table 4's batch-8 runs are
    the headline's)."""
    first: dict[str, int] = {}
    merged: list[Run] = []
    for run in runs:
        key = _options_key(run.options)
        if key in first:
            i = first[key]
            merged[i] = dataclasses.replace(merged[i], also=merged[i].also + (run.membership(),))
        else:
            first[key] = len(merged)
            merged.append(run)
    return merged


def _tune_key(variant: str, labels: dict) -> tuple:
    return (variant,) + tuple(sorted((a, l) for a, l in labels.items() if a != "seed"))


def _plan_tuning(study: dict, defaults: dict, out: Path, priority: int, s_index: int) -> tuple[list[Run], dict, int]:
    """Tuning runs of a study, the chosen values per (variant, grid point), and how many wait."""
    tune = study["tune"]
    grid = {a: v for a, v in study.get("grid", {}).items() if a != "seed"}
    runs, chosen, waiting = [], {}, 0
    for v_index, variant in enumerate(study["variant"]):
        space = tune.get("search", {}).get(variant["name"])
        if not space:
            continue
        var_options = {k: x for k, x in variant.items() if k not in VARIANT_META}
        keys = list(space)
        for labels, grid_options, order in _grid_combinations(grid, variant.get("ignore_grid", [])):
            scores = {}
            complete = True
            for candidate in search_candidates(tune, space):
                cand = dict(zip(keys, candidate))
                cand_labels = {**labels, **{k: _value_label(v) for k, v in cand.items()}}
                values = []
                for seed_pos, seed in enumerate(tune["seeds"]):
                    run_labels = {**cand_labels, "seed": _value_label(seed)}
                    options = {**defaults, **grid_options, **var_options, **cand, "seed": seed,
                               "val_split": tune["val_split"],
                               **({"val_from": tune["val_from"]} if "val_from" in tune else {})}
                    run = Run(
                        study=study["name"], variant=variant["name"], role=variant.get("role", "base"),
                        base=variant.get("base"), grid=run_labels, options=options,
                        folder=out / study["name"] / "tune" / variant["name"] / _folder_name(run_labels),
                        order=(priority, 0, seed_pos) + order + (s_index, v_index), tuning=True,
                        report=study.get("report", {}),
                        label=variant.get("label", ""), study_index=s_index, variant_index=v_index,
                    )
                    runs.append(run)
                    # a stale folder (other settings) is no score: the sweep reruns it first
                    values.append(None if stale_differences(run) else
                                  tuning_score(run.folder, tune.get("metric", "val_acc")))
                if any(v is None for v in values):
                    complete = False
                else:
                    scores[candidate] = math.fsum(values) / len(values)
            if complete and scores:
                best = max(scores, key=lambda c: (scores[c], tuple(-float(x) for x in c)))
                chosen[_tune_key(variant["name"], labels)] = dict(zip(keys, best))
            else:
                waiting += 1
    return runs, chosen, waiting


def tuning_score(folder: Path, metric: str) -> float | None:
    """Final validation metric of a tuning run; a diverged run scores 0; None while unfinished."""
    return score(run_status(folder), _last_metrics(folder), metric, folder)


def score(status: str, last: dict | None, metric: str, where: Any) -> float | None:
    """The tuning rule (the sweep's choice and the report's table both use it): the final value
    of ``metric``; a diverged run scores 0; None while unfinished."""
    if status == "diverged":
        return 0.0
    if status != "finished":
        return None
    if last is None or last.get(metric) is None:
        raise SpecError(f"tuning run {where} finished without {metric!r} in metrics.jsonl (is val_split set?)")
    return float(last[metric])


def _last_metrics(folder: Path) -> dict | None:
    from tralgo.experiments.io import read_jsonl

    path = folder / "metrics.jsonl"
    if not path.is_file():
        return None
    last = None
    for record in read_jsonl(path):
        last = record
    return last


def run_status(folder: Path) -> str:
    """finished / diverged (from result.json), interrupted (has a checkpoint), failed, or new."""
    result = folder / "result.json"
    if result.is_file():
        try:
            status = json.loads(result.read_text(encoding="utf-8")).get("status")
        except (json.JSONDecodeError, OSError):
            status = None
        if status in DONE_STATUSES:
            return status
    if (folder / STATUS_FILE).is_file():
        try:
            if json.loads((folder / STATUS_FILE).read_text(encoding="utf-8")).get("status") == "failed":
                return "failed"
        except (json.JSONDecodeError, OSError):
            pass
    if (folder / "checkpoint.pt").is_file():
        return "interrupted"
    return "new"


# --------------------------------------------------------------------------- commands


def train_arguments(run: Run, *, resume: bool) -> list[str]:
    """``tralgo train`` arguments of a run (booleans become ``--flag`` / ``--no-flag``)."""
    args = []
    for key, value in run.options.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + key.replace("_", "-"))
        else:
            args += [flag, _value_label(value) if isinstance(value, float) else str(value)]
    args += ["--out", str(run.folder)]
    if resume:
        args.append("--resume")
    return args


def local_command(run: Run, resume: bool = True) -> list[str]:
    return [sys.executable, "-m", "tralgo", "train", *train_arguments(run, resume=resume)]


def torchrun_command(run: Run, nproc_per_node: int = 1) -> list[str]:
    # --resume is harmless on a fresh folder and makes a requeued job continue where it stopped.
    return ["torchrun", "--standalone", f"--nproc-per-node={nproc_per_node}", "-m", "tralgo", "train",
            *train_arguments(run, resume=True)]


# --------------------------------------------------------------------------- execution


def _now() -> float:
    return time.time()


def _iso(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat(timespec="seconds")


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def _recorded_identity(run: Run) -> dict | None:
    try:
        return json.loads((run.folder / SWEEP_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, OSError):
        return None


def stale_differences(run: Run) -> list[str]:
    """How the configuration recorded in the run's folder differs from the one the spec now
    asks for (empty: the folder holds this run, or nothing yet). Compared on the full resolved
    configuration, for finished runs too: a finished run of other settings never counts."""
    recorded = _recorded_identity(run)
    if recorded is None:
        return []
    saved = recorded.get("config")
    if saved is None:  # written before sweep.json recorded the resolved configuration
        try:
            train, _ = config_lib.split_options(recorded.get("options") or {})
            saved = config_lib.identity(config_lib.TrainConfig(**train).resolved())
        except (KeyError, TypeError, ValueError) as exc:
            return [f"unreadable recorded options ({exc})"]
    return config_lib.differences(saved, run.config())


def _identity_matches(run: Run) -> bool:
    return not stale_differences(run)


def move_aside(folder: Path) -> Path:
    """Rename a stale run folder to ``<folder>.stale-<n>`` (never delete finished work)."""
    n = 1
    while (target := folder.with_name(f"{folder.name}{STALE_SUFFIX}{n}")).exists():
        n += 1
    folder.rename(target)
    return target


def refresh_memberships(runs: list[Run]) -> int:
    """Rewrite ``sweep.json`` of existing runs whose configuration matches but whose list of
    studies changed (a study added to the spec reuses them); returns how many were updated."""
    updated = 0
    for run in runs:
        recorded = _recorded_identity(run)
        if recorded is None or not _identity_matches(run):
            continue
        wanted = json.loads(json.dumps({**run.identity(), "code": recorded.get("code")}, default=str))
        if {**recorded, "code": recorded.get("code")} != wanted:
            atomic_write_json(run.folder / SWEEP_FILE, wanted)
            updated += 1
    return updated


def _held_by_live_process(folder: Path) -> bool:
    try:
        pid = int((folder / PID_FILE).read_text(encoding="utf-8"))
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    try:  # a recycled pid of an unrelated process does not count
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return True
    return str(folder) in cmdline


@dataclass
class _Active:
    run: Run
    process: subprocess.Popen
    started: float
    log: Any


class SweepRunner:
    """A local pool: at most ``workers`` ``tralgo train`` processes at a time.

    ``command`` builds a run's argv (tests substitute a fake trainer). The plan is recomputed
    whenever a worker frees, so tuned runs start as soon as their tuning is complete.
    """

    def __init__(self, spec: dict, out: Path, *, workers: int, only=None, launch_until: float | None = None,
                 max_runs: int | None = None, command=local_command, poll_s: float = 0.2,
                 argv: list[str] | None = None, echo=print, code: dict | None = None):
        self.spec, self.out, self.workers, self.only = spec, Path(out), workers, only
        self.launch_until, self.max_runs, self.command, self.poll_s = launch_until, max_runs, command, poll_s
        self.argv = argv or []
        self.echo = echo
        # The code the runs are trained with (git commit, dirty tree and whether that was allowed),
        # recorded in each run's sweep.json; ``main`` refuses a dirty tree unless --allow-dirty.
        self.code = code if code is not None else {**config_lib.code_version(), "allow_dirty": False}
        self.active: list[_Active] = []
        self.attempted: set[Path] = set()
        self._claims: dict[Path, FolderLock] = {}
        self.counts = {"finished": 0, "diverged": 0, "failed": 0, "interrupted": 0}
        self.busy_s = 0.0
        self.session = f"{_iso(_now())}-{os.getpid()}"
        self._stop = False

    # -- bookkeeping
    def _event(self, **record) -> None:
        append_jsonl(self.out / EVENTS_FILE, {"session": self.session, "time": _iso(_now()), **record})

    def _next_run(self) -> Run | None:
        if self._stop or (self.max_runs is not None and len(self.attempted) >= self.max_runs):
            return None
        if self.launch_until is not None and _now() >= self.launch_until:
            return None
        runs, _ = plan(self.spec, self.out, self.only)
        running = {a.run.folder for a in self.active}
        for run in runs:
            if run.folder in running or run.folder in self.attempted:
                continue
            changed = stale_differences(run)
            if not changed and run_status(run.folder) in DONE_STATUSES:
                continue
            claim = self._claim(run)
            if claim is None or self._busy(run.folder):
                if claim is not None:
                    claim.release()
                self.echo(f"busy    {run.folder} (a training process or job of another sweep holds it)")
                self.attempted.add(run.folder)
                continue
            # Another sweep may have finished or re-planned it between our plan and our claim.
            changed = stale_differences(run)
            if not changed and run_status(run.folder) in DONE_STATUSES:
                claim.release()
                continue
            self._claims[run.folder] = claim
            if changed:
                moved = move_aside(run.folder)
                self._event(event="stale", run=str(run.folder), moved_to=str(moved), differences=changed)
                self.echo(f"changed {run.folder}: holds other settings than the spec ({'; '.join(changed)}); "
                          f"moved to {moved.name}, running it again")
            return run
        return None

    def _claim(self, run: Run) -> FolderLock | None:
        """Hold ``run`` for this sweep from the check that it needs running until its process has
        ended and been recorded: two sweeps on one ``out`` (started together, or ``out`` spelled
        two ways) then never launch it twice, and a trainer refused by the folder lock is never
        recorded as a failure of a run another process is training. None: another sweep holds it."""
        folder, out = run.folder.resolve(), self.out.resolve()
        parts = folder.relative_to(out).parts if folder.is_relative_to(out) else folder.parts[1:]
        lock = FolderLock(self.out / CLAIMS_DIR, "sweep", "__".join(parts) + ".lock")
        try:
            return lock.acquire()
        except FolderInUseError:
            return None

    def _release_claim(self, folder: Path) -> None:
        claim = self._claims.pop(folder, None)
        if claim is not None:
            claim.release()

    def _record_failure(self, run: Run, returncode, wall_s: float, error: str) -> None:
        self.counts["failed"] += 1
        atomic_write_json(run.folder / STATUS_FILE, {"status": "failed", "returncode": returncode,
                                                     "error": error, "time": _iso(_now())})
        self._event(event="run_end", run=str(run.folder), status="failed", wall_s=wall_s, returncode=returncode)
        self.echo(f"FAILED  {run.folder} (exit {returncode}): {error.splitlines()[-1] if error else ''}")

    # -- process control
    def _launch(self, run: Run) -> None:
        self.attempted.add(run.folder)
        run.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run.folder / SWEEP_FILE, {**run.identity(), "code": self.code})
        if (run.folder / STATUS_FILE).is_file():
            (run.folder / STATUS_FILE).unlink()
        resume = run_status(run.folder) == "interrupted"
        # ``tralgo train --resume`` starts a fresh folder and continues an interrupted one (even
        # one killed before its first checkpoint), so every launch passes it.
        argv = self.command(run, True)
        log = open(run.folder / LOG_FILE, "a", encoding="utf-8")
        log.write(f"\n# {_iso(_now())} sweep session {self.session}: {shlex.join(argv)}\n")
        log.flush()
        threads = str(run.options.get("threads", 1))
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        process = self._start(run, argv, log, env)
        if process.pid is not None:
            (run.folder / PID_FILE).write_text(str(process.pid), encoding="utf-8")
        self.active.append(_Active(run, process, _now(), log))
        self.echo(f"{'resume' if resume else 'start '}  {run.folder}")

    # -- where runs execute: local processes here; jobs of a scheduler in cluster.ClusterSweepRunner
    def _start(self, run: Run, argv: list[str], log, env: dict[str, str]):
        """Start ``argv`` for ``run``; returns a handle with ``poll()`` and ``pid`` (Popen's)."""
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True)

    def _busy(self, folder: Path) -> bool:
        """Whether a live process trains the run in ``folder``: its trainer holds the folder lock,
        or a sweep has just started one that has not taken the lock yet."""
        from tralgo.experiments.trainer import LOCK_FILE

        return folder_in_use(folder, LOCK_FILE) or _held_by_live_process(folder)

    def _reap(self) -> None:
        for active in list(self.active):
            rc = active.process.poll()
            if rc is None:
                continue
            self.active.remove(active)
            active.log.close()
            (active.run.folder / PID_FILE).unlink(missing_ok=True)
            wall = _now() - active.started
            self.busy_s += wall
            run = active.run
            status = run_status(run.folder)
            if self._stop and status not in DONE_STATUSES:
                self.counts["interrupted"] += 1
                self._event(event="run_end", run=str(run.folder), status="interrupted", wall_s=wall, returncode=rc)
            elif (rc == 0 and status == "finished") or (rc == DIVERGED_EXIT_CODE and status == "diverged"):
                self.counts[status] += 1
                self._event(event="run_end", run=str(run.folder), status=status, wall_s=wall, returncode=rc)
                self.echo(f"{status:<9}{run.folder} ({wall:.0f} s)")
            else:
                error = _log_tail(run.folder / LOG_FILE) or f"exit code {rc}"
                if rc == 0:
                    error += "\n(exit 0 but result.json does not say finished)"
                self._record_failure(run, rc, wall, error)
            self._release_claim(run.folder)

    def _terminate_all(self) -> None:
        for active in self.active:
            if active.process.poll() is None:
                os.killpg(active.process.pid, signal.SIGTERM)
        deadline = _now() + 20
        while any(a.process.poll() is None for a in self.active) and _now() < deadline:
            time.sleep(0.1)
        for active in self.active:
            if active.process.poll() is None:
                os.killpg(active.process.pid, signal.SIGKILL)
                active.process.wait()

    def request_stop(self, *_):
        self._stop = True

    def run(self) -> dict:
        started = _now()
        refresh_memberships(plan(self.spec, self.out, self.only)[0])
        self._event(event="session_start", workers=self.workers, argv=self.argv, pid=os.getpid(),
                    cpu_count=os.cpu_count())
        try:
            while True:
                self._reap()
                if self._stop:
                    self._terminate_all()
                    self._reap()
                    break
                while len(self.active) < self.workers:
                    run = self._next_run()
                    if run is None:
                        break
                    self._launch(run)
                if not self.active:
                    break
                time.sleep(self.poll_s)
        finally:
            if self.active:  # an exception: never leave orphans behind
                self._stop = True
                self._terminate_all()
                self._reap()
            for folder in list(self._claims):
                self._release_claim(folder)
            wall = _now() - started
            summary = {**self.counts, "wall_s": wall, "busy_s": self.busy_s, "workers": self.workers,
                       "utilization": self.busy_s / (self.workers * wall) if wall > 0 else 0.0,
                       "stopped": self._stop}
            self._event(event="session_end", **summary)
        return summary


# --------------------------------------------------------------------------- CLI


def _parse_until(text: str) -> float:
    """``HH:MM`` (UTC, today or tomorrow) or an ISO date-time, as a POSIX time."""
    try:
        if len(text) <= 5 and ":" in text:
            hh, mm = (int(x) for x in text.split(":"))
            now = _dt.datetime.now(_dt.timezone.utc)
            t = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
            if t < now - _dt.timedelta(hours=12):
                t += _dt.timedelta(days=1)
            return t.timestamp()
        t = _dt.datetime.fromisoformat(text)
        if t.tzinfo is None:
            t = t.replace(tzinfo=_dt.timezone.utc)
        return t.timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(f"--launch-until must be HH:MM (UTC) or an ISO date-time, got {text!r}") from None


def _positive_int(name: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be an int >= 1, got {text!r}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tralgo sweep", description="Run the grid of trainings described in a TOML spec "
                                "(finished runs are skipped, interrupted ones resumed).")
    p.add_argument("spec", help="TOML spec file, e.g. experiments/specs/cpu.toml")
    p.add_argument("--out", help="root folder of the run folders (default: the spec's 'out', else runs/<spec name>)")
    p.add_argument("--workers", type=_positive_int("--workers"), default=1,
                   help="number of training processes run at the same time (default 1; with --status: "
                        "the time left is estimated for this many)")
    p.add_argument("--only", help="comma-separated study names to run (default: all, in file order)")
    p.add_argument("--dry-run", action="store_true", help="print one command per run instead of running them")
    p.add_argument("--launcher", choices=("torchrun", "python"), default="torchrun",
                   help="command form printed by --dry-run (default torchrun, one line per run)")
    p.add_argument("--nproc-per-node", type=_positive_int("--nproc-per-node"), default=1,
                   help="processes per run in the printed torchrun lines (default 1)")
    p.add_argument("--launch-until", type=_parse_until,
                   help="start no new run after this time (HH:MM UTC or ISO date-time); running ones finish")
    p.add_argument("--max-runs", type=_positive_int("--max-runs"), help="start at most this many runs")
    p.add_argument("--status", action="store_true",
                   help="print how many runs of each study are done, running, failed, pending, and the time left")
    p.add_argument("--allow-dirty", action="store_true",
                   help="run although the tralgo checkout has uncommitted changes (recorded in each run's "
                        "sweep.json; the report flags such runs)")
    from tralgo.experiments import cluster

    cluster.add_arguments(p)
    return p


def _default_out(spec: dict, spec_path: str) -> Path:
    return Path(spec.get("out") or Path("runs") / (spec.get("name") or Path(spec_path).stem))


def _print_dry_run(runs: list[Run], notes: list[str], args) -> None:
    for run in runs:
        if args.launcher == "torchrun":
            print(shlex.join(torchrun_command(run, args.nproc_per_node)))
        else:
            print(shlex.join(local_command(run, resume=True)))
    for note in notes:
        print(f"# {note}")


def _finished_wall_s(folder: Path) -> float | None:
    try:
        result = json.loads((folder / "result.json").read_text(encoding="utf-8"))
        return float(result["wall_s"]) if result.get("status") == "finished" else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _fraction_done(run: Run) -> float:
    """Epochs logged / epochs planned, for an interrupted or running run (0 when unknown)."""
    try:
        lines = (run.folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        return min(1.0, int(json.loads(lines[-1])["epoch"]) / int(run.options["epochs"]))
    except (OSError, ValueError, KeyError, IndexError, TypeError, ZeroDivisionError):
        return 0.0


def time_left(runs: list[Run], states: dict[Path, str]) -> tuple[int, float] | None:
    """(runs left, seconds of run time they need), each left run estimated by the finished runs of
    its variant (its study's, else all finished runs, where its variant has none yet) times the
    part of its epochs still to train; None before any run has finished."""
    def keys(run: Run) -> tuple:  # from the closest kind of finished run to any
        return (run.study, run.tuning, run.variant), (run.study, run.tuning), ()

    walls: dict[tuple, list[float]] = {}
    for run in runs:
        if states[run.folder] == "finished" and (wall := _finished_wall_s(run.folder)) is not None:
            for key in keys(run):
                walls.setdefault(key, []).append(wall)
    if not walls:
        return None
    left = [r for r in runs if states[r.folder] in ("new", "interrupted", "running")]
    total = 0.0
    for run in left:
        same = next(walls[k] for k in keys(run) if k in walls)
        total += sum(same) / len(same) * (1.0 - _fraction_done(run))
    return len(left), total


def _print_status(runs: list[Run], notes: list[str], workers: int = 1) -> None:
    table: dict[str, dict[str, int]] = {}
    states: dict[Path, str] = {}
    for run in runs:
        key = run.study + (" (tuning)" if run.tuning else "")
        row = table.setdefault(key, {})
        status = run_status(run.folder)
        if status == "interrupted" and _held_by_live_process(run.folder):
            status = "running"  # read from its pid file: a status probe never takes a run's lock
        elif status != "new" and stale_differences(run):
            status = "stale (other settings; will rerun)"
        states[run.folder] = status
        row[status] = row.get(status, 0) + 1
    for key, row in table.items():
        print(f"{key:<28} " + "  ".join(f"{k} {v}" for k, v in sorted(row.items())))
    estimate = time_left(runs, states)
    if estimate is not None and estimate[0]:
        count, seconds = estimate
        print(f"left: {count} runs, about {seconds / 3600:.1f} h of run time at the finished runs' pace, "
              f"{seconds / 3600 / workers:.1f} h on {workers} worker{'s' if workers > 1 else ''}"
              + (" (not counting the runs below)" if notes else ""))
    for note in notes:
        print(f"# {note}")


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        spec = load_spec(args.spec)
        only = [s.strip() for s in args.only.split(",")] if args.only else None
        if only:
            unknown = set(only) - {s["name"] for s in spec["study"]}
            if unknown:
                raise SpecError(f"--only: unknown study {sorted(unknown)}; the spec has "
                                f"{[s['name'] for s in spec['study']]}")
        out = Path(args.out) if args.out else _default_out(spec, args.spec)
        runs, notes = plan(spec, out, only)
        check_runs(runs)
    except (SpecError, OSError) as exc:
        print(f"tralgo sweep: error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        try:
            _print_dry_run(runs, notes, args)
        except BrokenPipeError:  # e.g. piped into `head`
            sys.stderr.close()
        return 0
    if args.status:
        _print_status(runs, notes, args.workers)
        return 0
    code = {**config_lib.code_version(), "allow_dirty": args.allow_dirty}
    if code["git_dirty"] and not args.allow_dirty:
        files = code["dirty_files"]
        print(f"tralgo sweep: error: the tralgo checkout has uncommitted changes ({len(files)} files: "
              f"{', '.join(files[:3])}{', ...' if len(files) > 3 else ''}); commit them so that the runs "
              "record the code they ran, or pass --allow-dirty (recorded in each run)", file=sys.stderr)
        return 2
    common = dict(only=only, launch_until=args.launch_until, max_runs=args.max_runs,
                  argv=["tralgo", "sweep", *argv], code=code)
    if args.executor == "local":
        runner = SweepRunner(spec, out, workers=args.workers, **common)
    else:
        return _run_on_cluster(spec, out, args, common)
    summary = _run_until_stopped(runner)
    if summary is None:
        return 2
    print(f"sweep: {summary['finished']} finished, {summary['diverged']} diverged, {summary['failed']} failed, "
          f"{summary['interrupted']} interrupted; wall {summary['wall_s']:.0f} s, run time {summary['busy_s']:.0f} s "
          f"on {summary['workers']} workers (utilization {summary['utilization']:.0%})")
    if summary["stopped"]:
        return 130
    return 1 if summary["failed"] else 0


def _run_until_stopped(runner) -> dict | None:
    """``runner.run()`` with SIGTERM/SIGINT asking it to stop (the previous handlers restored
    afterwards); None, after printing the error, when the spec or the output folder fails."""
    previous = {sig: signal.signal(sig, runner.request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return runner.run()
    except (SpecError, OSError) as exc:
        print(f"tralgo sweep: error: {exc}", file=sys.stderr)
        return None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_on_cluster(spec: dict, out: Path, args, common: dict) -> int:
    """``--executor slurm|submitit-local``: the runs as scheduler jobs (see cluster.py)."""
    from tralgo.experiments import cluster

    try:
        options = cluster.options_from_args(args)
        workers = args.workers if args.executor == "submitit-local" else None
        runner = cluster.ClusterSweepRunner(spec, out, cluster=options, workers=workers, **common)
    except ValueError as exc:
        print(f"tralgo sweep: error: {exc}", file=sys.stderr)
        return 2
    summary = _run_until_stopped(runner)
    if summary is None:
        return 2
    jobs = runner.submitted
    print(f"sweep: submitted {len(jobs)} {args.executor} job(s)"
          + (f" ({jobs[0]} ... {jobs[-1]})" if len(jobs) > 1 else f" ({jobs[0]})" if jobs else ""))
    if not options.wait:
        where = f" --out {shlex.quote(args.out)}" if args.out else ""
        print(f"sweep: the jobs run on without this command; `tralgo sweep {args.spec}{where} --status` shows "
              "progress, and running this command again submits runs that become ready (tuned runs) and retries "
              "failed ones")
        return 0
    print(f"sweep: {summary['finished']} finished, {summary['diverged']} diverged, {summary['failed']} failed, "
          f"{summary['interrupted']} interrupted; wall {summary['wall_s']:.0f} s")
    if summary["stopped"]:
        return 130
    return 1 if summary["failed"] else 0
