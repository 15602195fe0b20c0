"""The framework-neutral LeNet spec: an input shape, a class count and a list of layers from
:mod:`polylenet.layers`, validated when it is made; and the named variants.

Reading and writing spec files is :mod:`polylenet.specfile`; every backend compiles the same
spec into its framework's own layers.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

from polylenet.errors import SpecError
from polylenet.layers import (
    LAYER_TYPES,
    PREFIX,
    Layer,
    Shape,
    activation,
    batchnorm,
    conv2d,
    dense,
    dropout,
    flatten,
    global_avg_pool,
    parameter_count,
    pool2d,
)

# What a spec may ask for: far above any LeNet (lenet5 has 61,706 parameters and 15,786 activation
# values per image, input included), far below what would exhaust memory.
# $POLYLENET_MAX_PARAMETERS and $POLYLENET_MAX_ACTIVATIONS raise them.
MAX_PARAMETERS = 10**8
MAX_ACTIVATIONS = 10**8


def _limit(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return int(value) if value else default
    except ValueError:
        raise SpecError(f"${name} must be a whole number, got {value!r}") from None


@dataclass(frozen=True)
class Spec:
    """A LeNet-style network: an input shape (C, H, W), a class count and a layer list.

    A spec checks itself when it is made and raises :class:`SpecError` naming the first bad
    layer and why.

    >>> Spec("tiny", (conv2d(2, 3), flatten(), dense(10)), input_shape=(1, 8, 8)).table[-1][-1]
    (1, 10)
    """

    name: str
    layers: tuple[Layer, ...]
    input_shape: tuple[int, int, int] = (1, 28, 28)
    num_classes: int = 10

    def __post_init__(self) -> None:
        # lists are accepted and stored as tuples, so equal specs compare (and hash) equal
        object.__setattr__(self, "layers", tuple(self.layers))
        if isinstance(self.input_shape, (list, tuple)):
            object.__setattr__(self, "input_shape", tuple(self.input_shape))
        self.table  # noqa: B018 -- validates every layer

    def layer_names(self) -> list[str]:
        """Names used everywhere: conv1, act1, pool1, ..., flatten1, dense1, ... dense3."""
        counts: dict[str, int] = {}
        names = []
        for layer in self.layers:
            prefix = PREFIX[layer.type]
            counts[prefix] = counts.get(prefix, 0) + 1
            names.append(f"{prefix}{counts[prefix]}")
        return names

    def named_layers(self) -> list[tuple[str, Layer]]:
        return list(zip(self.layer_names(), self.layers))

    @cached_property
    def table(self) -> list[tuple[str, Layer, Shape, Shape]]:
        """``[(name, layer, input_shape, output_shape), ...]`` for a batch of 1."""
        where = f"spec {self.name!r}"
        c_h_w = self.input_shape
        if not isinstance(c_h_w, tuple) or len(c_h_w) != 3 or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in c_h_w):
            raise SpecError(f"{where}: input_shape must be [channels, height, width] of positive "
                            f"integers, got {c_h_w!r}")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise SpecError(f"{where}: num_classes must be a positive integer, got {self.num_classes!r}")
        if not self.layers:
            raise SpecError(f"{where}: the layer list is empty")
        shape: Shape = (1, *c_h_w)
        table = []
        parameters, activations = 0, math.prod(c_h_w)
        for index, layer in enumerate(self.layers):
            if type(layer) not in LAYER_TYPES.values():
                raise SpecError(f"{where}: layer {index} is {layer!r}, not a layer of "
                                f"{sorted(LAYER_TYPES)} (make it with polylenet.conv2d(...), ...)")
        resolved = []
        for index, (name, layer) in enumerate(self.named_layers()):
            at = f"{where}: layer {index} ({name}, {layer.type})"
            if hasattr(layer, "resolved"):  # "same"/"valid" become explicit pads for this input size
                layer = layer.resolved(at, shape)
            out = layer.output_shape(at, shape)
            table.append((name, layer, shape, out))
            resolved.append(layer)
            parameters += parameter_count(layer, shape)
            activations += math.prod(out[1:])
            shape = out
        for what, count, variable, default in (
                ("parameters", parameters, "POLYLENET_MAX_PARAMETERS", MAX_PARAMETERS),
                ("activation values per image", activations, "POLYLENET_MAX_ACTIVATIONS", MAX_ACTIVATIONS)):
            if count > _limit(variable, default):
                raise SpecError(f"{where}: asks for {count:,} {what}, over the limit of "
                                f"{_limit(variable, default):,}; make the layers smaller (or raise ${variable})")
        object.__setattr__(self, "layers", tuple(resolved))
        if len(shape) != 2 or shape[1] != self.num_classes:
            raise SpecError(f"{where}: the network must end with shape (N, num_classes={self.num_classes}) "
                            f"(a dense layer with {self.num_classes} units, or a flatten of that many values); "
                            f"it ends with shape {shape}")
        return table

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


def _lenet_bn(name: str, padding: int) -> Spec:
    # d2l's "Batch Normalization" chapter: BN after every conv and dense layer but the last,
    # before the sigmoid (flatten 16*4*4 = 256 without padding).
    return Spec(name, (
        conv2d(6, 5, padding=padding), batchnorm(), activation("sigmoid"), pool2d("avg", 2, 2),
        conv2d(16, 5), batchnorm(), activation("sigmoid"), pool2d("avg", 2, 2),
        flatten(),
        dense(120), batchnorm(), activation("sigmoid"),
        dense(84), batchnorm(), activation("sigmoid"),
        dense(10),
    ))


LENETS: dict[str, Spec] = {
    # d2l's LeNet today: padded first conv, sigmoid, average pooling (flatten 16*5*5 = 400).
    "lenet5": _lenet("lenet5", "sigmoid", "avg", padding=2),
    # The older d2l text: no padding and max pooling (flatten 16*4*4 = 256).
    "lenet-classic": _lenet("lenet-classic", "sigmoid", "max", padding=0),
    # The chapter exercise's modern variant: ReLU and max pooling.
    "lenet-relu": _lenet("lenet-relu", "relu", "max", padding=2),
    # d2l's batch-normalization chapter: LeNet with BatchNorm, no padding, sigmoid, avg-pool.
    "lenet-bn": _lenet_bn("lenet-bn", padding=0),
}

_MODERN_INPUT = (1, 224, 224)  # Fashion-MNIST resized, as d2l's modern-CNN chapter trains


def _classifier(units: int = 4096) -> tuple[Layer, ...]:
    # AlexNet's and VGG's head: two dense layers with ReLU and dropout 0.5, then the classes
    return (flatten(), dense(units), activation("relu"), dropout(0.5),
            dense(units), activation("relu"), dropout(0.5), dense(10))


def _alexnet(name: str, first_padding: int) -> Spec:
    # d2l-zh's PyTorch (and Paddle) tab: the first conv padded by 1; its MXNet and TensorFlow tabs
    # leave it unpadded. Both give 54x54, so the shapes agree and the numbers do not.
    return Spec(name, (
        conv2d(96, 11, stride=4, padding=first_padding), activation("relu"), pool2d("max", 3, 2),
        conv2d(256, 5, padding=2), activation("relu"), pool2d("max", 3, 2),
        conv2d(384, 3, padding=1), activation("relu"),
        conv2d(384, 3, padding=1), activation("relu"),
        conv2d(256, 3, padding=1), activation("relu"), pool2d("max", 3, 2),
        *_classifier(),
    ), input_shape=_MODERN_INPUT)


def _vgg(name: str, blocks: tuple[tuple[int, int], ...]) -> Spec:
    # d2l's vgg_block: (convs, channels), each conv 3x3 pad 1 with ReLU, then a 2/2 max-pool
    layers: list[Layer] = []
    for convs, channels in blocks:
        for _ in range(convs):
            layers += [conv2d(channels, 3, padding=1), activation("relu")]
        layers.append(pool2d("max", 2, 2))
    return Spec(name, (*layers, *_classifier()), input_shape=_MODERN_INPUT)


def _nin_block(channels: int, kernel: int, stride: int, padding: int) -> tuple[Layer, ...]:
    # d2l's nin_block: a k x k conv, then two 1x1 convs, each with ReLU
    return (conv2d(channels, kernel, stride=stride, padding=padding), activation("relu"),
            conv2d(channels, 1), activation("relu"), conv2d(channels, 1), activation("relu"))


def _nin(name: str) -> Spec:
    return Spec(name, (
        *_nin_block(96, 11, 4, 0), pool2d("max", 3, 2),
        *_nin_block(256, 5, 1, 2), pool2d("max", 3, 2),
        *_nin_block(384, 3, 1, 1), pool2d("max", 3, 2),
        dropout(0.5),
        *_nin_block(10, 3, 1, 1),
        global_avg_pool(), flatten(),  # no dense layer: the spec ends with (N, 10)
    ), input_shape=_MODERN_INPUT)


MODERN: dict[str, Spec] = {
    "alexnet": _alexnet("alexnet", first_padding=1),
    "alexnet-tf-tab": _alexnet("alexnet-tf-tab", first_padding=0),
    # d2l's VGG-11 with its channels divided by 4, as the chapter trains it ("small_conv_arch")
    "vgg11-small": _vgg("vgg11-small", ((1, 16), (1, 32), (2, 64), (2, 128), (2, 128))),
    "nin": _nin("nin"),
}

# Every named variant: d2l's LeNets (28x28) and its modern CNNs (224x224)
VARIANTS: dict[str, Spec] = {**LENETS, **MODERN}


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
        if not isinstance(kind, str) or kind not in LAYER_TYPES:
            raise SpecError(f"{where}: unknown layer type {kind!r}; known: {sorted(LAYER_TYPES)}")
        args = {k: v for k, v in item.items() if k != "type"}
        try:
            layers.append(LAYER_TYPES[kind](**args))
        except TypeError as exc:
            raise SpecError(f"{where} ({kind}): bad arguments {args}: {exc}") from None
    input_shape = data.get("input_shape", [1, 28, 28])
    if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 3:
        raise SpecError(f"{source}: input_shape must be [channels, height, width], got {input_shape!r}")
    name = data.get("name", source.rsplit("/", 1)[-1].rsplit(".", 1)[0])
    try:
        return Spec(name=str(name), layers=tuple(layers), input_shape=tuple(input_shape),
                    num_classes=data.get("num_classes", 10))
    except SpecError as exc:
        raise SpecError(f"{source}: {exc}") from None
