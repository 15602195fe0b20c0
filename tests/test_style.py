"""The linter the project pins (backends/requirements/lint.txt; rules and the 120-character line
in pyproject.toml) finds nothing. The core tox env installs it; other envs skip this check."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_finds_nothing():
    pytest.importorskip("ruff", reason="the linter is installed in the core env (pip install 'polylenet[lint]')")
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
