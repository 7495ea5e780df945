"""experiments/seed_rule.py: the pre-registered seed count is decided from the spread alone."""
import importlib.util
import json
import statistics
from pathlib import Path

import pytest

from tralgo.experiments import stats

_PATH = Path(__file__).resolve().parents[2] / "experiments" / "seed_rule.py"
_spec = importlib.util.spec_from_file_location("seed_rule", _PATH)
seed_rule = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(seed_rule)

MARGIN = 0.005
REPORT = {"title": "S", "equivalence_margin": MARGIN, "contrasts": [["trsgd", "sgd"], ["adam-tr", "adam"]]}


def _run(root: Path, variant: str, seed: int, acc: float, *, role="base", base=None) -> None:
    folder = root / "s" / variant / f"seed-{seed}"
    folder.mkdir(parents=True)
    config = {"optimizer": variant, "seed": seed, "lr": 0.1, "git_commit": "abc", "git_dirty": False}
    final = {"epoch": 1, "step": 10, "test_acc": acc, "train_acc": 1.0, "wall_s": 1.0}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "metrics.jsonl").write_text(json.dumps(final) + "\n")
    (folder / "result.json").write_text(json.dumps({"status": "finished", "final": final}))
    membership = {"study": "s", "variant": variant, "role": role, "base": base, "grid": {"seed": str(seed)},
                  "tuning": False, "report": REPORT, "label": variant, "study_index": 0,
                  "variant_index": ["sgd", "trsgd", "adam", "adam-tr"].index(variant)}
    (folder / "sweep.json").write_text(json.dumps({"options": config, "memberships": [membership]}))


def _study(root: Path, shift: float, seeds=range(1, 6), adam=True) -> None:
    base = [0.80, 0.82, 0.81, 0.83, 0.79]
    noise = [0.004, -0.006, 0.001, 0.009, -0.003]  # paired differences before the shift
    for seed in seeds:
        _run(root, "sgd", seed, base[seed - 1])
        _run(root, "trsgd", seed, base[seed - 1] + shift + noise[seed - 1], role="tr", base="sgd")
        if adam:
            _run(root, "adam", seed, base[seed - 1])
            _run(root, "adam-tr", seed, base[seed - 1] + 2 * noise[seed - 1], role="tr", base="adam")


def test_the_count_depends_on_the_spread_not_on_the_effect(tmp_path, capsys):
    # Moving every paired difference by +3 pp or -3 pp changes the effect, not the spread: the
    # decision must not move, and no mean or difference is printed for the person applying it.
    decisions = []
    for shift in (0.0, 0.03, -0.03):
        root = tmp_path / f"shift{shift}"
        _study(root, shift)
        assert seed_rule.main([str(root), "--study", "s", "--at-least", "5", "--at-most", "100"]) == 0
        decisions.append(capsys.readouterr().out)
    assert decisions[0] == decisions[1] == decisions[2]
    noise_std = statistics.stdev([0.004, -0.006, 0.001, 0.009, -0.003])
    # the wider contrast (twice the spread) sets the count, at Holm's first-step level 0.05 / 2
    expected = stats.seeds_for_equivalence(MARGIN, 2 * noise_std, alpha=0.05 / 2)
    assert expected > stats.seeds_for_equivalence(MARGIN, noise_std, alpha=0.05 / 2) >= 5
    assert f"seed rule: {expected} seeds" in decisions[0]
    assert "3.00" not in decisions[0] and "+" not in decisions[0]


def test_the_count_is_clipped_to_the_declared_range(tmp_path):
    _study(tmp_path, 0.0)
    rows = seed_rule.family_spreads(seed_rule.report.load_runs([tmp_path])[0], "s")
    assert seed_rule.decide(rows, 5, 12) == 12   # the wider contrast needs more than 12
    assert seed_rule.decide([dict(r, seeds_needed=3) for r in rows], 5, 12) == 5
    assert seed_rule.decide([dict(r, seeds_needed=-1) for r in rows], 5, 12) == 12  # "too many" = the cap


def test_not_decidable_while_a_declared_contrast_has_no_pairs(tmp_path, capsys):
    _study(tmp_path, 0.0, adam=False)
    assert seed_rule.main([str(tmp_path), "--study", "s", "--at-least", "5", "--at-most", "12"]) == 1
    out = capsys.readouterr().out
    assert "adam-tr - adam" in out and "not decidable yet" in out


@pytest.mark.parametrize("argv, message", [
    (["--study", "nope", "--at-least", "5", "--at-most", "12"], "no runs of study 'nope'; found: s"),
    (["--study", "s", "--at-least", "9", "--at-most", "5"], "need 2 <= --at-least <= --at-most"),
])
def test_bad_input_is_one_clear_error(tmp_path, capsys, argv, message):
    _study(tmp_path, 0.0)
    with pytest.raises(SystemExit) as info:
        seed_rule.main([str(tmp_path), *argv])
    assert message in str(info.value) + capsys.readouterr().err
