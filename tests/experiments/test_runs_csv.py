"""The report's raw data: runs.csv export, `report --from` rebuilding report.md and plots byte for
byte, grouping of folders not made by a sweep by every differing setting, and code-version flags."""
import json
import os
import time
from pathlib import Path

import pytest

from tralgo.experiments import report, runs_csv
from tralgo.experiments.config import RunOptions, TrainConfig
from tralgo.experiments.trainer import run_training, synthetic_dataset


def plain_run(root: Path, name: str, acc: float, *, seed: int = 1, commit="abc", dirty=False, **settings) -> Path:
    """A folder as `tralgo train` leaves it (no sweep.json): config.json, metrics.jsonl, result.json."""
    folder = root / name
    folder.mkdir(parents=True)
    config = {"optimizer": "sgd", "lr": 0.1, "batch_size": 8, "seed": seed, "git_commit": commit,
              "git_dirty": dirty, "hostname": "h", "threads": 1, **settings}
    (folder / "config.json").write_text(json.dumps(config))
    records = [{"epoch": e, "step": 10 * e, "train_loss": 1.0 / e, "train_acc": acc * e / 2, "test_acc": acc * e / 2,
                "test_loss": 1.5 / e, "lr": config["lr"], "wall_s": 0.5 * e} for e in (1, 2)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "result.json").write_text(json.dumps({"status": "finished", "final": records[-1]}))
    return folder


def rows(text: str, start: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(start)]


# -- defect 2: runs made outside a sweep ---------------------------------------------------------


def test_plain_runs_are_grouped_by_every_setting_that_differs(tmp_path):
    # Three runs: lr 0.01 (seed 1), lr 0.05 (seeds 1 and 2). They used to share one row "(2)".
    root = tmp_path / "runs"
    plain_run(root, "a", 0.70, lr=0.01)
    plain_run(root, "b", 0.80, lr=0.05)
    plain_run(root, "c", 0.82, lr=0.05, seed=2)
    text = report.build_report([root], tmp_path / "out", title="T", plots=False)
    assert "- Runs: 3 (3 finished)" in text
    assert len(rows(text, "| lr 0.01 | sgd | 70.00 ± – (1) |")) == 1
    assert len(rows(text, "| lr 0.05 | sgd | 81.00 ± 1.41 (2) |")) == 1


def test_the_same_setting_and_seed_twice_is_an_error_naming_both(tmp_path, capsys):
    root = tmp_path / "runs"
    plain_run(root, "a", 0.70, lr=0.01)
    plain_run(root, "b", 0.80, lr=0.05)
    plain_run(root, "c", 0.82, lr=0.05)  # same settings and seed as b: one would replace the other
    assert report.main([str(root), "--out", str(tmp_path / "out"), "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "same seed 1" in err and str(root / "b") in err and str(root / "c") in err
    assert not (tmp_path / "out" / "report.md").exists()


def test_tr_pairs_with_its_base_at_the_same_other_settings(tmp_path):
    root = tmp_path / "runs"
    for seed in (1, 2, 3):
        for lr in (0.01, 0.05):
            plain_run(root, f"sgd-{lr}-{seed}", 0.7 + lr + 0.001 * seed, seed=seed, lr=lr)
            plain_run(root, f"tr-{lr}-{seed}", 0.71 + lr + 0.001 * seed, seed=seed, lr=lr, optimizer="trsgd",
                      lam=0.2, lam_scaling="inverse_lr", inner_steps=10)
    text = report.build_report([root], tmp_path / "out", title="T", plots=False)
    tr_rows = rows(text, "| lr 0.01 | trsgd-lam0.2-inverse_lr-S10 | 72.") + rows(text, "| lr 0.05 | trsgd-lam0.2-inverse_lr-S10 | 76.")
    assert len(tr_rows) == 2 and all("+1.00 [+1.00, +1.00] (3)" in r for r in tr_rows)


def test_a_hyperparameter_of_tr_that_differs_names_the_variant(tmp_path):
    root = tmp_path / "runs"
    plain_run(root, "sgd", 0.7)
    plain_run(root, "tr-decay", 0.71, optimizer="trsgd", inner_lr_decay=True)
    plain_run(root, "tr-nodecay", 0.72, optimizer="trsgd", inner_lr_decay=False)
    text = report.build_report([root], tmp_path / "out", title="T", plots=False)
    assert rows(text, "| trsgd-lam0.2-inverse_lr-S10-inner_lr_decayTrue |")
    assert rows(text, "| trsgd-lam0.2-inverse_lr-S10-inner_lr_decayFalse |")


# -- code versions ---------------------------------------------------------------------------


def test_report_flags_mixed_commits_and_dirty_runs(tmp_path):
    root = tmp_path / "runs"
    plain_run(root, "a", 0.7, commit="1111111111111111", lr=0.01)
    plain_run(root, "b", 0.8, commit="2222222222222222", dirty=True, lr=0.05)
    text = report.build_report([root], tmp_path / "out", title="T", plots=False)
    assert "**Warning: these results mix code versions**: commit 111111111111 (1 runs), commit 222222222222 (1 runs)" in text
    assert "**Warning: 1 run(s) ran from a checkout with uncommitted changes**" in text
    clean = tmp_path / "clean"
    plain_run(clean, "a", 0.7, commit="1111111111111111")
    text = report.build_report([clean], tmp_path / "out2", title="T", plots=False)
    assert "- Code: commit 111111111111 for every run." in text and "Warning" not in text


def test_stale_folders_moved_aside_by_a_sweep_are_not_results(tmp_path, capsys):
    root = tmp_path / "runs"
    plain_run(root, "a", 0.7)
    plain_run(root, "a.stale-1", 0.1)
    assert report.main([str(root), "--out", str(tmp_path / "out"), "--no-plots"]) == 0
    assert "skipped 1 stale folder" in capsys.readouterr().out
    assert "- Runs: 1 (1 finished)" in (tmp_path / "out" / "report.md").read_text()


# -- runs.csv and report --from -----------------------------------------------------------------


def sweep_run(root, study, variant, seed, acc, *, role="base", base=None, status="finished", tuning=False,
              val_acc=None, variant_index=0, report_opts=None, epochs=3, also=()):
    """A folder as `tralgo sweep` leaves it, with the membership metadata of sweep.json."""
    folder = root / study / ("tune" if tuning else "") / variant / f"seed-{seed}"
    folder.mkdir(parents=True)
    config = {"optimizer": variant.split("-")[0], "seed": seed, "lr": 0.1, "batch_size": 8, "epochs": epochs,
              "width": 0.5, "git_commit": "abc", "git_dirty": False}
    (folder / "config.json").write_text(json.dumps(config))
    records = []
    for epoch in range(1, epochs + 1):
        rec = {"epoch": epoch, "step": 12 * epoch, "train_loss": 2.0 / epoch + 0.01 * seed, "train_acc": acc * epoch / epochs,
               "lr": 0.1 if epoch < 3 else 0.01, "wall_s": 1.25 * epoch, "steps_per_s": 9.5}
        if epoch % 2 == 0 or epoch == epochs:  # eval_every 2: test metrics on some epochs only
            rec.update(test_acc=acc * epoch / epochs, test_loss=1.0 / epoch + 1e-17 * seed)
        if val_acc is not None:
            rec["val_acc"] = val_acc
        records.append(rec)
    if status == "diverged":
        records[-1] = {"epoch": epochs, "diverged": True, "train_loss": None, "test_acc": None, "lr": 0.01,
                       "wall_s": 1.0, "step": 30}
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if status in ("finished", "diverged"):
        (folder / "result.json").write_text(json.dumps({"status": status, "final": records[-1]}))
    if status == "failed":
        (folder / "sweep_status.json").write_text(json.dumps({"status": "failed", "error": "Traceback\nValueError: x, y"}))
    membership = {"study": study, "variant": variant, "role": role, "base": base, "grid": {"seed": str(seed)},
                  "tuning": tuning, "report": report_opts or {"title": f"Study {study}", "lines_by": "variant"},
                  "label": variant.upper() + ", with a comma", "study_index": 0, "variant_index": variant_index}
    if tuning:
        membership["grid"]["lr"] = "0.1"
    (folder / "sweep.json").write_text(json.dumps({"options": config, "memberships": [membership, *also]}))
    return folder


@pytest.fixture
def study_runs(tmp_path):
    root = tmp_path / "runs"
    for seed, acc in enumerate((0.80, 0.83, 0.81, 0.84), start=1):
        shared = {"study": "other", "variant": "sgd", "role": "base", "base": None, "grid": {"seed": str(seed)},
                  "tuning": False, "report": {"title": "Other"}, "study_index": 1, "variant_index": 0}
        sweep_run(root, "head", "sgd", seed, acc, also=(shared,))
        sweep_run(root, "head", "trsgd", seed, acc + 0.013 * seed % 0.02, role="tr", base="sgd", variant_index=1)
        sweep_run(root, "head", "lam0-ctl", seed, acc + 0.01, role="control", base="sgd", variant_index=2)
    sweep_run(root, "head", "trsgd", 5, 0.0, role="tr", base="sgd", status="diverged", variant_index=1)
    sweep_run(root, "head", "lam0-ctl", 5, 0.0, role="control", base="sgd", status="failed", variant_index=2)
    sweep_run(root, "head", "sgd", 1, 0.5, tuning=True, val_acc=0.61)
    sweep_run(root, "head", "sgd", 2, 0.5, tuning=True, val_acc=0.63)
    return root


def test_report_from_runs_csv_is_byte_identical_with_plots(study_runs, tmp_path):
    pytest.importorskip("matplotlib")
    direct = tmp_path / "direct"
    csv_path = tmp_path / "data" / "runs.csv"
    assert report.main([str(study_runs), "--out", str(direct), "--export-csv", str(csv_path)]) == 0
    rebuilt = tmp_path / "rebuilt"
    assert report.main(["--from", str(csv_path), "--out", str(rebuilt)]) == 0
    made = sorted(p.name for p in direct.iterdir() if p.name != "compute.md")
    assert "report.md" in made and sum(n.endswith(".png") for n in made) >= 2
    assert sorted(p.name for p in rebuilt.iterdir()) == made
    for name in made:
        assert (direct / name).read_bytes() == (rebuilt / name).read_bytes(), name
    text = (direct / "report.md").read_text()
    assert "## Other" in text and "Tuning runs" in text and "failed: `" in text and "ValueError: x, y" in text
    # Exporting the rebuilt runs again gives the same file.
    again = tmp_path / "again.csv"
    report.build_report(None, tmp_path / "third", title="tralgo report", plots=False,
                        runs=runs_csv.read_runs_csv(csv_path), export_csv=again)
    assert again.read_bytes() == csv_path.read_bytes()


def test_runs_csv_has_one_row_per_run_membership_and_epoch(study_runs, tmp_path):
    import csv

    csv_path = tmp_path / "runs.csv"
    runs, _, _ = report.load_runs([study_runs])
    runs_csv.write_runs_csv(runs, csv_path)
    table = list(csv.DictReader(csv_path.open()))
    header = list(table[0])
    assert header[:2] == ["study", "variant"]
    assert {"lr", "eval_every", "lookahead_alpha", "seed", "epoch", "test_acc", "git_commit", "git_dirty",
            "status"} <= set(header)
    sgd1 = [r for r in table if r["folder"].endswith("head/sgd/seed-1")]
    assert [(r["study"], r["epoch"]) for r in sgd1] == [("head", "1"), ("head", "2"), ("head", "3"),
                                                        ("other", "1"), ("other", "2"), ("other", "3")]
    assert sgd1[0]["test_acc"] == "" and sgd1[1]["test_acc"] != ""  # no evaluation at epoch 1
    assert sgd1[0]["lr"] == "0.1" and sgd1[2]["lr_at_epoch"] == "0.01" and sgd1[0]["git_commit"] == "abc" and sgd1[0]["status"] == "finished"
    failed = [r for r in table if r["status"] == "failed"]
    assert len(failed) == 3 and failed[0]["error"] == "ValueError: x, y"


def test_a_real_training_run_round_trips(tmp_path):
    data = synthetic_dataset(n_train=48, n_test=16, seed=1)
    for optimizer, seed in (("sgd", 1), ("trsgd", 1), ("sgd", 2), ("trsgd", 2)):
        config = TrainConfig(model="cnn", width=0.25, optimizer=optimizer, lr=0.05, epochs=3, eval_every=2,
                             eval_batch_size=16, seed=seed)
        assert run_training(config, RunOptions(out=str(tmp_path / "runs" / f"{optimizer}-{seed}"), device="cpu",
                                               progress=False), dataset=data, log=lambda _: None) == 0
    csv_path = tmp_path / "runs.csv"
    direct = report.build_report([tmp_path / "runs"], tmp_path / "a", title="T", plots=False, export_csv=csv_path)
    rebuilt = report.build_report(None, tmp_path / "b", title="T", plots=False, runs=runs_csv.read_runs_csv(csv_path))
    assert direct == rebuilt and "trsgd-lam0.2-inverse_lr-S10" in direct


def test_runs_csv_is_written_atomically(study_runs, tmp_path, monkeypatch):
    csv_path = tmp_path / "runs.csv"
    csv_path.write_text("old\n")
    runs, _, _ = report.load_runs([study_runs])

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        runs_csv.write_runs_csv(runs, csv_path)
    assert csv_path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["runs", "runs.csv"]


def test_a_gz_runs_csv_is_compressed_reproducible_and_reads_back_the_same(study_runs, tmp_path):
    import gzip

    plain, packed = tmp_path / "runs.csv", tmp_path / "again" / "runs.csv.gz"
    direct = report.build_report([study_runs], tmp_path / "a", title="T", plots=False, export_csv=plain)
    report.build_report([study_runs], tmp_path / "b", title="T", plots=False, export_csv=packed)
    assert gzip.decompress(packed.read_bytes()) == plain.read_bytes()
    assert len(packed.read_bytes()) < len(plain.read_bytes()) / 3
    first = packed.read_bytes()
    time.sleep(1.1)  # gzip stamps the time in seconds unless told not to
    runs_csv.write_runs_csv(runs_csv.read_runs_csv(packed), packed)
    assert packed.read_bytes() == first
    assert report.build_report(None, tmp_path / "c", title="T", plots=False,
                               runs=runs_csv.read_runs_csv(packed)) == direct
    assert report.main(["--from", str(packed), "--out", str(tmp_path / "d"), "--no-plots", "--title", "T"]) == 0
    assert (tmp_path / "d" / "report.md").read_text() == direct


def test_a_truncated_gz_runs_csv_is_one_error_naming_it(study_runs, tmp_path, capsys):
    packed = tmp_path / "runs.csv.gz"
    report.build_report([study_runs], tmp_path / "a", title="T", plots=False, export_csv=packed)
    packed.write_bytes(packed.read_bytes()[:-20])
    assert report.main(["--from", str(packed), "--out", str(tmp_path / "o")]) == 2
    assert f"{packed} ends in .gz but is not a complete gzip file" in capsys.readouterr().err


def test_report_from_a_file_that_is_not_a_runs_csv_is_one_error(tmp_path, capsys):
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n1,2\n")
    assert report.main(["--from", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "is not a runs.csv written by tralgo report --export-csv" in capsys.readouterr().err
    assert report.main(["--from", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert report.main(["--out", str(tmp_path / "o")]) == 2
    assert "give run folders (RUNS) or --from RUNS_CSV" in capsys.readouterr().err


RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"


def _drawn_by_this_matplotlib(png: Path) -> bool:
    """Whether the installed matplotlib wrote ``png`` (its "Software" text chunk): another version may
    draw the same data with other bytes, so only the same version can be held to byte equality."""
    import matplotlib
    from PIL import Image

    with Image.open(png) as image:
        return image.info.get("Software", "").startswith(f"Matplotlib version{matplotlib.__version__},")


def committed_runs_csv(folder: Path) -> Path:
    """A results folder's raw data: runs.csv, or runs.csv.gz for a large study."""
    found = [folder / name for name in ("runs.csv", "runs.csv.gz") if (folder / name).is_file()]
    assert len(found) == 1, f"{folder}: want one of runs.csv, runs.csv.gz, found {[p.name for p in found]}"
    return found[0]


def regenerate(folder: Path, out: Path) -> list[str]:
    """Rebuild ``folder``'s report from its runs.csv(.gz) into ``out``; the names of files that differ
    (plots only where the installed matplotlib is the one that drew the committed ones)."""
    committed = (folder / "report.md").read_text(encoding="utf-8")
    title = committed.splitlines()[0].removeprefix("# ")
    pngs = sorted(folder.glob("*.png"))
    report.build_report(None, out, title=title, plots=bool(pngs),
                        runs=runs_csv.read_runs_csv(committed_runs_csv(folder)))
    drawn = sorted(p.name for p in out.glob("*.png"))
    missing_or_extra = sorted(set(drawn) ^ {p.name for p in pngs})
    same_version = all(_drawn_by_this_matplotlib(p) for p in pngs)
    names = ["report.md"] + (drawn if same_version else [])
    return missing_or_extra + [n for n in names
                               if not (folder / n).is_file() or (folder / n).read_bytes() != (out / n).read_bytes()]


@pytest.mark.parametrize("folder", sorted({p.parent for p in RESULTS.glob("*/runs.csv*")}) or [None],
                         ids=lambda p: p.name if p else "none")
def test_committed_results_regenerate_from_their_runs_csv(folder, tmp_path):
    # Every docs/results/<name>/ with a runs.csv(.gz): `tralgo report --from` it gives its report.md
    # and plots byte for byte (the title is the report's first line).
    if folder is None:
        pytest.skip("no docs/results/*/runs.csv committed yet")
    pytest.importorskip("matplotlib")
    assert regenerate(folder, tmp_path / "out") == []


def test_regenerate_detects_a_changed_number(study_runs, tmp_path):
    folder = tmp_path / "results"
    assert report.main([str(study_runs), "--out", str(folder), "--export-csv", str(folder / "runs.csv"),
                        "--title", "My study", "--no-plots"]) == 0
    assert regenerate(folder, tmp_path / "a") == []
    import csv

    with (folder / "runs.csv").open() as f:
        table = list(csv.DictReader(f))
    last = max(i for i, r in enumerate(table) if r["folder"].endswith("head/sgd/seed-4") and r["study"] == "head")
    table[last]["test_acc"] = "0.85"  # the final test accuracy of one run, 0.84 before
    with (folder / "runs.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(table)
    assert regenerate(folder, tmp_path / "b") == ["report.md"]


def test_folders_of_two_specs_with_the_same_names_are_not_pooled(tmp_path, capsys):
    # Seeds 1-2 of study "head"/sgd at lr 0.1, seeds 3-4 from another spec at lr 0.05: one cell by
    # name, two configurations. Pooling them would report a mean over two settings.
    first, second = tmp_path / "a", tmp_path / "b"
    for seed in (1, 2):
        sweep_run(first, "head", "sgd", seed, 0.8)
    for seed in (3, 4):
        folder = sweep_run(second, "head", "sgd", seed, 0.8)
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "lr": 0.05}))
    assert report.main([str(first), str(second), "--out", str(tmp_path / "out"), "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert "but ran different settings (lr 0.1 vs 0.05)" in err and err.count("\n") == 1
    assert report.main([str(first), "--out", str(tmp_path / "out"), "--no-plots"]) == 0


def test_cost_and_time_to_target_per_configuration(tmp_path):
    root = tmp_path / "runs"
    target = {"title": "T", "target": {"metric": "test_acc", "value": 0.55}}
    # test_acc = acc * epoch / 3 at epochs 2 and 3 (12 steps per epoch): acc 0.84 reaches 0.55 at
    # epoch 2 (0.56, step 24), 0.80 at epoch 3 (0.533 at epoch 2; step 36), 0.50 never.
    for seed, acc in ((1, 0.84), (2, 0.80), (3, 0.50)):
        sweep_run(root, "s", "sgd", seed, acc, report_opts=target)
    text = report.build_report([root], tmp_path / "out", title="T", plots=False)
    row = rows(text, "| SGD, with a comma | 3/3 |")[-1]
    # last-epoch train accuracy = acc: mean 71.33, lowest seed 50 (a "converged" claim must hold for it);
    # median of 24 and 36 steps to target
    assert row == "| SGD, with a comma | 3/3 | 36 | 0.06 | 71.33 (50.00) | 2/3 | 30 |"
    assert "reached test_acc ≥ 0.55" in text
    assert "counted at the evaluations of test_acc (every 12 steps)" in text  # the resolution is said
    run = report.load_run(root / "s" / "sgd" / "seed-3")
    assert report.steps_to_target(run, "test_acc", 0.55) is None
