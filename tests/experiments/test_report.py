import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tralgo.experiments import report, stats


def make_run(root: Path, study: str, variant: str, seed: int, acc: float | None, *, role="base", base=None,
             grid=None, status="finished", report_opts=None, curve_len=3, tuning=False, val_acc=None,
             variant_index=0, study_index=0, extra_memberships=()):
    """A run folder as tralgo train + tralgo sweep leave it; ``acc`` is the final test accuracy."""
    grid = dict({"batch_size": "8"} if grid is None else grid)
    folder = root / study / variant / ("_".join(f"{k}-{v}" for k, v in grid.items()) + f"_seed-{seed}")
    folder.mkdir(parents=True)
    config = {"optimizer": variant, "seed": seed, "batch_size": int(grid.get("batch_size", 8)), "lr": 0.1}
    (folder / "config.json").write_text(json.dumps(config))
    records = []
    for epoch in range(1, curve_len + 1):
        frac = epoch / curve_len
        rec = {"epoch": epoch, "step": 100 * epoch, "train_loss": 2 - frac, "test_loss": 2.1 - frac,
               "train_acc": (acc or 0.1) * frac, "test_acc": (acc or 0.1) * frac, "lr": 0.1, "wall_s": epoch}
        if val_acc is not None:
            rec["val_acc"] = val_acc
        records.append(rec)
    if status == "diverged":
        records[-1] = {"epoch": curve_len, "diverged": True, "train_loss": None, "test_acc": None, "wall_s": 1}
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if status in ("finished", "diverged"):
        (folder / "result.json").write_text(json.dumps({"status": status, "final": records[-1], "wall_s": 3.0}))
    if status == "failed":
        (folder / "sweep_status.json").write_text(json.dumps({"status": "failed", "error": "Traceback\nValueError: boom"}))
    membership = {"study": study, "variant": variant, "role": role, "base": base,
                  "grid": {**grid, "seed": str(seed)}, "tuning": tuning, "report": report_opts or {},
                  "label": variant.upper(), "study_index": study_index, "variant_index": variant_index}
    (folder / "sweep.json").write_text(json.dumps({"options": config, "memberships": [membership, *extra_memberships]}))
    return folder


SGD = [0.80, 0.82, 0.81, 0.83, 0.79]


@pytest.fixture
def headline(tmp_path):
    root = tmp_path / "runs"
    for seed, a in enumerate(SGD, start=1):
        make_run(root, "head", "sgd", seed, a)
        # TR gains exactly as much as the lam-0 control does: the control explains the gain.
        make_run(root, "head", "trsgd", seed, a + 0.02 + 0.001 * seed, role="tr", base="sgd", variant_index=1)
        make_run(root, "head", "lam0", seed, a + 0.02 + 0.001 * (6 - seed), role="control", base="sgd",
                 variant_index=2)
        make_run(root, "head", "accum", seed, a - 0.05, role="control", base="sgd", variant_index=3)
    make_run(root, "head", "trsgd", 6, None, role="tr", base="sgd", status="diverged", variant_index=1)
    make_run(root, "head", "accum", 6, None, role="control", base="sgd", status="failed", variant_index=3)
    return root


def test_table_gives_mean_std_n_and_counts_diverged_and_failed(headline, tmp_path):
    text = report.build_report([headline], tmp_path / "out", title="T", command="tralgo report x", plots=False)
    s = stats.summarize(SGD)
    assert f"| batch_size 8 | SGD | {100 * s.mean:.2f} ± {100 * s.std:.2f} (5) | 0/5 | 0 |" in text
    trsgd_row = next(l for l in text.splitlines() if l.startswith("| batch_size 8 | TRSGD |"))
    assert "| 1/6 | 0 |" in trsgd_row  # the diverged seed is counted, not averaged
    accum_row = next(l for l in text.splitlines() if l.startswith("| batch_size 8 | ACCUM |"))
    assert "| 0/6 | 1 |" in accum_row and "failed: `" in text and "ValueError: boom" in text
    expected = stats.paired_difference({i + 1: a + 0.02 + 0.001 * (i + 1) for i, a in enumerate(SGD)},
                                       {i + 1: a for i, a in enumerate(SGD)})
    assert expected.format(scale=100) in trsgd_row
    assert (tmp_path / "out" / "report.md").read_text() == text
    # report.md holds only what the runs' data determines (runs.csv rebuilds it byte for byte).
    assert "CPU cores" not in text and "Report command" not in text and "generated in" not in text


def _finding(text: str, start: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(start))


def _with_report_opts(tmp_path, report_opts) -> Path:
    """The headline study again, with ``report_opts`` as its [study.report] table."""
    root = tmp_path / "runs_opts"
    for seed, a in enumerate(SGD, start=1):
        make_run(root, "head", "sgd", seed, a, report_opts=report_opts)
        make_run(root, "head", "trsgd", seed, a + 0.02 + 0.001 * seed, role="tr", base="sgd", variant_index=1,
                 report_opts=report_opts)
        make_run(root, "head", "lam0", seed, a + 0.02 + 0.001 * (6 - seed), role="control", base="sgd",
                 variant_index=2, report_opts=report_opts)
        make_run(root, "head", "accum", seed, a - 0.05, role="control", base="sgd", variant_index=3,
                 report_opts=report_opts)
    return root


def test_findings_name_the_control_that_explains_the_gain(tmp_path):
    # TR - LAM0 per seed: -0.4, -0.2, 0, +0.2, +0.4 pp: inside a 1 pp margin by TOST even after Holm.
    root = _with_report_opts(tmp_path, {"equivalence_margin": 0.01})
    text = report.build_report([root], tmp_path / "out", title="T", command="c", plots=False)
    finding = _finding(text, "- batch_size 8: TRSGD vs SGD")
    assert "better" in finding and "Holm p" in finding
    assert "The gain is explained by LAM0 (TR − it equivalent within ±1.00 pp" in finding
    # TR is significantly better than accumulation, which is not an explanation.
    assert "ACCUM" not in finding.split("explained by")[1].split(".")[0]
    assert "TR vs ACCUM: better (+7.30 [" in finding
    d = stats.paired_difference({s: a + 0.02 + 0.001 * s for s, a in enumerate(SGD, 1)},
                                {s: a + 0.02 + 0.001 * (6 - s) for s, a in enumerate(SGD, 1)})
    tost = stats.holm([d.tost_p(0.01), 1.0, 1.0])[0]  # the least the Holm-adjusted TOST p can be
    row = _finding(text, "| batch_size 8 | TRSGD − LAM0 ★ |")
    assert "**equivalent**" in row and tost < 0.05
    # Power analysis for a follow-up: seeds the TOST needs at this spread, at the family's level.
    seeds = stats.seeds_for_equivalence(0.01, d.std, alpha=0.05 / 3)
    assert row.endswith(f"| {100 * d.mde(alpha=0.05 / 3):.2f} | {seeds} |") and "| seeds for ±1 pp |" in text


def test_no_explanation_without_a_declared_margin(headline, tmp_path):
    text = report.build_report([headline], tmp_path / "out", title="T", command="c", plots=False)
    finding = _finding(text, "- batch_size 8: TRSGD vs SGD")
    assert "better" in finding and "explained by" not in finding
    assert "not tested: the study declares no equivalence_margin" in finding
    assert "Diverged runs: 1 of 6 (TRSGD)" in finding
    # TR - LAM0 is not significant, and without a margin it cannot be shown equivalent either.
    assert "TR vs LAM0: not distinguishable with 5 seeds (smallest detectable difference" in finding


def test_explanation_needs_the_contrast_in_the_declared_family(tmp_path):
    root = _with_report_opts(tmp_path, {"equivalence_margin": 0.01, "contrasts": [["trsgd", "sgd"]]})
    text = report.build_report([root], tmp_path / "out", title="T", command="c", plots=False)
    finding = _finding(text, "- batch_size 8: TRSGD vs SGD")
    assert "better" in finding and "explained by" not in finding
    assert "| batch_size 8 | TRSGD − SGD ★ |" in text and "| batch_size 8 | TRSGD − LAM0 |" in text
    assert "family of 1 contrasts, Holm-corrected (declared in the spec)" in text


def test_declared_contrast_between_non_tr_variants_is_reported(tmp_path):
    root = _with_report_opts(tmp_path, {"equivalence_margin": 0.01, "contrasts": [["lam0", "accum"]]})
    text = report.build_report([root], tmp_path / "out", title="T", command="c", plots=False)
    assert "| batch_size 8 | LAM0 − ACCUM ★ |" in text
    assert "better (+7." in _finding(text, "- batch_size 8: LAM0 vs ACCUM")
    # TR - SGD is now outside the family: numbers, but no claim.
    assert "exploratory, not in the study's family" in _finding(text, "- batch_size 8: TRSGD vs SGD")


def _two_tr_one_control(root: Path, report_opts: dict, grid: dict | None = None) -> Path:
    """TRSGD and PULL (both TR on SGD) share the control LAM0; TRSGD - LAM0 is within +-0.4 pp."""
    for seed, a in enumerate(SGD, start=1):
        make_run(root, "s", "sgd", seed, a, report_opts=report_opts, grid=grid)
        make_run(root, "s", "trsgd", seed, a + 0.002 * (seed - 3), role="tr", base="sgd", variant_index=1,
                 report_opts=report_opts, grid=grid)
        make_run(root, "s", "pull", seed, a + 0.001 * seed, role="tr", base="sgd", variant_index=2,
                 report_opts=report_opts, grid=grid)
        make_run(root, "s", "lam0", seed, a + 0.0003 * seed, role="control", base="sgd", variant_index=3,
                 report_opts=report_opts, grid=grid)
    return root


def test_a_control_shared_by_two_tr_variants_is_one_contrast(tmp_path):
    # LAM0 - SGD is shown by both TR entries; declared, it must be one row and one family member.
    opts = {"equivalence_margin": 0.01, "contrasts": [["lam0", "sgd"], ["trsgd", "lam0"]]}
    text = report.build_report([_two_tr_one_control(tmp_path / "runs", opts)], tmp_path / "out", title="T",
                               plots=False)
    assert sum(line.startswith("| batch_size 8 | LAM0 − SGD ★ |") for line in text.splitlines()) == 1
    assert "family of 2 contrasts, Holm-corrected" in text


def test_findings_give_the_verdict_of_every_family_control(tmp_path):
    # TRSGD is not better than SGD, so nothing is "explained"; its declared contrast with the
    # control is still a claim of the study (equivalent) and the findings must say it.
    opts = {"equivalence_margin": 0.01, "contrasts": [["trsgd", "sgd"], ["trsgd", "lam0"]]}
    text = report.build_report([_two_tr_one_control(tmp_path / "runs", opts)], tmp_path / "out", title="T",
                               plots=False)
    finding = _finding(text, "- batch_size 8: TRSGD vs SGD")
    assert "TR vs LAM0: equivalent within ±1.00 pp (" in finding and "explained by" not in finding


def test_a_study_without_grid_axes_has_no_configuration_column(tmp_path):
    opts = {"equivalence_margin": 0.01, "contrasts": [["trsgd", "sgd"]]}
    text = report.build_report([_two_tr_one_control(tmp_path / "runs", opts, grid={})], tmp_path / "out",
                               title="T", plots=False)
    assert "| variant | test acc % mean ± std (n) |" in text and "| configuration |" not in text
    assert "| - |" not in text and "\n- -:" not in text
    assert _finding(text, "- TRSGD vs SGD: ") and _finding(text, "- Highest mean test accuracy: ")


def test_better_only_after_holm_over_the_family(tmp_path):
    # Three contrasts with unadjusted p just under 0.05 each: none survives Holm (3 x p > 0.05).
    root = tmp_path / "runs"
    deltas = {"tra": [0.01, 0.003, 0.012, 0.002, 0.006], "trb": [0.012, 0.002, 0.01, 0.003, 0.006],
              "trc": [0.002, 0.012, 0.003, 0.01, 0.006]}
    for seed, a in enumerate(SGD, start=1):
        make_run(root, "s", "sgd", seed, a)
        for i, (name, d) in enumerate(deltas.items(), start=1):
            make_run(root, "s", name, seed, a + d[seed - 1], role="tr", base="sgd", variant_index=i)
    ps = [stats.mean_ci95(d).p for d in deltas.values()]
    assert all(p < 0.05 for p in ps) and all(q > 0.05 for q in stats.holm(ps))
    text = report.build_report([root], tmp_path / "out", title="T", command="c", plots=False)
    finding = _finding(text, "- batch_size 8: TRA vs SGD")
    mde = stats.minimum_detectable_effect(5, stats.sample_std(deltas["tra"]), alpha=0.05 / 3)
    assert f"not distinguishable with 5 seeds (smallest detectable difference {100 * mde:.2f} pp" in finding
    assert "better" not in finding


def test_findings_say_plainly_when_tr_does_not_help(tmp_path):
    root = tmp_path / "runs"
    for seed, a in enumerate(SGD, start=1):
        make_run(root, "s", "sgd", seed, a)
        make_run(root, "s", "trsgd", seed, a + (0.01 if seed % 2 else -0.01), role="tr", base="sgd", variant_index=1)
    text = report.build_report([root], tmp_path / "out", title="T", command="c", plots=False)
    diffs = [0.01 if seed % 2 else -0.01 for seed in range(1, 6)]
    mde = stats.minimum_detectable_effect(5, stats.sample_std(diffs))
    assert f"TRSGD vs SGD: not distinguishable with 5 seeds (smallest detectable difference {100 * mde:.2f} pp" in text


@pytest.mark.parametrize("report_opts,message", [
    ({"equivalence_margin": 0}, r"equivalence_margin must be a number in \(0, 1\)"),
    ({"equivalence_margin": 1.5}, r"equivalence_margin must be a number in \(0, 1\)"),
    ({"equivalence_margin": "1pp"}, r"equivalence_margin must be a number in \(0, 1\)"),
    ({"contrasts": []}, "contrasts must be a non-empty list of"),
    ({"contrasts": ["trsgd", "sgd"]}, "each contrast must be a pair"),
    ({"contrasts": [["trsgd", "trsgd"]]}, "each contrast must be a pair"),
    ({"contrasts": [["trsgd", "adam"]]}, "names 'adam', not a variant of the study"),
    ({"contrasts": [["trsgd", "sgd"], ["trsgd", "sgd"]]}, "appears twice"),
])
def test_report_settings_are_checked_with_one_line_errors(report_opts, message):
    with pytest.raises(ValueError, match=message):
        report.check_report_settings(report_opts, ["sgd", "trsgd"], "study 'x'")
    report.check_report_settings({"equivalence_margin": 0.005, "contrasts": [["trsgd", "sgd"]]}, ["sgd", "trsgd"], "x")


def test_curve_band_is_mean_and_std_over_seeds(tmp_path):
    runs = [report.load_run(make_run(tmp_path, "s", "sgd", seed, acc)) for seed, acc in [(1, 0.6), (2, 0.9)]]
    xs, means, stds = report._curve_band(runs, "epoch", "test_acc")
    assert xs == [1.0, 2.0, 3.0]
    assert means[-1] == pytest.approx(0.75)
    assert stds[-1] == pytest.approx(math.sqrt(2) * 0.15)
    assert means[0] == pytest.approx(0.25)  # epoch 1: 0.6/3 and 0.9/3


def test_plots_are_written_and_linked(headline, tmp_path):
    out = tmp_path / "out"
    text = report.build_report([headline], out, title="T", command="c")
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["head__batch-size-8.png"]
    assert (out / pngs[0]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"]({pngs[0]})" in text


def test_a_study_without_grid_axes_draws_one_figure_named_after_it(tmp_path):
    study = report.group(report.load_runs([_two_tr_one_control(tmp_path / "runs", {}, grid={})])[0])["s"]
    [job] = report.plot_jobs(study, tmp_path / "out")
    assert job.path.name == "s__all.png" and job.title == "s (mean ± std over seeds)"


def test_many_arms_are_drawn_in_one_figure_per_base_optimizer(tmp_path):
    # Eleven arms in the converged study: TR arms and controls go with the optimizer they are
    # compared with (their base chain's root), a tuned SGD with SGD, Adam's arms in their own figure.
    root = tmp_path / "runs"
    arms = [("sgd", "sgd", None), ("trsgd", "trsgd", "sgd"), ("lam0", "trsgd", "sgd"), ("meanlr", "sgd", "sgd"),
            ("sgd-tuned", "sgd", None), ("trsgd-tuned", "trsgd", "sgd-tuned"),
            ("adam", "adam", None), ("tradam", "tradam", "adam")]
    for index, (variant, optimizer, base) in enumerate(arms):
        folder = make_run(root, "c", variant, 1, 0.8, role="tr" if base else "base", base=base, variant_index=index)
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "optimizer": optimizer}))
    study = report.group(report.load_runs([root])[0])["c"]
    figures = dict(report.plot_lines(study))
    assert sorted(figures) == ["batch_size 8, base optimizer adam", "batch_size 8, base optimizer sgd"]
    assert sorted(figures["batch_size 8, base optimizer adam"]) == ["ADAM", "TRADAM"]
    assert len(figures["batch_size 8, base optimizer sgd"]) == 6
    # as many arms as one legend holds: one figure, as before
    study.variant_rank = {v: i for i, v in enumerate(["sgd", "trsgd", "adam"])}
    assert len(report.plot_lines(study)) == 1


def test_shared_run_appears_in_each_study_and_pivot_table(tmp_path):
    root = tmp_path / "runs"
    opts = {"pivot": "batch_size"}
    for seed in (1, 2):
        for bs, acc in (("8", 0.8), ("32", 0.7)):
            extra = [{"study": "t4", "variant": "sgd", "role": "base", "base": None, "grid": {"batch_size": bs, "seed": str(seed)},
                      "report": opts, "label": "SGD", "study_index": 1, "variant_index": 0, "tuning": False}]
            make_run(root, "head", "sgd", seed, acc + 0.01 * seed, grid={"batch_size": bs}, extra_memberships=extra)
    text = report.build_report([root], tmp_path / "out", title="T", command="c", plots=False)
    assert "| variant | batch_size 8 | batch_size 32 |" in text
    assert "| SGD | 81.50 ± 0.71 (2) | 71.50 ± 0.71 (2) |" in text
    assert text.index("Study `head`") < text.index("Study `t4`")


def test_tuning_runs_are_listed_with_their_validation_scores(tmp_path):
    root = tmp_path / "runs"
    for lr, val in (("0.1", 0.7), ("0.05", 0.8)):
        for seed in (1, 2):
            make_run(root / "tune", "tuned", "sgd", seed, 0.5, grid={"batch_size": "8", "lr": lr}, tuning=True,
                     val_acc=val + 0.01 * seed)
    for seed in (1, 2):
        extra = {"tuned": {"lr": 0.05}}
        folder = make_run(root, "tuned", "sgd", seed, 0.9)
        sweep_json = json.loads((folder / "sweep.json").read_text())
        sweep_json["memberships"][0].update(extra)
        (folder / "sweep.json").write_text(json.dumps(sweep_json))
    text = report.build_report([root], tmp_path / "out", title="T", command="c", plots=False)
    assert "| sgd | batch_size 8, lr 0.05 | 81.50 | 2/2 | 0 | chosen |" in text
    assert "| sgd | batch_size 8, lr 0.1 | 71.50 | 2/2 | 0 |  |" in text


def test_folders_without_sweep_metadata_are_grouped_and_paired(tmp_path):
    root = tmp_path / "plain"
    for seed in (1, 2, 3):
        for opt, acc in (("sgd", 0.8), ("trsgd", 0.85)):
            folder = root / f"{opt}-{seed}"
            folder.mkdir(parents=True)
            config = {"optimizer": opt, "seed": seed, "dataset": "mnist", "model": "cnn", "batch_size": 8,
                      "lam": 0.2, "lam_scaling": "constant", "inner_steps": 10}
            (folder / "config.json").write_text(json.dumps(config))
            final = {"epoch": 1, "test_acc": acc + 0.01 * seed}
            (folder / "metrics.jsonl").write_text(json.dumps(final) + "\n")
            (folder / "result.json").write_text(json.dumps({"status": "finished", "final": final}))
    text = report.build_report([root], tmp_path / "out", title="T", command="c", plots=False)
    assert "trsgd-lam0.2-constant-S10" in text and "+5.00 [+5.00, +5.00] (3)" in text


def test_sweep_sessions_give_wall_time_and_utilization(tmp_path):
    events = tmp_path / "sweep_events.jsonl"
    lines = [
        {"session": "a", "time": "2026-01-01T10:00:00+00:00", "event": "session_start", "workers": 2, "argv": ["tralgo", "sweep", "x"]},
        {"session": "a", "time": "2026-01-01T10:05:00+00:00", "event": "run_end", "wall_s": 300.0},
        {"session": "a", "time": "2026-01-01T10:08:00+00:00", "event": "run_end", "wall_s": 420.0},
        {"session": "b", "time": "2026-01-01T11:00:00+00:00", "event": "session_start", "workers": 1, "argv": ["tralgo"]},
        {"session": "b", "time": "2026-01-01T11:01:00+00:00", "event": "session_end", "wall_s": 60.0, "busy_s": 30.0},
    ]
    events.write_text("".join(json.dumps(l) + "\n" for l in lines))
    a, b = report.sweep_sessions([events])
    assert a["wall_s"] == 480 and a["busy_s"] == 720 and a["utilization"] == pytest.approx(0.75) and not a["ended"]
    assert b["utilization"] == pytest.approx(0.5) and b["ended"]
    assert "running, or killed" in report.compute_section([a, b], [])


def test_cli_missing_folder_is_one_clear_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "tralgo", "report", str(tmp_path / "nope"), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "tralgo", "report", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2 and "--out" in r.stderr and "Traceback" not in r.stderr


def test_spec_coverage_lists_what_did_not_run(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text("[[study]]\nname = 'head'\n[study.grid]\nseed = [1, 2, 3]\n"
                    "[[study.variant]]\nname = 'sgd'\noptimizer = 'sgd'\n")
    root = tmp_path / "runs"
    make_run(root, "head", "sgd", 1, 0.8, grid={})
    (root / "head" / "sgd" / "_seed-1").rename(root / "head" / "sgd" / "seed-1")
    failed = make_run(root, "head", "sgd", 2, None, grid={}, status="failed")
    failed.rename(root / "head" / "sgd" / "seed-2")
    text = report.build_report([root], tmp_path / "out", title="T", command="c", plots=False, spec=spec, spec_out=root)
    assert "| head | 3 | 1 | 0 | 1 | 0 | 0 | 1 |" in text  # finished, diverged, failed, interrupted, stale, new


def test_pivot_repeats_a_variant_that_ignores_the_axis(tmp_path):
    root = tmp_path / "runs"
    for seed in (1, 2):
        make_run(root, "s", "sgd", seed, 0.7 + 0.01 * seed, grid={"batch_size": "8"})
        for S, gain in (("1", 0.0), ("10", 0.02)):
            make_run(root, "s", "trsgd", seed, 0.7 + 0.01 * seed + gain, role="tr", base="sgd", variant_index=1,
                     grid={"batch_size": "8", "inner_steps": S})
    study = report.group([report.load_run(f) for f in report.find_run_folders([root])[0]])["s"]
    table = report.pivot_table(study, "inner_steps")
    assert "| SGD (same runs in every column) | 71.50 ± 0.71 (2) | 71.50 ± 0.71 (2) |" in table
    assert "| TRSGD | 71.50 ± 0.71 (2) | 73.50 ± 0.71 (2) |" in table
    # S = 1 pairs with the SGD runs that ignore S.
    (entry_s1, entry_s10) = report.comparisons(study)
    assert entry_s1["vs_base"].diff.mean == pytest.approx(0.0) and entry_s10["vs_base"].diff.mean == pytest.approx(0.02)


def test_declared_contrast_without_runs_is_listed_and_counts_in_the_family(tmp_path):
    root = _with_report_opts(tmp_path, {"contrasts": [["trsgd", "sgd"], ["ghost", "sgd"]]})
    text = report.build_report([root], tmp_path / "out", title="T", command="c", plots=False)
    assert "- Declared contrast ghost − SGD: untested, one side has no runs yet" in text
    d = stats.paired_difference({s: a + 0.02 + 0.001 * s for s, a in enumerate(SGD, 1)}, dict(enumerate(SGD, 1)))
    row = _finding(text, "| batch_size 8 | TRSGD − SGD ★ |")
    assert f"| {report._p(d.p)} | {report._p(min(1.0, 2 * d.p))} |" in row
    assert "family of 2 contrasts" in text


def test_family_contrasts_are_shown_at_every_evaluated_epoch(tmp_path):
    # TR is 4 pp behind at epoch 1 and exactly 2 pp ahead at the end (test_acc = acc * epoch/3
    # in make_run); the lr drop is named so a reader sees whether a gap opens after it.
    root = tmp_path / "runs"
    for seed, a in enumerate(SGD, start=1):
        sgd = make_run(root, "s", "sgd", seed, a)
        tr = make_run(root, "s", "trsgd", seed, a + 0.02, role="tr", base="sgd", variant_index=1)
        for folder, first in ((sgd, a / 3), (tr, a / 3 - 0.04)):
            recs = [json.loads(l) for l in (folder / "metrics.jsonl").read_text().splitlines()]
            recs[0]["test_acc"] = first
            recs[2]["lr"] = 0.01
            (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    text = report.build_report([root], tmp_path / "out", title="T", plots=False)
    table = text[text.index("during training"):]
    row = next(l for l in table.splitlines() if l.startswith("| batch_size 8 | TRSGD − SGD"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "-4.00 ± 0.00" and cells[4] == "+2.00 ± 0.00"
    assert float(cells[3].split(" ± ")[0]) == pytest.approx(100 * 0.02 * 2 / 3, abs=0.01)
    assert "changes after epoch 2 (0.1 → 0.01)" in table and "| ep 1 | ep 2 | ep 3 |" in table


def test_no_epoch_table_for_runs_that_evaluated_once(tmp_path):
    root = tmp_path / "runs"
    for seed, a in enumerate(SGD, start=1):
        make_run(root, "s", "sgd", seed, a, curve_len=1)
        make_run(root, "s", "trsgd", seed, a + 0.02, role="tr", base="sgd", variant_index=1, curve_len=1)
    assert "during training" not in report.build_report([root], tmp_path / "out", title="T", plots=False)
