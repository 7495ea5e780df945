"""`tralgo gan compare`'s raw per-run table: runs.csv (+ per_class_iou.csv) is written next to the
table, and table.md regenerates from it byte for byte (issue 9: every table in docs/ is generated
from raw data committed next to it)."""
import json
import random
from pathlib import Path

import pytest

from tralgo.gan import compare
from tralgo.gan.cli import main
from tralgo.gan.data import NUM_CLASSES
from tralgo.gan.evaluate import EVAL_FILE

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "gan" / "results"


def test_committed_table_regenerates_exactly_from_committed_runs_csv(tmp_path, capsys):
    assert main(["compare", "--from", str(RESULTS / "runs.csv"), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "table.md").read_text() == (RESULTS / "table.md").read_text()
    assert (RESULTS / "table.md").read_text() in capsys.readouterr().out


def test_committed_raw_tables_are_what_the_committed_run_records_give(tmp_path):
    # docs/gan/results/runs/<method>_seed<s>/ keeps each run's config, result, metrics, 8-bit
    # validation outputs and eval.json (no generator): runs.csv, per_class_iou.csv and summary.json
    # are exactly what those records give.
    summary = json.loads((RESULTS / "summary.json").read_text())
    records, gt = compare.collect_runs(RESULTS, summary["methods"], summary["seeds"])
    assert all(r["status"] == "evaluated" for r in records)
    compare.write_raw(tmp_path, records, gt)
    for name in (compare.RUNS_CSV, compare.PER_CLASS_CSV):
        assert (tmp_path / name).read_text() == (RESULTS / name).read_text(), name
    rebuilt = json.loads(json.dumps(compare.summary_from_runs(records, gt, summary["methods"], summary["seeds"])))
    assert rebuilt == summary


def test_readme_tables_are_the_generated_ones():
    readme = (RESULTS.parent / "README.md").read_text()
    table = (RESULTS / "table.md").read_text()
    for block in table.strip().split("\n\n"):
        assert block in readme, block.splitlines()[0]


def _fake_eval(rng: random.Random) -> dict:
    def scores():
        per_class = [None if c % 4 == 3 else rng.random() for c in range(NUM_CLASSES)]
        return {"per_pixel_acc": rng.random(), "per_class_acc": rng.random(), "class_iou": rng.random(),
                "per_class_iou": per_class}
    return {"fake": scores(), "gt": scores(), "val_l1": rng.random()}


def test_run_folders_to_runs_csv_and_back(tmp_path):
    rng = random.Random(0)
    methods, seeds = list(compare.METHODS), [1, 2, 3]
    gt = None
    for method in methods:
        for seed in seeds:
            if (method, seed) == ("tradam", 2):
                continue  # never evaluated: must be listed, not dropped
            run = compare.run_dir_of(tmp_path, method, seed)
            run.mkdir(parents=True)
            e = _fake_eval(rng)
            e["gt"] = gt = gt or e["gt"]
            (run / EVAL_FILE).write_text(json.dumps(e))
            (run / "result.json").write_text(json.dumps({"wall_s": rng.uniform(10, 20)}))
    summary = compare.summarise(tmp_path, methods, seeds)
    assert summary["missing"] == ["tradam_seed2"]
    lines = (tmp_path / compare.RUNS_CSV).read_text().splitlines()
    assert lines[0] == ",".join(compare.RUN_COLUMNS) and "tradam,2,missing,,,,," in lines
    assert lines[-1].startswith("gt,,evaluated,")
    again = compare.read_raw(tmp_path / compare.RUNS_CSV)
    assert compare.format_table(again) == (tmp_path / "table.md").read_text()
    assert "Missing runs: tradam_seed2" in (tmp_path / "table.md").read_text()
    # Per-seed class IoUs are kept, so the per-class means are recomputed, not copied.
    assert "mean" not in (tmp_path / compare.PER_CLASS_CSV).read_text()
    assert json.loads(json.dumps(again)) == json.loads((tmp_path / "summary.json").read_text())


def test_bad_raw_tables_are_one_line_errors(tmp_path, capsys):
    bad = tmp_path / "runs.csv"
    bad.write_text("method,seed,acc\nadam,1,0.5\n")
    assert main(["compare", "--from", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not a runs.csv of tralgo gan compare" in err and len(err.splitlines()) == 1
    good = (RESULTS / "runs.csv").read_text()
    (tmp_path / "runs.csv").write_text(good)
    assert main(["compare", "--from", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "per_class_iou.csv" in capsys.readouterr().err
    (tmp_path / "per_class_iou.csv").write_text((RESULTS / "per_class_iou.csv").read_text())
    lines = good.splitlines(keepends=True)
    fields = lines[3].split(",")
    lines[3] = ",".join([*fields[:3], "0.85x", *fields[4:]])
    (tmp_path / "runs.csv").write_text("".join(lines))
    assert main(["compare", "--from", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "line 4: '0.85x' is not a number" in capsys.readouterr().err
    (tmp_path / "runs.csv").write_text(good.replace("adam_equiv_lr,1", "sgd,1"))
    assert main(["compare", "--from", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "method must be one of" in capsys.readouterr().err
    assert main(["compare", "--from", str(tmp_path / "nope.json"), "--out", str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_table_and_curves_regenerate_from_the_raw_files_of_a_study(tmp_path):
    rng = random.Random(1)
    methods, seeds = ["adam", "tradam"], [1, 2]
    gt = None
    for method in methods:
        for seed in seeds:
            run = compare.run_dir_of(tmp_path / "study", method, seed)
            run.mkdir(parents=True)
            e = _fake_eval(rng)
            e["gt"] = gt = gt or e["gt"]
            (run / EVAL_FILE).write_text(json.dumps(e))
            (run / "result.json").write_text(json.dumps({"wall_s": 1.0}))
            lines = [{"kind": "train", "iter": it, "loss_G_L1": rng.random()} for it in (50, 100, 150)]
            lines += [{"kind": "val", "iter": it, "val_l1": rng.random()} for it in (100, 150)]
            (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    study = tmp_path / "study"
    compare.summarise(study, methods, seeds)
    compare.plot_curves(study, methods, seeds)
    curves = (study / compare.CURVES_CSV).read_text().splitlines()
    assert curves[0] == ",".join(compare.CURVE_COLUMNS) and len(curves) == 1 + 4 * 5
    assert curves[1].startswith("adam,1,loss_G_L1,50,")
    again = tmp_path / "again"
    assert main(["compare", "--from", str(study / compare.RUNS_CSV), "--out", str(again)]) == 0
    assert (again / "table.md").read_text() == (study / "table.md").read_text()
    assert (again / "curves.png").read_bytes() == (study / "curves.png").read_bytes()
