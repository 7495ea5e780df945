"""runs.csv: the raw data behind a report, one row per run, study membership and epoch.

``tralgo report RUNS --out DIR --export-csv runs.csv`` writes it; ``tralgo report --from runs.csv
--out DIR`` rebuilds the same ``report.md`` and plots byte for byte (the report reads nothing
else). Columns, left to right:

* membership: ``study``, ``variant``, ``role``, ``base``, ``label``, ``tuning``, ``grid`` (JSON:
  axis -> value label, seed included), ``tuned`` (JSON), ``study_index``, ``variant_index``,
  ``report`` (JSON: the study's [study.report] table);
* every TrainConfig setting (experiments/config.py, so a new option is a new column), the seed
  among them; empty where the run's record lacks it;
* ``status`` (finished / diverged / failed / unfinished / not started), ``error`` (last line of a
  failure), ``git_commit``, ``git_dirty``, ``folder``;
* ``epoch`` and the per-epoch metrics as metrics.jsonl holds them (``train_loss``, ``test_acc``,
  ``step``, ``wall_s``, ...; the epoch's learning rate is ``lr_at_epoch``, since ``lr`` is the
  setting); empty where an epoch has no value (e.g. no evaluation at that epoch with
  ``eval_every``). A run without any epoch has one row with an empty ``epoch``.

Numbers are written as Python's shortest round-trip repr, so reading gives the same floats.

A path ending in ``.gz`` is written and read gzip-compressed (docs/results/cpu's runs.csv, per-epoch
rows of a few hundred runs, goes from 594 kB to 48 kB). The gzip header carries no time stamp and no file name,
so the same runs give the same bytes, as the uncompressed file does.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path
from typing import Any

from tralgo.experiments import config as config_lib
from tralgo.experiments.io import atomic_write_bytes
from tralgo.experiments.report import RunRecord

MEMBERSHIP_COLUMNS = ("study", "variant", "role", "base", "label", "tuning", "grid", "tuned", "study_index",
                      "variant_index", "report")
_JSON_MEMBERSHIP = ("grid", "tuned", "report")
RUN_COLUMNS = ("status", "error", "git_commit", "git_dirty", "folder")
# Metrics in this order first (as a reader expects them), any others after, sorted.
METRIC_ORDER = ("epoch", "step", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
                "wall_s", "steps_per_s", "diverged")


def setting_columns() -> tuple[str, ...]:
    return tuple(config_lib.TRAIN_FIELDS)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _metric_columns(runs: list[RunRecord]) -> list[str]:
    keys = {k for r in runs for rec in r.curve for k in rec}
    return [k for k in METRIC_ORDER if k in keys] + sorted(keys - set(METRIC_ORDER))


# A metric named like a setting (the epoch's ``lr`` next to the initial ``lr``) gets this suffix.
EPOCH_SUFFIX = "_at_epoch"


def _metric_column(key: str) -> str:
    taken = set(MEMBERSHIP_COLUMNS) | set(setting_columns()) | set(RUN_COLUMNS)
    return key + EPOCH_SUFFIX if key in taken else key


def write_runs_csv(runs: list[RunRecord], path: str | Path) -> None:
    """Write ``runs`` (with their memberships) as runs.csv, atomically."""
    metrics = _metric_columns(runs)
    settings = setting_columns()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*MEMBERSHIP_COLUMNS, *settings, *RUN_COLUMNS, *(_metric_column(k) for k in metrics)])
    for run in runs:
        run_part = [_cell(run.status), _cell(run.error), _cell(run.code.get("git_commit")),
                    _cell(run.code.get("git_dirty")), str(run.folder)]
        setting_part = [_cell(run.config[k]) if k in run.config else "" for k in settings]
        for m in run.memberships:
            member_part = [_cell(m.get(k)) if k not in _JSON_MEMBERSHIP else json.dumps(m.get(k) or {}, sort_keys=True)
                           for k in MEMBERSHIP_COLUMNS]
            for record in run.curve or [{}]:
                # An absent metric and a null one (a diverged epoch's) both read back as absent;
                # the report treats them alike.
                writer.writerow([*member_part, *setting_part, *run_part,
                                 *(_cell(record.get(k)) for k in metrics)])
    data = buffer.getvalue().encode("utf-8")
    if _compressed(path):
        data = gzip.compress(data, mtime=0)  # no time stamp: the same runs give the same bytes
    atomic_write_bytes(path, data)


def _compressed(path: str | Path) -> bool:
    return str(path).endswith(".gz")


def _number(text: str) -> Any:
    """A cell written by ``_cell``: JSON keeps ints ints and floats floats; repr's inf/nan are not JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return float(text)


def _parse_setting(name: str, text: str) -> Any:
    base, _ = config_lib.field_type(config_lib.TRAIN_FIELDS[name])
    return text if base is str else _number(text)


def _parse_metric(name: str, text: str) -> Any:
    return _number(text)


def read_runs_csv(path: str | Path) -> list[RunRecord]:
    """The runs of a runs.csv, in file order, as the report loads them from folders."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"--from: {str(path)!r} does not exist") from None
    if _compressed(path):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path} ends in .gz but is not a complete gzip file ({exc})") from None
    text = data.decode("utf-8")
    reader = csv.DictReader(io.StringIO(text))
    required = {*MEMBERSHIP_COLUMNS, *RUN_COLUMNS, "epoch"}
    missing = sorted(required - set(reader.fieldnames or ()))
    if missing:
        raise ValueError(f"{path} is not a runs.csv written by tralgo report --export-csv (no column {missing[0]!r})")
    settings = [c for c in setting_columns() if c in reader.fieldnames]
    run_set = set(RUN_COLUMNS) | set(MEMBERSHIP_COLUMNS) | set(settings)
    metrics = {c: c[: -len(EPOCH_SUFFIX)] if c.endswith(EPOCH_SUFFIX) and c[: -len(EPOCH_SUFFIX)] in run_set else c
               for c in reader.fieldnames if c not in run_set}
    runs: dict[str, RunRecord] = {}
    seen_members: dict[str, list[str]] = {}
    for line, row in enumerate(reader, start=2):
        try:
            folder = row["folder"]
            run = runs.get(folder)
            if run is None:
                config = {k: _parse_setting(k, row[k]) for k in settings if row[k] != ""}
                code = {"git_commit": row["git_commit"] or None,
                        "git_dirty": None if row["git_dirty"] == "" else row["git_dirty"] == "true"}
                run = runs[folder] = RunRecord(Path(folder), config, [], row["status"], None, [],
                                               row["error"] or None, code)
                seen_members[folder] = []
            member = json.dumps([row[k] for k in MEMBERSHIP_COLUMNS])
            if member not in seen_members[folder]:
                seen_members[folder].append(member)
                run.memberships.append(_membership(row))
            if len(seen_members[folder]) == 1 and row["epoch"] != "":
                run.curve.append({key: _parse_metric(key, row[c]) for c, key in metrics.items() if row[c] != ""})
        except (KeyError, ValueError) as exc:
            raise ValueError(f"{path} line {line}: unreadable ({exc})") from None
    for run in runs.values():
        if run.status == "finished" and run.curve:
            run.final = run.curve[-1]
    return list(runs.values())


def _membership(row: dict[str, str]) -> dict[str, Any]:
    m: dict[str, Any] = {"study": row["study"], "variant": row["variant"], "role": row["role"] or "base",
                         "base": row["base"] or None, "grid": json.loads(row["grid"]),
                         "tuning": row["tuning"] == "true", "report": json.loads(row["report"])}
    if row["label"]:
        m["label"] = row["label"]
    for key in ("study_index", "variant_index"):
        if row[key] != "":
            m[key] = int(row[key])
    tuned = json.loads(row["tuned"])
    if tuned:
        m["tuned"] = tuned
    return m
