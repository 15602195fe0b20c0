"""MindSpore: LeNet as a mindspore.nn.SequentialCell, as in d2l's MindSpore tab."""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict

import numpy as np

from polylenet.layers import Activation, BatchNorm, Conv2D, Dense, Flatten, Pool2D, unsupported_layer
from polylenet.quiet import quiet_import
from polylenet.shapes import is_state, layer_table, param_shapes

# MindSpore's C++ log is verbose at WARNING; it reads GLOG_v once, while importing.
with quiet_import({"GLOG_v": "3"}):
    import mindspore as ms
    from mindspore import nn, ops

NAME = "mindspore"
CAPABILITIES = frozenset({"inference", "training"})
_ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": lambda: ExactTanh()}
_POOLS = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}
_loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")

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
    """nn.Conv2d's maths (weight (out, in, kh, kw), bias, zero padding) as MindSpore's own im2col
    (ops.unfold) and one matmul. MindSpore 2.10's CPU Conv2d kernel takes ~300 ms for one
    256-image LeNet convolution on a 2-core x86 CPU, whatever the thread settings; this takes
    a few ms. (It replaced a gather-based im2col: 1.1-1.2x the whole step's speed here.)
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, in_hw):
        super().__init__()
        k, s, p = kernel_size, stride, padding
        self.kernel, self.stride, self.padding = k, s, p
        self.out_hw = ((in_hw[0] + 2 * p - k) // s + 1, (in_hw[1] + 2 * p - k) // s + 1)
        self.weight = ms.Parameter(ms.Tensor(np.zeros((out_channels, in_channels, k, k), np.float32)),
                                   name="weight")
        self.bias = ms.Parameter(ms.Tensor(np.zeros(out_channels, np.float32)), name="bias")

    def construct(self, x):
        cols = ops.unfold(x, self.kernel, 1, self.padding, self.stride)  # (N, C*k*k, OH*OW), (c, i, j) rows
        # The weight broadcast by hand to a batched matmul, and bias_add: their gradients are a
        # BatchMatMul and BiasAddGrad. With the weight broadcast by ops.matmul and a `+ bias`,
        # MindSpore 2.10 reduces the gradients with slow ReduceSums: conv1's forward and backward took
        # 44 ms instead of 22 here, and the whole step 1.3x longer.
        w = ops.broadcast_to(self.weight.reshape(1, self.weight.shape[0], -1), (x.shape[0], -1, -1))
        y = ops.bias_add(ops.bmm(w, cols), self.bias)
        return y.reshape(x.shape[0], -1, *self.out_hw)


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


def build(spec):
    layers = OrderedDict()
    for name, layer, in_shape, _ in layer_table(spec):
        if isinstance(layer, Conv2D):
            layers[name] = Im2colConv2d(in_shape[1], layer.out_channels, layer.kernel,
                                  stride=layer.stride, padding=layer.padding, in_hw=in_shape[2:])
        elif isinstance(layer, Pool2D):
            layers[name] = _POOLS[layer.kind](kernel_size=layer.size, stride=layer.stride,
                                              pad_mode="valid")
        elif isinstance(layer, Activation):
            layers[name] = _ACTIVATIONS[layer.fn]()
        elif isinstance(layer, Flatten):
            layers[name] = nn.Flatten()
        elif isinstance(layer, Dense):
            layers[name] = nn.Dense(in_shape[1], layer.units)
        elif isinstance(layer, BatchNorm):  # MindSpore's momentum is the neutral one
            norm = BatchNorm2dBiasedRunningVar if len(in_shape) == 4 else BatchNorm1dBiasedRunningVar
            layers[name] = norm(in_shape[1], eps=layer.eps, momentum=layer.momentum)
        else:
            raise unsupported_layer(NAME, name, layer)
    return nn.SequentialCell(layers)


_MINDSPORE_BN_NAMES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
                       "running_var": "moving_variance"}


def _parameters(model, spec):
    """(key, Parameter) for every neutral array. MindSpore's layouts are the neutral ones:
    Conv2d (out, in, kh, kw), Dense (out, in); BatchNorm names its arrays gamma, beta,
    moving_mean, moving_variance."""
    cells = model.name_cells()
    for key in param_shapes(spec):
        layer, attr = key.split(".")
        native = _MINDSPORE_BN_NAMES[attr] if layer.startswith("bn") else attr
        yield key, getattr(cells[layer], native)


def set_weights(model, spec, weights):
    for key, param in _parameters(model, spec):
        param.set_data(ms.Tensor(weights[key].copy()))


def get_weights(model, spec):
    return {key: param.asnumpy().copy() for key, param in _parameters(model, spec)}


def forward(model, spec, x):
    model.set_train(False)
    with _graph_mode():  # compiled once per input shape (2.2x PyNative's speed on a 1000-image batch here)
        return model(ms.Tensor(x)).asnumpy()


def layer_outputs(model, spec, x):
    model.set_train(False)
    h, outputs = ms.Tensor(x), []
    for name, cell in model.name_cells().items():
        h = cell(h)
        outputs.append((name, h.asnumpy()))
    return outputs


def _loss_fn(model):
    def loss_fn(x, y):
        logits = model(x)
        return _loss(logits, y), logits

    return loss_fn


def loss_and_grads(model, spec, x, y):
    model.set_train(True)
    keys, params = zip(*((k, p) for k, p in _parameters(model, spec) if not is_state(k)))
    (loss, _), grads = ms.value_and_grad(_loss_fn(model), None, list(params), has_aux=True)(
        ms.Tensor(x), ms.Tensor(y))
    return float(loss.asnumpy()), {k: g.asnumpy() for k, g in zip(keys, grads)}


class TrainStep(nn.Cell):
    """One SGD step of ``model`` (forward, backward, update) as a Cell, so it can run as one graph."""

    def __init__(self, model, lr):
        super().__init__(auto_prefix=False)
        self.model = model
        self.optimizer = nn.SGD(model.trainable_params(), learning_rate=lr)
        self.grad_fn = ms.value_and_grad(_loss_fn(model), None, self.optimizer.parameters, has_aux=True)

    def construct(self, x, y):
        (loss, logits), grads = self.grad_fn(x, y)
        self.optimizer(grads)
        return loss, logits


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


def trainer(model, spec, lr, compiled):
    train_step = TrainStep(model, lr)
    # compiled: the whole step as one graph; a new batch shape (the short last batch) compiles once more
    mode = _graph_mode if compiled else contextlib.nullcontext

    def step(x, y):
        model.set_train(True)
        with mode():
            loss, logits = train_step(ms.Tensor(x), ms.Tensor(y))
        return float(loss.asnumpy()), int((logits.asnumpy().argmax(axis=1) == y).sum())

    return step
