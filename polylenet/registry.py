"""The backend registry: names, availability and lazy loading of the adapter modules."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, entry_points, packages_distributions, version
from pathlib import Path
from types import ModuleType
from typing import Optional

from polylenet.adapter import TRAINING, check_adapter
from polylenet.errors import BackendError, BackendUnavailable

DEFAULT_BACKEND = "torch"  # d2l's default tab; override with POLYLENET_BACKEND or backend=
ENV_VAR = "POLYLENET_BACKEND"
ENTRY_POINT_GROUP = "polylenet.backends"


@dataclass(frozen=True)
class BackendInfo:
    name: str
    module: str  # the adapter module, imported only when the backend is asked for
    framework: Optional[str]  # the framework's import name; None for the NumPy reference
    pip_name: Optional[str]  # what pip calls it, for messages
    extra: Optional[str] = None  # polylenet's extra that installs it, if not named after the backend
    trains: bool = True  # as its module's CAPABILITIES declare (a test checks they agree); known
    # without importing the framework, so compare can pick the backends to train


BUILTIN = {
    info.name: info
    for info in (
        BackendInfo("numpy", "polylenet.backends.numpy", None, None),
        BackendInfo("torch", "polylenet.backends.torch", "torch", "torch"),
        BackendInfo("tensorflow", "polylenet.backends.tensorflow", "tensorflow", "tensorflow-cpu"),
        BackendInfo("mxnet", "polylenet.backends.mxnet", "mxnet", "mxnet"),
        BackendInfo("paddle", "polylenet.backends.paddle", "paddle", "paddlepaddle"),
        BackendInfo("mindspore", "polylenet.backends.mindspore", "mindspore", "mindspore"),
        BackendInfo("jax", "polylenet.backends.jax", "flax", "jax, flax and optax"),
        BackendInfo("onnxruntime", "polylenet.backends.onnxruntime", "onnxruntime", "onnx and onnxruntime",
                    extra="onnx", trains=False),
    )
}

_loaded: dict[str, ModuleType] = {}


def _third_party() -> dict[str, BackendInfo]:
    found = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in BUILTIN:
            found[ep.name] = BackendInfo(ep.name, ep.value, None, None)
    return found


def known_backends() -> dict[str, BackendInfo]:
    """Every backend polylenet knows of, installed or not (built-ins, then entry points)."""
    return {**BUILTIN, **_third_party()}


def _installed(info: BackendInfo) -> bool:
    if info.framework is None:
        return True
    return importlib.util.find_spec(info.framework) is not None


def framework_version(name: str) -> Optional[str]:
    """The installed version of backend ``name``'s framework, read from the package metadata
    without importing it (``"torch 2.13.0"``, ``"flax 0.12.8"``); None when it is not installed,
    "" for the NumPy reference (no framework).

    >>> framework_version("numpy")
    ''
    """
    info = known_backends()[name]
    if info.framework is None:
        return ""
    if not _installed(info):
        return None
    for dist in packages_distributions().get(info.framework, []):
        try:
            return f"{dist} {version(dist)}"
        except PackageNotFoundError:
            continue
    return "installed (version unknown)"


def available_backends() -> list[str]:
    """Backends whose framework is installed in this environment, without importing any.

    >>> "numpy" in available_backends()
    True
    """
    return [name for name, info in known_backends().items() if _installed(info)]


def resolve_name(backend: Optional[str] = None) -> str:
    """``backend`` if given, else ``$POLYLENET_BACKEND``, else the default (``torch``)."""
    name = backend or os.environ.get(ENV_VAR) or DEFAULT_BACKEND
    known = known_backends()
    if name not in known:
        raise BackendError(f"unknown backend {name!r}; known backends: {', '.join(known)}")
    return name


def install_hint(name: str) -> str:
    """The command that makes backend ``name`` available."""
    info = known_backends().get(name)
    extra = info.extra if info and info.extra else name
    return f'pip install "polylenet[{extra}]"  (or: tox -e {"core" if extra == "onnx" else name})'


def adapters_package() -> ModuleType:
    """``polylenet.backends``: installed from backends/, or found beside polylenet/ in a checkout."""
    try:
        return importlib.import_module("polylenet.backends")
    except ModuleNotFoundError:
        pass
    # Run from a source checkout (the repo root on sys.path): backends/ sits beside polylenet/.
    folder = Path(__file__).resolve().parent.parent / "backends"
    if not (folder / "__init__.py").is_file():
        raise BackendError("polylenet.backends is missing: reinstall polylenet (pip install polylenet)")
    spec = importlib.util.spec_from_file_location(
        "polylenet.backends", folder / "__init__.py", submodule_search_locations=[str(folder)])
    package = importlib.util.module_from_spec(spec)
    sys.modules["polylenet.backends"] = package
    spec.loader.exec_module(package)
    return package


def get_backend(backend: Optional[str] = None) -> ModuleType:
    """The adapter module for ``backend``, importing its framework on first use and checking it
    against :class:`polylenet.adapter.Adapter`."""
    if backend is not None and backend in _loaded:  # every forward/get_weights call comes here
        return _loaded[backend]
    name = resolve_name(backend)
    if name in _loaded:
        return _loaded[name]
    info = known_backends()[name]
    if not _installed(info):
        raise BackendUnavailable(f"backend {name!r} needs {info.pip_name}, which is not installed "
                                 f"in this environment; install it with: {install_hint(name)}")
    if info.module.startswith("polylenet.backends."):
        adapters_package()
    module = importlib.import_module(info.module.split(":")[0])
    check_adapter(module, name)
    _loaded[name] = module
    return module


def can_train(backend: str) -> bool:
    """Whether ``backend`` declares the training capability (imports its adapter)."""
    return TRAINING in get_backend(backend).CAPABILITIES
