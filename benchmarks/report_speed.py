"""Time ``tralgo report`` over 500 synthetic run folders (the issue asks for a few seconds).

    python benchmarks/report_speed.py [--runs 500] [--epochs 10] [--keep DIR]

The folders look like a sweep's: 2 studies x 5 grid points x 10 variants x 5 seeds, each with
config.json, sweep.json, a metrics.jsonl of ``--epochs`` lines, result.json (2% diverged, 1%
failed), plus a sweep event log. The report is run as the real command (a fresh process:
imports included), with and without plots.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tralgo.experiments.io import atomic_write_json

VARIANTS = 10
SEEDS = 5
POINTS = 5


def write_runs(root: Path, n_runs: int, epochs: int) -> None:
    rng = random.Random(0)
    per_study = VARIANTS * SEEDS * POINTS
    made = 0
    for study_index in range(-(-n_runs // per_study)):
        study = f"study{study_index}"
        for point in range(POINTS):
            for v in range(VARIANTS):
                for seed in range(1, SEEDS + 1):
                    if made == n_runs:
                        return
                    made += 1
                    folder = root / study / f"v{v}" / f"batch_size-{2 ** (point + 1)}_seed-{seed}"
                    folder.mkdir(parents=True)
                    options = {"optimizer": "trsgd" if v else "sgd", "lr": 0.1, "batch_size": 2 ** (point + 1),
                               "seed": seed, "epochs": epochs}
                    membership = {"study": study, "variant": f"v{v}", "role": "tr" if v else "base",
                                  "base": "v0" if v else None, "label": f"variant {v}",
                                  "grid": {"batch_size": str(2 ** (point + 1)), "seed": str(seed)},
                                  "tuning": False, "report": {"pivot": "batch_size"},
                                  "study_index": study_index, "variant_index": v}
                    atomic_write_json(folder / "sweep.json", {"options": options, "memberships": [membership]})
                    atomic_write_json(folder / "config.json", options)
                    acc = 0.8 + 0.01 * v + rng.gauss(0, 0.01)
                    lines = []
                    for epoch in range(1, epochs + 1):
                        f = epoch / epochs
                        lines.append({"epoch": epoch, "step": 100 * epoch, "train_loss": 2 - f, "test_loss": 2.1 - f,
                                      "train_acc": acc * f, "test_acc": acc * f, "lr": 0.1, "wall_s": 10.0 * epoch,
                                      "steps_per_s": 30.0})
                    roll = rng.random()
                    status = "diverged" if roll < 0.02 else "failed" if roll < 0.03 else "finished"
                    if status == "diverged":
                        lines[-1] = {"epoch": epochs, "diverged": True, "wall_s": 10.0 * epochs}
                    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
                    if status == "failed":
                        atomic_write_json(folder / "sweep_status.json", {"status": "failed", "error": "RuntimeError: x"})
                    else:
                        atomic_write_json(folder / "result.json", {"status": status, "final": lines[-1],
                                                                   "wall_s": 10.0 * epochs})
    events = [{"session": "s", "time": "2026-01-01T00:00:00+00:00", "event": "session_start", "workers": 2,
               "argv": ["tralgo", "sweep", "synthetic.toml", "--workers", "2"]},
              {"session": "s", "time": "2026-01-01T01:00:00+00:00", "event": "session_end", "wall_s": 3600.0,
               "busy_s": 7000.0}]
    (root / "sweep_events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))


def time_report(root: Path, out: Path, plots: bool) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one ``tralgo report`` process. On a shared machine the CPU
    time is what the report would take on an idle core; the wall time includes waiting."""
    cmd = [sys.executable, "-m", "tralgo", "report", str(root), "--out", str(out)] + ([] if plots else ["--no-plots"])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _import_time() -> float:
    code = "import time; t = time.perf_counter(); import tralgo.experiments.report; print(time.perf_counter() - t)"
    return float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=500, help="number of synthetic run folders (default 500)")
    p.add_argument("--epochs", type=int, default=10, help="metrics lines per run (default 10)")
    p.add_argument("--keep", help="write the folders and report here instead of a temporary folder")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.keep) if args.keep else Path(tmp)
        root = base / "runs"
        write_runs(root, args.runs, args.epochs)
        with_plots = time_report(root, base / "report", plots=True)
        tables_only = time_report(root, base / "report-tables", plots=False)
        figures = len(list((base / "report").glob("*.png")))
        print(f"command: {shlex.join([sys.executable, *sys.argv])}")
        import_s = _import_time()
        print(f"{args.runs} run folders x {args.epochs} epochs, {figures} plots: tralgo report took "
              f"{with_plots[0]:.2f} s wall / {with_plots[1]:.2f} s CPU; tables only (--no-plots) "
              f"{tables_only[0]:.2f} s wall / {tables_only[1]:.2f} s CPU (a fresh process, imports included; "
              f"`import tralgo.experiments.report` alone: {import_s:.2f} s wall, mostly torch via tralgo/__init__)")
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end (other jobs running)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
