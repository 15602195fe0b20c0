"""The protocol's moving parts on the NumPy backend and a small synthetic data set."""

import json
from dataclasses import replace

import numpy as np
import pytest

import polylenet
from polylenet import CheckpointError, History, TrainConfig, TrainingDiverged
from polylenet.data import Dataset
from polylenet.training import batch_order, fixed_subset


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    y = (np.arange(96) % 10).astype(np.int32)
    x = (rng.random((96, 28, 28)) * 60).astype(np.uint8)
    for i, label in enumerate(y):  # a bright bar whose row encodes the class
        x[i, 2 + 2 * label:4 + 2 * label, 4:24] = 255
    return Dataset("tiny", x[:64], y[:64], x[64:], y[64:], source="memory")


def test_batch_order_is_a_function_of_seed_and_epoch():
    a = batch_order(1000, 256, seed=0, epoch=0)
    assert [len(b) for b in a] == [256, 256, 256, 232]
    assert sorted(np.concatenate(a).tolist()) == list(range(1000))
    assert all(np.array_equal(x, y) for x, y in zip(a, batch_order(1000, 256, seed=0, epoch=0)))
    assert not np.array_equal(a[0], batch_order(1000, 256, seed=0, epoch=1)[0])
    assert not np.array_equal(a[0], batch_order(1000, 256, seed=1, epoch=0)[0])


def test_subset_is_fixed_whatever_the_seed():
    s = fixed_subset(60000, 10000)
    assert len(s) == 10000 and len(set(s.tolist())) == 10000
    assert np.array_equal(s, fixed_subset(60000, 10000))
    assert np.array_equal(fixed_subset(50, None), np.arange(50))


def test_train_records_history_and_checkpoints(tiny, tmp_path):
    config = TrainConfig(lr=0.1, batch_size=16, epochs=4)
    h = polylenet.train("lenet-relu", backend="numpy", config=config, data=tiny, out_dir=tmp_path, progress=False)
    assert [e.epoch for e in h.epochs] == [1, 2, 3, 4] and len(h.step_losses) == 16
    assert h.config["lr"] == 0.1 and h.versions["numpy"] == np.__version__ and h.backend == "numpy"
    assert h.epochs[-1].train_loss < 0.5 * h.epochs[0].train_loss and h.final.test_acc > 0.9
    expected = [f"checkpoint-epoch0{i}.npz" for i in (1, 2, 3, 4)] + ["history.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == expected
    assert History.load(tmp_path / "history.json") == h
    json.dumps(h.to_dict())  # serialisable as it is
    weights, meta = polylenet.load_checkpoint(tmp_path / "checkpoint-epoch04.npz")
    assert meta["epoch"] == 4 and set(weights) == set(polylenet.init_weights("lenet-relu"))


def test_resume_matches_uninterrupted_exactly(tiny, tmp_path):
    config = TrainConfig(lr=0.5, batch_size=16, epochs=3, seed=4)
    straight = polylenet.train("lenet-relu", backend="numpy", config=config, data=tiny, out_dir=tmp_path / "a",
                               progress=False)
    polylenet.train("lenet-relu", backend="numpy", config=TrainConfig(lr=0.5, batch_size=16, epochs=1, seed=4),
                    data=tiny, out_dir=tmp_path / "b", progress=False)
    resumed = polylenet.train("lenet-relu", backend="numpy", config=config, data=tiny, out_dir=tmp_path / "b",
                              resume_from=tmp_path / "b" / "checkpoint-epoch01.npz", progress=False)
    assert resumed.step_losses == straight.step_losses
    a, _ = polylenet.load_checkpoint(tmp_path / "a" / "checkpoint-epoch03.npz")
    b, _ = polylenet.load_checkpoint(tmp_path / "b" / "checkpoint-epoch03.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_resume_refuses_other_settings(tiny, tmp_path):
    polylenet.train("lenet-relu", backend="numpy", config=TrainConfig(lr=0.5, batch_size=16, epochs=1),
                    data=tiny, out_dir=tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="only epochs may differ"):
        polylenet.train("lenet-relu", backend="numpy", config=TrainConfig(lr=0.1, batch_size=16, epochs=2),
                        data=tiny, resume_from=tmp_path / "checkpoint-epoch01.npz", progress=False)
    with pytest.raises(CheckpointError, match="saved for spec 'lenet-relu', which differs from 'lenet5'"):
        polylenet.train("lenet5", backend="numpy", config=TrainConfig(lr=0.5, batch_size=16, epochs=2),
                        data=tiny, resume_from=tmp_path / "checkpoint-epoch01.npz", progress=False)


def test_divergence_names_epoch_and_batch(tiny):
    message = (r"numpy: training loss (became (nan|inf)|blew up to \S+ \(over 50 x ln\(10\)\)) "
               r"at epoch \d+, batch \d+ \(lr 1e\+30\)")
    with pytest.raises(TrainingDiverged, match=message):
        polylenet.train("lenet-relu", backend="numpy", config=TrainConfig(lr=1e30, batch_size=16, epochs=5),
                        data=tiny, progress=False)


def test_max_steps_stops_early(tiny):
    h = polylenet.train("lenet5", backend="numpy", config=TrainConfig(batch_size=16, epochs=3, max_steps=5),
                        data=tiny, progress=False)
    assert len(h.step_losses) == 5 and len(h.epochs) == 2


def _tiny_run(tiny, out, **kwargs):
    config = TrainConfig(lr=0.5, batch_size=16, epochs=kwargs.pop("epochs", 1))
    return polylenet.train("lenet-relu", backend="numpy", config=config, data=tiny, out_dir=out, progress=False,
                           **kwargs)


def test_a_folder_holding_a_run_is_refused_and_left_intact(tiny, tmp_path):
    from polylenet.errors import RunFolderError

    _tiny_run(tiny, tmp_path, epochs=2)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(RunFolderError, match=r"already holds a run \(checkpoint-epoch01.npz.*--resume.*--overwrite"):
        _tiny_run(tiny, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # first run intact, no lock left
    _tiny_run(tiny, tmp_path, overwrite=True)  # replaces it whole: no epoch-2 checkpoint of the old run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-epoch01.npz", "history.json"]


def test_two_writers_and_bad_folders_are_refused_before_training(tiny, tmp_path):
    import os
    import subprocess
    import sys

    from polylenet.errors import RunFolderError
    from polylenet.rundir import LOCK

    busy = tmp_path / "busy"
    busy.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (busy / LOCK).write_text(str(sleeper.pid))
        with pytest.raises(RunFolderError, match=rf"another training \(pid {sleeper.pid}\) is writing to"):
            _tiny_run(tiny, busy)
    finally:
        sleeper.kill()
        sleeper.wait()
    _tiny_run(tiny, busy)  # the lock of a process that is gone is taken over
    assert not (busy / LOCK).exists()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(RunFolderError, match="is a file"):
        _tiny_run(tiny, a_file)
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "ro"
        locked.mkdir(mode=0o500)
        with pytest.raises(RunFolderError, match="cannot write"):
            _tiny_run(tiny, locked)


def test_a_blown_up_loss_stops_the_run(tiny):
    """Finite but exploding (lenet5 at lr 1e6 reaches 2.2e7 on Fashion-MNIST and never NaN)."""
    with pytest.raises(TrainingDiverged, match=r"blew up to .* at epoch 1, batch \d+ \(lr 1000000.0\)"):
        polylenet.train("lenet5", backend="numpy", config=TrainConfig(lr=1e6, batch_size=16, epochs=3), data=tiny,
                        progress=False)


def test_divergence_keeps_the_last_good_checkpoint_and_the_history(tiny, tmp_path, monkeypatch):
    from polylenet import training

    config = TrainConfig(lr=0.5, batch_size=16, epochs=3)
    run = dict(backend="numpy", data=tiny, out_dir=tmp_path, progress=False)
    polylenet.train("lenet-relu", config=replace(config, epochs=1), **run)
    good = (tmp_path / "checkpoint-epoch01.npz").read_bytes()
    monkeypatch.setattr(training, "BLOWN_UP", 1e-3)  # the next step's loss counts as blown up
    with pytest.raises(TrainingDiverged, match=r"at epoch 2, batch 1"):
        polylenet.train("lenet-relu", config=config, resume_from=tmp_path / "checkpoint-epoch01.npz", **run)
    assert (tmp_path / "checkpoint-epoch01.npz").read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-epoch01.npz", "history.json"]
    history = History.load(tmp_path / "history.json")
    assert "at epoch 2, batch 1" in history.stopped and len(history.step_losses) == 4  # epoch 1's steps


def test_bad_checkpoints_are_named_never_unpickled(tiny, tmp_path):
    import json
    import os

    polylenet.train("lenet-relu", backend="numpy", config=TrainConfig(lr=0.5, batch_size=16, epochs=1), data=tiny,
                    out_dir=tmp_path / "run", progress=False)
    path = tmp_path / "run" / "checkpoint-epoch01.npz"
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # not 0600 whatever the umask
    raw = path.read_bytes()
    for name, data in (("truncated", raw[: len(raw) // 2]), ("random", os.urandom(2000)),
                       ("flipped", raw[:100] + bytes([raw[100] ^ 0xFF]) + raw[101:])):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError, match="not a readable polylenet checkpoint|not a polylenet checkpoint"):
            polylenet.load_checkpoint(tmp_path / name)
    polylenet.save_checkpoint(tmp_path / "odd.npz", {}, {"epoch": "one"})
    with pytest.raises(CheckpointError, match="lacks an integer 'epoch'"):
        polylenet.load_checkpoint(tmp_path / "odd.npz")
    polylenet.save_checkpoint(tmp_path / "partial.npz", {}, {"epoch": 1})
    with pytest.raises(CheckpointError, match=r"lacks \['spec', 'config', 'history'\]"):
        polylenet.train("lenet-relu", backend="numpy", config=TrainConfig(lr=0.5, batch_size=16, epochs=2),
                        data=tiny, resume_from=tmp_path / "partial.npz", progress=False)
    with pytest.raises(CheckpointError, match="is at epoch 1, and --epochs is 1: nothing is left"):
        polylenet.train("lenet-relu", backend="numpy", config=TrainConfig(lr=0.5, batch_size=16, epochs=1),
                        data=tiny, resume_from=path, out_dir=tmp_path / "run", progress=False)
    assert json.loads(json.dumps(polylenet.load_checkpoint(path)[1]["epoch"])) == 1


def _umask():
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_set_weights_none_is_a_clear_error():
    with pytest.raises(polylenet.WeightsError, match="must be a mapping of neutral arrays"):
        polylenet.set_weights(polylenet.build("lenet5", backend="numpy"), None)


def test_a_spec_built_with_lists_resumes(tiny, tmp_path):
    layers = [polylenet.flatten(), polylenet.dense(10)]
    spec = polylenet.Spec("mine", layers, input_shape=[1, 28, 28])
    assert spec == polylenet.Spec("mine", tuple(layers), input_shape=(1, 28, 28))
    config = TrainConfig(lr=0.5, batch_size=16, epochs=2)
    polylenet.train(spec, backend="numpy", config=replace(config, epochs=1), data=tiny, out_dir=tmp_path,
                    progress=False)
    resumed = polylenet.train(spec, backend="numpy", config=config, data=tiny, out_dir=tmp_path,
                              resume_from=tmp_path / "checkpoint-epoch01.npz", progress=False)
    assert [e.epoch for e in resumed.epochs] == [1, 2]


def test_a_write_killed_half_way_leaves_the_old_file_and_no_partial_one(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from polylenet.rundir import claim_run_folder

    target = tmp_path / "checkpoint-epoch01.npz"
    target.write_bytes(b"the good one")
    code = ("import sys, time; from polylenet.atomic import atomic_write_with\n"
            "def write(f):\n    f.write(b'half'); f.flush(); print('writing', flush=True); time.sleep(60)\n"
            f"atomic_write_with({str(target)!r}, write)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "writing"
    child.send_signal(signal.SIGKILL)
    child.wait()
    time.sleep(0.05)
    assert target.read_bytes() == b"the good one"  # never replaced by the half-written file
    assert [p.name for p in tmp_path.glob(".*.tmp")]  # the partial file is only a hidden temporary
    with claim_run_folder(tmp_path, resuming=True):
        pass
    assert not list(tmp_path.glob(".*")), "the next run clears what the killed one left"
