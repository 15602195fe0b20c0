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
           "polylenet.onnxfile", "polylenet.comparison"]
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


ROOT = README.parent


def test_every_page_in_the_docs_nav_exists():
    config = (ROOT / "mkdocs.yml").read_text()
    nav = config[config.index("\nnav:\n"):]
    pages = re.findall(r"^\s+- (?:[^:\n]+: )?(\S+\.md)\s*$", nav, re.M)
    assert len(pages) >= 10, pages
    missing = [page for page in pages if not (ROOT / "docs" / page).is_file()]
    assert not missing, f"mkdocs.yml's nav names pages docs/ lacks: {missing}"


def test_the_readme_stays_a_few_screens():
    lines = len(README.read_text().splitlines())
    assert lines <= 150, f"README.md has {lines} lines: move the detail into a docs/ page"
