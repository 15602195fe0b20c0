"""What no single environment can check: every backend's results side by side.

Runs in the last tox env, ``protocol`` (after every backend's own env), which first trains the
full d2l protocol on all six frameworks with ``polylenet compare --jobs 2`` into
$POLYLENET_PROTOCOL_RUN, then runs this file. It reads that report and the weights every env
exported into $POLYLENET_EXCHANGE_DIR (tests/conformance/test_exchange.py), and fails, not
skips, when a backend's results are missing. Elsewhere (no $POLYLENET_PROTOCOL_RUN) it skips.
"""

import json
import os
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from test_exchange import exports, probe

import polylenet
from cases import batches, conformance_weights
from polylenet.provenance import source_digest
from polylenet.runner import FRAMEWORKS

RUN = os.environ.get("POLYLENET_PROTOCOL_RUN")
EXCHANGE = os.environ.get("POLYLENET_EXCHANGE_DIR")
pytestmark = pytest.mark.skipif(not RUN, reason="runs in `tox -e protocol` (it sets POLYLENET_PROTOCOL_RUN), "
                                                "after every backend's env")

# The README's figures (and docs/getting-started.md's) for the full lenet5 protocol (lr 0.9, batch
# 256, 10 epochs, seed 0), the same on all six backends to the 4 decimals it prints.
README_FINAL = {"train_loss": 0.4660, "train_acc": 0.8251, "test_acc": 0.8045}
# Measured on a fresh clone's `bash .ci/run` (2026-12-01, this 2-core Zen 3 machine): the six
# backends' final train loss 0.465955 spans 2.7e-7; train acc 0.825083 and test acc 0.804500 are
# identical on all six. Bounds: the loss at ~4x its span; an accuracy may move by one image in
# 10,000 (1e-4) before this fails.
PAIR_BOUNDS = {"train_loss": 1e-6, "train_acc": 1e-4, "test_acc": 1e-4}
# Logits on the 10,000 test images: 1.19e-6 apart at the shared start, 1.30e-4 after 2,350 SGD
# steps (that run; 1.26e-4 to 1.31e-4 in the runs of 2026-11-23; docs/getting-started.md: 1.3e-4).
INITIAL_LOGITS_BOUND = 1e-5
TRAINED_LOGITS_BOUND = 2.5e-4


@pytest.fixture(scope="module")
def report():
    path = Path(RUN) / "report.json"
    assert path.is_file(), f"{path} is missing: the protocol env's compare run did not write its report"
    return json.loads(path.read_text())


def finals(report):
    return {b: r["history"]["epochs"][-1] for b, r in report["results"].items() if r["status"] == "ok"}


def test_every_framework_trained_the_full_protocol(report):
    settings = report["settings"]
    assert (settings["spec"], settings["epochs"], settings["lr"], settings["batch_size"]) == ("lenet5", 10, 0.9, 256)
    assert settings["train_subset"] is None
    problems = {b: r.get("error") or r.get("reason") for b, r in report["results"].items() if r["status"] != "ok"}
    assert not problems, problems
    assert sorted(report["results"]) == sorted(FRAMEWORKS)
    assert all(len(r["history"]["step_losses"]) == 2350 for r in report["results"].values())


@pytest.mark.parametrize("key", sorted(README_FINAL))
def test_every_backend_ends_at_the_readme_figures(report, key):
    got = {b: round(f[key], 4) for b, f in finals(report).items()}
    assert all(abs(v - README_FINAL[key]) <= 1e-4 for v in got.values()), (key, README_FINAL[key], got)


@pytest.mark.parametrize("key", sorted(PAIR_BOUNDS))
def test_backends_end_at_the_same_numbers(report, key):
    ends = finals(report)
    for a, b in combinations(sorted(ends), 2):
        assert abs(ends[a][key] - ends[b][key]) <= PAIR_BOUNDS[key], (key, a, ends[a][key], b, ends[b][key])


def test_logits_agree_across_every_pair(report):
    pairs = report["logits"]["pairs"]
    assert len(pairs) == len(FRAMEWORKS) * (len(FRAMEWORKS) - 1) // 2
    for p in pairs:
        assert p["initial_max_abs_diff"] <= INITIAL_LOGITS_BOUND, p
        assert p["trained_max_abs_diff"] <= TRAINED_LOGITS_BOUND, p


# ---- the weights every env exported (one SGD step from the conformance weights) --------------

EXPORTERS = sorted({*FRAMEWORKS, "numpy"})


@pytest.fixture(scope="module")
def exported():
    assert EXCHANGE, "POLYLENET_EXCHANGE_DIR is not set (tox sets it)"
    found = {}
    for path in exports(EXCHANGE, source_digest()):
        backend, variant = path.stem.split("-", 1)
        with np.load(path, allow_pickle=False) as data:
            found[backend, variant] = ({k.split(":", 1)[1]: data[k] for k in data.files if k.startswith("weight:")},
                                       data["logits"])
    return found


@pytest.mark.parametrize("variant", sorted(polylenet.spec.LENETS))
def test_every_environment_exported_this_source(exported, variant):
    missing = [b for b in EXPORTERS if (b, variant) not in exported]
    assert not missing, (f"no {variant} export of source {source_digest()} from {missing} in {EXCHANGE}: "
                         f"run their tox envs (tox -e {','.join(missing)}) before this one")


@pytest.mark.parametrize("variant", sorted(polylenet.spec.LENETS))
def test_one_step_on_every_backend_gives_the_oracles_weights_and_logits(exported, variant):
    """Each env's step from the same weights on the same batch, against the oracle's step here;
    then the oracle's logits on that env's weights against the logits the env computed."""
    spec = polylenet.load_spec(variant)
    oracle = polylenet.build(spec, backend="numpy", weights=conformance_weights(spec))
    polylenet.trainer(oracle, lr=0.9)(*batches(spec, count=1, seed=7)[0])
    expected = polylenet.get_weights(oracle)
    for backend in EXPORTERS:
        weights, logits = exported[backend, variant]
        for key in expected:  # the conformance suite's bound for the weights after SGD steps
            assert np.max(np.abs(weights[key] - expected[key])) <= 1e-4, (backend, variant, key)
        model = polylenet.build(spec, backend="numpy", weights=weights)
        assert np.max(np.abs(polylenet.forward(model, probe(spec)) - logits)) <= 1e-5, (backend, variant)


def test_the_six_environments_records_merge_into_compares_report(report, tmp_path):
    """compare's report is the merge of its children's records: `polylenet report` on the six
    records (each written by a separate process in its own environment, numpy 1.23 to 2.4) gives
    the same report, as a CI matrix's final job makes it from records made on other machines."""
    from polylenet.record import merge_records, read_record, record_folders

    folders = record_folders([RUN])
    records = [read_record(f) for f in folders]
    assert sorted(r.backend for r in records) == sorted(FRAMEWORKS)
    assert len({r.versions["numpy"] for r in records}) > 1  # separate environments, not one
    merged = json.loads((merge_records(folders, tmp_path).parent / "report.json").read_text())
    for key in ("settings", "logits", "drift"):
        assert merged[key] == report[key], key
    for backend, result in report["results"].items():
        assert {k: v for k, v in merged["results"][backend].items() if k != "wall_seconds"} == \
            {k: v for k, v in result.items() if k not in ("python", "wall_seconds")}, backend
