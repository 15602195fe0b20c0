"""The framework-neutral LeNet spec: an input shape, a class count and a list of layers from
:mod:`polylenet.layers`, validated when it is made; and the named variants.

Reading and writing spec files is :mod:`polylenet.specfile`; every backend compiles the same
spec into its framework's own layers.
"""

from __future__ import annotations

import math
import os
from dataclasses import InitVar, asdict, dataclass, replace
from functools import cached_property
from typing import Any, Optional

from polylenet.errors import SpecError
from polylenet.layers import (
    MERGES,
    Block,
    Layer,
    Node,
    Sequential,
    Shape,
    _label,
    activation,
    add,
    batchnorm,
    concat,
    conv2d,
    dense,
    dropout,
    flatten,
    global_avg_pool,
    node_names,
    node_types,
    parameter_count,
    pool2d,
    sequential,
)

# What a spec may ask for: far above any LeNet (lenet5 has 61,706 parameters and 15,786 activation
# values per image, input included), far below what would exhaust memory.
# $POLYLENET_MAX_PARAMETERS and $POLYLENET_MAX_ACTIVATIONS raise them.
MAX_PARAMETERS = 10**8
MAX_ACTIVATIONS = 10**8


def _limit(name: str, default: int) -> int:
    """``$name`` as a positive whole number, else ``default``; read when a limit is checked, not at import."""
    value = os.environ.get(name)
    if not value:
        return default
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if limit < 1:
        raise SpecError(f"${name} must be a whole number >= 1, got {value!r}; set it to a count such as "
                        f"{default} (the default) or unset it")
    return limit


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
    # The named variants, built at import, skip the size limits: $POLYLENET_MAX_* are read only
    # when a spec from elsewhere is made, so a bad value cannot break `import polylenet`.
    _builtin: InitVar[bool] = False

    def __post_init__(self, _builtin: bool = False) -> None:
        # lists are accepted and stored as tuples, so equal specs compare (and hash) equal
        object.__setattr__(self, "layers", tuple(self.layers))
        if isinstance(self.input_shape, (list, tuple)):
            object.__setattr__(self, "input_shape", tuple(self.input_shape))
        if not _builtin:
            self._check_input_size()
        self._tree  # noqa: B018 -- validates every layer
        if not _builtin:
            self._check_limits()

    def _check_input_size(self) -> None:
        """The input alone over the activation limit: blamed on input_shape, before any layer."""
        c_h_w = self.input_shape
        if isinstance(c_h_w, tuple) and len(c_h_w) == 3 and all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in c_h_w):
            limit = _limit("POLYLENET_MAX_ACTIVATIONS", MAX_ACTIVATIONS)
            if math.prod(c_h_w) > limit:
                raise SpecError(f"spec {self.name!r}: input_shape {list(c_h_w)} holds {math.prod(c_h_w):,} values "
                                f"per image, over the limit of {limit:,} activation values; give a smaller input "
                                "shape [channels, height, width] (or raise $POLYLENET_MAX_ACTIVATIONS)")

    def _check_limits(self) -> None:
        where = f"spec {self.name!r}"
        rows = self._tree
        parameters = sum(parameter_count(node, i) for _, node, i, _, leaf in rows if leaf)
        activations = math.prod(self.input_shape) + sum(math.prod(o[1:]) for _, node, _, o, _ in rows
                                                        if not isinstance(node, Sequential))
        for what, count, variable, default in (
                ("parameters", parameters, "POLYLENET_MAX_PARAMETERS", MAX_PARAMETERS),
                ("activation values per image", activations, "POLYLENET_MAX_ACTIVATIONS", MAX_ACTIVATIONS)):
            limit = _limit(variable, default)
            if count > limit:
                raise SpecError(f"{where}: asks for {count:,} {what}, over the limit of {limit:,}; make the "
                                f"layers smaller (or raise ${variable})")

    def layer_names(self) -> list[str]:
        """The top-level names: conv1, act1, pool1, ..., flatten1, dense1, ... dense3 (a group or
        block is named by its label: b1, b2, ...; what is inside it, by :attr:`leaves`)."""
        return node_names(self.layers)

    def named_layers(self) -> list[tuple[str, Node]]:
        return list(zip(self.layer_names(), self.layers))

    @property
    def table(self) -> list[tuple[str, Node, Shape, Shape]]:
        """``[(name, node, input_shape, output_shape), ...]`` per top-level node for a batch of 1
        (d2l's per-block table)."""
        return [(path, node, i, o) for path, node, i, o, _ in self._tree if "." not in path]

    @property
    def leaves(self) -> list[tuple[str, Layer, Shape, Shape]]:
        """``[(path, layer, input_shape, output_shape), ...]`` per layer inside every group and
        block, in the order they run (a block's branches one after the other), named by their path
        (``b3.inception2.branch3.conv1``); for a spec without blocks, the same rows as :attr:`table`."""
        return [(path, node, i, o) for path, node, i, o, leaf in self._tree if leaf]

    @property
    def outputs(self) -> list[tuple[str, Node, Shape, Shape]]:
        """Every layer, group and block, a composite right after what is inside it: the order
        and names of ``layer_outputs``."""
        return [(path, node, i, o) for path, node, i, o, _ in self._tree]

    @cached_property
    def _tree(self) -> list[tuple[str, Node, Shape, Shape, bool]]:
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
        rows: list = []
        resolved, shape = _infer(self.layers, (1, *c_h_w), "", where, rows, 0)
        object.__setattr__(self, "layers", resolved)
        if len(shape) != 2 or shape[1] != self.num_classes:
            raise SpecError(f"{where}: the network must end with shape (N, num_classes={self.num_classes}) "
                            f"(a dense layer with {self.num_classes} units, or a flatten of that many values); "
                            f"it ends with shape {shape}")
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "layers": [_node_to_dict(node) for node in self.layers],
        }


MAX_DEPTH = 16  # groups and blocks inside each other; d2l's deepest (DenseNet) nests 3


def _infer(nodes, shape: Shape, prefix: str, where: str, rows: list, depth: int,
           counts: Optional[dict] = None) -> tuple[tuple, Shape]:
    """Validate ``nodes`` on an input of ``shape``, append ``(path, node, in, out, is_leaf)`` per
    node (a composite after its contents) to ``rows``; return them resolved ("same"/"valid" as
    explicit pads) and the output shape."""
    if depth > MAX_DEPTH:
        raise SpecError(f"{where}: {prefix.rstrip('.')} nests groups and blocks more than {MAX_DEPTH} deep")
    if not isinstance(nodes, tuple):
        raise SpecError(f"{where}: {prefix.rstrip('.') or 'layers'} must be a list of layers, got {nodes!r}")
    for index, node in enumerate(nodes):
        if type(node) not in node_types().values():
            raise SpecError(f"{where}: layer {index}{' of ' + prefix.rstrip('.') if prefix else ''} is {node!r}, "
                            f"not a layer of {sorted(node_types())} (make it with polylenet.conv2d(...), ...)")
        if isinstance(node, (Sequential, Block)):
            _label(f"{where}: layer {index}{' of ' + prefix.rstrip('.') if prefix else ''} ({node.type})", node.label)
    resolved = []
    for index, (name, node) in enumerate(zip(node_names(nodes, counts), nodes)):
        path = prefix + name
        at = f"{where}: layer {index} ({path}, {node.type})"
        if isinstance(node, Sequential):
            if not node.layers:
                raise SpecError(f"{at}: a group needs at least one layer")
            inner, out = _infer(node.layers, shape, path + ".", where, rows, depth + 1)
            node = replace(node, layers=inner)
        elif isinstance(node, Block):
            node, out = _infer_block(node, shape, path, at, where, rows, depth)
        else:
            if hasattr(node, "resolved"):  # "same"/"valid" become explicit pads for this input size
                node = node.resolved(at, shape)
            out = node.output_shape(at, shape)
        rows.append((path, node, shape, out, not isinstance(node, (Sequential, Block))))
        resolved.append(node)
        shape = out
    return tuple(resolved), shape


def _infer_block(block: Block, shape: Shape, path: str, at: str, where: str, rows: list,
                 depth: int) -> tuple[Block, Shape]:
    if block.merge not in MERGES:
        raise SpecError(f"{at}: merge must be one of {list(MERGES)}, got {block.merge!r}")
    if not isinstance(block.branches, tuple) or not block.branches:
        raise SpecError(f"{at}: a block needs a list of branches (each a list of layers, [] for the identity)")
    if len(shape) != 4:
        raise SpecError(f"{at}: a block needs an NCHW input, got shape {shape}; put it before the flatten")
    branches, outs = [], []
    for name, branch in zip(block.branch_names(), block.branches):
        inner, out = _infer(branch, shape, f"{path}.{name}.", where, rows, depth + 1)
        if len(out) != 4:
            raise SpecError(f"{at}: {name} ends with shape {out}; a branch must keep NCHW (no flatten/dense)")
        branches.append(inner)
        outs.append(out)
    described = ", ".join(f"{name} {out[1:]}" for name, out in zip(block.branch_names(), outs))
    if block.merge == "concat":
        if len({out[2:] for out in outs}) > 1:
            raise SpecError(f"{at}: concat needs every branch at the same height and width, got {described}; "
                            "give the branches the same stride and padding")
        merged = (shape[0], sum(out[1] for out in outs), *outs[0][2:])
    else:
        if len(set(outs)) > 1:
            raise SpecError(f"{at}: add needs every branch with the same (channels, height, width), got {described}; "
                            "give the shortcut a 1x1 conv with the body's channels and stride")
        merged = outs[0]
    after, out = _infer(block.after, merged, path + ".", where, rows, depth + 1,
                        {"branch": len(block.branches)})
    return replace(block, branches=tuple(branches), after=after), out


def _node_to_dict(node: Node) -> dict[str, Any]:
    if isinstance(node, Sequential):
        return {"type": node.type, "label": node.label, "layers": [_node_to_dict(n) for n in node.layers]}
    if isinstance(node, Block):
        return {"type": node.type, "merge": node.merge, "label": node.label,
                "branches": [[_node_to_dict(n) for n in branch] for branch in node.branches],
                "after": [_node_to_dict(n) for n in node.after]}
    d = asdict(node)
    return {"type": d.pop("type"), **d}


def _variant(name: str, layers: tuple, input_shape: tuple[int, int, int] = (1, 28, 28)) -> Spec:
    return Spec(name, layers, input_shape=input_shape, _builtin=True)


def _lenet(name: str, act: str, pool: str, padding: int) -> Spec:
    return _variant(name, (
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
    return _variant(name, (
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
    return _variant(name, (
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
    return _variant(name, (*layers, *_classifier()), input_shape=_MODERN_INPUT)


def _nin_block(channels: int, kernel: int, stride: int, padding: int) -> tuple[Layer, ...]:
    # d2l's nin_block: a k x k conv, then two 1x1 convs, each with ReLU
    return (conv2d(channels, kernel, stride=stride, padding=padding), activation("relu"),
            conv2d(channels, 1), activation("relu"), conv2d(channels, 1), activation("relu"))


def _nin(name: str) -> Spec:
    return _variant(name, (
        *_nin_block(96, 11, 4, 0), pool2d("max", 3, 2),
        *_nin_block(256, 5, 1, 2), pool2d("max", 3, 2),
        *_nin_block(384, 3, 1, 1), pool2d("max", 3, 2),
        dropout(0.5),
        *_nin_block(10, 3, 1, 1),
        global_avg_pool(), flatten(),  # no dense layer: the spec ends with (N, 10)
    ), input_shape=_MODERN_INPUT)


_SMALL_INPUT = (1, 96, 96)  # d2l trains GoogLeNet, ResNet and DenseNet on 96x96 Fashion-MNIST


def _inception(c1: int, c2: tuple[int, int], c3: tuple[int, int], c4: int) -> Block:
    # d2l's Inception: 1x1 | 1x1, 3x3 | 1x1, 5x5 | 3x3 max-pool, 1x1 -- each conv with ReLU
    relu = activation("relu")
    return concat(
        (conv2d(c1, 1), relu),
        (conv2d(c2[0], 1), relu, conv2d(c2[1], 3, padding=1), relu),
        (conv2d(c3[0], 1), relu, conv2d(c3[1], 5, padding=2), relu),
        (pool2d("max", 3, 1, padding=1), conv2d(c4, 1), relu),
        label="inception")


def _googlenet(name: str) -> Spec:
    relu, pool = activation("relu"), pool2d("max", 3, 2, padding=1)
    return _variant(name, (
        sequential("b", conv2d(64, 7, stride=2, padding=3), relu, pool),
        sequential("b", conv2d(64, 1), relu, conv2d(192, 3, padding=1), relu, pool),
        sequential("b", _inception(64, (96, 128), (16, 32), 32), _inception(128, (128, 192), (32, 96), 64), pool),
        sequential("b", _inception(192, (96, 208), (16, 48), 64), _inception(160, (112, 224), (24, 64), 64),
                   _inception(128, (128, 256), (24, 64), 64), _inception(112, (144, 288), (32, 64), 64),
                   _inception(256, (160, 320), (32, 128), 128), pool),
        sequential("b", _inception(256, (160, 320), (32, 128), 128), _inception(384, (192, 384), (48, 128), 128),
                   global_avg_pool(), flatten()),
        dense(10),
    ), input_shape=_SMALL_INPUT)


def _residual(channels: int, stride: int, shortcut: bool, padding: object) -> Block:
    # d2l's Residual: conv-BN-ReLU-conv-BN plus the input (or its strided 1x1 conv), then ReLU
    body = (conv2d(channels, 3, stride=stride, padding=padding), batchnorm(), activation("relu"),
            conv2d(channels, 3, padding=padding), batchnorm())
    return add(body, (conv2d(channels, 1, stride=stride),) if shortcut else (), after=(activation("relu"),))


def _resnet18(name: str, padding: object) -> Spec:
    # padding 1 is d2l's PyTorch tab; its TensorFlow tab writes padding='same' (stride 2: the
    # odd row and column padded at the bottom/right only)
    stem_pad, pool_pad = (3, 1) if padding == 1 else ("same", "same")
    stages = []
    for index, channels in enumerate((64, 128, 256, 512)):
        first = index > 0  # stages 2-4 halve the size in their first block, with a 1x1 shortcut
        stages.append(sequential("b", _residual(channels, 2 if first else 1, first, padding),
                                 _residual(channels, 1, False, padding)))
    return _variant(name, (
        sequential("b", conv2d(64, 7, stride=2, padding=stem_pad), batchnorm(), activation("relu"),
                   pool2d("max", 3, 2, padding=pool_pad)),
        *stages,
        global_avg_pool(), flatten(), dense(10),
    ), input_shape=_SMALL_INPUT)


def _conv_block(channels: int) -> tuple[Layer, ...]:
    return (batchnorm(), activation("relu"), conv2d(channels, 3, padding=1))


def _densenet(name: str, growth: int = 32, convs: tuple[int, ...] = (4, 4, 4, 4)) -> Spec:
    # d2l's DenseBlock: each conv block's output concatenated to its input (X first);
    # transition blocks halve the channels (1x1 conv) and the size (2/2 average pool)
    layers: list = [sequential("b", conv2d(64, 7, stride=2, padding=3), batchnorm(), activation("relu"),
                               pool2d("max", 3, 2, padding=1))]
    channels = 64
    for index, count in enumerate(convs):
        layers.append(sequential("denseblock", *(concat((), _conv_block(growth), label="conv_block")
                                                 for _ in range(count))))
        channels += count * growth
        if index != len(convs) - 1:
            channels //= 2
            layers.append(sequential("transition", batchnorm(), activation("relu"), conv2d(channels, 1),
                                     pool2d("avg", 2, 2)))
    layers += [batchnorm(), activation("relu"), global_avg_pool(), flatten(), dense(10)]
    return _variant(name, tuple(layers), input_shape=_SMALL_INPUT)


MODERN: dict[str, Spec] = {
    "alexnet": _alexnet("alexnet", first_padding=1),
    "alexnet-tf-tab": _alexnet("alexnet-tf-tab", first_padding=0),
    # d2l's VGG-11 with its channels divided by 4, as the chapter trains it ("small_conv_arch")
    "vgg11-small": _vgg("vgg11-small", ((1, 16), (1, 32), (2, 64), (2, 128), (2, 128))),
    "nin": _nin("nin"),
    "googlenet": _googlenet("googlenet"),
    "resnet18": _resnet18("resnet18", padding=1),
    "resnet18-tf-tab": _resnet18("resnet18-tf-tab", padding="same"),
    "densenet": _densenet("densenet"),
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
    layers = [_node_from_dict(item, f"{source}: layer {i}", 0) for i, item in enumerate(data["layers"])]
    input_shape = data.get("input_shape", [1, 28, 28])
    if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 3:
        raise SpecError(f"{source}: input_shape must be [channels, height, width], got {input_shape!r}")
    name = data.get("name", source.rsplit("/", 1)[-1].rsplit(".", 1)[0])
    try:
        return Spec(name=str(name), layers=tuple(layers), input_shape=tuple(input_shape),
                    num_classes=data.get("num_classes", 10))
    except SpecError as exc:
        raise SpecError(f"{source}: {exc}") from None


def _node_list(items: object, where: str, depth: int) -> tuple:
    if not isinstance(items, list):
        raise SpecError(f"{where}: must be a list of layer mappings, got {items!r}")
    return tuple(_node_from_dict(item, f"{where}[{i}]", depth) for i, item in enumerate(items))


def _node_from_dict(item: object, where: str, depth: int) -> Node:
    if depth > MAX_DEPTH:
        raise SpecError(f"{where}: groups and blocks nest more than {MAX_DEPTH} deep")
    if not isinstance(item, dict) or "type" not in item:
        raise SpecError(f"{where}: each layer needs a 'type' (one of {sorted(node_types())})")
    kind = item["type"]
    if not isinstance(kind, str) or kind not in node_types():
        raise SpecError(f"{where}: unknown layer type {kind!r}; known: {sorted(node_types())}")
    args = {k: v for k, v in item.items() if k != "type"}
    if kind == "sequential":
        args["layers"] = _node_list(args.get("layers"), f"{where} ({kind}) layers", depth + 1)
    elif kind == "block":
        branches = args.get("branches")
        if not isinstance(branches, list):
            raise SpecError(f"{where} (block): 'branches' must be a list of layer lists ([] for the identity)")
        args["branches"] = tuple(_node_list(branch, f"{where} (block) branch {i + 1}", depth + 1)
                                 for i, branch in enumerate(branches))
        args["after"] = _node_list(args.get("after", []), f"{where} (block) after", depth + 1)
    try:
        return node_types()[kind](**args)
    except TypeError as exc:
        raise SpecError(f"{where} ({kind}): bad arguments {args}: {exc}") from None
