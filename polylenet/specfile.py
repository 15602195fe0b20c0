"""Spec files: load a named variant or a JSON/YAML spec file, and save one atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Union

from polylenet.atomic import atomic_write
from polylenet.errors import SpecError
from polylenet.spec import VARIANTS, Spec, spec_from_dict


def load_spec(name_or_path: Union[str, os.PathLike, Spec] = "lenet5") -> Spec:
    """Return a named variant, or load a spec from a ``.json``/``.yaml`` file.

    >>> load_spec("lenet5").layers[0]
    Conv2D(out_channels=6, kernel=5, stride=1, padding=2, bias=True, type='conv2d')
    """
    if isinstance(name_or_path, Spec):  # validated when it was made
        return name_or_path
    key = str(name_or_path)
    if key in VARIANTS:
        return VARIANTS[key]
    path = Path(key)
    if not path.suffix:
        raise SpecError(f"unknown spec {key!r}: use one of {sorted(VARIANTS)} or a path to a "
                        ".json/.yaml spec file")
    if not path.is_file():
        raise SpecError(f"spec file {key!r} does not exist (named variants: {sorted(VARIANTS)})")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read spec file {key!r}: {exc}") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            data = _load_yaml(text, key)
        else:
            data = json.loads(text)
        return spec_from_dict(data, key)
    except RecursionError:
        raise SpecError(f"spec file {key!r} is nested too deeply to be a spec") from None
    except ValueError as exc:
        if isinstance(exc, SpecError):
            raise
        raise SpecError(f"spec file {key!r} is not valid {path.suffix[1:].upper()}: {exc}") from None


def _load_yaml(text: str, source: str) -> Any:
    try:
        import yaml
    except ImportError:
        raise SpecError(f"{source}: reading YAML specs needs PyYAML: pip install pyyaml "
                        "(or save the spec as .json)") from None
    try:
        return yaml.safe_load(text)  # never constructs Python objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if isinstance(exc, yaml.composer.ComposerError) and "single document" in str(exc):
            problem = "it holds several YAML documents; a spec file holds one"
        elif isinstance(exc, yaml.constructor.ConstructorError):
            problem = f"unsupported YAML tag ({problem}); a spec is plain mappings, lists, numbers and strings"
        raise SpecError(f"{source}: not a valid spec file{where}: {problem}") from None


def save_spec(spec: Spec, path: Union[str, os.PathLike]) -> Path:
    """Write ``spec`` as JSON (or YAML for .yaml/.yml) atomically; :func:`load_spec` reads it back."""
    path = Path(path)
    data = spec.to_dict()
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise SpecError("writing YAML specs needs PyYAML: pip install pyyaml") from None
        text = yaml.safe_dump(data, sort_keys=False)
    else:
        text = json.dumps(data, indent=2) + "\n"
    atomic_write(path, text.encode())
    return path
