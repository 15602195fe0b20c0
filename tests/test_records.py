"""Records (polylenet train --record) and their merge (polylenet report): what merges, and what is
refused by name. Each record here is made by a separate `polylenet train` process; the merge of
records made in the six backends' separate environments is tests/crossenv's (tox -e protocol)."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from polylenet.record import RecordError, merge_records, read_record

pytestmark = pytest.mark.skipif("numpy" not in os.environ.get("POLYLENET_TEST_BACKENDS", "numpy").split(","),
                                reason="the oracle's records: the core env's")

PROTOCOL = ["--epochs", "1", "--train-subset", "256", "--test-subset", "100", "--dropout", "shared"]


def train_record(out, *extra):
    cmd = [sys.executable, "-m", "polylenet", "train", "--backend", "numpy", "--record", "--quiet",
           "--out", str(out), *PROTOCOL, *extra]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("records")
    return {"base": train_record(root / "base"), "lr": train_record(root / "lr", "--lr", "0.5"),
            "spec": train_record(root / "spec", "--spec", "lenet-relu")}


def copy(record, tmp_path, name, edit=None):
    folder = tmp_path / name
    shutil.copytree(record, folder)
    if edit:
        data = json.loads((folder / "record.json").read_text())
        edit(data)
        (folder / "record.json").write_text(json.dumps(data))
    return folder


def cli(*args):
    return subprocess.run([sys.executable, "-m", "polylenet", *map(str, args)], capture_output=True, text=True)


def test_a_record_holds_what_a_report_needs(records):
    r = read_record(records["base"])
    assert r.backend == "numpy" and r.spec["name"] == "lenet5"
    assert r.protocol == {"lr": 0.9, "batch_size": 256, "epochs": 1, "seed": 0, "dataset": "fashion-mnist",
                          "train_subset": 256, "test_subset": 100, "max_steps": None, "dropout": "shared"}
    assert set(r.run) == {"compiled", "eval_batch_size"}
    assert len(r.data["arrays_sha256"]) == 64 and len(r.data["files_sha256"]) == 4
    assert r.versions["numpy"] == np.__version__ and r.machine["cpu_count"] == os.cpu_count()
    assert len(r.history["step_losses"]) == 1 and r.seconds > 0
    with np.load(r.logits) as logits:
        assert logits["initial"].shape == logits["trained"].shape == (100, 10)


def test_report_merges_records_into_compares_report(records, tmp_path):
    out = tmp_path / "merged"
    done = cli("report", records["base"], "--out", out)
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["spec"] == "lenet5" and report["settings"]["lr"] == 0.9
    assert list(report["results"]) == ["numpy"] and report["results"]["numpy"]["status"] == "ok"
    assert "Every backend ran on one machine" in (out / "report.md").read_text()


def test_a_folder_of_records_is_expanded(records, tmp_path):
    folder = tmp_path / "artifacts"
    copy(records["base"], folder, "numpy")
    merge_records([folder], tmp_path / "out")
    assert json.loads((tmp_path / "out" / "report.json").read_text())["results"]["numpy"]["status"] == "ok"


@pytest.mark.parametrize("other, message", [
    ("lr", "records with a different protocol cannot be merged: protocol.lr: 0.9 in {base} (numpy), 0.5 in {other} "
           "(torch); make them with the same protocol"),
    ("spec", "records with a different spec cannot be merged: spec.layers[1].fn: 'sigmoid' in {base} (numpy), "
             "'relu' in {other} (torch)"),
])
def test_records_of_another_protocol_or_spec_are_refused_by_name(records, tmp_path, other, message):
    renamed = copy(records[other], tmp_path, "other", lambda d: d.update(backend="torch"))
    with pytest.raises(RecordError) as caught:
        merge_records([records["base"], renamed], tmp_path / "out")
    assert str(caught.value).startswith(message.format(base=records["base"], other=renamed))
    assert not (tmp_path / "out").exists()


def test_records_of_other_data_are_refused_and_an_other_encoding_is_not(records, tmp_path):
    def other_content(d):
        d.update(backend="torch")
        d["data"]["arrays_sha256"] = "0" * 64

    def other_encoding(d):
        d.update(backend="torch")
        d["data"]["files_sha256"] = {name: "f" * 64 for name in d["data"]["files_sha256"]}

    refusal = r"records with different data cannot be merged: data.arrays_sha256: '[0-9a-f]{64}' in "
    with pytest.raises(RecordError, match=refusal):
        merge_records([records["base"], copy(records["base"], tmp_path, "content", other_content)], tmp_path / "a")
    merge_records([records["base"], copy(records["base"], tmp_path, "encoding", other_encoding)], tmp_path / "b")


def test_two_records_of_one_backend_are_refused(records, tmp_path):
    twin = copy(records["base"], tmp_path, "twin")
    done = cli("report", records["base"], twin, "--out", tmp_path / "out")
    assert done.returncode == 2
    assert done.stderr.strip() == \
        f"polylenet: error: two records of numpy: {records['base']} and {twin}; pass one of them"


@pytest.mark.parametrize("damage, message", [
    ("no record", "{folder} holds no record.json: not a polylenet record; make one with polylenet train --backend B "
                  "--record --out {folder}"),
    ("newer", "{folder}/record.json: record version 2, this polylenet reads version 1; upgrade polylenet to merge it"),
    ("other logits", "{folder}/logits.npz: SHA-256 "),
    ("no logits", "{folder}/logits.npz: cannot read the record's logits (No such file or directory); copy the whole "
                  "record folder"),
    ("not json", "{folder}/record.json: not readable as JSON"),
])
def test_a_damaged_record_is_refused_with_what_is_wrong(records, tmp_path, damage, message):
    folder = copy(records["base"], tmp_path, "damaged")
    if damage == "no record":
        (folder / "record.json").unlink()
    elif damage == "newer":
        data = json.loads((folder / "record.json").read_text())
        (folder / "record.json").write_text(json.dumps({**data, "version": 2}))
    elif damage == "other logits":
        shutil.copy(records["lr"] / "logits.npz", folder / "logits.npz")
    elif damage == "no logits":
        (folder / "logits.npz").unlink()
    else:
        (folder / "record.json").write_text("{")
    done = cli("report", folder, "--out", tmp_path / "out")
    assert done.returncode == 2
    assert done.stderr.startswith("polylenet: error: " + message.format(folder=folder)), done.stderr


def test_a_record_is_written_from_a_source_checkout_where_the_adapters_are_not_installed(tmp_path):
    """As compare's children run in CI: ``python -m polylenet`` in the repository root of a wheel
    env, where polylenet/ is the checkout's and backends/ is not installed as polylenet.backends
    (the registry maps it; the record's source digest must find it there too)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import sys\n"
            "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]\n"
            f"sys.path.insert(0, {root!r})\n"
            "for name in [m for m in sys.modules if m.startswith('polylenet')]: del sys.modules[name]\n"
            "from importlib.util import find_spec\n"
            "assert find_spec('polylenet.backends') is None, 'the adapters are importable: nothing to test'\n"
            "from polylenet.provenance import source_digest\n"
            "print(len(source_digest()))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "16", proc.stderr
