"""A progress bar per epoch through tqdm (``tqdm.auto``: a widget in a Jupyter notebook, a text bar
on a terminal), on stderr; the epoch's summary line stays after the bar closes. Shown when the
stream is a terminal or the code runs in an IPython kernel, and never when asked not to; without
tqdm installed there is no bar and nothing is printed."""

from __future__ import annotations

import sys
import warnings
from typing import Any, Optional, TextIO


def in_kernel() -> bool:
    """Whether this process is an IPython (Jupyter) kernel. IPython is looked up, not imported: a
    process that is a kernel has imported it already."""
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)()
    return getattr(shell, "kernel", None) is not None  # a terminal IPython shell has no kernel


def _tqdm() -> Optional[Any]:
    """tqdm.auto's class, or None when tqdm is not installed."""
    try:
        from tqdm.std import TqdmWarning

        with warnings.catch_warnings():
            # in a kernel without ipywidgets tqdm.auto warns, then draws the text bar: that bar is fine
            warnings.simplefilter("ignore", TqdmWarning)
            from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm


class ProgressBar:
    """One epoch's bar: ``update(count, **metrics)`` per batch, ``close(summary)`` at the end.
    ``enabled``: None shows it when ``stream`` (default stderr) is a terminal or in a kernel."""

    def __init__(self, total: int, label: str, enabled: Optional[bool] = None,
                 stream: Optional[TextIO] = None):
        self.stream = stream or sys.stderr
        if enabled is None:
            enabled = getattr(self.stream, "isatty", lambda: False)() or in_kernel()
        tqdm = _tqdm() if enabled else None
        self.enabled, self.label = tqdm is not None, label
        # leave=False: the bar is cleared on close, and the summary line written in its place
        self._bar = tqdm(total=total, desc=label, file=self.stream, leave=False, unit="batch",
                         mininterval=0.1) if tqdm is not None else None

    def update(self, count: int = 1, **metrics: float) -> None:
        if self._bar is None:
            return
        if metrics:
            self._bar.set_postfix({k: f"{v:.4f}" for k, v in metrics.items()}, refresh=False)
        self._bar.update(count)

    def close(self, summary: str = "") -> None:
        if self._bar is None:
            return
        self._bar.close()
        self._bar = None
        self.stream.write(f"{self.label} {summary}\n")
        self.stream.flush()
