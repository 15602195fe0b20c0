"""A one-line progress bar per epoch on a terminal; silent when not a TTY or when asked."""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


class ProgressBar:
    def __init__(self, total: int, label: str, enabled: Optional[bool] = None,
                 stream: Optional[TextIO] = None, width: int = 30):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total, self.label, self.width = total, label, width
        self.done, self.start, self.last = 0, time.perf_counter(), 0.0

    def update(self, count: int = 1, **metrics: float) -> None:
        self.done += count
        now = time.perf_counter()
        if not self.enabled or (now - self.last < 0.1 and self.done < self.total):
            return
        self.last = now
        filled = int(self.width * self.done / max(self.total, 1))
        shown = " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] "
                          f"{self.done}/{self.total} {shown} {now - self.start:.1f}s")
        self.stream.flush()

    def close(self, summary: str = "") -> None:
        if self.enabled:
            self.stream.write(f"\r{self.label} {summary}".ljust(self.width + 60) + "\n")
            self.stream.flush()
