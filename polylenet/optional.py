"""Optional packages a feature needs: one check, one message naming the extra that installs it."""

from __future__ import annotations

import importlib.util
import sys

from polylenet.errors import MissingDependency


def has_matplotlib() -> bool:
    try:
        return importlib.util.find_spec("matplotlib") is not None
    except ImportError:  # an import hook that refuses it
        return False


def require_matplotlib(feature: str) -> None:
    """Raise :class:`MissingDependency` naming ``feature`` and the install command, before any work."""
    if not has_matplotlib():
        raise MissingDependency(f'{feature} needs matplotlib: pip install "polylenet[report]" '
                                f"(or {sys.executable} -m pip install matplotlib)")
