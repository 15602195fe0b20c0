"""examples/lenet-two-backends.ipynb runs, top to bottom, on a real Jupyter kernel (nbclient and
ipykernel, the notebook extra) running this interpreter: in the torch env, where both of its
backends are. The file itself is checked everywhere: nbformat 4, no outputs stored."""

import json
import os
import sys
import time
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "lenet-two-backends.ipynb"
BACKENDS = os.environ.get("POLYLENET_TEST_BACKENDS", "").split(",")
CELL_TIMEOUT = 120  # seconds; the slowest cell (compare: two child processes) takes about 10 s


def test_the_notebook_is_stored_without_outputs():
    notebook = json.loads(NOTEBOOK.read_text())
    assert notebook["nbformat"] == 4
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert code and all(cell["outputs"] == [] and cell["execution_count"] is None for cell in code)
    assert "parameters" in code[0]["metadata"].get("tags", [])


def text_of(cell, name=None):
    return "".join(out.get("text", "") for out in cell["outputs"]
                   if out["output_type"] == "stream" and name in (None, out["name"]))


@pytest.mark.skipif("torch" not in BACKENDS, reason="the notebook trains on torch: the torch env runs it")
def test_the_notebook_runs_on_a_kernel_of_this_interpreter(tmp_path, monkeypatch):
    import nbformat  # the notebook extra: a missing package fails here, in the torch env
    from nbclient import NotebookClient

    # the kernel the notebook names (python3), defined as this interpreter: found first on JUPYTER_PATH
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (polylenet tests)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    for variable, folder in (("JUPYTER_RUNTIME_DIR", "runtime"), ("IPYTHONDIR", "ipython")):
        monkeypatch.setenv(variable, str(tmp_path / folder))  # the kernel's files: none in $HOME
    work = tmp_path / "work"
    work.mkdir()
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))  # which interpreter ran
    client = NotebookClient(notebook, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(work)}})
    started = time.perf_counter()
    client.execute()  # raises CellExecutionError, naming the cell, on any cell's error
    print(f"notebook ran in {time.perf_counter() - started:.1f} s")

    *code, interpreter = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert text_of(interpreter, "stdout").strip() == sys.executable
    trained = [cell for cell in code if "polylenet.train(" in cell.source]
    assert len(trained) == 2
    for cell, backend in zip(trained, ("numpy", "torch")):
        # in a kernel the bar is shown (stderr is no terminal there), then each epoch's summary line
        shown = text_of(cell, "stderr")
        assert f"\r{backend} epoch 1/2:   0%|" in shown and f"\r{backend} epoch 2/2 loss " in shown
        pictures = [out["output_type"] for out in cell["outputs"] if "image/png" in out.get("data", {})]
        assert pictures == ["execute_result"]  # History.plot()'s Figure, shown once
    compared = next(cell for cell in code if "polylenet.compare(" in cell.source)
    [shown] = [out for out in compared["outputs"] if out["output_type"] == "execute_result"]
    assert "<td>numpy</td><td>ok</td>" in shown["data"]["text/html"]
    assert "<td>torch</td><td>ok</td>" in shown["data"]["text/html"]
    assert 'src="data:image/png;base64,' in shown["data"]["text/html"]
    assert (work / "runs" / "compare" / "report.json").is_file()  # the kernel ran in the folder given
    moved = text_of(code[-1], "stdout")
    assert "largest |torch logit - numpy logit| over 256 test images: " in moved
    assert float(moved.rsplit(": ", 1)[1]) < 1e-4
