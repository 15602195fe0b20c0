"""The comparison report: report.md, report.json and PNG plots (matplotlib, drawn off-screen)."""

from __future__ import annotations

import io
import json
from itertools import combinations
from pathlib import Path
from typing import Any, Optional

import numpy as np

from polylenet.atomic import WriteError, atomic_write_all
from polylenet.optional import has_matplotlib


def throughput(history: dict) -> float:
    """Training examples per second, averaged over the run's epochs."""
    return float(np.mean([e["examples_per_sec"] for e in history["epochs"]]))


# Overlapping curves are the expected result: wide solid lines under thin dashed ones keep each visible.
_STYLES = [dict(linewidth=5.0, linestyle="-", marker="o", alpha=0.5), dict(linewidth=3.5, linestyle="--", marker="s"),
           dict(linewidth=2.5, linestyle="-.", marker="^"), dict(linewidth=1.8, linestyle=":", marker="D"),
           dict(linewidth=1.2, linestyle=(0, (5, 2)), marker="v"), dict(linewidth=0.8, linestyle="-", marker="x")]


def logits_agreement(results: dict[str, dict]) -> dict[str, Any]:
    """Largest |logit difference| between any two backends on the test set, before and after training."""
    logits = {}
    for backend, result in results.items():
        if result["status"] == "ok":
            with np.load(result["logits"], allow_pickle=False) as data:
                logits[backend] = {k: data[k] for k in data.files}
    summary: dict[str, Any] = {"pairs": []}
    for a, b in combinations(sorted(logits), 2):
        summary["pairs"].append({
            "pair": [a, b],
            "initial_max_abs_diff": float(np.abs(logits[a]["initial"] - logits[b]["initial"]).max()),
            "trained_max_abs_diff": float(np.abs(logits[a]["trained"] - logits[b]["trained"]).max()),
            "trained_prediction_agreement": float(
                (logits[a]["trained"].argmax(1) == logits[b]["trained"].argmax(1)).mean()),
        })
    for key in ("initial_max_abs_diff", "trained_max_abs_diff"):
        summary[key] = max((p[key] for p in summary["pairs"]), default=None)
    return summary


DRIFT_LEVELS = (1e-5, 1e-4, 1e-3)


def relative_drift(a: list[float], b: list[float]) -> np.ndarray:
    """Per step, |loss_b - loss_a| / |loss_a| over the steps both runs made."""
    n = min(len(a), len(b))
    ref, other = np.asarray(a[:n], np.float64), np.asarray(b[:n], np.float64)
    return np.abs(other - ref) / np.maximum(np.abs(ref), 1e-12)


def drift(results: dict[str, dict]) -> list[dict[str, Any]]:
    """For every pair of backends that trained: the first step (1-based) at which their training
    losses differ by more than each of DRIFT_LEVELS (relative), or None if they never do."""
    ok = {b: r["history"]["step_losses"] for b, r in results.items() if r["status"] == "ok"}
    pairs = []
    for a, b in combinations(ok, 2):
        rel = relative_drift(ok[a], ok[b])
        first = {f"{level:g}": next((int(i) + 1 for i in np.flatnonzero(rel > level)[:1]), None)
                 for level in DRIFT_LEVELS}
        pairs.append({"pair": [a, b], "steps": int(len(rel)), "first_step_over": first})
    return pairs


def _drift_sentence(p: dict[str, Any]) -> str:
    a, b = p["pair"]
    parts = [f"over {level} first at step {step}" if step else f"never over {level}"
             for level, step in p["first_step_over"].items()]
    return f"- {a} / {b}: relative difference of the training losses " + ", ".join(parts) + f" ({p['steps']} steps)."


def _markdown(results: dict[str, dict], settings: dict, agreement: dict, timing: Optional[dict] = None,
              incomplete: Optional[dict] = None) -> str:
    ok = {b: r for b, r in results.items() if r["status"] == "ok"}
    lines = [f"# polylenet comparison: {settings['spec']} on {settings['dataset']}", ""]
    if incomplete:
        unfinished = ", ".join(incomplete["unfinished"]) or "none"
        lines += [f"**Incomplete**: compare was stopped by {incomplete['signal']}; this report holds the backends "
                  f"that finished (unfinished: {unfinished}).", ""]
    lines += [f"Protocol: SGD lr {settings['lr']}, batch {settings['batch_size']}, {settings['epochs']} "
              f"epochs, seed {settings['seed']}"
              + (f", fixed subset of {settings['train_subset']} training images"
                 if settings.get("train_subset") else "")
              + (f", {settings['test_subset']} test images" if settings.get("test_subset") else "")
              + (f", dropout masks {settings['dropout']}" if settings.get("dropout") else "")
              + "; the same initial weights and batch order on every backend.", "",
              "| backend | framework version | train loss | train acc | test acc | examples/sec (mean over epochs) "
              "| epochs (s) | wall time (s) | peak memory (MB) |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for backend, r in ok.items():
        h, f = r["history"], r["history"]["epochs"][-1]
        epochs = sum(e["seconds"] for e in h["epochs"])
        wall = f"{r['seconds']:.1f}" if "seconds" in r else "?"
        lines.append(f"| {backend} | {h['versions'].get(backend, '?')} | {f['train_loss']:.4f} | "
                     f"{f['train_acc']:.4f} | {f['test_acc']:.4f} | {throughput(h):.0f} | "
                     f"{epochs:.1f} | {wall} | {h['peak_memory_mb']:.0f} |")
    for backend, r in results.items():
        if r["status"] == "skipped":
            lines.append(f"| {backend} | skipped: {r['reason']} | | | | | | | |")
        elif r["status"] == "failed":
            lines.append(f"| {backend} | **failed**: {r['error']} | | | | | | | |")
        elif r["status"] == "interrupted":
            lines.append(f"| {backend} | **{r['reason']}** | | | | | | | |")
    lines += ["", "Epochs: the training epochs' own time, summed; wall time: the backend's whole child process "
              "(framework import, compiling, evaluating and the logits below included)"
              + (f"; the whole comparison took {timing['wall_seconds']:.0f} s with {timing['jobs']} "
                 "backend(s) at a time." if timing else ".")]
    lines += _machines(ok)
    if agreement["pairs"]:
        lines += ["", "## Do the backends compute the same numbers?", "",
                  f"Largest difference between any two backends' logits on the {settings['dataset']} "
                  + (f"test subset ({settings['test_subset']} images)" if settings.get("test_subset") else "test set")
                  + f": **{agreement['initial_max_abs_diff']:.2e}** with the shared initial weights, "
                  f"{agreement['trained_max_abs_diff']:.2e} after training (each backend's float32 "
                  "rounding, compounded over every SGD step).", "",
                  "| pair | initial weights | after training | same prediction after training |",
                  "| --- | ---: | ---: | ---: |"]
        for p in agreement["pairs"]:
            lines.append(f"| {p['pair'][0]} / {p['pair'][1]} | {p['initial_max_abs_diff']:.2e} | "
                         f"{p['trained_max_abs_diff']:.2e} | {p['trained_prediction_agreement']:.2%} |")
    pairs = drift(results)
    if pairs:
        lines += ["", "## Where do the backends drift apart?", "",
                  "Same start, same batches: each pair's per-step training losses, relative difference "
                  "(`polylenet diff --backends A,B` shows which layer or gradient differs first).", ""]
        lines += [_drift_sentence(p) for p in pairs]
        lines += ["", "![divergence](divergence.png)"]
    if ok:
        names = list(ok)
        rows = [r["shapes"] for r in ok.values()]
        lines += ["", "## Per-layer output shapes (NCHW, batch of 1), as each backend built the model", "",
                  "| layer | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
        for i, (layer, _) in enumerate(rows[0]):
            lines.append(f"| {layer} | " + " | ".join(str(tuple(r[i][1])) for r in rows) + " |")
        lines += ["", "![training curves](curves.png)", "", "![throughput](throughput.png)"]
    return "\n".join(lines) + "\n"


def _machines(ok: dict[str, dict]) -> list[str]:
    """Where each record was made (records merged from a CI matrix come from several machines)."""
    def described(m: dict) -> str:
        return (f"{m.get('cpu', '?')}, {m.get('cpu_count', '?')} CPUs, {m.get('platform', '?')}, "
                f"Python {m.get('python', '?')}")

    made = {b: described(r["machine"]) + (f" ({r['machine']['node']})" if r["machine"].get("node") else "")
            for b, r in ok.items() if r.get("machine")}
    if not made:
        return []
    if len(set(made.values())) == 1:
        return ["", f"Every backend ran on one machine: {next(iter(made.values()))}."]
    return ["", "Machines:", ""] + [f"- {b}: {m}" for b, m in made.items()]


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _plots(results: dict[str, dict]) -> dict[str, bytes]:
    """The plots' PNG bytes by file name."""
    from matplotlib.figure import Figure  # no pyplot: a notebook's (or any caller's) backend stays as it is

    ok = {b: r["history"] for b, r in results.items() if r["status"] == "ok"}
    if not ok:
        return {}
    pictures = {}
    fig = Figure(figsize=(13, 3.8))
    axes = fig.subplots(1, 3)
    for ax, key, title in zip(axes, ("train_loss", "train_acc", "test_acc"),
                              ("train loss", "train accuracy", "test accuracy")):
        for (backend, h), style in zip(ok.items(), _STYLES * 2):
            ax.plot([e["epoch"] for e in h["epochs"]], [e[key] for e in h["epochs"]], markersize=4,
                    label=backend, **style)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(title="lines overlap where\nbackends agree", fontsize=8, title_fontsize=8)
    fig.tight_layout()
    pictures["curves.png"] = _png(fig)

    reference = next(iter(ok))
    fig = Figure(figsize=(9, 3.8))
    ax = fig.subplots()
    for (backend, h), style in zip(list(ok.items())[1:], _STYLES[1:] * 2):
        rel = np.maximum.accumulate(relative_drift(ok[reference]["step_losses"], h["step_losses"]))
        ax.plot(np.arange(1, len(rel) + 1), np.maximum(rel, 1e-10), label=f"{backend}", linewidth=1.6,
                linestyle=style["linestyle"], marker=style["marker"], markevery=0.1, markersize=4)
    for level in DRIFT_LEVELS:
        ax.axhline(level, color="grey", linewidth=0.6, linestyle=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("SGD step")
    ax.set_ylabel(f"largest |loss - {reference} loss|\n/ {reference} loss so far")
    ax.set_title(f"how each backend's training loss drifts from {reference}'s (1e-10: identical)")
    if len(ok) > 1:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    pictures["divergence.png"] = _png(fig)

    fig = Figure(figsize=(6.5, 3.5))
    ax = fig.subplots()
    speeds = [throughput(h) for h in ok.values()]
    bars = ax.bar(list(ok), speeds, color="tab:blue")
    ax.bar_label(bars, labels=[f"{s:.0f}" for s in speeds])
    ax.set_ylabel("training examples / second")
    ax.set_title("throughput (mean over epochs)")
    fig.tight_layout()
    pictures["throughput.png"] = _png(fig)
    return pictures


PLOTS_HINT = 'the plots need matplotlib: pip install "polylenet[report]" (or pip install matplotlib)'


def write_report(out: Path, results: dict[str, dict], settings: dict, timing: Optional[dict] = None,
                 incomplete: Optional[dict] = None) -> Path:
    """Write report.json, report.md and the plots into ``out``, together (report.json last).
    Without matplotlib the report says how to get the plots; when drawing or writing them fails
    (a full disk) the report is still written without them, saying why, and the error raised.
    ``incomplete`` ({"signal", "unfinished"}): the run was stopped, and the report says so.
    Returns report.md's path."""
    agreement = logits_agreement(results)
    can_plot = has_matplotlib()
    trained = any(r["status"] == "ok" for r in results.values())
    markdown = _markdown(results, settings, agreement, timing, incomplete)
    report = {"settings": settings, "results": results, "logits": agreement, "drift": drift(results),
              **({"timing": timing} if timing else {}), **({"incomplete": incomplete} if incomplete else {})}

    def texts(plots: dict[str, bytes], missing: Optional[str]) -> dict[Path, bytes]:
        text = markdown
        if not plots:
            for picture in ("![divergence](divergence.png)\n", "![training curves](curves.png)\n\n"):
                text = text.replace(picture, "")
            text = text.replace("![throughput](throughput.png)\n", f"No plots: {missing}.\n" if missing else "")
        data = {**report, "plots": list(plots), **({"plots_missing": missing} if missing else {})}
        return {out / "report.md": text.encode(), out / "report.json": (json.dumps(data, indent=2) + "\n").encode()}

    if not (can_plot and trained):
        atomic_write_all(texts({}, None if can_plot else PLOTS_HINT))
        return out / "report.md"
    try:
        plots = _plots(results)
        atomic_write_all({**{out / name: png for name, png in plots.items()}, **texts(plots, None)})
    except BaseException as exc:
        atomic_write_all(texts({}, f"they could not be drawn or written ({exc})"))  # the numbers, at least
        if isinstance(exc, WriteError):
            raise WriteError(exc.path, f"{exc.reason}; {out / 'report.md'} and report.json were written without "
                                       "the plots") from exc
        raise
    return out / "report.md"
