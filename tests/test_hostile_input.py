"""Bad input, tried as a new user would: every case is one `polylenet: error:` line, exit 2, and
no traceback (without --debug)."""

import gzip
import json
import struct
import subprocess
import sys

import numpy as np
import pytest
from test_data import make_dataset

import polylenet
from polylenet.errors import ConfigError


def run(*args):
    return subprocess.run([sys.executable, "-m", "polylenet", *args], capture_output=True, text=True)


def _idx(path, code, dims, payload):
    path.write_bytes(gzip.compress(struct.pack(">HBB", 0, code, len(dims)) + struct.pack(f">{len(dims)}I", *dims)
                                   + payload))


def _data(tmp_path, damage=None):
    root = tmp_path / "data"
    make_dataset(root / "fashion-mnist", train=32, test=16)
    folder = root / "fashion-mnist"
    if damage == "negative label":  # int8 labels (IDX type 0x09) with a -1
        labels = np.r_[np.arange(31) % 10, -1].astype(np.int8)
        _idx(folder / "train-labels-idx1-ubyte.gz", 0x09, (32,), labels.tobytes())
    elif damage == "float images":
        _idx(folder / "train-images-idx3-ubyte.gz", 0x0D, (32, 28, 28), np.ones((32, 28, 28), ">f4").tobytes())
    elif damage == "absurd dims":
        _idx(folder / "train-images-idx3-ubyte.gz", 0x08, (65536, 65536, 65536, 65536), b"\0" * 64)
    return str(root)


def _spec(tmp_path, text, suffix=".json"):
    path = tmp_path / f"spec{suffix}"
    path.write_text(text)
    return str(path)


TRAIN = ["train", "--backend", "numpy", "--quiet", "--batch-size", "16", "--epochs", "1"]
HUGE_DENSE = {"layers": [{"type": "flatten"}, {"type": "dense", "units": 10**12}, {"type": "dense", "units": 10}]}
HUGE_CONV = {"layers": [{"type": "conv2d", "out_channels": 10**26, "kernel": 3}, {"type": "flatten"},
                        {"type": "dense", "units": 10}]}
FIVE_CLASSES = {"num_classes": 5, "layers": [{"type": "flatten"}, {"type": "dense", "units": 5}]}


def _train(*extra, damage=None):
    return lambda t: TRAIN + ["--data-dir", _data(t, damage), *extra]


def _shapes(text, suffix=".json"):
    return lambda t: ["shapes", "--spec", _spec(t, text, suffix)]


CASES = {
    "epochs -1": (_train("--epochs", "-1"), "epochs must be a whole number >= 1"),
    "epochs 0": (_train("--epochs", "0"), "epochs must be a whole number >= 1"),
    "lr 0": (_train("--lr", "0"), "lr must be a positive finite number"),
    "lr nan": (_train("--lr", "nan"), "lr must be a positive finite number"),
    "batch 0": (_train("--batch-size", "0"), "batch_size must be"),
    "subset -10": (_train("--train-subset", "-10"), "train_subset must be"),
    "data-dir a file": (lambda t: TRAIN + ["--data-dir", "/etc/passwd"], "/etc/passwd: is a file, not a folder"),
    "data-dir empty": (lambda t: TRAIN + ["--data-dir", str(t)], "no fashion-mnist data set there (missing"),
    "negative label": (_train(damage="negative label"),
                       "train-labels-idx1-ubyte.gz has label -1; fashion-mnist labels are 0 to 9"),
    "float images": (_train(damage="float images"), "holds float32 values; images must be uint8"),
    "absurd dims": (_train(damage="absurd dims"), "IDX header says (65536, 65536, 65536, 65536)"),
    "yaml python tag": (_shapes('!!python/object/apply:os.system ["echo hi"]\n', ".yaml"),
                        "at line 1: unsupported YAML tag"),
    "yaml documents": (_shapes("name: a\n---\nname: b\n", ".yaml"), "several YAML documents"),
    "yaml syntax": (_shapes("layers: [\n", ".yaml"), "not a valid spec file at line 2"),
    "json nested 200k deep": (_shapes("[" * 200000 + "]" * 200000), "nested too deeply"),
    "type as a list": (_shapes(json.dumps({"layers": [{"type": ["conv2d"]}]})), "unknown layer type ['conv2d']"),
    "huge dense": (_shapes(json.dumps(HUGE_DENSE)), "795,000,000,000,010 parameters, over the limit of 100,000,000"),
    "huge conv": (_shapes(json.dumps(HUGE_CONV)), "parameters, over the limit"),
    "num_classes 5 on 10 classes": (lambda t: _train("--spec", _spec(t, json.dumps(FIVE_CLASSES)))(t),
                                    "has num_classes=5, but fashion-mnist has labels up to 9"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_clear_line(case, tmp_path, monkeypatch):
    monkeypatch.delenv("POLYLENET_DATA", raising=False)
    args, message = CASES[case]
    result = run(*args(tmp_path))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("polylenet: error:"), result.stderr
    assert message in lines[0], lines[0]


def test_train_config_is_validated_in_python_too():
    with pytest.raises(ConfigError, match="epochs must be"):
        polylenet.TrainConfig(epochs=0)
    with pytest.raises(ConfigError, match="max_steps must be"):
        polylenet.TrainConfig(max_steps=True)
    assert polylenet.TrainConfig(lr=1).lr == 1  # an int lr is fine


def test_spec_limits_can_be_raised(monkeypatch):
    layers = (polylenet.flatten(), polylenet.dense(10))  # 120,000,010 parameters
    with pytest.raises(polylenet.SpecError, match=r"120,000,010 parameters.*POLYLENET_MAX_PARAMETERS"):
        polylenet.Spec("big", layers, input_shape=(1, 2000, 6000))
    monkeypatch.setenv("POLYLENET_MAX_PARAMETERS", str(2 * 10**8))
    assert polylenet.Spec("big", layers, input_shape=(1, 2000, 6000)).table[-1][-1] == (1, 10)
