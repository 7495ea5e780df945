"""experiments/snapshot_runs.py: finished runs' records survive a move to a new machine."""
import importlib.util
import json
import os
import stat
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "experiments" / "snapshot_runs.py"
_spec = importlib.util.spec_from_file_location("snapshot_runs", _PATH)
snapshot_runs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(snapshot_runs)


def _run(folder: Path, status: str | None) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "metrics.jsonl").write_text('{"epoch": 1}\n')
    (folder / "checkpoint.pt").write_bytes(b"x" * 100)
    (folder / "lock").write_text("")
    if status is not None:
        (folder / "result.json").write_text(json.dumps({"status": status}))


def test_pack_keeps_finished_records_only_and_unpack_never_overwrites(tmp_path):
    root = tmp_path / "runs"
    _run(root / "s/a/seed-1", "finished")
    _run(root / "s/a/seed-2", "diverged")
    _run(root / "s/a/seed-3", None)             # still running: left out
    _run(root / "s/a/seed-4.stale-1", "finished")  # moved aside by a spec change: left out
    (root / "sweep_events.jsonl").write_text('{"event": "start"}\n')
    archive = tmp_path / "snap.tar.gz"
    assert snapshot_runs.pack(root, archive) == 2
    first = archive.read_bytes()
    assert snapshot_runs.pack(root, archive) == 2 and archive.read_bytes() == first  # deterministic
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(archive.stat().st_mode) == 0o666 & ~umask  # the umask's mode, not a temp file's 0600

    new = tmp_path / "new"
    (new / "s/a/seed-1").mkdir(parents=True)
    (new / "s/a/seed-1/metrics.jsonl").write_text("kept\n")
    assert snapshot_runs.unpack(archive, new) == 2
    files = sorted(str(p.relative_to(new)) for p in new.rglob("*") if p.is_file())
    assert files == ["s/a/seed-1/config.json", "s/a/seed-1/metrics.jsonl", "s/a/seed-1/result.json",
                     "s/a/seed-2/config.json", "s/a/seed-2/metrics.jsonl", "s/a/seed-2/result.json",
                     "sweep_events.jsonl"]
    assert (new / "s/a/seed-1/metrics.jsonl").read_text() == "kept\n"


def test_cli_errors_name_the_argument(tmp_path, capsys):
    with pytest.raises(SystemExit):
        snapshot_runs.main(["pack", str(tmp_path / "missing"), str(tmp_path / "a.tar.gz")])
    assert "RUNS" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        snapshot_runs.main(["unpack", str(tmp_path / "missing.tar.gz"), str(tmp_path)])
    assert "ARCHIVE" in capsys.readouterr().err
