"""Crash safety, for real: a `polylenet train` process killed with SIGKILL in the middle of a run
leaves every checkpoint it wrote and history.json loadable, and --resume from the newest one ends
with the same step losses and weights as a run that was never interrupted."""

import gzip
import os
import signal
import struct
import subprocess
import sys
import time

import numpy as np

import polylenet


def _write_idx(path, array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0))


def _tiny_fashion(root):
    """64 training and 16 test images whose bright bar's row encodes the class."""
    folder = root / "fashion-mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 64), ("t10k", 16)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, (n, 28, 28))
        for i, label in enumerate(labels):
            images[i, 2 + 2 * label:4 + 2 * label, 4:24] = 255
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


def _command(backend, data, out, *extra):
    return [sys.executable, "-m", "polylenet", "train", "--backend", backend, "--spec", "lenet-relu", "--epochs", "20",
            "--batch-size", "16", "--lr", "0.1", "--data-dir", str(data), "--out", str(out), "--quiet", *extra]


def test_killed_run_resumes_to_the_same_result(trainable, tmp_path):
    data = _tiny_fashion(tmp_path / "data")
    straight = subprocess.run(_command(trainable, data, tmp_path / "straight"), capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr
    killed = tmp_path / "killed"
    child = subprocess.Popen(_command(trainable, data, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (killed / "checkpoint-epoch03.npz").exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    os.kill(child.pid, signal.SIGKILL)  # somewhere in epoch 4 (or while writing its checkpoint)
    child.wait()
    checkpoints = sorted(killed.glob("checkpoint-epoch*.npz"))
    assert 3 <= len(checkpoints) < 20, [p.name for p in checkpoints]
    for path in checkpoints:  # every one written is whole
        polylenet.load_checkpoint(path)
    assert polylenet.History.load(killed / "history.json").epochs  # and so is the history
    resumed = subprocess.run(_command(trainable, data, killed, "--resume", str(checkpoints[-1])),
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    a = polylenet.History.load(tmp_path / "straight" / "history.json")
    b = polylenet.History.load(killed / "history.json")
    assert b.step_losses == a.step_losses
    w_a, _ = polylenet.load_checkpoint(tmp_path / "straight" / "checkpoint-epoch20.npz")
    w_b, _ = polylenet.load_checkpoint(killed / "checkpoint-epoch20.npz")
    assert all(np.array_equal(w_a[k], w_b[k]) for k in w_a)
    assert not list(killed.glob(".*")), "a lock or a partial write was left behind"
