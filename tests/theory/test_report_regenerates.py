"""docs/theory is recomputable from the raw results committed next to it (issue 9: every table in
docs/ is generated from raw data), and --from-results never computes anything."""
import json
import shutil
from pathlib import Path

import pytest

from tralgo.theory import cli

DOCS = Path(__file__).resolve().parents[2] / "docs" / "theory"
PLOTS = ("lemma2.png", "theorems_vs_calls.png", "theorems_vs_batch.png", "variance.png")


def test_committed_report_regenerates_exactly_from_committed_results(tmp_path):
    shutil.copytree(DOCS / "results", tmp_path / "results")
    assert cli.main(["--out", str(tmp_path), "--from-results"]) == 0
    assert (tmp_path / "README.md").read_text() == (DOCS / "README.md").read_text()
    for name in PLOTS:
        assert (tmp_path / name).read_bytes() == (DOCS / name).read_bytes(), name
    # Nothing was recomputed or rewritten.
    for path in (DOCS / "results").iterdir():
        assert (tmp_path / "results" / path.name).read_bytes() == path.read_bytes(), path.name


def test_summary_states_every_variance_comparison_the_table_computes():
    text = (DOCS / "README.md").read_text()
    summary = text[text.index("## Summary"):text.index("## Problems")]
    for words in ("SGD at the same batch size 1", "SGD with batch M = S", "S steps of SGD with batch 1"):
        assert f"vs {words}" in summary
    # The comparison the summary used to leave out: TRSGD's direction is noisier than S plain SGD steps.
    assert "S steps of SGD with batch 1 (same gradient calls, same steps): TRSGD's variance is significantly " \
           "lower in **1**, significantly higher in **70** of 90 cells" in summary


def _quick(tmp_path, *extra):
    return ["--out", str(tmp_path), "--quick", "--problems", "logreg-synthetic", "--l-choices", "f", *extra]


def test_from_results_refuses_to_compute(tmp_path, capsys):
    assert cli.main(_quick(tmp_path, "--from-results")) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("tralgo theory: error: --from-results:") and "is missing" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "README.md").exists()


def test_from_results_rebuilds_a_quick_run_and_checks_its_configuration(tmp_path, capsys):
    assert cli.main(_quick(tmp_path)) == 0
    header = json.loads((tmp_path / "results" / "report_header.json").read_text())
    assert header["command"].startswith("tralgo theory --out") and "s for this invocation" in header["wall"]
    first = (tmp_path / "README.md").read_text()
    (tmp_path / "README.md").unlink()
    assert cli.main(_quick(tmp_path, "--from-results")) == 0
    again = (tmp_path / "README.md").read_text()
    # Same report; only the provenance line says it was rebuilt from results/.
    differ = [(a, b) for a, b in zip(first.splitlines(), again.splitlines()) if a != b]
    assert len(differ) == 1 and differ[0][1].startswith(differ[0][0]) and "--from-results" in differ[0][1]
    # Another seed is another configuration: refused, not silently mixed.
    assert cli.main(_quick(tmp_path, "--from-results", "--seed", "1")) == 1
    assert "was made with another configuration" in capsys.readouterr().err
    (tmp_path / "results" / "report_header.json").unlink()
    assert cli.main(_quick(tmp_path, "--from-results")) == 1
    assert "report_header.json is missing or damaged" in capsys.readouterr().err
