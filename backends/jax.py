"""JAX/Flax: the spec as a Flax NNX nnx.Sequential on NHWC images, as in d2l-en's JAX tab; a
group is an nnx.Sequential, a block d2l's own kind of module (:class:`Residual`, :class:`Concat`
as ``Inception``) holding its branches (nnx.Sequential each) and its after-layers under the
spec's names.

d2l-en writes its JAX LeNet in Flax Linen, whose parameters live outside the module; NNX modules
hold their own parameters and batch statistics, so the model ``build`` returns is the whole
state, as every other backend's is, and ``get_weights``/``set_weights`` read and write it.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from polylenet.backends._nhwc import flattens_channels_first, layouts, masks_to_native, to_native, to_nchw, to_neutral
from polylenet.backends._pooling import pool_pads
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
from polylenet.shapes import is_state
from polylenet.tree import fold, run

NAME = "jax"
CAPABILITIES = frozenset({"inference", "training"})
_ACTIVATIONS = {"sigmoid": nnx.sigmoid, "relu": nnx.relu, "tanh": jnp.tanh}
# Flax's names for the neutral arrays, per layer type
_FLAX_NAMES = {"conv2d": {"weight": "kernel", "bias": "bias"}, "dense": {"weight": "kernel", "bias": "bias"},
               "batchnorm": {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}}


def version() -> str:
    import flax

    return f"{jax.__version__} (flax {flax.__version__}, optax {optax.__version__})"


def _conv(spec, layer, in_shape, rngs):
    return nnx.Conv(in_shape[1], layer.out_channels, layer.kernel_hw, strides=layer.stride_hw, padding=layer.pads,
                    use_bias=layer.bias, rngs=rngs)


def _pool(spec, layer, in_shape, rngs):
    window, strides = layer.size_hw, layer.stride_hw
    pads = pool_pads(layer, in_shape[2:])  # ceil_mode's overhang included, so the pool has no ceil_mode
    if layer.kind == "max":  # Flax pads a max pool with -inf
        return partial(nnx.max_pool, window_shape=window, strides=strides, padding=pads)
    overhang = tuple((0, total[1] - explicit[1]) for total, explicit in zip(pads, layer.pads))
    if layer.count_include_pad and any(sum(overhang, ())):
        # Flax's count_include_pad=True divides by the whole window, overhang included: the explicit
        # pads are made real zeros, and the pool's own padding (the overhang) left out of the count
        return nnx.Sequential(partial(jnp.pad, pad_width=((0, 0), *layer.pads, (0, 0))),
                              partial(nnx.avg_pool, window_shape=window, strides=strides, padding=overhang,
                                      count_include_pad=False))
    return partial(nnx.avg_pool, window_shape=window, strides=strides, padding=pads,
                   count_include_pad=layer.count_include_pad)


def _activation(spec, layer, in_shape, rngs):
    return _ACTIVATIONS[layer.fn]


def _flatten_hwc(x):
    return x.reshape(x.shape[0], -1)  # H*W*C order: the next dense layer's rows are reordered


def _flatten_chw(x):
    return x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)  # no dense layer after it: C*H*W, as NCHW


def _flatten(spec, layer, in_shape, rngs):
    return _flatten_chw if flattens_channels_first(spec) else _flatten_hwc


def _dense(spec, layer, in_shape, rngs):
    return nnx.Linear(in_shape[1], layer.units, rngs=rngs)


def _batchnorm(spec, layer, in_shape, rngs):
    # Flax's momentum is the neutral one (it weights the old running value). Its default "fast"
    # variance E[x^2] - E[x]^2 cancels when the mean is large against the spread (flax 0.12.8:
    # mean 100, std 0.01 gives 0 or 0.002 for 1e-4); the book's two-pass biased variance does not.
    return nnx.BatchNorm(in_shape[1], momentum=layer.momentum, epsilon=layer.eps, use_fast_variance=False, rngs=rngs)


def _dropout(spec, layer, in_shape, rngs):
    return nnx.Dropout(layer.p, rngs=rngs)  # d2l's JAX tab: nn.Dropout; model.eval() makes it the identity


def _global_avg_pool(spec, layer, in_shape, rngs):
    return partial(jnp.mean, axis=(1, 2), keepdims=True)  # NHWC: over H and W


# layer type -> (spec, layer, input shape, rngs) -> the Flax module or function for it
_LAYERS = {Conv2D: _conv, Pool2D: _pool, Activation: _activation, Flatten: _flatten, Dense: _dense,
           BatchNorm: _batchnorm, Dropout: _dropout, GlobalAvgPool: _global_avg_pool}


class Concat(nnx.Module):
    """d2l's ``Inception`` (and DenseNet's ``jnp.concatenate((X, Y), axis=-1)``): every branch on
    the input, the outputs concatenated on the channel axis (NHWC: the last) in branch order."""

    def __init__(self, branches, after):
        for name, child in branches + after:
            setattr(self, name, child)
        self.branches = tuple(name for name, _ in branches)
        self.after = tuple(name for name, _ in after)

    @staticmethod
    def merge(outputs):
        return jnp.concatenate(outputs, axis=-1)

    def __call__(self, x):
        y = self.merge([getattr(self, name)(x) for name in self.branches])
        for name in self.after:
            y = getattr(self, name)(y)
        return y


class Residual(Concat):
    """d2l's ``Residual``: the body (branch1) plus the shortcut (branch2: identity or a 1x1
    conv), then the ``after`` layers (its final ReLU)."""

    @staticmethod
    def merge(outputs):
        return sum(outputs[1:], outputs[0])


_BLOCKS = {"concat": Concat, "add": Residual}


def _merge(block, outputs):
    return _BLOCKS[block.merge].merge(outputs)


def _model(spec):
    for path, layer, _, _ in spec.leaves:  # all first: a flatten's translation reads the layers after it
        if type(layer) not in _LAYERS:
            raise unsupported_layer(NAME, path, layer)
    rngs = nnx.Rngs(0)

    def sequential(named):
        return nnx.Sequential(*(built for _, built in named))

    return sequential(fold(
        spec, lambda path, layer, in_shape: _LAYERS[type(layer)](spec, layer, in_shape, rngs),
        lambda path, node, children: sequential(children),
        lambda path, node, branches, after: _BLOCKS[node.merge](
            [(name, sequential(b)) for name, b in zip(node.branch_names(), branches)], after)))


def _places(spec):
    """Per node path, the keys from the model (or its nnx.State) down to its module: an
    nnx.Sequential holds its children by position (``layers``, i), a block by name."""

    def inside(named):
        return {path: ("layers", i, *keys) for i, (_, places) in enumerate(named) for path, keys in places.items()}

    def block(path, node, branches, after):
        named = list(zip(node.branch_names(), map(inside, branches))) + after
        return {path: (), **{p: (name, *keys) for name, places in named for p, keys in places.items()}}

    return inside(fold(spec, lambda path, layer, in_shape: {path: ()},
                       lambda path, node, children: {path: (), **inside(children)}, block))


def _at(tree, keys):
    for key in keys:
        tree = getattr(tree, key) if isinstance(key, str) and isinstance(tree, nnx.Module) else tree[key]
    return tree


def build(spec):
    # The parameters are abstract (shapes only): set_weights gives every one its value. Initializing
    # them for real compiled a few dozen small XLA kernels: 3.7 s of a process's first build here.
    model = nnx.eval_shape(lambda: _model(spec))
    places = _places(spec)
    for index, (path, layer, _, _) in enumerate(spec.leaves):
        if isinstance(layer, Dropout):  # eval_shape leaves nnx.Dropout's random stream abstract too
            rngs = _at(model, places[path]).rngs
            rngs.key.set_value(jax.random.key(index))
            rngs.count.set_value(jnp.zeros((), jnp.uint32))
    return model


def _variables(tree, spec, params_only=False):
    """(key, layout, nnx.Variable) for every neutral array (``params_only``: no batch statistics),
    in the neutral order; ``tree`` is the model or a gradient nnx.State of it."""
    places = _places(spec)
    for key, (flax_name, layout) in layouts(spec, _FLAX_NAMES).items():
        if not (params_only and is_state(key)):
            yield key, layout, _at(tree, (*places[key.rsplit(".", 1)[0]], flax_name))


def set_weights(model, spec, weights):
    for key, layout, variable in _variables(model, spec):
        variable.set_value(jnp.asarray(np.ascontiguousarray(to_native(weights[key], layout))))


def get_weights(model, spec):
    return {key: np.ascontiguousarray(to_neutral(np.asarray(variable.get_value()), layout))
            for key, layout, variable in _variables(model, spec)}


def _nhwc(x):
    return jnp.asarray(x.transpose(0, 2, 3, 1))


@nnx.jit
def _predict(model, x):
    return model(x)


def forward(model, spec, x):
    model.eval()  # batchnorm: use_running_average=True
    return np.asarray(_predict(model, _nhwc(x)))


@partial(nnx.jit, static_argnames=("spec",))  # one compile, not one per op (as _value_and_grad)
def _outputs(model, x, spec):
    places, outputs = _places(spec), []
    run(spec, x, lambda path, layer, h: _at(model, places[path])(h), _merge, lambda path, h: outputs.append(h))
    return outputs


def layer_outputs(model, spec, x):
    model.eval()
    outputs = _outputs(model, _nhwc(x), spec=spec)
    return to_nchw(spec, [(path, np.asarray(h)) for (path, *_), h in zip(spec.outputs, outputs)])


# loss -> (loss of (output, y), the predictions it got right); squared_error counts none
_LOSSES = {"cross_entropy": (lambda logits, y: optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(),
                             lambda logits, y: (logits.argmax(axis=1) == y).sum()),
           "squared_error": (lambda out, y: optax.squared_error(out, y).sum(), lambda out, y: 0)}


def _masks(spec, masks):
    """Neutral masks as {path: NHWC mask} (a pytree: jitted arguments), or None."""
    if masks is None:
        return None
    return {path: jnp.asarray(mask) for path, mask in masks_to_native(spec, masks).items()}


def _training_forward(model, spec, x, masks):
    """The model in training mode; with ``masks`` ({path: mask}), each nnx.Dropout's output is
    its input times the given mask instead of the module's own draw."""
    if masks is None:
        return model(x)
    places = _places(spec)
    return run(spec, x, lambda path, layer, h: h * masks[path] if path in masks else _at(model, places[path])(h),
               _merge)


def _loss(model, x, y, masks, spec, loss):
    out = _training_forward(model, spec, x, masks)
    return _LOSSES[loss][0](out, y), out


# Compiled: JAX's eager mode compiles each op on first use, which for GoogLeNet's value_and_grad
# took 43 s against 10 s for one jit of the whole (jax 0.10.2, this 2-core CPU)
_value_and_grad = nnx.jit(nnx.value_and_grad(_loss, has_aux=True), static_argnames=("spec", "loss"))


def loss_and_grads(model, spec, x, y, loss, masks):
    model.train()
    (value, _), grads = _value_and_grad(model, _nhwc(x), jnp.asarray(y), _masks(spec, masks), spec=spec, loss=loss)
    return float(value), {key: np.ascontiguousarray(to_neutral(np.asarray(grad.get_value()), layout))
                          for key, layout, grad in _variables(grads, spec, params_only=True)}


def _train_step(model, optimizer, x, y, masks, spec, loss):
    (value, out), grads = nnx.value_and_grad(_loss, has_aux=True)(model, x, y, masks, spec, loss)
    optimizer.update(model, grads)  # optax SGD: w -= lr * grad
    return value, _LOSSES[loss][1](out, y)


def trainer(model, spec, lr, compiled, loss):
    optimizer = nnx.Optimizer(model, optax.sgd(lr), wrt=nnx.Param)
    if compiled:
        # the whole step (forward, backward, update, batch statistics) is one XLA computation;
        # cached_partial walks the model's graph once instead of on every call (measured 1.05x
        # the step here). Its copy of the model stays in training mode; the Variables are shared.
        model.train()
        cached_step = nnx.cached_partial(nnx.jit(partial(_train_step, spec=spec, loss=loss)), model, optimizer)

    def step(x, y, masks):
        x, y, masks = _nhwc(x), jnp.asarray(y), _masks(spec, masks)
        if compiled:  # the masks are jitted arguments, as the batch
            value, correct = cached_step(x, y, masks)
        else:
            model.train()
            with jax.disable_jit():
                value, correct = _train_step(model, optimizer, x, y, masks, spec, loss)
        return float(value), int(correct)

    return step
