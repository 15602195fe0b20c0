"""polylenet.compare (the CLI's compare as a function, returning a Comparison a notebook shows),
its report read back, and History.plot."""

import os
import subprocess
import sys

import pytest

import polylenet
from polylenet import EpochStats, History
from polylenet.comparison import Comparison, ReportError
from polylenet.errors import ConfigError, MissingDependency

ORACLE = pytest.mark.skipif("numpy" not in os.environ.get("POLYLENET_TEST_BACKENDS", "numpy").split(","),
                            reason="trains the oracle in a child process: the core env's")


def history(epochs=3):
    return History("numpy", {"name": "lenet5"}, {"epochs": epochs}, {},
                   [EpochStats(e, 2.3 - 0.5 * e, 0.1 * e, 0.1 * e + 0.05, 1000.0, 1.0) for e in range(1, epochs + 1)])


def test_history_plot_draws_d2ls_three_curves_on_one_axes():
    matplotlib = pytest.importorskip("matplotlib", reason='the plots need the report extra: polylenet[report]')
    fig = history().plot()
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    lines = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}
    assert list(lines) == ["train loss", "train acc", "test acc"]
    assert lines["train loss"] == ([1, 2, 3], pytest.approx([1.8, 1.3, 0.8]))
    assert lines["test acc"] == ([1, 2, 3], pytest.approx([0.15, 0.25, 0.35]))
    assert ax.get_xlabel() == "epoch" and ax.get_xlim() == (1, 3)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(lines)
    assert fig._repr_png_().startswith(b"\x89PNG")  # a notebook shows it, whatever its matplotlib set-up


def test_history_plot_draws_into_the_axes_given():
    pytest.importorskip("matplotlib", reason='the plots need the report extra: polylenet[report]')
    from matplotlib.figure import Figure

    fig = Figure()
    left, right = fig.subplots(1, 2)
    assert history().plot(ax=right) is fig
    assert len(right.get_lines()) == 3 and not left.get_lines()


def test_history_plot_without_matplotlib_names_the_extra(monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    monkeypatch.delitem(sys.modules, "polylenet.plotting", raising=False)  # imported again, and failing
    with pytest.raises(MissingDependency, match=r'History.plot needs matplotlib: pip install "polylenet\[report\]"'):
        history().plot()


def test_polylenet_compare_is_the_function_and_the_cli_still_runs():
    code = ("import polylenet.cli, polylenet.runner, polylenet.diff, polylenet.report, polylenet\n"
            "from polylenet.comparison import compare\n"
            "assert polylenet.compare is compare, polylenet.compare\n"
            "assert polylenet.cli.main(['compare', '--backends', 'nosuch']) == 2\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "polylenet: error: unknown backend(s) ['nosuch']" in proc.stderr


def test_compare_refuses_an_unknown_setting():
    with pytest.raises(ConfigError, match=r"compare\(\) got unknown setting\(s\) \['learning_rate'\]; it takes"):
        polylenet.compare("numpy", learning_rate=0.1)


def test_a_folder_without_a_report_is_named(tmp_path):
    with pytest.raises(ReportError, match=f"{tmp_path}: no report.json there; run polylenet compare --out"):
        Comparison.load(tmp_path)


@ORACLE
def test_compare_returns_the_report_a_notebook_shows(tmp_path):
    settings = dict(train_subset=256, test_subset=100)
    lines = []
    result = polylenet.compare("numpy", epochs=1, out=tmp_path / "cmp", log=lines.append, **settings)
    assert result.path == tmp_path / "cmp" / "report.md" and any(line.startswith("[numpy]") for line in lines)
    [row] = result.table
    assert row["backend"] == "numpy" and row["status"] == "ok" and row["version"]
    assert 0 <= row["test_acc"] <= 1 and row["examples_per_sec"] > 0
    # the child's run is the one in-process training makes with compare's settings (shared dropout masks)
    alone = polylenet.train("lenet5", backend="numpy", progress=False,
                            config=polylenet.TrainConfig(epochs=1, dropout="shared", **settings))
    assert result.histories["numpy"].step_losses == alone.step_losses
    assert result.histories["numpy"].final.test_acc == row["test_acc"] == alone.final.test_acc
    assert result._repr_markdown_() == (tmp_path / "cmp" / "report.md").read_text()
    shown = result._repr_html_()
    assert "<table>" in shown and "<td>numpy</td><td>ok</td>" in shown
    if result.report["plots"]:  # with matplotlib: each plot inline, the notebook needs no file beside it
        assert shown.count('src="data:image/png;base64,') == len(result.report["plots"]) >= 1
    assert repr(result) == f"Comparison({str(result.path)!r}, trained: numpy)"
    stopped = Comparison(result.path, {**result.report, "incomplete": {"signal": "SIGINT", "unfinished": ["torch"]}})
    assert "<b>Incomplete</b>: compare was stopped by SIGINT (unfinished: torch)" in stopped._repr_html_()
