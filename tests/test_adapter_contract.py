"""The adapter contract (polylenet.adapter.Adapter), checked without importing any framework:
every module in backends/ defines the same names in the same order with the Protocol's
parameters, and a third-party backend written from the Protocol passes the conformance suite."""

import ast
import inspect
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from polylenet.adapter import Adapter, check_adapter, required_functions
from polylenet.errors import BackendError

ROOT = Path(__file__).resolve().parent.parent
ADAPTERS = sorted(p for p in (ROOT / "backends").glob("*.py") if not p.name.startswith("_"))  # _nhwc.py: a helper


def _top_level(path):
    """(constants assigned, {function: parameter names}, functions in order) of a module's source."""
    tree = ast.parse(path.read_text())
    constants = {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
                 if isinstance(t, ast.Name)}
    functions = {node.name: [a.arg for a in node.args.args] for node in tree.body
                 if isinstance(node, ast.FunctionDef) and not node.name.startswith("_")}
    return constants, functions, list(functions)


def _capabilities(path):
    """The strings in the module's ``CAPABILITIES = frozenset({...})``."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "CAPABILITIES" for t in node.targets):
            return frozenset(c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant))
    return frozenset()


@pytest.mark.parametrize("path", ADAPTERS, ids=lambda p: p.stem)
def test_every_adapter_defines_the_protocol_in_order(path):
    constants, functions, order = _top_level(path)
    assert {"NAME", "CAPABILITIES"} <= constants, f"{path.name} must set NAME and CAPABILITIES"
    expected = list(required_functions(_capabilities(path)))
    public = [name for name in order if name in expected]
    assert public == expected, f"{path.name} defines {public}; the contract's order is {expected}"
    for name in expected:
        wanted = list(inspect.signature(getattr(Adapter, name)).parameters)[1:]
        assert functions[name] == wanted, f"{path.name}: {name}({', '.join(functions[name])}) should take {wanted}"


def test_check_adapter_names_what_is_missing():
    module = types.ModuleType("half_done")
    module.NAME, module.CAPABILITIES = "half", frozenset({"inference", "training"})
    module.version = lambda: "0"
    module.forward = lambda model, x: x  # the spec is not passed in
    with pytest.raises(BackendError, match=r"build\(\) is missing.*forward\(model, x\) should take "
                                           r"\(model, spec, x\).*trainer\(\) is missing"):
        check_adapter(module, "half")
    module.CAPABILITIES = {"fly"}
    with pytest.raises(BackendError, match="CAPABILITIES must be a frozenset"):
        check_adapter(module, "half")


@pytest.mark.skipif("numpy" not in os.environ.get("POLYLENET_TEST_BACKENDS", "numpy").split(","),
                    reason="needs no framework: runs once, in the core env (it tests numpy)")
def test_third_party_backend_passes_the_conformance_suite():
    """tests/plugin holds an inference-only NumPy backend registered through the
    polylenet.backends entry-point group; the unchanged suite runs on it in a fresh interpreter."""
    plugin = str(ROOT / "tests" / "plugin")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([plugin, os.environ.get("PYTHONPATH", "")]),
           "POLYLENET_TEST_BACKENDS": "im2col"}
    env.pop("POLYLENET_EXCHANGE_DIR", None)  # its exports are not for the other environments
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not full", "-rs",
               str(ROOT / "tests" / "conformance")]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "im2col declares CAPABILITIES ['inference']" in proc.stdout  # training tests say why not
    passed = int(proc.stdout.strip().splitlines()[-1].split(" passed")[0].split()[-1])
    assert passed >= 30, proc.stdout[-2000:]
