"""The cross-environment checks share the conformance suite's cases (weights, batches, probe)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "conformance"))
