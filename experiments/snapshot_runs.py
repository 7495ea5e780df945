"""Carry a sweep's finished runs across machines: pack their records (no checkpoints) into one
small archive that can be committed, and unpack it into a new checkout so that the sweep skips them.

A session on a lent machine ends hard, and a new machine starts without the run folders; the
finished runs' raw data must survive without committing megabytes of checkpoints. Unfinished runs
are left out: on the new machine they start again from scratch.

    python experiments/snapshot_runs.py pack runs/cpu docs/results/cpu/finished-runs.tar.gz
    python experiments/snapshot_runs.py unpack docs/results/cpu/finished-runs.tar.gz runs/cpu
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import sys
import tarfile
import tempfile
from pathlib import Path

DONE = ("finished", "diverged")
# What a finished run needs to be recognised (and reported) but not to be resumed.
LEFT_OUT = ("checkpoint.pt", "checkpoint.prev.pt", "lock", "lock.holder")


def finished_folders(root: Path) -> list[Path]:
    folders = []
    for result in sorted(root.rglob("result.json")):
        try:
            status = json.loads(result.read_text()).get("status")
        except (OSError, ValueError):
            continue
        if status in DONE and ".stale-" not in str(result.parent):
            folders.append(result.parent)
    return folders


def pack(root: Path, archive: Path) -> int:
    folders = finished_folders(root)
    tmp = tempfile.NamedTemporaryFile(dir=archive.parent, prefix=archive.name, suffix=".tmp", delete=False)
    try:
        # Fixed mtimes and sorted names, so that packing the same runs twice gives the same bytes.
        with gzip.GzipFile(filename="", mode="wb", fileobj=tmp, mtime=0) as gz, \
                tarfile.open(fileobj=gz, mode="w") as tar:
            def add(path: Path) -> None:
                info = tar.gettarinfo(str(path), arcname=str(path.relative_to(root)))
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                with open(path, "rb") as f:
                    tar.addfile(info, io.BytesIO(f.read()))
            for extra in sorted(root.glob("*.jsonl")):  # the sweep's session log
                add(extra)
            for folder in folders:
                for path in sorted(folder.iterdir()):
                    if path.is_file() and path.name not in LEFT_OUT and not path.name.endswith(".tmp"):
                        add(path)
        tmp.close()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp.name, 0o666 & ~umask)  # NamedTemporaryFile makes it 0600; an archive is a shared file
        os.replace(tmp.name, archive)
    except BaseException:
        tmp.close()
        os.unlink(tmp.name)
        raise
    return len(folders)


def unpack(archive: Path, root: Path) -> int:
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, mode="r:gz") as tar:
        members = tar.getmembers()
        for m in members:
            if not m.isfile() or Path(m.name).is_absolute() or ".." in Path(m.name).parts:
                raise SystemExit(f"snapshot_runs: refusing archive member {m.name!r}")
            if (root / m.name).exists():
                continue  # never overwrite a run that is already here
            # Members are checked above; tarfile's own "data" filter exists from Python 3.11.4 on.
            tar.extract(m, root, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    return sum(1 for m in members if Path(m.name).name == "result.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="archive the finished runs under RUNS")
    p.add_argument("runs", type=Path)
    p.add_argument("archive", type=Path)
    u = sub.add_parser("unpack", help="restore an archive's runs under RUNS (existing files are kept)")
    u.add_argument("archive", type=Path)
    u.add_argument("runs", type=Path)
    args = parser.parse_args(argv)
    if args.command == "pack":
        if not args.runs.is_dir():
            parser.error(f"RUNS {args.runs} is not a folder")
        n = pack(args.runs, args.archive)
        print(f"packed {n} finished runs of {args.runs} into {args.archive} ({args.archive.stat().st_size} bytes)")
    else:
        if not args.archive.is_file():
            parser.error(f"ARCHIVE {args.archive} does not exist")
        n = unpack(args.archive, args.runs)
        print(f"unpacked {n} finished runs into {args.runs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
