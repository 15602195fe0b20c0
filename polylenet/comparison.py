"""``polylenet.compare``: the CLI's ``compare`` as a function, returning the report as an object a
notebook shows (the table and the plots) and whose histories it can plot.

It runs :func:`polylenet.runner.run_compare` (each backend in a child process with its own
environment's interpreter) and reads the ``report.json`` that writes.
"""

from __future__ import annotations

import base64
import html
import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from polylenet.errors import ConfigError, PolylenetError
from polylenet.runner import run_compare
from polylenet.training import History, TrainConfig, book_batch_size, book_lr


class ReportError(PolylenetError, ValueError):
    """A folder holding no readable comparison report (report.json)."""


@dataclass(frozen=True)
class Comparison:
    """A comparison report: ``path`` (its report.md; report.json, the plots and each backend's
    record beside it) and ``report`` (report.json, loaded). In a notebook it shows as its table
    and plots.

    >>> result = Comparison.load("runs/compare")  # doctest: +SKIP
    >>> [row["backend"] for row in result.table if row["status"] == "ok"]  # doctest: +SKIP
    ['numpy', 'torch']
    """

    path: Path
    report: dict[str, Any]

    @classmethod
    def load(cls, folder: Union[str, os.PathLike]) -> "Comparison":
        """The report ``compare`` (or ``polylenet report``) wrote into ``folder``."""
        folder = Path(folder)
        try:
            report = json.loads((folder / "report.json").read_text())
        except FileNotFoundError:
            raise ReportError(f"{folder}: no report.json there; run polylenet compare --out {folder} "
                              "(or polylenet.compare(out=...)) first") from None
        except (OSError, ValueError) as exc:
            raise ReportError(f"{folder / 'report.json'}: cannot be read ({exc}); run compare again") from None
        return cls(folder / "report.md", report)

    @property
    def table(self) -> list[dict[str, Any]]:
        """One row per backend: status (ok, skipped, failed, interrupted), the framework's version,
        the last epoch's numbers, throughput and wall time; ``note`` says why one did not train."""
        rows = []
        for backend, r in self.report["results"].items():
            row: dict[str, Any] = {"backend": backend, "status": r["status"], "version": None, "train_loss": None,
                                   "train_acc": None, "test_acc": None, "examples_per_sec": None,
                                   "seconds": r.get("seconds"), "note": r.get("reason") or r.get("error") or ""}
            if r["status"] == "ok":
                h = r["history"]
                last = h["epochs"][-1]
                row.update(version=h["versions"].get(backend), train_loss=last["train_loss"],
                           train_acc=last["train_acc"], test_acc=last["test_acc"],
                           examples_per_sec=sum(e["examples_per_sec"] for e in h["epochs"]) / len(h["epochs"]))
            rows.append(row)
        return rows

    @property
    def histories(self) -> dict[str, History]:
        """Each backend that trained: its :class:`History` (``.plot()`` draws its curves)."""
        return {backend: History.from_dict(r["history"])
                for backend, r in self.report["results"].items() if r["status"] == "ok"}

    def _repr_markdown_(self) -> str:
        return self.path.read_text()

    def _repr_html_(self) -> str:
        settings = self.report.get("settings", {})
        columns = ("backend", "status", "version", "train_loss", "train_acc", "test_acc", "examples_per_sec",
                   "seconds", "note")
        digits = {"train_loss": 4, "train_acc": 4, "test_acc": 4, "examples_per_sec": 0, "seconds": 1}

        def cell(column: str, value: Any) -> str:
            text = "" if value is None else f"{value:.{digits[column]}f}" if column in digits else str(value)
            return f"<td>{html.escape(text)}</td>"

        parts = [f"<h4>polylenet comparison: {html.escape(str(settings.get('spec', '?')))} on "
                 f"{html.escape(str(settings.get('dataset', '?')))}, {settings.get('epochs', '?')} epoch(s)</h4>",
                 "<table><thead><tr>" + "".join(f"<th>{c.replace('_', ' ')}</th>" for c in columns) + "</tr></thead>",
                 "<tbody>"]
        if self.report.get("incomplete"):
            stopped = self.report["incomplete"]
            parts.insert(1, f"<p><b>Incomplete</b>: compare was stopped by {html.escape(str(stopped.get('signal')))}"
                            f" (unfinished: {html.escape(', '.join(stopped.get('unfinished', [])) or 'none')}).</p>")
        parts += ["<tr>" + "".join(cell(c, row[c]) for c in columns) + "</tr>" for row in self.table]
        parts.append("</tbody></table>")
        logits = self.report.get("logits", {})
        if logits.get("initial_max_abs_diff") is not None:
            parts.append(f"<p>Largest difference between two backends' test logits: "
                         f"{logits['initial_max_abs_diff']:.2e} with the shared initial weights, "
                         f"{logits['trained_max_abs_diff']:.2e} after training.</p>")
        for name in self.report.get("plots", []):
            picture = self.path.parent / name
            if picture.is_file():
                data = base64.b64encode(picture.read_bytes()).decode("ascii")
                parts.append(f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}"/>')
        if self.report.get("plots_missing"):
            parts.append(f"<p>No plots: {html.escape(self.report['plots_missing'])}.</p>")
        return "\n".join(parts)

    def __repr__(self) -> str:
        trained = [row["backend"] for row in self.table if row["status"] == "ok"]
        return f"Comparison({str(self.path)!r}, trained: {', '.join(trained) or 'none'})"


def compare(backends: Union[str, Sequence[str]] = "all", spec: str = "lenet5", epochs: int = 10,
            out: Union[str, os.PathLike] = "runs/compare", jobs: int = 1, *, envs: Optional[str] = None,
            pythons: Optional[Mapping[str, str]] = None, data_dir: Optional[str] = None,
            log: Optional[Callable[[str], None]] = None, **config: Any) -> Comparison:
    """Train ``spec`` on each of ``backends`` ("all", "numpy,torch" or a list) with the same seed,
    initial weights, batches and dropout masks, each in a child process with its environment's
    interpreter, as ``polylenet compare`` does; returns the :class:`Comparison` it wrote into ``out``.
    ``config``: the other :class:`TrainConfig` settings (``train_subset``, ``lr``, ...; lr and batch
    size default to the book's for ``spec``, dropout to "shared"); ``envs``, ``pythons``, ``data_dir``
    and ``jobs`` as compare's ``--envs``, ``--python``, ``--data-dir`` and ``--jobs``; ``log`` gets
    each progress line (default: printed).

    >>> import polylenet
    >>> result = polylenet.compare("numpy,torch", epochs=2, train_subset=2000, test_subset=500)  # doctest: +SKIP
    >>> result.histories["torch"].plot()  # doctest: +SKIP
    <Figure size 350x250 with 1 Axes>
    """
    known = {f.name for f in fields(TrainConfig)} - {"epochs"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ConfigError(f"compare() got unknown setting(s) {unknown}; it takes the TrainConfig settings "
                          f"{sorted(known)}")
    settings = TrainConfig(**{"lr": book_lr(spec), "batch_size": book_batch_size(spec), "dropout": "shared",
                              **config, "epochs": epochs})
    names = backends if isinstance(backends, str) else ",".join(backends)
    report = run_compare(names, settings, spec=spec, out=out, envs=envs, pythons=pythons, data_dir=data_dir,
                         jobs=jobs, **({"log": log} if log is not None else {}))
    return Comparison.load(Path(report).parent)
