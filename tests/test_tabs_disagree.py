"""docs/spec.md's figures for where d2l's tabs compute different functions (benchmarks/tabs_disagree.py)."""

import os
import sys
from pathlib import Path

import pytest

import polylenet

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from tabs_disagree import resnet_tabs  # noqa: E402

needs_data = pytest.mark.skipif(not os.environ.get("POLYLENET_DATA"), reason="POLYLENET_DATA is not set (tox sets it)")
pytestmark = pytest.mark.skipif("numpy" not in os.environ.get("POLYLENET_TEST_BACKENDS", "numpy").split(","),
                                reason="numpy only: runs once, in the core env")


@needs_data
def test_resnet18_tabs_differ_as_the_readme_says():
    images = polylenet.load_data("fashion-mnist", allow_download=False).test_images[:64, None] / 255
    figures = resnet_tabs(images.astype("float32"), "numpy")
    # Measured 2026-12-02 (`benchmarks/tabs_disagree.py --alexnet-images 0`, numpy; docs/spec.md's
    # table): the stem's outputs differ in 48.2% (by up to 0.432), the logits by up to 0.0333, 24.4%
    # of the largest, on init_weights(seed 0); both tabs predict the same class for all 64 images.
    largest, share = figures["blocks"]["b1"]
    assert share == pytest.approx(0.482, abs=0.001) and largest == pytest.approx(0.432, abs=0.001)
    assert figures["logits"] == pytest.approx(0.0333, abs=0.0001)
    assert figures["logits_relative"] == pytest.approx(0.244, abs=0.001)
    assert figures["same_prediction"] == 1.0
