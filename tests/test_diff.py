"""`polylenet diff`: the same weights and batch through two backends, compared array by array."""

import os
import subprocess
import sys

import numpy as np
import pytest

from polylenet.diff import compare_probes, first_out_of_tolerance, format_rows

FRAMEWORKS_HERE = [b.strip() for b in os.environ.get("POLYLENET_TEST_BACKENDS", "").split(",")
                   if b.strip() not in ("", "numpy", "onnxruntime")]


def diff(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "polylenet", "diff", *args], capture_output=True, text=True,
                          **kwargs)


def test_diff_of_a_backend_with_itself_is_exact_and_exits_0():
    result = diff("--backends", "numpy,numpy", "--spec", "lenet-bn", "--steps", "2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "all within tolerance"
    assert "batch: " in lines[0] and ("Fashion-MNIST" in lines[0] or "random images" in lines[0])
    for name in ("output   conv1", "output   bn1", "loss     loss", "grad     bn4.weight",
                 "weights  step 2 bn1.running_var"):
        assert any(line.startswith(name) and "0.000e+00" in line for line in lines), name


@pytest.mark.parametrize("backend", FRAMEWORKS_HERE)
def test_diff_runs_both_backends_each_in_its_own_process(backend):
    """Against the oracle, a framework differs by float32 rounding: never 0 everywhere (which is
    what running one backend twice would give), always within the conformance bounds."""
    result = diff("--backends", f"numpy,{backend}", "--spec", "lenet5", "--steps", "1",
                  "--python", f"{backend}={sys.executable}", "--python", f"numpy={sys.executable}")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("lenet5: numpy ") and f" against {backend} " in lines[0], lines[0]
    outputs = [line for line in lines if line.startswith("output ")]
    assert len(outputs) == 12 and any("0.000e+00" not in line.split()[2] for line in outputs), outputs


def test_a_data_dir_without_the_data_is_an_error_not_random_images(tmp_path):
    result = diff("--backends", "numpy,numpy", "--data-dir", str(tmp_path))
    assert result.returncode == 2 and "no fashion-mnist data set there" in result.stderr, result.stderr


def test_both_environments_are_found_before_either_runs(tmp_path):
    result = diff("--backends", "numpy,torch", "--python", f"torch={tmp_path / 'none'}", "--envs", str(tmp_path))
    assert result.returncode == 2 and "no environment with torch (no interpreter at" in result.stderr, result.stderr
    result = diff("--backends", "numpy,numpy", "--python", "torch")
    assert result.returncode == 2 and "--python takes BACKEND=/path/to/python, got 'torch'" in result.stderr


def test_the_first_array_out_of_tolerance_is_named():
    a = {"output:conv1": np.ones(4), "output:act1": np.ones(4), "grad:conv1.weight": np.ones(3)}
    b = {"output:conv1": np.ones(4) + 1e-7, "output:act1": np.ones(4) + 1e-3, "grad:conv1.weight": np.ones(3) + 1}
    rows = compare_probes(a, b)
    assert [r.ok for r in rows] == [True, False, False]
    assert first_out_of_tolerance(rows).name == "act1"
    text = format_rows(rows, "x", "y")
    assert "NO (> 1.0e-05)" in text and text.endswith("first out of tolerance: output act1 (1.00e-03 > 1.0e-05)")


def test_tolerances_are_the_conformance_suites_and_symmetric():
    """Layer outputs within 1e-5 * max(1, scale), gradients 1e-4 relative, weights 1e-4 absolute;
    the scale is the larger array's, so A,B and B,A agree."""
    a = {"output:big": np.full(3, 100.0), "grad:g": np.full(3, 1.0), "weights:step 1 w": np.full(3, 50.0)}
    b = {"output:big": np.full(3, 100.0009), "grad:g": np.full(3, 1.0 + 1.5e-4),
         "weights:step 1 w": np.full(3, 50.0002)}
    for rows in (compare_probes(a, b), compare_probes(b, a)):
        assert [(r.name, r.ok) for r in rows] == [("big", True), ("g", False), ("step 1 w", False)]


def test_diff_needs_two_backends():
    result = subprocess.run([sys.executable, "-m", "polylenet", "diff", "--backends", "numpy"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "takes two backends" in result.stderr


def test_report_names_the_step_where_two_backends_drift_apart():
    from polylenet.report import drift

    ok = {"status": "ok"}
    results = {"a": {**ok, "history": {"step_losses": [2.0, 2.0, 2.0, 2.0]}},
               "b": {**ok, "history": {"step_losses": [2.0, 2.00001, 2.001, 2.1]}},
               "c": {"status": "failed"}}
    (pair,) = drift(results)
    assert pair["pair"] == ["a", "b"] and pair["steps"] == 4
    assert pair["first_step_over"] == {"1e-05": 3, "0.0001": 3, "0.001": 4}


def _block_spec_file(tmp_path):
    """GoogLeNet's b3 in small: a group holding two Inception blocks, then the head."""
    import polylenet

    relu = polylenet.activation("relu")

    def inception(c):
        return polylenet.concat((polylenet.conv2d(c, 1), relu),
                                (polylenet.conv2d(c, 1), relu, polylenet.conv2d(c, 3, padding=1), relu),
                                (polylenet.conv2d(c, 1), relu, polylenet.conv2d(c, 5, padding=2), relu),
                                (polylenet.pool2d("max", 3, 1, padding=1), polylenet.conv2d(c, 1), relu),
                                label="inception")

    spec = polylenet.Spec("small-googlenet", (
        polylenet.sequential("b", polylenet.conv2d(4, 3, stride=2, padding=1), relu),
        polylenet.sequential("b", polylenet.conv2d(4, 1), relu),
        polylenet.sequential("b", inception(2), inception(3), polylenet.pool2d("max", 3, 2, padding=1)),
        polylenet.global_avg_pool(), polylenet.flatten(), polylenet.dense(10)), input_shape=(1, 32, 32))
    return str(polylenet.save_spec(spec, tmp_path / "small-googlenet.json"))


# numpy against itself once (the core env tests numpy), and against each env's framework
IN_CORE = "numpy" in os.environ.get("POLYLENET_TEST_BACKENDS", "numpy").split(",")


@pytest.mark.parametrize("backend", ["numpy"] * IN_CORE + FRAMEWORKS_HERE)
def test_diff_names_the_layer_inside_a_block(tmp_path, backend):
    result = diff("--backends", f"numpy,{backend}", "--spec", _block_spec_file(tmp_path), "--steps", "1",
                  "--python", f"{backend}={sys.executable}", "--python", f"numpy={sys.executable}")
    assert result.returncode == 0, result.stdout + result.stderr
    names = [line.split()[1] for line in result.stdout.splitlines() if line.startswith(("output ", "grad "))]
    for name in ("b3.inception2.branch3.conv1", "b3.inception2.branch3.act2", "b3.inception2", "b3",
                 "b3.inception2.branch4.conv1.weight", "b3.inception1.branch1.conv1.bias"):
        assert name in names, name
