"""train's progress bar (tqdm): shown on the stream it is given when enabled, on a terminal by
default, nowhere when disabled or when tqdm is not installed; the epoch's summary line stays."""

import io
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import polylenet
from polylenet.data import Dataset
from polylenet.progress import ProgressBar


def run_bar(stream, enabled, pause=0.0):
    bar = ProgressBar(3, "numpy epoch 1/1", enabled=enabled, stream=stream)
    for _ in range(3):
        time.sleep(pause)
        bar.update(loss=0.5, acc=0.25)
    bar.close("loss 0.500, train acc 0.250")
    return bar


def test_the_bar_writes_to_its_stream_when_enabled():
    stream = io.StringIO()
    bar = run_bar(stream, True, pause=0.12)  # past tqdm's 0.1 s between redraws, so the metrics are drawn
    text = stream.getvalue()
    assert bar.enabled
    assert "numpy epoch 1/1:" in text and "/3 [" in text and "loss=0.5000, acc=0.2500" in text
    assert text.endswith("\rnumpy epoch 1/1 loss 0.500, train acc 0.250\n")  # the bar cleared, the summary kept


@pytest.mark.parametrize("enabled", [False, None])  # None: a StringIO is no terminal, and this is no kernel
def test_the_bar_writes_nothing_when_disabled(enabled):
    stream = io.StringIO()
    assert not run_bar(stream, enabled).enabled
    assert stream.getvalue() == ""


def test_the_bar_is_shown_on_a_terminal_by_default():
    leader, follower = os.openpty()
    with os.fdopen(follower, "w") as terminal:
        assert run_bar(terminal, None).enabled
    chunks = []
    while True:  # what the terminal got, to the end (EIO once the other side is closed and read out)
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    text = b"".join(chunks).decode()
    assert "numpy epoch 1/1:" in text and text.endswith("numpy epoch 1/1 loss 0.500, train acc 0.250\r\n")


def test_without_tqdm_there_is_no_bar_and_nothing_printed(monkeypatch):
    for name in [m for m in sys.modules if m == "tqdm" or m.startswith("tqdm.")] + ["tqdm"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed: importing it raises ImportError
    stream = io.StringIO()
    assert not run_bar(stream, True).enabled
    assert stream.getvalue() == ""


def test_importing_polylenet_imports_neither_ipython_nor_tqdm():
    code = "import sys, polylenet.progress, polylenet; print(sorted({'IPython', 'tqdm'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    x, y = (rng.random((48, 28, 28)) * 255).astype(np.uint8), (np.arange(48) % 10).astype(np.int32)
    return Dataset("tiny", x[:32], y[:32], x[32:], y[32:], source="memory")


@pytest.mark.parametrize("progress", [True, False])
def test_train_shows_one_bar_and_summary_per_epoch_on_stderr(tiny, capsys, progress):
    config = polylenet.TrainConfig(lr=0.5, batch_size=16, epochs=2)
    polylenet.train("lenet-relu", backend="numpy", config=config, data=tiny, progress=progress)
    captured = capsys.readouterr()
    summaries = [line.rsplit("\r", 1)[-1] for line in captured.err.split("\n")[:-1]]  # what stays of each line
    assert captured.out == ""
    if progress:
        assert [s.split(" loss ")[0] for s in summaries] == ["numpy epoch 1/2", "numpy epoch 2/2"]
        assert "test acc" in summaries[-1] and "0/2 [" in captured.err  # the bar, drawn at its start
    else:
        assert captured.err == ""
