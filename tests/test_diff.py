"""`polylenet diff`: the same weights and batch through two backends, compared array by array."""

import subprocess
import sys

import numpy as np

from polylenet.diff import compare_probes, first_out_of_tolerance, format_rows


def test_diff_of_a_backend_with_itself_is_exact_and_exits_0(tmp_path):
    result = subprocess.run([sys.executable, "-m", "polylenet", "diff", "--backends", "numpy,numpy", "--spec",
                             "lenet-bn", "--steps", "2", "--data-dir", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "all within tolerance"
    for name in ("output   conv1", "output   bn1", "loss     loss", "grad     bn4.weight",
                 "weights  step 2 bn1.running_var"):
        assert any(line.startswith(name) and "0.000e+00" in line for line in lines), name


def test_the_first_array_out_of_tolerance_is_named():
    a = {"output:conv1": np.ones(4), "output:act1": np.ones(4), "grad:conv1.weight": np.ones(3)}
    b = {"output:conv1": np.ones(4) + 1e-7, "output:act1": np.ones(4) + 1e-3, "grad:conv1.weight": np.ones(3) + 1}
    rows = compare_probes(a, b)
    assert [r.ok for r in rows] == [True, False, False]
    assert first_out_of_tolerance(rows).name == "act1"
    text = format_rows(rows, "x", "y")
    assert "NO (> 1e-05)" in text and text.endswith("first out of tolerance: output act1 (1.00e-03 > 1e-05)")


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
