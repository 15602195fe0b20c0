"""Outputs that belong together are written together and kept unless --overwrite; a full disk is
an error naming the file; SIGINT/SIGTERM to compare stop its children and leave a report; a
lock is judged by its writer's pid, start time and host."""

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_data import make_dataset

from polylenet.errors import RunFolderError

# the numpy backend's own commands and files: once, in the core env
pytestmark = pytest.mark.skipif("numpy" not in os.environ.get("POLYLENET_TEST_BACKENDS", "numpy").split(","),
                                reason="numpy only: runs once, in the core env")


def run(*args, limit=None, env=None):
    """``python -m polylenet ARGS``; with ``limit``, every file it writes is cut at ``limit``
    bytes (RLIMIT_FSIZE): a real failing write, as on a full disk."""
    def cap():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing it
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, "-B", "-m", "polylenet", *args], capture_output=True, text=True,
                          preexec_fn=cap if limit else None, env=env)


def cli(capsys, *args):
    """``polylenet ARGS`` in this process (faster than ``run``), its result as ``run``'s."""
    from polylenet.cli import main

    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def _one_line_error(result, *parts):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and ".tmp" not in result.stderr, result.stderr
    line = result.stderr.strip()
    assert line.startswith("polylenet: error: ") and "\n" not in line, line
    for part in parts:
        assert part in line, line


def _onnx(tmp_path, name, spec, seed):
    pytest.importorskip("onnx", reason="the onnx extra is not installed: pip install 'polylenet[onnx]'")
    from polylenet import export_onnx, init_weights, load_spec

    return str(export_onnx(spec, tmp_path / name, weights=init_weights(load_spec(spec), seed)))


def _files(folder):
    return {p.name: p.read_bytes() for p in Path(folder).iterdir()}


# ------------------------------------------------------------------------------------- import


def test_an_earlier_import_is_kept_unless_overwrite(tmp_path, capsys):
    first, second = _onnx(tmp_path, "a.onnx", "lenet5", 1), _onnx(tmp_path, "b.onnx", "lenet-bn", 2)
    out = tmp_path / "moved"
    assert cli(capsys, "import", first, "--out", str(out)).returncode == 0
    before = _files(out)
    _one_line_error(cli(capsys, "import", second, "--out", str(out)),
                    f"cannot write {out}: it already holds spec.json, weights.npz; pass --overwrite")
    assert _files(out) == before
    assert cli(capsys, "import", second, "--out", str(out), "--overwrite").returncode == 0
    assert json.loads((out / "spec.json").read_text())["name"] == "lenet-bn" and _files(out) != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "b.onnx", "moved"]  # no temporary left


def test_an_import_on_a_full_disk_leaves_the_earlier_one_whole(tmp_path, capsys):
    first, second = _onnx(tmp_path, "a.onnx", "lenet5", 1), _onnx(tmp_path, "b.onnx", "lenet-bn", 2)
    out = tmp_path / "moved"
    assert cli(capsys, "import", first, "--out", str(out)).returncode == 0
    before = _files(out)
    assert len(before["spec.json"]) < 100_000 < len(before["weights.npz"])  # the spec fits, the weights do not
    result = run("import", second, "--out", str(out), "--overwrite", limit=100_000)
    _one_line_error(result, f"cannot write {out / 'weights.npz'}: file too large")
    assert "polylenet evaluate" not in result.stdout
    assert _files(out) == before  # never the new spec beside the old weights
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "b.onnx", "moved"]


def test_import_into_a_file_or_a_folder_of_other_files_is_refused(tmp_path, capsys):
    model = _onnx(tmp_path, "a.onnx", "lenet5", 1)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    _one_line_error(cli(capsys, "import", model, "--out", str(a_file)),
                    f"cannot write {a_file}: it is a file; choose a folder for --out")
    _one_line_error(cli(capsys, "import", model, "--out", str(tmp_path), "--overwrite"),
                    f"cannot write {tmp_path}: it holds other files (a.onnx, notes.txt)")
    assert a_file.read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli(capsys, "import", model, "--out", str(empty)).returncode == 0
    assert sorted(p.name for p in empty.iterdir()) == ["spec.json", "weights.npz"]


# ------------------------------------------------------------------------------------- export


def test_export_refuses_a_folder_a_missing_folder_and_an_existing_file(tmp_path, capsys):
    pytest.importorskip("onnx", reason="the onnx extra is not installed: pip install 'polylenet[onnx]'")
    missing = tmp_path / "no" / "such"
    _one_line_error(cli(capsys, "export", "--out", str(tmp_path)),
                    f"cannot write {tmp_path}: it is a folder; name the file to write, e.g. --out "
                    f"{tmp_path / 'model.onnx'}")
    _one_line_error(cli(capsys, "export", "--out", str(missing / "m.onnx")),
                    f"its folder {missing} does not exist; create it (mkdir -p {missing})")
    assert not (tmp_path / "no").exists()
    existing = tmp_path / "m.onnx"
    existing.write_bytes(b"keep me")
    _one_line_error(cli(capsys, "export", "--out", str(existing)),
                    f"cannot write {existing}: it already exists; pass --overwrite")
    assert existing.read_bytes() == b"keep me"
    assert cli(capsys, "export", "--out", str(existing), "--overwrite").returncode == 0
    assert existing.stat().st_size > 200_000


def test_export_on_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path):
    pytest.importorskip("onnx", reason="the onnx extra is not installed: pip install 'polylenet[onnx]'")
    target = tmp_path / "m.onnx"
    target.write_bytes(b"the good one")
    _one_line_error(run("export", "--out", str(target), "--overwrite", limit=50_000),
                    f"cannot write {target}: file too large")
    assert target.read_bytes() == b"the good one" and [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


# ------------------------------------------------------------------------------------- report


def test_the_report_files_are_written_together(tmp_path):
    from polylenet.report import write_report

    results = {"torch": {"status": "skipped", "reason": "no environment"}}
    settings = {"spec": "lenet5", "dataset": "fashion-mnist", "lr": 0.9, "batch_size": 256, "epochs": 1, "seed": 0}
    (tmp_path / "report.md").mkdir()  # in the way: report.md cannot be written
    with pytest.raises(OSError, match=f"cannot write {tmp_path / 'report.md'}: it is a folder"):
        write_report(tmp_path, results, settings)
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]  # no report.json without its report.md
    (tmp_path / "report.md").rmdir()
    write_report(tmp_path, results, settings, incomplete={"signal": "SIGTERM", "unfinished": ["torch"]})
    assert "**Incomplete**: compare was stopped by SIGTERM" in (tmp_path / "report.md").read_text()
    assert json.loads((tmp_path / "report.json").read_text())["incomplete"]["unfinished"] == ["torch"]


# ------------------------------------------------------------------------------------- signals

# A second training backend for the core env: the NumPy oracle under another name, registered
# through the polylenet.backends entry-point group as a third-party backend would be.
# get_backend, not `import polylenet.backends`: from a source checkout (the child runs with the
# checkout as its working folder) the adapters' package is mapped in by the registry
TWIN = """from polylenet.registry import get_backend

_oracle = get_backend("numpy")

globals().update({k: v for k, v in vars(_oracle).items() if not k.startswith("__")})
NAME = "twin"
"""


def _twin(tmp_path):
    folder = tmp_path / "plugin"
    (folder / "polylenet_twin-0.1.dist-info").mkdir(parents=True)
    (folder / "polylenet_twin.py").write_text(TWIN)
    (folder / "polylenet_twin-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: polylenet-twin\nVersion: 0.1\n")
    (folder / "polylenet_twin-0.1.dist-info" / "entry_points.txt").write_text(
        "[polylenet.backends]\ntwin = polylenet_twin\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])}


def _children(pid):
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _running(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the children through /proc")
@pytest.mark.parametrize("signum, jobs", [(signal.SIGTERM, 2), (signal.SIGINT, 1)])
def test_a_signal_to_compare_stops_its_children_and_leaves_a_report(tmp_path, signum, jobs):
    make_dataset(tmp_path / "data" / "fashion-mnist", train=64, test=32)
    out = tmp_path / "cmp"
    parent = subprocess.Popen(
        [sys.executable, "-m", "polylenet", "compare", "--backends", "numpy,twin", "--epochs", "100",
         "--batch-size", "32", "--data-dir", str(tmp_path / "data"), "--out", str(out), "--jobs", str(jobs)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_twin(tmp_path))
    try:
        training = ["numpy", "twin"][:jobs]  # each has finished an epoch when the signal comes
        deadline = time.monotonic() + 30
        while not all((out / b / "checkpoint-epoch01.npz").exists() for b in training):
            assert parent.poll() is None and time.monotonic() < deadline, parent.communicate()
            time.sleep(0.05)
        children = _children(parent.pid)
        assert len(children) == jobs
        parent.send_signal(signum)  # to the parent only, as kill PID, docker stop and CI do
        stdout, stderr = parent.communicate(timeout=20)
    finally:
        parent.kill()
    assert parent.returncode == 128 + signum, stderr
    assert not [pid for pid in children if _running(pid)], "a child outlived compare"
    name = signal.Signals(signum).name
    assert f"polylenet: stopped by {name}" in stderr and "Traceback" not in stderr
    report = json.loads((out / "report.json").read_text())
    assert report["incomplete"] == {"signal": name, "unfinished": ["numpy", "twin"]}
    assert report["results"]["twin"]["reason"] == (f"stopped by {name} before it finished" if jobs == 2
                                                   else f"not started: compare was stopped by {name}")
    assert f"**Incomplete**: compare was stopped by {name}" in (out / "report.md").read_text()


# ------------------------------------------------------------------------------------- locks


@pytest.fixture
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def _start_time(pid):
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def _claim(folder, **flags):
    from polylenet.rundir import claim_run_folder

    with claim_run_folder(folder, **flags) as path:
        return json.loads((path / ".polylenet.lock").read_text())


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process start times from /proc")
def test_a_lock_whose_pid_now_belongs_to_another_process_is_stale(tmp_path, sleeper):
    from polylenet.rundir import LOCK

    (tmp_path / LOCK).write_text(str(sleeper.pid))  # an older lock (the pid alone), written long ago:
    an_hour_ago = time.time() - 3600  # before the process holding that pid now started (after a reboot)
    os.utime(tmp_path / LOCK, (an_hour_ago, an_hour_ago))
    _claim(tmp_path)
    assert not (tmp_path / LOCK).exists()  # released
    host = socket.gethostname()
    (tmp_path / LOCK).write_text(json.dumps({"pid": sleeper.pid, "start": _start_time(sleeper.pid) + 1,
                                             "host": host}))
    record = _claim(tmp_path)
    assert record["pid"] == os.getpid() and record["host"] == host
    assert record["start"] == _start_time(os.getpid())


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process start times from /proc")
def test_a_live_lock_is_refused_naming_the_file_and_the_process(tmp_path, sleeper):
    from polylenet.rundir import LOCK

    lock = tmp_path / LOCK
    lock.write_text(json.dumps({"pid": sleeper.pid, "start": _start_time(sleeper.pid), "host": socket.gethostname()}))
    for flags in ({}, {"overwrite": True}, {"resuming": True}):
        with pytest.raises(RunFolderError) as refused:
            _claim(tmp_path, **flags)
        message = str(refused.value)
        assert f"another training (pid {sleeper.pid}) is writing to {tmp_path}" in message
        assert f"its lock file {lock}" in message and "time.sleep(60)" in message
    result = run("train", "--backend", "numpy", "--out", str(tmp_path), "--overwrite", "--quiet")
    _one_line_error(result, f"another training (pid {sleeper.pid})", str(lock))
    assert lock.exists()


def test_a_lock_from_another_host_names_the_file_and_how_to_remove_it(tmp_path):
    from polylenet.rundir import LOCK

    lock = tmp_path / LOCK
    lock.write_text(json.dumps({"pid": 1, "start": 1, "host": "elsewhere.example"}))
    with pytest.raises(RunFolderError, match="locked by pid 1 on host elsewhere.example") as refused:
        _claim(tmp_path, overwrite=True)
    assert f"remove the lock file {lock} (rm {lock})" in str(refused.value) and lock.exists()


def test_a_lock_holding_no_usable_pid_is_stale(tmp_path):
    from polylenet.rundir import LOCK, claim_run_folder

    for text in ["99999999999999999999", '{"pid": 99999999999999999999}', "-5", "not a pid", "", '{"pid": "12"}',
                 "{" * 100_000, "\0\xff garbage"]:
        (tmp_path / LOCK).write_text(text)
        with claim_run_folder(tmp_path):
            assert str(os.getpid()) in (tmp_path / LOCK).read_text()
        assert not (tmp_path / LOCK).exists()


def test_a_lock_is_written_whole_and_released_only_by_its_owner(tmp_path):
    from polylenet.rundir import LOCK, claim_run_folder

    with claim_run_folder(tmp_path):
        ours = (tmp_path / LOCK).read_text()
        assert json.loads(ours)["pid"] == os.getpid()
        (tmp_path / LOCK).write_text(ours.replace(str(os.getpid()), "1"))  # taken over meanwhile
    assert (tmp_path / LOCK).exists()  # another's lock is left alone
    assert np.all([not p.name.endswith(".new") for p in tmp_path.iterdir()])
