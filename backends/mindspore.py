"""MindSpore: the spec as a mindspore.nn.SequentialCell, as in d2l's MindSpore tab; a group is an
nn.SequentialCell, a block d2l's own kind of Cell (:class:`Residual`, :class:`Concat` as
``Inception``), each child named as the spec names it, so ``getattr`` per part of a path
(``b3``, ``residual1``, ``branch1``, ``conv1``) finds the layer."""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from functools import reduce

import numpy as np

from polylenet.layers import (
    Activation,
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    Pool2D,
    unsupported_layer,
)
from polylenet.masks import dropout_layers
from polylenet.quiet import quiet_import
from polylenet.shapes import is_state, param_shapes
from polylenet.tree import fold, run

# MindSpore's C++ log is verbose at WARNING; it reads GLOG_v once, while importing.
with quiet_import({"GLOG_v": "3"}):
    import mindspore as ms
    from mindspore import nn, ops

NAME = "mindspore"
CAPABILITIES = frozenset({"inference", "training"})
_ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": lambda: ExactTanh()}
_POOLS = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}

# MindSpore 2.10 sizes its CPU kernel thread pool by the core count and ignores OMP_NUM_THREADS;
# hold it to that where it is set (`compare --jobs 2` sets it for each child). Sharing 2 cores with
# a second training run, the default pool measured 1,200 examples/s here, one thread 1,600.
_threads = os.environ.get("OMP_NUM_THREADS", "")
if _threads.isdigit() and int(_threads) > 0:
    try:
        ms.device_context.cpu.op_tuning.threads_num(int(_threads))
    except RuntimeError:  # already set by the program that imported us: its choice stands
        pass


class Im2colConv2d(nn.Cell):
    """nn.Conv2d's maths (weight (out, in, kh, kw), optional bias, zero padding) as MindSpore's own
    im2col (ops.unfold) and one matmul. MindSpore 2.10's CPU Conv2d kernel takes ~300 ms for one
    256-image LeNet convolution on a 2-core x86 CPU, whatever the thread settings; this takes
    a few ms. (It replaced a gather-based im2col: 1.1-1.2x the whole step's speed here.)
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride, pads, bias, in_hw):
        super().__init__()
        ((top, bottom), (left, right)), symmetric = pads, pads[0][0] == pads[0][1] and pads[1][0] == pads[1][1]
        self.kernel, self.stride = kernel_size, stride
        # ops.unfold pads both sides of an axis alike: other pads are zeros put first by nn.Pad.
        # (Not nn.ZeroPad2d or ops.pad: in MindSpore 2.10's GRAPH_MODE their gradient is wrong from
        # a graph's second call on, e.g. conv1's off by 100% on the second compiled step.)
        self.padding = (top, left) if symmetric else 0
        self.pad = None if symmetric else nn.Pad(((0, 0), (0, 0), (top, bottom), (left, right)))
        self.out_hw = tuple((size + sum(p) - k) // s + 1 for size, p, k, s in zip(in_hw, pads, kernel_size, stride))
        self.weight = ms.Parameter(ms.Tensor(np.zeros((out_channels, in_channels, *kernel_size), np.float32)),
                                   name="weight")
        self.bias = ms.Parameter(ms.Tensor(np.zeros(out_channels, np.float32)), name="bias") if bias else None

    def construct(self, x):
        if self.pad is not None:
            x = self.pad(x)
        cols = ops.unfold(x, self.kernel, 1, self.padding, self.stride)  # (N, C*kh*kw, OH*OW), (c, i, j) rows
        # The weight broadcast by hand to a batched matmul, and bias_add: their gradients are a
        # BatchMatMul and BiasAddGrad. With the weight broadcast by ops.matmul and a `+ bias`,
        # MindSpore 2.10 reduces the gradients with slow ReduceSums: conv1's forward and backward took
        # 44 ms instead of 22 here, and the whole step 1.3x longer.
        w = ops.broadcast_to(self.weight.reshape(1, self.weight.shape[0], -1), (x.shape[0], -1, -1))
        y = ops.bmm(w, cols)
        if self.bias is not None:
            y = ops.bias_add(y, self.bias)
        return y.reshape(x.shape[0], -1, *self.out_hw)


class Pool2dPerSide(nn.Cell):
    """nn.MaxPool2d/nn.AvgPool2d with pads that differ between the two sides of an axis, which
    their ``padding`` (one value per axis) cannot say: the 3-D primitives they run themselves
    (ops.MaxPool3D, ops.AvgPool3D over a depth of 1), which take one pad per side. MindSpore 2.10's
    CPU kernels follow the neutral rules: a pad never wins a max, and the average's divisor counts
    the explicit pads (count_include_pad) but never ceil_mode's overhang."""

    def __init__(self, layer):
        super().__init__()
        (kh, kw), (sh, sw), ((top, bottom), (left, right)) = layer.size_hw, layer.stride_hw, layer.pads
        window = {"kernel_size": (1, kh, kw), "strides": (1, sh, sw), "pad_mode": "pad", "ceil_mode": layer.ceil_mode}
        pads = (0, 0, top, bottom, left, right)
        if layer.kind == "max":
            self.pool = ops.MaxPool3D(pad_list=pads, **window)
        else:
            self.pool = ops.AvgPool3D(pad=pads, count_include_pad=layer.count_include_pad, **window)

    def construct(self, x):
        return self.pool(x.unsqueeze(2)).squeeze(2)


class ExactTanh(nn.Cell):
    """tanh to float32 rounding. MindSpore 2.10's CPU Tanh kernel is an approximation that is off
    by up to 1e-4 for |x| in 4..6 (tanh(5) comes out 1.0000098, above 1); this is
    tanh(|x|) = -expm1(-2|x|) / (expm1(-2|x|) + 2), odd-extended, within 1.5e-7 on [-50, 50]."""

    def construct(self, x):
        sign = ops.stop_gradient(ops.where(x >= 0, 1.0, -1.0))
        e = ops.expm1(-2.0 * x * sign)
        return sign * (-e / (e + 2.0))


def _biased_running_var(base):
    """``base`` (nn.BatchNorm1d or 2d) with the running variance the neutral convention keeps.
    MindSpore 2.10's CPU BatchNorm kernel updates the moving variance with the unbiased batch
    variance (n/(n-1) times the biased one it normalizes with); take the difference back so it
    follows the biased one, as d2l's ``batch_norm`` does. (``self.momentum`` is MindSpore's
    internal 1 - momentum: the weight of the new batch.) The base is called by name: MindSpore
    2.10's graph mode (ms.jit) recursed without end on super() in the mixin this replaced."""

    class BiasedRunningVar(base):
        def construct(self, x):
            y = base.construct(self, x)
            if self.training:
                n = x.size // x.shape[1]
                var = ops.stop_gradient(x).var(axis=(0, 2, 3) if x.ndim == 4 else 0, ddof=0)
                ops.assign_sub(self.moving_variance, self.momentum * var / max(n - 1, 1))
            return y

    BiasedRunningVar.__name__ = BiasedRunningVar.__qualname__ = f"{base.__name__}BiasedRunningVar"
    return BiasedRunningVar


BatchNorm1dBiasedRunningVar = _biased_running_var(nn.BatchNorm1d)
BatchNorm2dBiasedRunningVar = _biased_running_var(nn.BatchNorm2d)


def version() -> str:
    return ms.__version__


def _conv(name, layer, in_shape):
    return Im2colConv2d(in_shape[1], layer.out_channels, layer.kernel_hw, layer.stride_hw, layer.pads, layer.bias,
                        in_hw=in_shape[2:])


def _pool(name, layer, in_shape):
    ((top, bottom), (left, right)), size, stride = layer.pads, layer.size_hw, layer.stride_hw
    if top != bottom or left != right:
        return Pool2dPerSide(layer)
    if not top and not left and not layer.ceil_mode:
        return _POOLS[layer.kind](kernel_size=size, stride=stride, pad_mode="valid")
    # MindSpore 2.10's pad mode follows the neutral rules (pads never win a max; the average's
    # divisor with count_include_pad; ceil_mode's overhang never counted), measured against the oracle
    divisor = {"count_include_pad": layer.count_include_pad} if layer.kind == "avg" else {}
    return _POOLS[layer.kind](kernel_size=size, stride=stride, pad_mode="pad", padding=(top, left),
                              ceil_mode=layer.ceil_mode, **divisor)


def _activation(name, layer, in_shape):
    return _ACTIVATIONS[layer.fn]()


def _flatten(name, layer, in_shape):
    return nn.Flatten()


def _dense(name, layer, in_shape):
    return nn.Dense(in_shape[1], layer.units)


def _batchnorm(name, layer, in_shape):  # MindSpore's momentum is the neutral one
    norm = BatchNorm2dBiasedRunningVar if len(in_shape) == 4 else BatchNorm1dBiasedRunningVar
    return norm(in_shape[1], eps=layer.eps, momentum=layer.momentum)


def _dropout(name, layer, in_shape):
    return nn.Dropout(p=layer.p)  # MindSpore 2.x takes p=, the drop probability (keep_prob is deprecated)


def _global_avg_pool(name, layer, in_shape):
    return nn.AdaptiveAvgPool2d((1, 1))  # d2l's NiN; MindSpore 2.10's CPU kernel within 1e-7 of the oracle


# layer type -> (name, layer, input shape) -> the MindSpore Cell for it
_LAYERS = {Conv2D: _conv, Pool2D: _pool, Activation: _activation, Flatten: _flatten, Dense: _dense,
           BatchNorm: _batchnorm, Dropout: _dropout, GlobalAvgPool: _global_avg_pool}


class Concat(nn.Cell):
    """d2l's ``Inception`` (and DenseNet's ``ops.concat((X, Y), axis=1)``): every branch on the
    input, the outputs concatenated on the channel axis in branch order, then the ``after`` layers.
    The children are attributes under the spec's names (their parameters prefixed so); the lists
    beside them are what ``construct`` loops over, as nn.SequentialCell's ``cell_list``."""

    def __init__(self, branches, after):
        super().__init__()
        for name, cell in branches + after:
            setattr(self, name, cell)
        self.branch_cells = [cell for _, cell in branches]
        self.after_cells = [cell for _, cell in after]

    @staticmethod
    def merge(outputs):
        return ops.concat(outputs, axis=1)

    def construct(self, x):
        outputs = ()
        for branch in self.branch_cells:
            outputs += (branch(x),)
        y = self.merge(outputs)
        for cell in self.after_cells:
            y = cell(y)
        return y


class Residual(Concat):
    """d2l's ``Residual``: the body (branch1) plus the shortcut (branch2: identity or a 1x1
    conv), then the ``after`` layers (its final ReLU)."""

    @staticmethod
    def merge(outputs):
        y = outputs[0]
        for output in outputs[1:]:
            y = y + output
        return y


_BLOCKS = {"concat": Concat, "add": Residual}


def _layer(path, layer, in_shape):
    if type(layer) not in _LAYERS:
        raise unsupported_layer(NAME, path, layer)
    return _LAYERS[type(layer)](path, layer, in_shape)


def _group(children):
    return nn.SequentialCell(OrderedDict(children))  # an empty one (an identity branch) returns its input


def build(spec):
    return _group(fold(spec, _layer, lambda path, node, children: _group(children),
                       lambda path, node, branches, after: _BLOCKS[node.merge](
                           [(name, _group(b)) for name, b in zip(node.branch_names(), branches)], after)))


def _cell(model, path):
    return reduce(getattr, path.split("."), model)


# MindSpore's names for the neutral arrays where they differ, per layer type
_MINDSPORE_NAMES = {BatchNorm: {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
                                "running_var": "moving_variance"}}


def _parameters(model, spec):
    """(key, Parameter) for every neutral array. MindSpore's layouts are the neutral ones:
    Conv2d (out, in, kh, kw), Dense (out, in)."""
    types = {path: type(layer) for path, layer, _, _ in spec.leaves}
    for key in param_shapes(spec):
        path, attr = key.rsplit(".", 1)
        yield key, getattr(_cell(model, path), _MINDSPORE_NAMES.get(types[path], {}).get(attr, attr))


def set_weights(model, spec, weights):
    for key, param in _parameters(model, spec):
        param.set_data(ms.Tensor(weights[key].copy()))


def get_weights(model, spec):
    return {key: param.asnumpy().copy() for key, param in _parameters(model, spec)}


def forward(model, spec, x):
    model.set_train(False)
    with _graph_mode():  # compiled once per input shape (2.2x PyNative's speed on a 1000-image batch here)
        return model(ms.Tensor(x)).asnumpy()


def _merge(block, outputs):
    return _BLOCKS[block.merge].merge(outputs)


def layer_outputs(model, spec, x):
    model.set_train(False)
    outputs = []
    run(spec, ms.Tensor(x), lambda path, layer, h: _cell(model, path)(h), _merge,
        lambda path, h: outputs.append((path, h.asnumpy())))
    return outputs


def _correct(logits, y):
    return int((logits.argmax(axis=1) == y).sum())


# loss -> (the loss Cell of (output, y), the predictions it got right); squared_error counts none.
# nn.MSELoss(reduction="sum") is d2l's `((Y_hat - Y) ** 2).sum()`. Cross-entropy is nn.CrossEntropyLoss
# (log_softmax, then nll_loss), not d2l's nn.SoftmaxCrossEntropyWithLogits(sparse=True): MindSpore
# 2.10's CPU kernel of that one takes the log of an underflowed softmax, so an example's loss above
# ~88 comes out inf (the block-edge spec's third step: inf against 56.2); its gradient is the same.
# Measured against float64 at logit scales 1 to 1000: loss within 2.2e-7, gradient within 2.3e-7.
_LOSSES = {"cross_entropy": (nn.CrossEntropyLoss(reduction="mean"), _correct),
           "squared_error": (nn.MSELoss(reduction="sum"), lambda out, y: 0)}


# The masked training forward: the model's tree again (built by fold), of Cells called as
# (x, masks), ``masks`` a tuple of Tensors, one per dropout layer in spec.leaves order. Every loop
# unrolls in GRAPH_MODE and each slot is a constant. They hold the model's own cells with
# auto_prefix=False: new SequentialCells (or CellLists) around them would rename their parameters.
class MaskedForward(nn.Cell):
    """A group's (or the model's) nodes in order, each given the masks."""

    def __init__(self, nodes):
        super().__init__(auto_prefix=False)
        self.nodes = [node for _, node in nodes]

    def construct(self, x, masks):
        for node in self.nodes:
            x = node(x, masks)
        return x


class _Unmasked(nn.Cell):
    def __init__(self, cell):
        super().__init__(auto_prefix=False)
        self.cell = cell

    def construct(self, x, masks):
        return self.cell(x)


class _Mask(nn.Cell):
    """A dropout: its input times its mask instead of nn.Dropout's own draw."""

    def __init__(self, slot):
        super().__init__()
        self.slot = slot

    def construct(self, x, masks):
        return x * masks[self.slot]


class _MaskedBlock(nn.Cell):
    """A block's branches and ``after`` layers given the masks, merged by the block's own merge."""

    def __init__(self, block, branches, after):
        super().__init__(auto_prefix=False)
        self.block, self.branches, self.after = block, [MaskedForward(b) for b in branches], MaskedForward(after)

    def construct(self, x, masks):
        outputs = ()
        for branch in self.branches:
            outputs += (branch(x, masks),)
        return self.after(self.block.merge(outputs), masks)


def _masked_forward(model, spec):
    slots = {path: slot for slot, (path, _, _) in enumerate(dropout_layers(spec))}
    return MaskedForward(fold(
        spec, lambda path, layer, _: _Mask(slots[path]) if path in slots else _Unmasked(_cell(model, path)),
        lambda path, node, children: MaskedForward(children),
        lambda path, node, branches, after: _MaskedBlock(_cell(model, path), branches, after)))


def _loss_fn(model, spec, loss):
    loss_cell, masked = _LOSSES[loss][0], _masked_forward(model, spec)

    def loss_fn(x, y, *masks):  # no masks: the model's own cells (its nn.Dropout draws), the graph as before
        out = masked(x, masks) if masks else model(x)
        return loss_cell(out, y), out

    return loss_fn


def _mask_tensors(spec, masks):
    """The masks as a tuple of Tensors in dropout-layer order; none for None or {}."""
    return tuple(ms.Tensor(masks[path]) for path, _, _ in dropout_layers(spec) if path in (masks or {}))


def loss_and_grads(model, spec, x, y, loss, masks):
    model.set_train(True)
    keys, params = zip(*((k, p) for k, p in _parameters(model, spec) if not is_state(k)))
    (value, _), grads = ms.value_and_grad(_loss_fn(model, spec, loss), None, list(params), has_aux=True)(
        ms.Tensor(x), ms.Tensor(y), *_mask_tensors(spec, masks))
    return float(value.asnumpy()), {k: g.asnumpy() for k, g in zip(keys, grads)}


class TrainStep(nn.Cell):
    """One SGD step of ``model`` (forward, backward, update) as a Cell, so it can run as one graph;
    the dropout masks, if given, are inputs of that graph like the batch."""

    def __init__(self, model, spec, lr, loss):
        super().__init__(auto_prefix=False)
        self.model = model
        self.optimizer = nn.SGD(model.trainable_params(), learning_rate=lr)
        self.grad_fn = ms.value_and_grad(_loss_fn(model, spec, loss), None, self.optimizer.parameters,
                                         has_aux=True)

    def construct(self, x, y, *masks):
        (loss, out), grads = self.grad_fn(x, y, *masks)
        self.optimizer(grads)
        return loss, out


@contextlib.contextmanager
def _graph_mode():
    """Run the Cells called inside as compiled graphs (GRAPH_MODE), then restore the caller's mode.
    MindSpore 2.10 runs an ms.jit function in PyNative mode through its asynchronous pipeline, whose
    threads busy-wait: on this 2-core machine they took the cores from the kernels and a step came out
    5-10x slower than the same graph run in GRAPH_MODE (an MLP step: 12-16 ms vs 2.2-3.4 ms)."""
    mode = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        yield
    finally:
        ms.set_context(mode=mode)


def trainer(model, spec, lr, compiled, loss):
    train_step, correct = TrainStep(model, spec, lr, loss), _LOSSES[loss][1]
    # compiled: the whole step as one graph; a new batch shape (the short last batch) compiles once more
    mode = _graph_mode if compiled else contextlib.nullcontext

    def step(x, y, masks):
        model.set_train(True)
        with mode():
            value, out = train_step(ms.Tensor(x), ms.Tensor(y), *_mask_tensors(spec, masks))
        return float(value.asnumpy()), correct(out.asnumpy(), y)

    return step
