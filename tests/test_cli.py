"""The command line: one clear line per error, the shapes table, and compare end to end."""

import json
import subprocess
import sys

import pytest
from test_data import make_dataset

from polylenet.cli import main


def run(*args):
    return subprocess.run([sys.executable, "-m", "polylenet", *args], capture_output=True, text=True)


def test_version_and_the_backends_table(capsys):
    import polylenet
    from polylenet.registry import available_backends, known_backends

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out.strip() == f"polylenet {polylenet.__version__}"
    assert main(["backends"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert list(rows) == list(known_backends())
    for name in known_backends():
        installed = name in available_backends()
        assert ("not installed" in rows[name]) != installed, rows[name]
        assert ("train, infer" in rows[name]) == known_backends()[name].trains
    assert 'pip install "polylenet[onnx]"' in rows["onnxruntime"]


def test_the_backends_table_imports_no_framework():
    frameworks = "{'torch', 'tensorflow', 'mxnet', 'paddle', 'mindspore', 'jax', 'onnxruntime'}"
    code = ("import sys; from polylenet.cli import main; main(['backends']); "
            f"print(sorted({frameworks} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "[]"


def test_shapes_table(capsys):
    assert main(["shapes", "--spec", "lenet-classic"]) == 0
    out = capsys.readouterr().out
    assert "flatten1  output shape: (1, 256)" in out and "dense3    output shape: (1, 10)" in out
    assert main(["shapes", "--backend", "numpy"]) == 0
    assert "as built by numpy" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["shapes", "--backend", "caffe"], "unknown backend 'caffe'; known backends: numpy, torch"),
    (["shapes", "--spec", "lenet9"], "unknown spec 'lenet9'"),
    (["train", "--backend", "numpy", "--data-dir", "/nonexistent", "--dataset", "mnist"], "nonexistent: does not"),
    (["train", "--backend", "numpy", "--dataset", "mnist"], "Put the four files"),
])
def test_errors_are_one_line_without_traceback(args, message, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("POLYLENET_DATA", raising=False)
    result = run(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("polylenet: error:") and message in result.stderr


def test_bad_spec_file_names_the_layer(tmp_path):
    bad = tmp_path / "net.json"
    bad.write_text(json.dumps({"layers": [{"type": "conv2d", "out_channels": 4, "kernel": 3},
                                          {"type": "activation", "fn": "gelu"}, {"type": "flatten"},
                                          {"type": "dense", "units": 10}]}))
    result = run("shapes", "--spec", str(bad))
    assert result.returncode == 2 and "layer 1 (act1, activation)" in result.stderr and "'gelu'" in result.stderr
    assert "Traceback" in run("--debug", "shapes", "--spec", str(bad)).stderr


@pytest.mark.parametrize("name", ["torch", "tensorflow", "mxnet", "paddle", "mindspore", "jax"])
def test_missing_framework_says_how_to_install(name):
    import polylenet
    if name in polylenet.available_backends():
        pytest.skip(f"{name} is installed here")
    result = run("shapes", "--backend", name)
    assert result.returncode == 2 and f'pip install "polylenet[{name}]"' in result.stderr


def test_train_writes_history_and_checkpoints(tmp_path):
    make_dataset(tmp_path / "data" / "fashion-mnist", train=48, test=16)
    out = tmp_path / "run"
    result = run("train", "--backend", "numpy", "--epochs", "2", "--batch-size", "16", "--lr", "0.1",
                 "--data-dir", str(tmp_path / "data"), "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "numpy: loss" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-epoch01.npz", "checkpoint-epoch02.npz", "history.json"]
    again = run("train", "--backend", "numpy", "--epochs", "1", "--lr", "0.5", "--data-dir", str(tmp_path / "data"),
                "--out", str(out), "--quiet")
    assert again.returncode == 2 and "already holds a run" in again.stderr and "Traceback" not in again.stderr
    assert len(list(out.iterdir())) == 3  # the first run is intact


def test_compare_runs_children_and_reports(tmp_path):
    pytest.importorskip("matplotlib")
    make_dataset(tmp_path / "data" / "fashion-mnist", train=48, test=16)
    out = tmp_path / "cmp"
    result = run("compare", "--backends", "numpy,torch", "--epochs", "2", "--batch-size", "16",
                 "--data-dir", str(tmp_path / "data"), "--out", str(out), "--envs", str(tmp_path / "no-envs"),
                 "--python", "torch=" + str(tmp_path / "missing-python"), "--jobs", "2")
    assert result.returncode == 0, result.stderr
    assert "trained 2 backend(s)" in result.stdout and "(2 at a time)" in result.stdout
    report = (out / "report.md").read_text()
    assert "| numpy |" in report and "| torch | **failed**" in report
    assert {"curves.png", "divergence.png", "throughput.png", "report.json"} <= {p.name for p in out.iterdir()}
    data = json.loads((out / "report.json").read_text())
    assert data["results"]["numpy"]["status"] == "ok" and len(data["results"]["numpy"]["history"]["epochs"]) == 2
    # the real wall time, measured by compare, beside the epochs' own sum
    epochs = sum(e["seconds"] for e in data["results"]["numpy"]["history"]["epochs"])
    assert data["timing"]["wall_seconds"] >= data["results"]["numpy"]["seconds"] > epochs
    assert f"the whole comparison took {data['timing']['wall_seconds']:.0f} s with 2 backend(s)" in report
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_reports_missing_environment(tmp_path):
    from polylenet.runner import run_backend
    result = run_backend("mxnet", None, "lenet5", None, tmp_path, None)
    assert result["status"] == "skipped" and "tox -e mxnet --notest" in result["reason"]


# matplotlib made unimportable in the parent (compare's children train numpy and need none)
NO_MATPLOTLIB = """
import sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "matplotlib":
            raise ModuleNotFoundError("No module named 'matplotlib'", name=name)
sys.meta_path.insert(0, Refuse())
from polylenet.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_compare_without_matplotlib_keeps_the_report(tmp_path):
    make_dataset(tmp_path / "data" / "fashion-mnist", train=48, test=16)
    out = tmp_path / "cmp"
    result = subprocess.run([sys.executable, "-c", NO_MATPLOTLIB, "compare", "--backends", "numpy", "--epochs", "1",
                             "--batch-size", "16", "--data-dir", str(tmp_path / "data"), "--out", str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert 'pip install "polylenet[report]"' in result.stderr and "Traceback" not in result.stderr
    assert {"report.md", "report.json"} <= {p.name for p in out.iterdir()}
    assert not (out / "curves.png").exists()
    assert "No plots: the plots need matplotlib" in (out / "report.md").read_text()
    data = json.loads((out / "report.json").read_text())
    assert data["results"]["numpy"]["status"] == "ok" and data["plots"] == []


def test_compare_in_which_every_backend_failed_exits_non_zero(tmp_path):
    result = run("compare", "--backends", "torch", "--epochs", "1", "--out", str(tmp_path / "cmp"),
                 "--python", "torch=" + str(tmp_path / "missing-python"))
    assert result.returncode == 1
    assert "no backend trained" in result.stderr and (tmp_path / "cmp" / "report.md").exists()


def test_compare_shows_each_epoch_as_it_happens(tmp_path):
    make_dataset(tmp_path / "data" / "fashion-mnist", train=48, test=16)
    result = run("compare", "--backends", "numpy", "--epochs", "2", "--batch-size", "16",
                 "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "cmp"))
    lines = result.stdout.splitlines()  # not a terminal: plain lines, in order
    epochs = [line for line in lines if line.startswith("[numpy] epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["[numpy] epoch 1/2", "[numpy] epoch 2/2"], result.stdout
    final = next(x for x in lines if "test acc" in x and "epoch" not in x)  # printed when the backend is done
    assert "examples/sec" in epochs[0] and lines.index(epochs[-1]) < lines.index(final)


def test_export_import_evaluate_moves_a_trained_model(tmp_path, capsys):
    """train (numpy) -> export ONNX -> import -> evaluate on another backend: the same accuracy."""
    pytest.importorskip("onnx", reason="the onnx extra is not installed: pip install 'polylenet[onnx]'")
    make_dataset(tmp_path / "data" / "fashion-mnist", train=64, test=32)
    data = tmp_path / "data"
    run_dir, onnx_file, moved = tmp_path / "run", tmp_path / "m.onnx", tmp_path / "moved"
    assert main(["train", "--backend", "numpy", "--spec", "lenet-bn", "--epochs", "1", "--data-dir", str(data),
                 "--out", str(run_dir), "--quiet"]) == 0
    checkpoint = str(run_dir / "checkpoint-epoch01.npz")
    assert main(["export", "--checkpoint", checkpoint, "--out", str(onnx_file)]) == 0
    assert main(["import", str(onnx_file), "--out", str(moved)]) == 0
    capsys.readouterr()
    accuracies = set()
    for args in (["--checkpoint", checkpoint],
                 ["--spec", str(moved / "spec.json"), "--weights", str(moved / "weights.npz")]):
        assert main(["evaluate", "--backend", "numpy", "--data-dir", str(data), *args]) == 0
        accuracies.add(capsys.readouterr().out.split("test acc ")[1].split()[0])
    assert len(accuracies) == 1


def test_import_of_a_file_that_is_not_onnx_is_one_line(tmp_path):
    pytest.importorskip("onnx", reason="the onnx extra is not installed: pip install 'polylenet[onnx]'")
    (tmp_path / "x.onnx").write_text("not a model")
    result = run("import", str(tmp_path / "x.onnx"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "x.onnx: not" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_an_unexpected_error_is_one_line_naming_the_backend_and_debug(monkeypatch, capsys):
    """A framework's own exception (here: one raised where the adapter would call the framework)
    is one line with exit 1; --debug shows the traceback."""
    from polylenet import api

    def framework_failure(*args, **kwargs):
        raise RuntimeError("oneDNN primitive creation failed\n  at conv1")

    monkeypatch.setattr(api, "build", framework_failure)
    assert main(["shapes", "--backend", "numpy"]) == 1
    err = capsys.readouterr().err
    assert err == ("polylenet: unexpected error (backend numpy): RuntimeError: oneDNN primitive creation failed "
                   "at conv1; rerun with --debug for the traceback\n")
    with pytest.raises(RuntimeError):
        main(["--debug", "shapes", "--backend", "numpy"])


def test_evaluate_without_weights_is_refused(tmp_path):
    result = run("evaluate", "--backend", "numpy", "--spec", "lenet5")
    assert result.returncode == 2 and "evaluate needs --checkpoint CKPT or --weights W.npz" in result.stderr


def test_shapes_show_the_pads_a_spec_resolved(tmp_path):
    spec = tmp_path / "same.json"
    spec.write_text(json.dumps({"input_shape": [1, 28, 28], "num_classes": 10, "layers": [
        {"type": "conv2d", "out_channels": 2, "kernel": 3, "stride": 2, "padding": "same"},
        {"type": "flatten"}, {"type": "dense", "units": 10}]}))
    result = run("shapes", "--spec", str(spec))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1] == "conv1     output shape: (1, 2, 14, 14)  padding (top, bottom), (left, right): ((0, 1), (0, 1))"
    assert lines[2] == "flatten1  output shape: (1, 392)"
