"""A one-line progress bar for interactive terminals (no tqdm dependency).

Redraws at most every ``min_interval`` seconds so that drawing never costs measurable training
time; on anything that is not a TTY the trainer prints plain per-epoch lines instead.
"""
from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """``[#####.....]  312/750  loss 0.4312  85.2 it/s`` on one line, redrawn in place."""

    def __init__(self, total: int, description: str = "", *, stream: TextIO | None = None,
                 width: int = 24, min_interval: float = 0.1) -> None:
        self.total = max(int(total), 1)
        self.description = description
        self.stream = sys.stderr if stream is None else stream
        self.width = width
        self.min_interval = min_interval
        self._start = time.perf_counter()
        self._last_draw = -float("inf")

    def update(self, done: int, **values: float) -> None:
        now = time.perf_counter()
        if now - self._last_draw < self.min_interval and done < self.total:
            return
        self._last_draw = now
        filled = int(self.width * min(done, self.total) / self.total)
        rate = done / max(now - self._start, 1e-9)
        extras = "  ".join(f"{key} {value:.4f}" for key, value in values.items())
        line = (f"\r{self.description} [{'#' * filled}{'.' * (self.width - filled)}] "
                f"{done}/{self.total}  {extras}  {rate:.1f} it/s")
        self.stream.write(line)
        self.stream.flush()

    def close(self) -> None:
        # Clear the line so that the per-epoch summary starts on a clean line.
        self.stream.write("\r\033[K")
        self.stream.flush()


def stream_is_tty(stream: TextIO | None = None) -> bool:
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
