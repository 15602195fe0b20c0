"""ONNX files: any polylenet model written as a standard ONNX graph, and ONNX graphs of the
layers and blocks polylenet has (polylenet's own, or a framework exporter's) read back into a
neutral spec and weights.

Only the ``onnx`` package is needed (``pip install 'polylenet[onnx]'``), no framework, so both
work from any environment. The graph is the spec, layer by layer: input ``input`` (N, C, H, W)
float32 with a dynamic batch dimension ``N``, one node per layer named by its path (its output
tensor too; the last one is ``logits``), and the neutral weights as initializers under their
neutral names (``b3.residual1.branch1.conv1.weight``). ``batchnorm`` is exported in inference
mode (its running statistics), ``dropout`` as an inference-mode ``Dropout`` (the identity) holding
its ratio (the initializer ``<path>.ratio``), ``global_avg_pool`` as ``GlobalAveragePool``.

The tree is flat in the graph: a group adds nothing but its name to its layers' paths; every
branch of a block reads the block's input tensor (an empty branch is that tensor itself), and the
merge node is ``Concat`` (axis 1) named ``<block path>.concat``, or ``Add`` named
``<block path>.add`` (more than two branches: a chain from the left, as the oracle sums, the
partial sums ``<block path>.add.sum2``, ...), followed by the block's ``after`` layers
(:func:`output_tensors` names the tensor of every node). The import reads any series-parallel
graph of them: a tensor several nodes read opens a block whose branches meet at one Concat on the
channel axis (axis 3 of NHWC tensors too) or one Add; where the node names are these paths, it
returns that very tree (groups, labels, ``after``), else blocks labelled ``concat``/``residual``
with what follows a merge after the block.

>>> import os, tempfile, polylenet
>>> path = os.path.join(tempfile.mkdtemp(), "lenet5.onnx")
>>> _ = polylenet.export_onnx("lenet5", path)
>>> spec, weights = polylenet.import_onnx(path)
>>> spec == polylenet.load_spec("lenet5"), weights["conv1.weight"].shape
(True, (6, 1, 5, 5))
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np

from polylenet.atomic import atomic_write
from polylenet.errors import BackendUnavailable, OnnxError, SpecError
from polylenet.layers import (
    Activation,
    BatchNorm,
    Block,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    Pads,
    Pair,
    Pool2D,
    Sequential,
    node_names,
    pool_output_size,
    same_pads,
    unsupported_layer,
)
from polylenet.shapes import param_shapes
from polylenet.spec import Spec
from polylenet.specfile import load_spec
from polylenet.tree import run
from polylenet.weights import Weights, check_finite, check_weights, init_weights, parameter_limit

# ONNX 1.23 writes up to opset 28 and IR version 14; ONNX Runtime 1.31, the runtime we check
# against, officially runs opset 26 and reads IR 13 (measured: a 27 graph loads with a warning
# that it is unsupported, 28 and IR 14 are refused).
OPSET, IR_VERSION = 26, 13
INPUT, OUTPUT = "input", "logits"


def opset() -> int:
    """The opset polylenet writes: ``OPSET``, or the newest the installed onnx knows if older
    (the mxnet env keeps onnx 1.14, opset 19, for mxnet's own exporter)."""
    return min(OPSET, _onnx().defs.onnx_opset_version())
_ACTIVATIONS = {"sigmoid": "Sigmoid", "relu": "Relu", "tanh": "Tanh"}
_POOLS = {"max": "MaxPool", "avg": "AveragePool"}


def _onnx():
    try:
        import onnx
    except ImportError:
        raise BackendUnavailable("ONNX export and import need the onnx package: "
                                 "pip install 'polylenet[onnx]'") from None
    return onnx


# ---------------------------------------------------------------------------------------- export

def _onnx_pads(layer: Union[Conv2D, Pool2D]) -> list[int]:
    """ONNX's pads order: every axis's begin, then every axis's end."""
    (top, bottom), (left, right) = layer.pads
    return [top, left, bottom, right]


def _conv(helper: Any, layer: Conv2D, name: str, inputs: list[str], output: str) -> Any:
    # a bias-free conv has no "<name>.bias" weight, so no third input
    return helper.make_node("Conv", inputs, [output], name, kernel_shape=list(layer.kernel_hw),
                            strides=list(layer.stride_hw), pads=_onnx_pads(layer))


def _pool(helper: Any, layer: Pool2D, name: str, inputs: list[str], output: str) -> Any:
    # ONNX Runtime 1.31 computes the oracle's padding, ceil_mode and divisor rules as they are
    # (measured on 4,140 configurations: test_onnx.py::test_onnxruntime_pools_as_the_oracle)
    attrs = dict(kernel_shape=list(layer.size_hw), strides=list(layer.stride_hw), pads=_onnx_pads(layer),
                 ceil_mode=int(layer.ceil_mode))
    if layer.kind == "avg":
        attrs["count_include_pad"] = int(layer.count_include_pad)
    return helper.make_node(_POOLS[layer.kind], inputs, [output], name, **attrs)


def _activation(helper: Any, layer: Activation, name: str, inputs: list[str], output: str) -> Any:
    return helper.make_node(_ACTIVATIONS[layer.fn], inputs, [output], name)


def _flatten(helper: Any, layer: Flatten, name: str, inputs: list[str], output: str) -> Any:
    return helper.make_node("Flatten", inputs, [output], name, axis=1)


def _dense(helper: Any, layer: Dense, name: str, inputs: list[str], output: str) -> Any:
    return helper.make_node("Gemm", inputs, [output], name, transB=1)  # neutral (out, in) is B with transB=1


def _batchnorm(helper: Any, layer: BatchNorm, name: str, inputs: list[str], output: str) -> Any:
    # inference mode: normalizes with the running statistics
    return helper.make_node("BatchNormalization", inputs, [output], name, epsilon=layer.eps, momentum=layer.momentum)


def _dropout(helper: Any, layer: Dropout, name: str, inputs: list[str], output: str) -> Any:
    # inference mode (no training_mode input): the identity. Opset 12 made the ratio an input; it
    # is the float64 initializer "<name>.ratio" (CONSTANTS), so the import reads p back bit-exactly
    if opset() < 12:
        return helper.make_node("Dropout", inputs, [output], name, ratio=layer.p)
    return helper.make_node("Dropout", [*inputs, f"{name}.ratio"], [output], name)


def _global_avg_pool(helper: Any, layer: GlobalAvgPool, name: str, inputs: list[str], output: str) -> Any:
    return helper.make_node("GlobalAveragePool", inputs, [output], name)


# layer type -> its node: helper(onnx.helper, layer, name, [activation input, *weight names], output)
NODES = {Conv2D: _conv, Pool2D: _pool, Activation: _activation, Flatten: _flatten, Dense: _dense,
         BatchNorm: _batchnorm, Dropout: _dropout, GlobalAvgPool: _global_avg_pool}
# layer type -> the constant inputs its node takes besides the weights, {initializer name: value}
# (hyperparameters that ONNX takes as inputs, not attributes): (layer, name) -> dict
CONSTANTS = {Dropout: lambda layer, name: {f"{name}.ratio": np.array(layer.p, np.float64)} if opset() >= 12 else {}}
_PARAMS = ("weight", "bias", "running_mean", "running_var")


def _graph(spec: Spec, keys: Any, backend: str) -> tuple[list, dict[str, np.ndarray], dict[str, str]]:
    """The nodes and constant inputs of ``spec``'s graph (``keys``: its weights' names), and the
    tensor that holds each node's output, by path (every row of :attr:`Spec.outputs`)."""
    from onnx import helper

    nodes, constants, tensors = [], {}, {}
    last = spec.leaves[-1][0]
    blocks = {id(node): path for path, node, _, _ in spec.outputs if isinstance(node, Block)}

    def leaf(path: str, layer: Any, h: str) -> str:
        if type(layer) not in NODES:
            raise unsupported_layer(backend, path, layer)
        output = OUTPUT if path == last else path
        params = [f"{path}.{attr}" for attr in _PARAMS if f"{path}.{attr}" in keys]
        nodes.append(NODES[type(layer)](helper, layer, path, [h, *params], output))
        constants.update(CONSTANTS[type(layer)](layer, path) if type(layer) in CONSTANTS else {})
        return output

    def merge(block: Block, outputs: list[str]) -> str:
        name = f"{blocks[id(block)]}.{block.merge}"  # a name no layer, group or block can have
        if block.merge == "concat":
            nodes.append(helper.make_node("Concat", outputs, [name], name, axis=1))
            return name
        h = outputs[0]  # left to right, as the oracle sums: ((branch1 + branch2) + branch3) ...
        for index, out in enumerate(outputs[1:], 2):
            total = name if index == len(outputs) else f"{name}.sum{index}"
            nodes.append(helper.make_node("Add", [h, out], [total], total))
            h = total
        return h

    run(spec, INPUT, leaf, merge, tensors.__setitem__)
    return nodes, constants, tensors


def output_tensors(spec: Spec) -> dict[str, str]:
    """The tensor of :func:`to_onnx`'s graph that holds each node's output, by path, in
    :attr:`Spec.outputs` order: a layer's is its path (the last one's ``logits``), a block's its
    last ``after`` layer's (else its merge node's), a group's its last node's.

    >>> import polylenet
    >>> tensors = output_tensors(polylenet.load_spec("resnet18"))
    >>> [tensors[p] for p in ("b2.residual1.branch1.bn2", "b2.residual1", "b5", "dense1")]
    ['b2.residual1.branch1.bn2', 'b2.residual1.act1', 'b5.residual2.act1', 'logits']
    """
    return _graph(spec, param_shapes(spec), "onnx")[2]


def to_onnx(spec: Spec, weights: Mapping[str, np.ndarray], backend: str = "onnx") -> Any:
    """The ``onnx.ModelProto`` of ``spec`` with neutral ``weights`` (checked against the spec);
    ``backend`` names the caller in the error for a layer type ONNX export has no node for."""
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    weights = check_weights(spec, weights)
    nodes, constants, _ = _graph(spec, weights, backend)
    graph = helper.make_graph(
        nodes, spec.name,
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", *spec.input_shape])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", spec.num_classes])],
        [*(numpy_helper.from_array(np.ascontiguousarray(value, np.float32), key) for key, value in weights.items()),
         *(numpy_helper.from_array(value, key) for key, value in constants.items())])
    model = helper.make_model(graph, producer_name="polylenet", opset_imports=[helper.make_opsetid("", opset())])
    from polylenet import __version__

    model.producer_version = __version__
    model.ir_version = min(IR_VERSION, onnx.IR_VERSION)
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model


def export_onnx(model_or_spec: Any, path: Union[str, os.PathLike],
                weights: Optional[Mapping[str, np.ndarray]] = None) -> Path:
    """Write a model built by :func:`polylenet.build` (its current weights), or a spec (a
    :class:`Spec`, a variant name or a spec file; with ``weights``, else ``init_weights(spec)``)
    to ``path`` as an ONNX file, atomically. Returns the path.

    >>> import os, tempfile, polylenet
    >>> model = polylenet.build("lenet-bn", backend="numpy")
    >>> polylenet.export_onnx(model, os.path.join(tempfile.mkdtemp(), "bn.onnx")).name
    'bn.onnx'
    """
    if hasattr(model_or_spec, "polylenet_spec"):
        from polylenet.api import get_weights, spec_of

        spec = spec_of(model_or_spec)
        weights = get_weights(model_or_spec) if weights is None else weights
    else:
        spec = load_spec(model_or_spec)
        weights = init_weights(spec) if weights is None else weights
    return atomic_write(path, to_onnx(spec, weights).SerializeToString())


# ---------------------------------------------------------------------------------------- import

_SMALL = 10_000  # tensors at most this size are given to shape inference with their values


def _brief(exc: BaseException) -> str:
    """The first line of an exception's message, at most 200 characters."""
    return (str(exc).strip().splitlines() or [""])[0][:200]


def _has_subgraph(node: Any) -> bool:
    """Whether a node holds graphs (If, Loop, Scan): control flow polylenet neither infers nor computes."""
    from onnx import AttributeProto

    return any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in node.attribute)


def _data_inputs(node: Any) -> list[str]:
    """The inputs whose values a node reads: CastLike reads only the type of its second."""
    return list(node.input[:1] if node.op_type == "CastLike" else node.input)


def _short(pair: Pair) -> Union[int, Pair]:
    """(k, k) as k: the form a spec writes a square kernel or stride in."""
    return pair[0] if pair[0] == pair[1] else pair


def _short_pads(pads: Pads) -> Union[int, Pair, Pads]:
    """Per-side pads in the shortest form a spec writes them: p, (ph, pw), or per side."""
    (top, bottom), (left, right) = pads
    if top == bottom and left == right:
        return _short((top, left))
    return pads


@dataclass(eq=False)
class _Leaf:
    """A layer read from node ``name``, with its neutral arrays."""

    name: str
    layer: Any
    params: dict


@dataclass(eq=False)
class _Merge:
    """A block read from its merge node ``name``: each branch a list of entries."""

    name: str
    merge: str
    branches: list

    @property
    def path(self) -> Optional[str]:  # polylenet names the merge node "<block path>.<merge>"
        suffix = f".{self.merge}"
        return self.name[:-len(suffix)] if self.name.endswith(suffix) else None


@dataclass(eq=False)
class _Branch:
    """A branch being read: the tensor it reached, the merge node that tensor enters (None at the
    graph's output), its entries and the reader's state there."""

    tensor: str
    merge: Any
    entries: list
    state: tuple
    merged: Optional[_Merge] = None  # the block this branch starts with, merged from the same fork


class _Reader:
    """Walks the activation path of a graph from its input to its output, one node at a time,
    turning each node into a layer; a tensor several nodes read opens a block, whose branches are
    read one by one up to the Concat or Add node where they meet (series-parallel graphs: d2l's
    Inception, Residual and DenseNet blocks); anything that would change the model is an error."""

    _STATE = ("shape", "biased", "padded", "flatten_order", "transposed_at")

    def __init__(self, model: Any, source: str):
        self.source, self.model, self.graph = source, model, model.graph
        # every array read from the file, and all that computed() evaluates (together), is at most
        # the parameter limit: a 248 KB file must not take a gigabyte
        self.limit, self.spent = parameter_limit(), 0
        self.constants = {t.name: self.stored_array(t, f"initializer {t.name!r}") for t in self.graph.initializer}
        for node in self.graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value" and node.output:
                self.constants[node.output[0]] = self.stored_array(node.attribute[0].t,
                                                                   f"node {node.name!r} (Constant)")
        self.stored = set(self.constants)  # initializers and Constant nodes: what the file holds
        self.at: Any = None  # the node being read, named by an error that no check foresaw
        self._types: Optional[dict[str, Any]] = None  # static_types()
        self.producers = {output: node for node in self.graph.node for output in node.output}
        self.layers: list = []  # the entries (_Leaf, _Merge) of the sequence being read
        self.count = 0  # layers read so far
        self.nhwc_input = False
        # the state of the path being read, saved and restored per branch (_STATE)
        self.flatten_order: Optional[tuple[int, int, int]] = None  # (C, H, W) of an HWC-order flatten
        self.transposed_at: Any = None  # the Transpose node that made it
        self.shape: tuple[int, ...] = ()
        self.biased = True  # whether the last conv or dense layer has its bias (else an Add may follow)
        self.padded: Optional[tuple[Any, Pads, float]] = None  # a Pad node waiting for its conv or pool

    def state(self) -> tuple:
        return tuple(getattr(self, key) for key in self._STATE)

    def restore(self, state: tuple) -> None:
        for key, value in zip(self._STATE, state):
            setattr(self, key, value)

    def stored_array(self, tensor: Any, what: str) -> np.ndarray:
        """The array of a TensorProto, its declared size checked against the limit before it is read."""
        from onnx import numpy_helper

        dims = list(tensor.dims)
        if math.prod(dims) > self.limit:
            raise OnnxError(f"{self.source}: {what} declares shape {dims} ({math.prod(dims):,} values), over the "
                            f"limit of {self.limit:,} parameters; polylenet reads LeNet-sized models (or raise "
                            "$POLYLENET_MAX_PARAMETERS)")
        try:
            return numpy_helper.to_array(tensor)
        except (ValueError, TypeError, KeyError, IndexError, UnicodeDecodeError) as exc:
            raise OnnxError(f"{self.source}: {what} holds no readable tensor of shape {dims} "
                            f"({type(exc).__name__}: {_brief(exc)}); the file is damaged, re-export it") from None

    def fail(self, node: Any, problem: str) -> OnnxError:
        return OnnxError(f"{self.source}: node {node.name or '(unnamed)'!r} ({node.op_type}): {problem}; "
                         "polylenet only imports graphs it can map exactly to its layers")

    def attrs(self, node: Any) -> dict[str, Any]:
        from onnx import helper

        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def constant(self, node: Any, index: int, what: str) -> np.ndarray:
        if index >= len(node.input) or not node.input[index]:
            raise self.fail(node, f"has no {what} input")
        value = self.value(node.input[index])
        if value is None:
            raise self.fail(node, f"its {what} {node.input[index]!r} depends on the input images")
        return np.asarray(value, np.float32)

    def value(self, name: str) -> Optional[np.ndarray]:
        """The value of a tensor that does not depend on the graph input: a stored constant, or one
        the graph computes from constants (an exporter that skipped constant folding leaves a
        bias as Reshape(Constant)); None for anything that depends on the images."""
        if name not in self.constants:
            if self.depends_on_input(name):
                return None
            self.constants[name] = self.computed(name)
        return self.constants[name]

    def depends_on_input(self, name: str) -> bool:
        producers = self.producers
        pending, seen = [name], set()
        while pending:
            tensor = pending.pop()
            if tensor in seen or tensor in self.constants or not tensor:
                continue
            seen.add(tensor)
            if tensor not in producers:  # the graph input (or a tensor nothing makes)
                return True
            pending.extend(_data_inputs(producers[tensor]))
        return False

    def broadcast_zero(self, name: str) -> bool:
        """Whether tensor ``name`` is zeros that the graph computes from no stored array but a
        scalar: torch.onnx 2.13's stand-in bias of a bias-free conv, Expand(CastLike(0, x), ...)."""
        pending, seen = [name], set()
        while pending:
            tensor = pending.pop()
            if tensor in seen or not tensor:
                continue
            seen.add(tensor)
            if tensor in self.stored:
                if tensor == name or self.constants[tensor].size > 1:
                    return False
                continue
            if tensor not in self.producers:  # the graph input
                return False
            if self.producers[tensor].op_type != "Shape":  # a shape is no stored number
                pending.extend(_data_inputs(self.producers[tensor]))
        value = self.value(name)
        return value is not None and not value.any()

    def input_shape(self) -> tuple[int, int, int]:
        constants = set(self.constants)
        inputs = [v for v in self.graph.input if v.name not in constants]
        if len(inputs) != 1:
            raise OnnxError(f"{self.source}: the graph has {len(inputs)} inputs "
                            f"({[v.name for v in inputs]}); a LeNet takes one image batch")
        dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
        if len(dims) != 4 or None in dims[1:]:
            raise OnnxError(f"{self.source}: input {inputs[0].name!r} has shape {dims}; a LeNet takes "
                            "(N, C, H, W) (or (N, H, W, C)) images with fixed C, H and W")
        self.input_name = inputs[0].name
        self.input_index = list(self.graph.input).index(inputs[0])
        return tuple(dims[1:])

    def read(self) -> tuple[tuple[int, int, int], list]:
        dims = self.input_shape()
        self.shape = (1, *dims)
        self.readers: dict[str, list] = {}  # tensor -> the nodes that read its values (once per input)
        for node in self.graph.node:
            for name in _data_inputs(node) if node.op_type != "Shape" else ():
                self.readers.setdefault(name, []).append(node)
        outputs = [v.name for v in self.graph.output]
        if len(outputs) != 1:
            raise OnnxError(f"{self.source}: the graph has {len(outputs)} outputs {outputs}; a LeNet has one")
        self.output = outputs[0]
        _, merge = self.sequence(self.input_name)
        if merge is not None:
            raise self.fail(merge, "joins a tensor with others that do not branch from the same tensor; "
                            "polylenet reads blocks whose branches all start at one tensor and meet at one node")
        if self.padded is not None:
            raise self.fail(self.padded[0], "pads the graph's output")
        if self.flatten_order is not None:
            raise OnnxError(f"{self.source}: the graph flattens in (H, W, C) order and no dense layer follows to "
                            "reorder; polylenet flattens in (C, H, W) order")
        input_shape = (dims[2], dims[0], dims[1]) if self.nhwc_input else dims
        return input_shape, self.layers

    def sequence(self, tensor: str) -> tuple[str, Any]:
        """Read the nodes from ``tensor`` on into ``self.layers`` (a tensor several nodes read: a
        block) up to the graph's output or a merge node; the tensor reached, and that merge node
        (None at the output)."""
        while tensor != self.output:
            nexts = self.readers.get(tensor, [])
            if not nexts:
                raise OnnxError(f"{self.source}: tensor {tensor!r} feeds no node and is not the graph's output")
            if len(nexts) > 1:
                tensor = self.block(tensor, nexts)
                continue
            node = nexts[0]
            if node.op_type in ("Concat", "Sum") and len(node.input) == 1:  # of one tensor: the identity
                tensor = node.output[0]
                continue
            if self.merges(node):
                return tensor, node
            self.node(node)
            tensor = node.output[0]
        return tensor, None

    def merges(self, node: Any) -> bool:
        """Whether ``node`` joins branches: a Concat, or a sum of two tensors computed from the images."""
        if node.op_type in ("Concat", "Sum"):
            return True
        return node.op_type == "Add" and sum(bool(i) and self.depends_on_input(i) for i in node.input) > 1

    def block(self, fork: str, nexts: list) -> str:
        """Read the block that starts at tensor ``fork`` (read by the nodes ``nexts``) into
        ``self.layers``: each branch up to a merge node, then each merge node all of whose inputs
        branches reached (a branch that is ``fork`` itself: the identity), the merged tensor read on
        as a branch until one is left. Returns the tensor after the block's last merge."""
        if self.padded is not None:
            raise self.fail(self.padded[0], "pads a tensor that several nodes read; polylenet pads only a "
                            "convolution's or a pooling layer's input")
        parent, start = self.layers, self.state()
        branches = []
        for node in nexts:
            self.layers = []
            self.restore(start)
            if self.merges(node):
                branches.append(_Branch(fork, node, [], start))
                continue
            self.node(node)
            tensor, merge = self.sequence(node.output[0])
            branches.append(_Branch(tensor, merge, self.layers, self.state()))
        while True:
            for branch in branches:
                if branch.merge is None:
                    raise OnnxError(f"{self.source}: a branch from tensor {fork!r} reaches the graph's output "
                                    f"{branch.tensor!r} without meeting the others at a Concat or Add node")
            merge, joined = self.complete(fork, branches)
            entry = self.merged(merge, joined)
            branches = [branch for branch in branches if all(branch is not j for j in joined)]
            if not branches:
                parent.append(entry)
                self.layers = parent
                return merge.output[0]
            self.layers = [entry]
            tensor, following = self.sequence(merge.output[0])
            branches.append(_Branch(tensor, following, self.layers, self.state(), entry))

    def complete(self, fork: str, branches: list) -> tuple[Any, list]:
        """The first merge node all of whose inputs computed from the images are branches reached
        (each input once), and those branches in its input order."""
        for merge in {id(branch.merge): branch.merge for branch in branches}.values():
            inputs = [i for i, name in enumerate(merge.input) if name and self.depends_on_input(name)]
            taken: dict[int, _Branch] = {}
            for branch in (b for b in branches if b.merge is merge):
                index = next((i for i in inputs if i not in taken and merge.input[i] == branch.tensor), None)
                taken[index] = branch
            if None not in taken and len(taken) == len(inputs):
                return merge, [taken[i] for i in inputs]
        merge = branches[0].merge
        raise self.fail(merge, f"joins tensors that do not all branch from tensor {fork!r}: not a series-parallel "
                        "graph; polylenet reads blocks whose branches all start at one tensor and meet at one node")

    def merged(self, node: Any, branches: list) -> _Merge:
        """The block whose ``branches`` merge node ``node`` joins; the reader's state after it."""
        kind = "concat" if node.op_type == "Concat" else "add"
        if len(branches) != len(node.input):
            raise self.fail(node, f"{'concatenates' if kind == 'concat' else 'sums'} a constant with its "
                            "branches; polylenet's blocks join their branches alone")
        states = [dict(zip(self._STATE, branch.state)) for branch in branches]
        shapes = [state["shape"] for state in states]
        if any(len(shape) != 4 for shape in shapes) or any(state["padded"] for state in states):
            raise self.fail(node, f"joins branches of shapes {[s[1:] for s in shapes]}; a block's branches "
                            "keep (N, C, H, W)")
        nhwc = [state["flatten_order"] is not None for state in states]
        if any(nhwc) and not all(nhwc):
            raise self.fail(node, "joins (N, C, H, W) and (N, H, W, C) tensors")
        if kind == "concat":
            axis, channels = int(self.attrs(node).get("axis", 1)), 3 if nhwc[0] else 1
            if axis % 4 != channels or len({shape[2:] for shape in shapes}) != 1:
                raise self.fail(node, f"concatenates {[s[1:] for s in shapes]} on axis {axis}; polylenet "
                                f"concatenates on the channel axis ({channels} here), at one height and width")
            shape = (1, sum(s[1] for s in shapes), *shapes[0][2:])
        elif len(set(shapes)) != 1:
            raise self.fail(node, f"sums tensors of shapes {[s[1:] for s in shapes]}")
        else:
            shape = shapes[0]
        self.restore((shape, True, None, shape[1:] if nhwc[0] else None, node if nhwc[0] else None))
        parts = []
        for index, branch in enumerate(branches):
            inner = branch.merged
            # a block that is a whole branch, merged from the same fork, of the same kind and not
            # named as a block of its own (polylenet's "<block>.add.sum2"), is part of this one: an
            # n-ary sum as a chain of Adds from the left, a Concat of Concats
            if inner is not None and len(branch.entries) == 1 and inner.merge == kind and inner.path is None and (
                    kind == "concat" or index == 0):
                parts.extend(inner.branches)
            else:
                parts.append(branch.entries)
        return _Merge(node.name, kind, parts)

    def add(self, node: Any, layer: Any, params: Optional[dict[str, np.ndarray]] = None) -> None:
        try:
            self.shape = layer.output_shape(f"layer {self.count}", self.shape)
        except SpecError as exc:  # e.g. a pool pad over half its window, which polylenet's layers refuse
            raise self.fail(node, str(exc)) from None
        self.layers.append(_Leaf(node.name, layer, params or {}))
        self.count += 1

    def node(self, node: Any) -> None:
        self.at = node
        op, a = node.op_type, self.attrs(node)
        if op == "Identity":
            return
        if op == "Cast" and a.get("to") == 1:  # to float32
            return
        if op == "Transpose":
            perm = list(a.get("perm", []))
            if not self.count and not self.nhwc_input and perm == [0, 3, 1, 2]:
                self.nhwc_input = True  # tf2onnx keeps Keras's NHWC input and transposes it here
                self.shape = (1, self.shape[3], self.shape[1], self.shape[2])
                return
            if perm == [0, 3, 1, 2] and self.flatten_order is not None:  # back from (N, H, W, C)
                self.flatten_order = self.transposed_at = None
                return
            if perm == [0, 2, 3, 1] and len(self.shape) == 4 and self.flatten_order is None:
                self.flatten_order = self.shape[1:]  # undone at the dense layer after the flatten
                self.transposed_at = node
                return
            raise self.fail(node, f"perm={perm} is a layout change polylenet cannot undo here")
        if self.flatten_order is not None and op not in ("Flatten", "Reshape", "Gemm", "MatMul", "Add"):
            raise self.fail(self.transposed_at, "an (N, H, W, C) transpose that is not followed by a flatten")
        if self.padded is not None and op not in ("Conv", "MaxPool", "AveragePool"):
            raise self.fail(self.padded[0], f"pads the input of a {op} node; polylenet pads only a convolution's "
                            "or a pooling layer's input")
        if op == "Pad":
            self.pad(node, a)
        elif op == "Conv":
            self.conv(node, a)
        elif op in ("MaxPool", "AveragePool"):
            self.pool(node, a)
        elif op in ("Sigmoid", "Relu", "Tanh"):
            self.add(node, Activation(op.lower()))
        elif op == "Flatten":
            if a.get("axis", 1) != 1:
                raise self.fail(node, f"axis={a['axis']}; polylenet flattens from axis 1")
            self.flatten(node)
        elif op == "Reshape":
            self.reshape(node)
        elif op in ("Gemm", "MatMul"):
            self.dense(node, a)
        elif op == "Add":
            self.bias(node)
        elif op == "BatchNormalization":
            self.batchnorm(node, a)
        elif op == "Dropout":
            self.dropout(node, a)
        elif op == "GlobalAveragePool":
            self.add(node, GlobalAvgPool())
        elif op == "ReduceMean":
            self.reduce_mean(node, a)
        elif op == "Mul":
            raise self.fail(node, "a multiplication outside a BatchNormalization node: an exporter that writes "
                            "an inference batchnorm as Mul and Add loses its running statistics, and polylenet "
                            "has no layer for a bare scale")
        else:
            raise self.fail(node, "no polylenet layer computes this operator (known: Conv, MaxPool, "
                            "AveragePool, Pad before them, Sigmoid, Relu, Tanh, Flatten, Reshape, Gemm, "
                            "MatMul+Add, BatchNormalization, Dropout, GlobalAveragePool, ReduceMean over H "
                            "and W)")

    def pad(self, node: Any, a: dict) -> None:
        """A constant Pad of H and W (a framework's padding layer, as nn.ZeroPad2d exports), kept
        to fold into the conv or pool that follows as its pads."""
        mode = a.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if mode != "constant":
            raise self.fail(node, f"mode={mode!r}; polylenet pads with a constant (0, or -inf for a max pool)")
        if self.padded is not None:
            raise self.fail(node, "a second Pad in a row")
        if len(self.shape) != 4:
            raise self.fail(node, f"pads a {self.shape[1:]} input; polylenet pads only NCHW images")
        given = [len(node.input) > i and bool(node.input[i]) for i in range(4)]  # opset 11+: as inputs
        pads = self.constant(node, 1, "pads") if given[1] else np.asarray(a.get("pads", []))
        value = float(self.constant(node, 2, "constant_value").reshape(-1)[0]) if given[2] else a.get("value", 0.0)
        axes = [int(v) % 4 for v in self.constant(node, 3, "axes").reshape(-1)] if given[3] else [0, 1, 2, 3]
        pads = [int(v) for v in pads.reshape(-1)]
        if len(pads) != 2 * len(axes):
            raise self.fail(node, f"{len(pads)} pads for {len(axes)} axes")
        begin, end = [0] * 4, [0] * 4
        for axis, first, last in zip(axes, pads, pads[len(axes):]):
            begin[axis], end[axis] = first, last
        if any(begin[:2]) or any(end[:2]) or min(pads) < 0:
            raise self.fail(node, f"pads={pads}; polylenet pads only H and W, by a non-negative amount")
        self.padded = (node, ((begin[2], end[2]), (begin[3], end[3])), value)

    def fold_pad(self, node: Any, pads: Pads, value: float, why: str) -> Pads:
        """``pads`` plus those of the Pad node before ``node`` (if any), which must pad with ``value``."""
        if self.padded is None:
            return pads
        pad, extra, got = self.padded
        self.padded = None
        if got != value:
            raise self.fail(pad, f"pads with {got} before a {node.op_type}, which {why}")
        return tuple((a + c, b + d) for (a, b), (c, d) in zip(pads, extra))

    def pair(self, node: Any, a: dict, attr: str, default: Pair) -> Pair:
        values = tuple(int(v) for v in a.get(attr, default))
        if len(values) != 2:
            raise self.fail(node, f"{attr}={list(values)}; polylenet's layers are 2-D")
        return values

    def pads(self, node: Any, a: dict, kernel: Pair, stride: Pair) -> Pads:
        """ONNX's [top, left, bottom, right] (or an auto_pad) as ((top, bottom), (left, right))."""
        auto_pad = a.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            if a.get("ceil_mode", 0) or self.padded is not None:
                with_what = "ceil_mode=1" if a.get("ceil_mode", 0) else "a Pad before it"
                raise self.fail(node, f"auto_pad={auto_pad} with {with_what}; export with explicit pads")
            pads = same_pads(self.shape[2:], kernel, stride)  # SAME_UPPER: the odd row/column at the end
            return pads if auto_pad == "SAME_UPPER" else tuple((end, begin) for begin, end in pads)
        if auto_pad == "VALID":
            return ((0, 0), (0, 0))
        if auto_pad != "NOTSET":
            raise self.fail(node, f"auto_pad={auto_pad!r} is not an ONNX padding mode")
        pads = [int(p) for p in a.get("pads", [0, 0, 0, 0])]
        if len(pads) != 4:
            raise self.fail(node, f"pads={pads}; polylenet's layers are 2-D")
        if any(p < 0 for p in pads):
            raise self.fail(node, f"pads={pads} are negative (a crop); polylenet pads only")
        top, left, bottom, right = pads
        return ((top, bottom), (left, right))

    def window(self, node: Any, a: dict, kernel_default: Pair) -> tuple[Pair, Pair, Pads]:
        if any(d != 1 for d in a.get("dilations", [1, 1])):
            raise self.fail(node, f"dilations={list(a['dilations'])}; polylenet has no dilated layers")
        kernel = self.pair(node, a, "kernel_shape", kernel_default)
        stride = self.pair(node, a, "strides", (1, 1))
        return kernel, stride, self.pads(node, a, kernel, stride)

    def conv(self, node: Any, a: dict) -> None:
        if a.get("group", 1) != 1:
            raise self.fail(node, f"group={a['group']}; polylenet has no grouped convolutions")
        weight = self.constant(node, 1, "weight")
        if weight.ndim != 4:
            raise self.fail(node, f"a {weight.shape} weight; polylenet's convolutions are 2-D")
        kernel, stride, pads = self.window(node, a, weight.shape[2:])
        if kernel != weight.shape[2:]:
            raise self.fail(node, f"kernel_shape={list(kernel)} but a {weight.shape} weight")
        pads = self.fold_pad(node, pads, 0.0, "pads with zeros")
        biased = len(node.input) > 2 and bool(node.input[2]) and not self.broadcast_zero(node.input[2])
        params = {"weight": weight, **({"bias": self.constant(node, 2, "bias")} if biased else {})}
        self.add(node, Conv2D(weight.shape[0], _short(kernel), _short(stride), _short_pads(pads), biased), params)
        self.biased = biased

    def pool(self, node: Any, a: dict) -> None:
        if "kernel_shape" not in a:
            raise self.fail(node, "has no kernel_shape")
        size, stride, pads = self.window(node, a, (0, 0))
        kind = "max" if node.op_type == "MaxPool" else "avg"
        if kind == "max" and len(node.output) > 1 and node.output[1]:
            raise self.fail(node, "returns the argmax indices too; polylenet's max pool returns the maxima only")
        if kind == "max" and a.get("storage_order", 0):
            raise self.fail(node, "storage_order=1 (column-major argmax indices)")
        ceil_mode = bool(a.get("ceil_mode", 0))
        # ONNX's count_include_pad defaults to 0; without pads it changes nothing, so polylenet's
        # default (True) is read there, and a framework's pad-free average pool imports as its spec
        unpadded = pads == ((0, 0), (0, 0))
        include_pad = bool(a.get("count_include_pad", int(unpadded))) if kind == "avg" else True
        if self.padded is not None:
            extra = self.padded[1]
            if kind == "avg" and not include_pad and not unpadded:
                raise self.fail(node, "count_include_pad=0 with pads, after a Pad node: its divisor counts the "
                                "Pad's zeros but not its own pads, which no polylenet pool does")
            include_pad = include_pad or kind == "avg"  # the Pad's zeros are input to the pool: counted
            total = tuple((a + c, b + d) for (a, b), (c, d) in zip(pads, extra))
            padded_hw = [d + sum(p) for d, p in zip(self.shape[2:], extra)]
            if ceil_mode and [pool_output_size(d, p, k, s, True) for d, p, k, s in zip(padded_hw, pads, size, stride)] \
                    != [pool_output_size(d, p, k, s, True) for d, p, k, s in zip(self.shape[2:], total, size, stride)]:
                raise self.fail(node, "ceil_mode=1 keeps a last window that starts in the Pad's bottom/right rows, "
                                "which polylenet's ceil_mode drops")
            pads = self.fold_pad(node, pads, -np.inf if kind == "max" else 0.0,
                                 "never lets a pad win" if kind == "max" else "averages zeros")
        self.add(node, Pool2D(kind, _short(size), _short(stride), _short_pads(pads), ceil_mode, include_pad))

    def flatten(self, node: Any) -> None:
        if len(self.shape) != 2:
            self.add(node, Flatten())

    def reshape(self, node: Any) -> None:
        computed = self.depends_on_input(node.input[1])
        target = (self.computed(node.input[1]) if computed else self.constant(node, 1, "shape")).reshape(-1)
        features = math.prod(self.shape[1:])
        if not self.count and target is not None and target.size == 4 and not self.nhwc_input:
            h, w, c = self.shape[1:]
            if c == 1 and target[1:].tolist() == [1, h, w]:  # tf2onnx's NHWC-to-NCHW for one channel
                self.nhwc_input = True
                self.shape = (1, 1, h, w)
                return
        # a computed shape (Keras's Flatten: Shape, Gather, Concat, ...) is evaluated for a batch of 3
        batch = (-1, 0, 3) if computed else (-1, 0, 1)
        if len(self.shape) == 4 and target.size == 2 and target[0] in batch and target[1] in (features, -1):
            return self.flatten(node)
        if target.size == len(self.shape) and target[0] in batch and target[1:].tolist() == list(self.shape[1:]):
            # to the shape it has: tf2onnx writes a Keras Permute that moves only 1-sized axes
            # (after a global pool) so, depending on its optimizer's order (PYTHONHASHSEED)
            return
        raise self.fail(node, f"reshapes {self.shape[1:]} to {target.tolist()}; "
                        "polylenet reshapes only (N, C, H, W) to (N, C*H*W)")

    def computed(self, name: str) -> np.ndarray:
        """The value of tensor ``name`` for a batch of 3 images, computed node by node by ONNX's
        reference evaluator. A Shape node reads the shape that shape inference gives its input, so
        no activation is computed to learn a shape; every other node's output shapes are inferred
        before it runs, and a node whose outputs would take more than what is left of the parameter
        limit is refused before it allocates them (a ConstantOfShape([10**12]) is a clear error)."""
        values: dict[str, np.ndarray] = {}
        for node in self.needed(name):
            if node.op_type == "Shape" and self.static_shape(node.input[0]) is not None:
                a = self.attrs(node)
                shape = self.static_shape(node.input[0])[a.get("start", 0):a.get("end", None)]
                values[node.output[0]] = np.array(shape, np.int64)
            else:
                self.evaluate(node, values)
        return values[name]

    def needed(self, name: str) -> list:
        """The nodes that compute tensor ``name``, in graph order: none behind a stored constant, nor
        behind a Shape node whose input has a static shape."""
        wanted, pending = set(), [name]
        while pending:
            tensor = pending.pop()
            if not tensor or tensor in wanted or tensor in self.constants:
                continue
            wanted.add(tensor)
            node = self.producers.get(tensor)
            if node is not None and not (node.op_type == "Shape" and self.static_shape(node.input[0]) is not None):
                pending.extend(_data_inputs(node))
        return [node for node in self.graph.node if any(output in wanted for output in node.output)]

    def static_shape(self, name: str) -> Optional[tuple[int, ...]]:
        """The shape of tensor ``name`` for a batch of 3 images, where shape inference tells it."""
        if name in self.constants:
            return self.constants[name].shape
        tensor_type = self.static_types().get(name)
        if tensor_type is None or not tensor_type.tensor_type.HasField("shape"):
            return None
        dims = tensor_type.tensor_type.shape.dim
        return tuple(d.dim_value for d in dims) if all(d.HasField("dim_value") for d in dims) else None

    def static_types(self) -> dict[str, Any]:
        """The type (with its shape where shape inference tells one) of every tensor for a batch of
        3 images, inferred node by node, each node's outputs checked before the next node reads
        them: ONNX's inference of a whole graph aborts the process (a C++ assertion) on some
        (onnx 1.23: an Expand to the shape [-1] before a Slice)."""
        if self._types is None:
            from onnx import helper

            types = {}
            for value in self.graph.input:
                types[value.name] = type(value.type)()
                types[value.name].CopyFrom(value.type)
                if value.name == self.input_name:  # the batch dimension: 3
                    types[value.name].tensor_type.shape.dim[0].Clear()
                    types[value.name].tensor_type.shape.dim[0].dim_value = 3
            for tensor in self.graph.initializer:
                types[tensor.name] = helper.make_tensor_type_proto(tensor.data_type, list(tensor.dims))
            small = {name: value for name, value in self.constants.items() if value.size <= _SMALL}
            for node in self.graph.node:
                if node.op_type == "Constant" and node.output and node.output[0] in self.constants:
                    value = self.constants[node.output[0]]
                    types[node.output[0]] = helper.make_tensor_type_proto(
                        helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape))
                elif node.domain in ("", "ai.onnx") and not _has_subgraph(node):
                    try:
                        types.update(self.infer(node, types, small, strict=False)[1])
                    except OnnxError:
                        raise
                    except Exception:  # noqa: BLE001 -- its outputs' types stay unknown
                        continue
            self._types = types
        return self._types

    def infer(self, node: Any, types: Mapping[str, Any], values: Mapping[str, np.ndarray],
              strict: bool) -> tuple[Any, dict[str, Any]]:
        """The model of ``node`` alone (its inputs of ``types``, those of ``values`` given as
        initializers, so that shape inference reads a shape given as an input) after shape
        inference, and its outputs' types; a negative dimension is refused."""
        onnx = _onnx()
        from onnx import helper, numpy_helper

        inputs = [name for name in dict.fromkeys(node.input) if name]
        initializers = [numpy_helper.from_array(values[name], name) for name in inputs if name in values]
        declared = [helper.make_value_info(name, types[name]) if name in types else
                    helper.make_empty_tensor_value_info(name) for name in inputs if name not in values]
        graph = helper.make_graph([node], "node", declared, [helper.make_empty_tensor_value_info(o)
                                                             for o in node.output if o], initializers)
        model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=self.model.opset_import),
                                                  strict_mode=strict)
        outputs = {value.name: value.type for value in model.graph.output if value.type.HasField("tensor_type")}
        for name, tensor_type in outputs.items():
            dims = [d.dim_value for d in tensor_type.tensor_type.shape.dim if d.HasField("dim_value")]
            if any(d < 0 for d in dims):
                raise self.fail(node, f"its output {name!r} has a negative dimension {dims} (from its inputs' "
                                "shapes or values)")
        return model, outputs

    def evaluate(self, node: Any, values: dict[str, np.ndarray]) -> None:
        """Compute ``node``'s outputs into ``values`` (its inputs are there, or constants, or the
        images), once shape inference has bounded their size."""
        from onnx.reference import ReferenceEvaluator

        if node.domain not in ("", "ai.onnx"):
            raise self.fail(node, f"an operator of domain {node.domain!r} in a computed constant; polylenet "
                            "computes standard ONNX operators only")
        if _has_subgraph(node):
            raise self.fail(node, "a control-flow node in a computed constant; polylenet computes no subgraphs")
        inputs = {}
        for index, tensor in enumerate(node.input):
            if not tensor:
                continue
            if tensor in values or tensor in self.constants:
                inputs[tensor] = values[tensor] if tensor in values else self.constants[tensor]
            elif node.op_type == "CastLike" and index == 1:  # only its type is read
                inputs[tensor] = np.zeros((), self.tensor_dtype(node, tensor))
            elif tensor == self.input_name:
                images = (3, *self.static_shape(tensor)[1:])
                self.spend(node, math.prod(images), f"a batch of 3 images {images} for it")
                inputs[tensor] = values[tensor] = np.zeros(images, np.float32)
            else:
                raise self.fail(node, f"reads tensor {tensor!r}, which nothing computes")
        model, feeds, shapes = self.inferred(node, inputs)
        self.spend(node, sum(math.prod(shape) for shape in shapes), f"its outputs, of shapes {shapes},")
        try:
            outputs = ReferenceEvaluator(model).run(None, feeds)
        except Exception as exc:  # noqa: BLE001 -- whatever the reference evaluator raises on this node
            raise self.fail(node, f"cannot be computed ({type(exc).__name__}: {_brief(exc)})") from None
        for output, value in zip((o for o in node.output if o), outputs):
            if not isinstance(value, np.ndarray) and not np.isscalar(value):
                raise self.fail(node, f"computes a {type(value).__name__}; polylenet computes tensors only")
            values[output] = np.asarray(value)

    def inferred(self, node: Any, inputs: dict[str, np.ndarray]) -> tuple[Any, dict, list]:
        """The model of ``node`` alone on ``inputs`` (the small ones as initializers), the inputs it
        is fed, and its outputs' inferred shapes: refused where inference cannot tell them."""
        from onnx import helper

        feeds = {name: value for name, value in inputs.items() if value.size > _SMALL}
        try:
            types = {name: helper.make_tensor_type_proto(helper.np_dtype_to_tensor_dtype(value.dtype), value.shape)
                     for name, value in feeds.items()}
            model, outputs = self.infer(node, types, {n: v for n, v in inputs.items() if n not in feeds}, strict=True)
        except OnnxError:
            raise
        except Exception as exc:  # noqa: BLE001 -- onnx's InferenceError, or a tensor type it cannot hold
            raise self.fail(node, f"shape inference fails on it ({type(exc).__name__}: {_brief(exc)}), so polylenet "
                            "cannot bound its outputs before computing them") from None
        shapes = []
        for output in (o for o in node.output if o):
            tensor_type = outputs[output].tensor_type if output in outputs else None
            if tensor_type is None or not tensor_type.HasField("shape") or not all(
                    d.HasField("dim_value") for d in tensor_type.shape.dim):
                raise self.fail(node, f"shape inference cannot tell the shape of its output {output!r}, so "
                                "polylenet cannot bound it before computing it")
            shapes.append(tuple(d.dim_value for d in tensor_type.shape.dim))
        return model, feeds, shapes

    def tensor_dtype(self, node: Any, name: str) -> np.dtype:
        from onnx import helper

        tensor_type = self.static_types().get(name)
        if tensor_type is None or not tensor_type.tensor_type.elem_type:
            raise self.fail(node, f"its input {name!r} has no known type")
        return helper.tensor_dtype_to_np_dtype(tensor_type.tensor_type.elem_type)

    def spend(self, node: Any, count: int, what: str) -> None:
        """Count ``count`` values against the limit of what one import computes, or refuse ``node``."""
        if self.spent + count > self.limit:
            before = f" (after {self.spent:,} for other nodes)" if self.spent else ""
            raise OnnxError(f"{self.source}: node {node.name or '(unnamed)'!r} ({node.op_type}): computing {what} "
                            f"takes {count:,} values{before}, over the limit of {self.limit:,} that polylenet computes "
                            "from a file; a LeNet-sized model needs far fewer (or raise $POLYLENET_MAX_PARAMETERS)")
        self.spent += count

    def dense(self, node: Any, a: dict) -> None:
        weight = self.constant(node, 1, "weight")
        if node.op_type == "Gemm":
            if a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0 or a.get("transA", 0):
                raise self.fail(node, f"alpha={a.get('alpha', 1.0)}, beta={a.get('beta', 1.0)}, "
                                f"transA={a.get('transA', 0)}; polylenet's dense layer is x @ W.T + b")
            weight = weight if a.get("transB", 0) else weight.T
        else:
            weight = weight.T  # MatMul's (in, out)
        if weight.ndim != 2 or len(self.shape) != 2 or weight.shape[1] != self.shape[1]:
            raise self.fail(node, f"a {weight.shape} weight on a {self.shape[1:]} input")
        if self.flatten_order is not None:  # HWC-order columns to polylenet's CHW order
            c, h, w = self.flatten_order
            weight = weight.reshape(-1, h, w, c).transpose(0, 3, 1, 2).reshape(weight.shape[0], -1)
            self.flatten_order = None
        bias = np.zeros(weight.shape[0], np.float32)
        if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]:
            bias = self.constant(node, 2, "bias").reshape(-1)
        self.add(node, Dense(weight.shape[0]), {"weight": np.ascontiguousarray(weight), "bias": bias})
        self.biased = node.op_type == "Gemm" and len(node.input) > 2 and bool(node.input[2])

    def bias(self, node: Any) -> None:
        """An Add right after a Conv or MatMul without a bias (paddle2onnx, tf2onnx) is its bias."""
        other = [i for i in node.input if self.value(i) is not None]
        entry = self.layers[-1] if self.layers and isinstance(self.layers[-1], _Leaf) else None
        last = entry.layer if entry is not None else None
        if not isinstance(last, (Conv2D, Dense)) or self.biased or len(other) != 1:
            raise self.fail(node, "an addition that is not the bias of the convolution or dense layer before it")
        bias = np.asarray(self.constants[other[0]], np.float32)
        size = last.out_channels if isinstance(last, Conv2D) else last.units
        # per channel on (N, C, H, W) is (C, 1, 1) or (1, C, 1, 1); per unit on (N, units) is (units,)
        shapes = [(size, 1, 1), (1, size, 1, 1)] if isinstance(last, Conv2D) else [(size,), (1, size)]
        if bias.shape not in shapes:
            raise self.fail(node, f"adds a {bias.shape} constant to {self.shape[1:]}; a bias has shape {shapes[0]}")
        entry.params["bias"], self.biased = bias.reshape(-1), True
        if isinstance(last, Conv2D):
            entry.layer = replace(last, bias=True)

    def batchnorm(self, node: Any, a: dict) -> None:
        if a.get("training_mode", 0):
            raise self.fail(node, "training_mode=1; export the model in evaluation mode")
        names = ("weight", "bias", "running_mean", "running_var")
        params = {key: self.constant(node, i + 1, key) for i, key in enumerate(names)}
        eps, momentum = (float(str(np.float32(a.get(k, d)))) for k, d in (("epsilon", 1e-5), ("momentum", 0.9)))
        self.add(node, BatchNorm(momentum=momentum, eps=eps), params)

    def dropout(self, node: Any, a: dict) -> None:
        """Dropout in inference mode (the identity) as polylenet's dropout layer with its ratio:
        an input since opset 12 (default 0.5), an attribute before."""
        given = [len(node.input) > i and bool(node.input[i]) for i in range(3)]
        if given[2]:
            training = self.value(node.input[2])
            if training is None or training.size != 1 or bool(training.reshape(-1)[0]):
                raise self.fail(node, "training_mode is not a constant False; export the model in evaluation mode")
        if given[1]:
            ratio = self.value(node.input[1])
            if ratio is None:
                raise self.fail(node, f"its ratio {node.input[1]!r} depends on the input images")
            if ratio.size != 1:
                raise self.fail(node, f"a {ratio.shape} ratio; a dropout rate is one number")
            ratio = ratio.reshape(-1)[0]
            # float64 (polylenet's export) is p itself; a float32 ratio is read as its shortest
            # decimal, the number the spec that wrote it held (as batchnorm's epsilon)
            p = float(ratio) if ratio.dtype == np.float64 else float(str(ratio))
        else:
            p = float(str(np.float32(a.get("ratio", 0.5))))
        self.add(node, Dropout(p))

    def reduce_mean(self, node: Any, a: dict) -> None:
        """A mean over H and W of an (N, C, H, W) tensor (tf2onnx's global average pool) as
        polylenet's global_avg_pool; with keepdims=0, a flatten after it."""
        given = len(node.input) > 1 and bool(node.input[1])  # opset 18+: axes as an input
        axes = [int(v) for v in self.constant(node, 1, "axes").reshape(-1)] if given else list(a.get("axes", []))
        keepdims = int(a.get("keepdims", 1))
        if len(self.shape) != 4 or sorted(v % 4 for v in axes) != [2, 3]:
            raise self.fail(node, f"averages axes {axes} of a {self.shape[1:]} input; polylenet's only mean is "
                            "global_avg_pool, over H and W (axes [2, 3]) of (N, C, H, W)")
        self.add(node, GlobalAvgPool())
        if not keepdims:
            self.add(node, Flatten())


class _Unnamed(Exception):
    """The node names are not the paths of the tree read (not polylenet's own names)."""


def _structure(entries: list, params: list) -> tuple:
    """The nodes of ``entries`` as read: a block per merge (labelled as polylenet's ``concat`` and
    ``add`` label theirs), no groups, what follows a merge in the sequence after it."""
    nodes = []
    for entry in entries:
        if isinstance(entry, _Leaf):
            nodes.append(entry.layer)
            params.append(entry.params)
        else:
            branches = tuple(_structure(branch, params) for branch in entry.branches)
            nodes.append(Block(entry.merge, branches, (), "concat" if entry.merge == "concat" else "residual"))
    return tuple(nodes)


def _by_path(entries: list, prefix: str, params: list, counts: Optional[dict] = None) -> tuple:
    """The nodes of ``entries`` whose node names are the paths of polylenet's export: the layers
    named ``b3.pool1`` and the blocks named ``b3.inception1`` (merge node ``b3.inception1.concat``)
    inside group ``b3``, a block's ``after`` layers the ones after it named inside it
    (``b3.residual1.act1``); raises :class:`_Unnamed` where the names are not that tree's."""
    runs: list[tuple[str, list]] = []
    for entry in entries:
        path = entry.name if isinstance(entry, _Leaf) else entry.path
        if path is None or not path.startswith(prefix) or len(path) == len(prefix):
            raise _Unnamed
        name = path[len(prefix):].split(".", 1)[0]
        if runs and runs[-1][0] == name and path != prefix + name:
            runs[-1][1].append(entry)
        else:
            runs.append((name, [entry]))
    nodes = []
    for name, members in runs:
        head, path, label = members[0], prefix + name, name.rstrip("0123456789")
        if isinstance(head, _Leaf) and head.name == path and len(members) == 1:
            nodes.append(head.layer)
            params.append(head.params)
        elif isinstance(head, _Merge) and head.path == path:
            branches = tuple(_by_path(branch, f"{path}.branch{i}.", params)
                             for i, branch in enumerate(head.branches, 1))
            after = _by_path(members[1:], path + ".", params, {"branch": len(branches)})
            nodes.append(Block(head.merge, branches, after, label))
        elif (head.name if isinstance(head, _Leaf) else head.path) != path:
            nodes.append(Sequential(_by_path(members, path + ".", params), label))
        else:
            raise _Unnamed
    if node_names(nodes, counts) != [name for name, _ in runs]:
        raise _Unnamed
    return tuple(nodes)


def _check_text(graph: Any, source: str) -> None:
    """Refuse a name that is not UTF-8 (protobuf hands it over as bytes), naming where it is."""
    places = [("the graph's name", [graph.name])]
    places += [(f"node {i} ({node.op_type!r})", [node.name, node.op_type, node.domain, *node.input, *node.output,
                                                *(a.name for a in node.attribute)])
               for i, node in enumerate(graph.node)]
    places += [(f"{kind} {i}", [value.name]) for kind, values in (
        ("graph input", graph.input), ("graph output", graph.output), ("initializer", graph.initializer),
        ("value_info", graph.value_info)) for i, value in enumerate(values)]
    for where, texts in places:
        bad = next((text for text in texts if isinstance(text, bytes)), None)
        if bad is not None:
            raise OnnxError(f"{source}: {where} has a name that is not UTF-8 ({bad[:40]!r}); the file is damaged, "
                            "re-export it")


def _check_dims(graph: Any, source: str) -> None:
    """Refuse a negative dimension of a graph input, output or initializer, naming it."""
    for kind, values in (("graph input", graph.input), ("graph output", graph.output)):
        for value in values:
            dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
            if any(d < 0 for d in dims):
                raise OnnxError(f"{source}: {kind} {value.name!r} has the negative dimension {dims}; the file is "
                                "damaged, re-export it")
    for tensor in graph.initializer:
        if any(d < 0 for d in tensor.dims):
            raise OnnxError(f"{source}: initializer {tensor.name!r} has the negative dimension {list(tensor.dims)}; "
                            "the file is damaged, re-export it")


def from_onnx(model: Any, source: str = "<onnx>", name: Optional[str] = None) -> tuple[Spec, Weights]:
    """The neutral spec and weights of a LeNet-like ``onnx.ModelProto``, blocks included (see
    :class:`_Reader`); where its node names are the spec paths polylenet's export writes, with
    that spec's groups, block labels and ``after`` layers (so a round trip returns the spec)."""
    onnx = _onnx()
    # no shape inference of the whole graph: it aborts the process on some graphs (_Reader.static_types)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise OnnxError(f"{source}: not a valid ONNX model: {_brief(exc)}") from None
    except UnicodeDecodeError as exc:  # the checker's message quotes a name that is not UTF-8
        raise OnnxError(f"{source}: not a valid ONNX model: a name or text field is not UTF-8 ({_brief(exc)}); "
                        "the file is damaged, re-export it") from None
    _check_text(model.graph, source)
    _check_dims(model.graph, source)
    reader = _Reader(model, source)
    try:
        input_shape, entries = reader.read()
    except OnnxError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, ArithmeticError) as exc:
        # a field of a type or value no check above foresaw (an attribute of the wrong kind, a name
        # that is not UTF-8): named with the node it was read from
        where = f"node {reader.at.name or '(unnamed)'!r} ({reader.at.op_type})" if reader.at is not None else "graph"
        raise OnnxError(f"{source}: {where}: cannot be read ({type(exc).__name__}: {_brief(exc)}); the file is "
                        "damaged or not a LeNet-like graph polylenet imports") from None
    if not entries or len(reader.shape) != 2:
        raise OnnxError(f"{source}: the graph ends with shape {reader.shape}, not (N, classes); a LeNet ends "
                        "in its logits (a dense layer, or a flatten)")
    name = name or model.graph.name or "imported"
    spec = None
    try:
        params: list = []
        spec = Spec(name, _by_path(entries, "", params), input_shape, reader.shape[1])
    except (_Unnamed, SpecError):
        pass
    if spec is None:
        params = []
        try:
            spec = Spec(name, _structure(entries, params), input_shape, reader.shape[1])
        except SpecError as exc:
            raise OnnxError(f"{source}: the layers read are not a valid spec: {exc}") from None
    weights = {f"{path}.{key}": np.ascontiguousarray(value, np.float32)
               for (path, *_), values in zip(spec.leaves, params) for key, value in values.items()}
    check_finite(weights, source, OnnxError)
    return spec, check_weights(spec, weights, source)


def import_onnx(path: Union[str, os.PathLike]) -> tuple[Spec, Weights]:
    """Read an ONNX LeNet or block CNN (polylenet's export, or a framework exporter's) into a
    neutral spec and weights, ready for ``polylenet.build(spec, backend=..., weights=weights)``.
    An operator or attribute that polylenet cannot map exactly, or a graph that is not
    series-parallel, raises :class:`OnnxError` naming the node.

    >>> import os, tempfile, numpy as np, polylenet
    >>> path = polylenet.export_onnx("lenet-relu", os.path.join(tempfile.mkdtemp(), "m.onnx"))
    >>> spec, weights = polylenet.import_onnx(path)
    >>> np.array_equal(weights["dense3.weight"], polylenet.init_weights("lenet-relu")["dense3.weight"])
    True
    """
    onnx = _onnx()
    source = os.fspath(path)
    try:
        model = onnx.load(source)
    except FileNotFoundError:
        raise OnnxError(f"{source}: no such ONNX file") from None
    except Exception as exc:  # protobuf's DecodeError and friends
        raise OnnxError(f"{source}: not an ONNX file ({type(exc).__name__}: {exc})") from None
    graph_name = model.graph.name
    name = graph_name if graph_name and graph_name not in ("main_graph", "torch_jit", "tf2onnx") else Path(source).stem
    return from_onnx(model, source, name)
