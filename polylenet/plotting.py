"""History.plot's drawing; imports matplotlib, so it is imported only when a plot is asked for."""

from __future__ import annotations

import io
from typing import Any, Optional

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


class NotebookFigure(Figure):
    """A Figure outside pyplot's registry (a notebook's inline backend does not show it a second
    time at the cell's end) that a notebook shows as a PNG even where no formatter for Figures is
    set up yet (the cell that first imports matplotlib)."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", bbox_inches="tight")
        return buffer.getvalue()


def plot_history(history: Any, ax: Optional[Any] = None) -> Figure:
    if ax is None:
        ax = NotebookFigure(figsize=(3.5, 2.5), layout="constrained").add_subplot()
    epochs = [e.epoch for e in history.epochs]
    # d2l's Animator: legend ['train loss', 'train acc', 'test acc'], fmts ('-', 'm--', 'g-.')
    for key, label, fmt in (("train_loss", "train loss", "-"), ("train_acc", "train acc", "m--"),
                            ("test_acc", "test acc", "g-.")):
        ax.plot(epochs, [getattr(e, key) for e in history.epochs], fmt, marker="o", markersize=3, label=label)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if epochs:  # as d2l's xlim=[1, num_epochs]: the epochs the run was set to make
        ax.set_xlim(1, max(epochs[-1], history.config.get("epochs") or 0, 2))
    ax.set_title(f"{history.spec.get('name', '')} on {history.backend}".strip(), fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True)
    return ax.figure
