"""Studies on tiny instances, and the `tralgo theory` command (quick sizes, resume, errors)."""
import json
import numpy as np
import pytest

from tralgo.theory import cli
from tralgo.theory.problems import make_problem
from tralgo.theory.report import lemma2_bound, theorem1_rhs, theorem2_rhs
from tralgo.theory.studies import QUICK, StudyConfig, lemma2_study, run_study


def test_lemma2_distance_decays_like_one_over_S_and_respects_rakhlin():
    p = make_problem("ls-synthetic")
    cfg = StudyConfig(lemma_reps=200, lemma_max_inner=256, anchor_steps=(0,), region_reps=200)
    res = lemma2_study(p, cfg, "per_sample")
    anchor = res["anchors"][0]
    assert anchor["minimiser_residual"] < 1e-9
    lam, delta = res["steps"]["lam"], res["steps"]["delta"]
    by_S = {c["S"]: c["dist_sq"] for c in anchor["checkpoints"]}
    for S, s in by_S.items():  # Rakhlin et al.: E||w_S - w*||^2 <= 4 G^2 / ((lam - delta)^2 S)
        assert s["mean"] - 2 * s["se"] <= 4 * anchor["stochastic_grad_G_second_moment"] / ((lam - delta) ** 2 * S)
    Ss = (16, 32, 64, 128, 256)
    slope = np.polyfit(np.log(Ss), np.log([by_S[S]["mean"] for S in Ss]), 1)[0]
    assert -1.3 < slope < -0.7


def test_bound_formulas():
    c = {"l": 2.0, "delta": 0.5, "g": 3.0, "sigma_sq": 4.0, "B": 5.0}
    assert lemma2_bound(c, 4.0, 2) == pytest.approx(4 * 36 * 13 / (12.25 * 2))
    assert theorem1_rhs(c, 10, 4) == pytest.approx(4 * 2 * 5 / 10 + 4 / 16)
    assert theorem1_rhs(c, 10, 4, derived=True) == pytest.approx(8 * 2 * 5 / 10 + 4 / 8)
    assert theorem2_rhs(c, 10, 8) == pytest.approx(4 * 2 * 5 / 10 + 72 * 4 * 13 / 8)


def test_studies_are_reproducible():
    p = make_problem("logreg-synthetic")
    a = run_study("variance", p, QUICK, "f")
    b = run_study("variance", p, QUICK, "f")
    a.pop("seconds"), b.pop("seconds")
    assert a == b


def test_config_rejects_bad_sizes():
    with pytest.raises(ValueError, match="batch_sizes"):
        StudyConfig(gradient_calls=64, batch_sizes=(3,))
    with pytest.raises(ValueError, match="theorem_reps"):
        StudyConfig(theorem_reps=0)


def test_cli_quick_writes_report_and_resumes(tmp_path):
    argv = ["--out", str(tmp_path), "--quick", "--problems", "logreg-synthetic", "--l-choices", "f"]
    assert cli.main(argv) == 0
    text = (tmp_path / "README.md").read_text()
    assert text.startswith("# Numerical checks")
    assert "Produced by: `tralgo theory --out" in text
    for name in ("lemma2.png", "theorems_vs_calls.png", "theorems_vs_batch.png", "variance.png"):
        assert (tmp_path / name).stat().st_size > 1000
    results = sorted(p.name for p in (tmp_path / "results").iterdir())
    assert results == [f"logreg-synthetic.f.{s}.json" for s in ("lemma2", "theorems", "variance")] + [
        "report_header.json"]
    # A rerun (e.g. after a kill) reuses every finished study and reproduces the same numbers.
    saved = {p.name: p.read_text() for p in (tmp_path / "results").iterdir()}
    (tmp_path / "results" / "logreg-synthetic.f.variance.json").unlink()  # as if killed before it
    assert cli.main(argv) == 0
    again = {p.name: p.read_text() for p in (tmp_path / "results").iterdir()}
    redone = json.loads(again.pop("logreg-synthetic.f.variance.json"))["result"]
    original = json.loads(saved.pop("logreg-synthetic.f.variance.json"))["result"]
    redone.pop("seconds"), original.pop("seconds")
    again.pop("report_header.json"), saved.pop("report_header.json")  # this invocation's machine and wall time
    assert again == saved and redone == original
    strip = lambda t: [line for line in t.splitlines() if not line.startswith("Machine:")]
    assert strip((tmp_path / "README.md").read_text()) == strip(text)


def test_cli_errors_are_one_clear_message(tmp_path, capsys):
    for args in (["--out", str(tmp_path), "--problems", "mnist"], ["--out", str(tmp_path), "--seed", "-3"], []):
        with pytest.raises(SystemExit) as exit_info:  # argparse: usage + one error line, exit 2
            cli.main(args)
        assert exit_info.value.code == 2
        assert "error:" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = cli.main(["--quick", "--problems", "ls-synthetic", "--l-choices", "f", "--out", str(blocker / "sub")])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("tralgo theory: error:") and len(err.strip().splitlines()) == 1


def test_scaled_problem_visits_the_same_iterates():
    """f -> 0.01 f with l and the steps rescaled: distances unchanged, squared gradients x 1e-4."""
    a = run_study("lemma2", make_problem("ls-synthetic"), QUICK, "f")
    b = run_study("lemma2", make_problem("ls-synthetic-scaled"), QUICK, "f")
    for ca, cb in zip(a["anchors"][-1]["checkpoints"], b["anchors"][-1]["checkpoints"]):
        assert cb["dist_sq"]["mean"] == pytest.approx(ca["dist_sq"]["mean"], rel=1e-9)
        assert cb["grad_G_sq"]["mean"] == pytest.approx(1e-4 * ca["grad_G_sq"]["mean"], rel=1e-9)
