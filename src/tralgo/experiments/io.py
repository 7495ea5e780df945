"""Crash-safe file writes shared by the trainer, sweeps, reports, the GAN and theory commands.

A write goes to a temporary file in the same folder, is flushed and fsync'ed, then renamed over
the target: a reader sees the old file or the new one, never half of one, even if the process is
killed mid-write. Files get the mode the umask gives (not mkstemp's 0600); ``previous=`` keeps
the file being replaced as a fallback; :func:`remove_stale_temp_files` clears what a ``kill -9``
mid-write leaves; :class:`FolderLock` makes one process at a time the writer of a folder.
"""
from __future__ import annotations

import glob
import io
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (``os.umask`` can only be
    read by setting it, which races with other threads creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_name_prefix(path: Path) -> str:
    """Temporary files of ``path`` are ``<folder>/.<name>.*.tmp`` (see :func:`remove_stale_temp_files`)."""
    return f".{path.name}."


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, previous: str | os.PathLike | None = None) -> None:
    """Write ``data`` to ``path`` atomically. With ``previous``, the file ``path`` held until now
    becomes ``previous`` first (also atomically), so a damaged new file leaves the last good one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_name_prefix(path), suffix=".tmp")
    try:
        # mkstemp creates 0600; a run's files get the mode any other file of the user would.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if previous is not None and path.exists():
            _keep_as_previous(path, Path(previous))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def _keep_as_previous(path: Path, previous: Path) -> None:
    # A hard link keeps ``path`` in place throughout; without hard links (some network file
    # systems) ``path`` is moved, and for a moment only ``previous`` exists: readers fall back to it.
    link = previous.with_name(f"{temp_name_prefix(previous)}{os.getpid()}.link.tmp")
    try:
        link.unlink(missing_ok=True)
        os.link(path, link)
        os.replace(link, previous)
    except OSError:
        link.unlink(missing_ok=True)
        os.replace(path, previous)


def remove_stale_temp_files(folder: str | os.PathLike, names: Iterable[str]) -> list[Path]:
    """Delete the temporary files that writers of ``folder/<name>`` killed mid-write (``kill -9``,
    power loss) left behind. Only call it while no other process can be writing those files
    (e.g. holding the folder's :class:`FolderLock`). Returns what was removed."""
    folder = Path(folder)
    removed = []
    for name in names:
        for tmp in folder.glob(f"{glob.escape(temp_name_prefix(Path(name)))}*.tmp"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def atomic_torch_save(obj: Any, path: str | os.PathLike, *, previous: str | os.PathLike | None = None) -> None:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue(), previous=previous)


class FolderInUseError(RuntimeError):
    """Another live process holds the folder's lock; the message is complete and user-facing."""


class FolderLock:
    """One writer per folder: an exclusive ``flock`` on ``<folder>/<name>`` (via ``filelock``).

    The kernel drops the lock when its process ends, however it ends (``kill -9`` included), so a
    lock is never left stuck; every spelling of the folder (relative, absolute, through symlinks)
    reaches the same file and hence the same lock. ``acquire`` fails at once, never waits. The
    holder's pid and host are written next to the lock for the message a second process prints.
    """

    def __init__(self, folder: str | os.PathLike, what: str, name: str = "lock") -> None:
        self.folder, self.what = Path(folder), what
        self.path = self.folder / name
        self._lock = None

    def acquire(self) -> "FolderLock":
        import filelock

        self.folder.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(self.path, timeout=0, thread_local=False, preserve_lock_file=True)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise FolderInUseError(f"{self.folder} is in use by another {self.what} ({self._holder()}); "
                                   "one folder takes one process at a time: wait for it to end or stop it") \
                from None
        self._lock = lock
        atomic_write_text(self.path.with_name(self.path.name + ".holder"),
                          f"pid {os.getpid()} on {socket.gethostname()} since "
                          f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n")
        return self

    def _holder(self) -> str:
        try:
            return self.path.with_name(self.path.name + ".holder").read_text(encoding="utf-8").strip()
        except OSError:
            return "holder unknown"

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def folder_in_use(folder: str | os.PathLike, name: str = "lock") -> bool:
    """Whether a live process holds ``folder``'s :class:`FolderLock` (no folder: False)."""
    import filelock

    path = Path(folder) / name
    if not path.exists():
        return False
    probe = filelock.FileLock(path, timeout=0, thread_local=False, preserve_lock_file=True)
    try:
        probe.acquire()
    except filelock.Timeout:
        return True
    probe.release()
    return False


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line and fsync it (a line is either complete or, after a crash, ignored)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    """Yield the complete records of a JSON-lines file; a torn last line (crash) is skipped."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue
