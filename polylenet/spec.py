"""The framework-neutral LeNet spec: a small layer vocabulary, named variants, JSON/YAML files.

A spec is plain data. Shapes are inferred in :mod:`polylenet.shapes`; every backend compiles
the same spec into its framework's own layers.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Union

from polylenet.atomic import atomic_write
from polylenet.errors import SpecError

ACTIVATIONS = ("sigmoid", "relu", "tanh")
POOL_KINDS = ("max", "avg")


@dataclass(frozen=True)
class Conv2D:
    out_channels: int
    kernel: int
    stride: int = 1
    padding: int = 0
    type: str = field(default="conv2d", init=False)


@dataclass(frozen=True)
class Pool2D:
    kind: str
    size: int
    stride: int
    type: str = field(default="pool2d", init=False)


@dataclass(frozen=True)
class Activation:
    fn: str
    type: str = field(default="activation", init=False)


@dataclass(frozen=True)
class Flatten:
    type: str = field(default="flatten", init=False)


@dataclass(frozen=True)
class Dense:
    units: int
    type: str = field(default="dense", init=False)


Layer = Union[Conv2D, Pool2D, Activation, Flatten, Dense]
LAYER_TYPES = {cls.type: cls for cls in (Conv2D, Pool2D, Activation, Flatten, Dense)}
_PREFIX = {"conv2d": "conv", "pool2d": "pool", "activation": "act", "flatten": "flatten",
           "dense": "dense"}


def conv2d(out_channels: int, kernel: int, stride: int = 1, padding: int = 0) -> Conv2D:
    return Conv2D(out_channels, kernel, stride, padding)


def pool2d(kind: str, size: int, stride: int | None = None) -> Pool2D:
    return Pool2D(kind, size, size if stride is None else stride)


def activation(fn: str) -> Activation:
    return Activation(fn)


def flatten() -> Flatten:
    return Flatten()


def dense(units: int) -> Dense:
    return Dense(units)


@dataclass(frozen=True)
class Spec:
    """A LeNet-style network: an input shape (C, H, W), a class count and a layer list."""

    name: str
    layers: tuple[Layer, ...]
    input_shape: tuple[int, int, int] = (1, 28, 28)
    num_classes: int = 10

    def layer_names(self) -> list[str]:
        """Names used everywhere: conv1, act1, pool1, ..., flatten1, dense1, ... dense3."""
        counts: dict[str, int] = {}
        names = []
        for layer in self.layers:
            prefix = _PREFIX[layer.type]
            counts[prefix] = counts.get(prefix, 0) + 1
            names.append(f"{prefix}{counts[prefix]}")
        return names

    def named_layers(self) -> list[tuple[str, Layer]]:
        return list(zip(self.layer_names(), self.layers))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "layers": [_layer_to_dict(layer) for layer in self.layers],
        }


def _layer_to_dict(layer: Layer) -> dict[str, Any]:
    d = asdict(layer)
    return {"type": d.pop("type"), **d}


def _lenet(name: str, act: str, pool: str, padding: int) -> Spec:
    return Spec(name, (
        conv2d(6, 5, padding=padding), activation(act), pool2d(pool, 2, 2),
        conv2d(16, 5), activation(act), pool2d(pool, 2, 2),
        flatten(),
        dense(120), activation(act),
        dense(84), activation(act),
        dense(10),
    ))


VARIANTS: dict[str, Spec] = {
    # d2l's LeNet today: padded first conv, sigmoid, average pooling (flatten 16*5*5 = 400).
    "lenet5": _lenet("lenet5", "sigmoid", "avg", padding=2),
    # The older d2l text: no padding and max pooling (flatten 16*4*4 = 256).
    "lenet-classic": _lenet("lenet-classic", "sigmoid", "max", padding=0),
    # The chapter exercise's modern variant: ReLU and max pooling.
    "lenet-relu": _lenet("lenet-relu", "relu", "max", padding=2),
}


def spec_from_dict(data: dict[str, Any], source: str = "<dict>") -> Spec:
    """Build and validate a spec from its dict form (as stored in JSON/YAML)."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a spec must be a mapping with 'layers', got {type(data).__name__}")
    unknown = set(data) - {"name", "input_shape", "num_classes", "layers"}
    if unknown:
        raise SpecError(f"{source}: unknown spec keys {sorted(unknown)}; allowed: name, "
                        "input_shape, num_classes, layers")
    if not isinstance(data.get("layers"), list) or not data["layers"]:
        raise SpecError(f"{source}: 'layers' must be a non-empty list of layer mappings")
    layers = []
    for i, item in enumerate(data["layers"]):
        where = f"{source}: layer {i}"
        if not isinstance(item, dict) or "type" not in item:
            raise SpecError(f"{where}: each layer needs a 'type' (one of {sorted(LAYER_TYPES)})")
        kind = item["type"]
        if kind not in LAYER_TYPES:
            raise SpecError(f"{where}: unknown layer type {kind!r}; known: {sorted(LAYER_TYPES)}")
        args = {k: v for k, v in item.items() if k != "type"}
        try:
            layers.append(LAYER_TYPES[kind](**args))
        except TypeError as exc:
            raise SpecError(f"{where} ({kind}): bad arguments {args}: {exc}") from None
    input_shape = data.get("input_shape", [1, 28, 28])
    if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 3:
        raise SpecError(f"{source}: input_shape must be [channels, height, width], got {input_shape!r}")
    spec = Spec(
        name=str(data.get("name", Path(source).stem)),
        layers=tuple(layers),
        input_shape=tuple(input_shape),
        num_classes=data.get("num_classes", 10),
    )
    from polylenet.shapes import validate  # shapes depends on spec; import here to avoid a cycle

    validate(spec, source)
    return spec


def load_spec(name_or_path: Union[str, os.PathLike, Spec] = "lenet5") -> Spec:
    """Return a named variant, or load a spec from a ``.json``/``.yaml`` file.

    >>> load_spec("lenet5").layers[0]
    Conv2D(out_channels=6, kernel=5, stride=1, padding=2, type='conv2d')
    """
    if isinstance(name_or_path, Spec):
        from polylenet.shapes import validate

        validate(name_or_path, name_or_path.name)
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
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            data = _load_yaml(text, key)
        else:
            data = json.loads(text)
    except (ValueError, SpecError) as exc:
        raise SpecError(f"spec file {key!r} is not valid {path.suffix[1:].upper()}: {exc}") from None
    return spec_from_dict(data, key)


def _load_yaml(text: str, source: str) -> Any:
    try:
        import yaml
    except ImportError:
        raise SpecError(f"{source}: reading YAML specs needs PyYAML: pip install pyyaml "
                        "(or save the spec as .json)") from None
    return yaml.safe_load(text)


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
