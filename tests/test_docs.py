"""The examples in docstrings and in the README run as written."""

import doctest
import importlib
import re
from pathlib import Path

import pytest

import polylenet

MODULES = ["polylenet", "polylenet.spec", "polylenet.specfile", "polylenet.adapter", "polylenet.diff",
           "polylenet.shapes", "polylenet.weights", "polylenet.api",
           "polylenet.registry", "polylenet.data", "polylenet.checkpoint", "polylenet.training",
           "polylenet.onnxfile"]
README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_readme_api_example_runs_and_prints_its_table(capsys):
    if "torch" not in polylenet.available_backends():
        pytest.skip("the README's example builds a torch model")
    text = README.read_text()
    code = re.search(r"## The API\n\n```python\n(.*?)```", text, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert float(printed[0]) < 1e-5
    table = re.search(r"prints d2l's table, read off the built model:\n\n```\n(.*?)```", text, re.S).group(1)
    assert printed[1:] == table.strip().splitlines()
