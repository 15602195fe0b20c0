"""JAX/Flax: LeNet as a Flax NNX nnx.Sequential on NHWC images, as in d2l-en's JAX tab.

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
from polylenet.shapes import is_state, layer_table

NAME = "jax"
CAPABILITIES = frozenset({"inference", "training"})
_ACTIVATIONS = {"sigmoid": nnx.sigmoid, "relu": nnx.relu, "tanh": jnp.tanh}
# Flax's names for the neutral arrays, per layer type
_FLAX_NAMES = {"conv2d": {"weight": "kernel", "bias": "bias"}, "dense": {"weight": "kernel", "bias": "bias"},
               "batchnorm": {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}}


def version() -> str:
    import flax

    return f"{jax.__version__} (flax {flax.__version__}, optax {optax.__version__})"


def build(spec):
    # The parameters are abstract (shapes only): set_weights gives every one its value. Initializing
    # them for real compiled a few dozen small XLA kernels: 3.7 s of a process's first build here.
    model = nnx.eval_shape(lambda: _sequential(spec))
    for index, layer in enumerate(model.layers):  # eval_shape leaves nnx.Dropout's random stream abstract too
        if isinstance(layer, nnx.Dropout):
            layer.rngs.key.set_value(jax.random.key(index))
            layer.rngs.count.set_value(jnp.zeros((), jnp.uint32))
    return model


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


def _sequential(spec):
    for name, layer in spec.named_layers():  # all first: a flatten's translation reads the layers after it
        if type(layer) not in _LAYERS:
            raise unsupported_layer(NAME, name, layer)
    rngs = nnx.Rngs(0)
    return nnx.Sequential(*(_LAYERS[type(layer)](spec, layer, in_shape, rngs)
                            for _, layer, in_shape, _ in layer_table(spec)))


def _variables(model, spec):
    """(key, layout, nnx.Variable) for every neutral array, in the neutral order."""
    index = {name: i for i, name in enumerate(spec.layer_names())}
    for key, (flax_name, layout) in layouts(spec, _FLAX_NAMES).items():
        yield key, layout, getattr(model.layers[index[key.split(".")[0]]], flax_name)


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


def layer_outputs(model, spec, x):
    model.eval()
    h, outputs = _nhwc(x), []
    for name, layer in zip(spec.layer_names(), model.layers):
        h = layer(h)
        outputs.append((name, np.asarray(h)))
    return to_nchw(spec, outputs)


# loss -> (loss of (output, y), the predictions it got right); squared_error counts none
_LOSSES = {"cross_entropy": (lambda logits, y: optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(),
                             lambda logits, y: (logits.argmax(axis=1) == y).sum()),
           "squared_error": (lambda out, y: optax.squared_error(out, y).sum(), lambda out, y: 0)}


def _masks(spec, masks):
    """Neutral masks as {layer position: NHWC mask} (a pytree: jitted arguments), or None."""
    if masks is None:
        return None
    index = {name: i for i, name in enumerate(spec.layer_names())}
    return {index[name]: jnp.asarray(mask) for name, mask in masks_to_native(spec, masks).items()}


def _training_forward(model, x, masks):
    """The model in training mode; with ``masks`` ({position: mask}), each nnx.Dropout's output is
    its input times the given mask instead of the module's own draw."""
    if masks is None:
        return model(x)
    for i, layer in enumerate(model.layers):
        x = x * masks[i] if i in masks else layer(x)
    return x


def _loss(model, x, y, masks, loss):
    out = _training_forward(model, x, masks)
    return _LOSSES[loss][0](out, y), out


def loss_and_grads(model, spec, x, y, loss, masks):
    model.train()
    (value, _), grads = nnx.value_and_grad(_loss, has_aux=True)(model, _nhwc(x), jnp.asarray(y),
                                                                _masks(spec, masks), loss)
    index = {name: i for i, name in enumerate(spec.layer_names())}
    out = {}
    for key, (flax_name, layout) in layouts(spec, _FLAX_NAMES).items():
        if not is_state(key):
            grad = grads["layers"][index[key.split(".")[0]]][flax_name]
            out[key] = np.ascontiguousarray(to_neutral(np.asarray(grad.get_value()), layout))
    return float(value), out


def _train_step(model, optimizer, x, y, masks, loss):
    (value, out), grads = nnx.value_and_grad(_loss, has_aux=True)(model, x, y, masks, loss)
    optimizer.update(model, grads)  # optax SGD: w -= lr * grad
    return value, _LOSSES[loss][1](out, y)


def trainer(model, spec, lr, compiled, loss):
    optimizer = nnx.Optimizer(model, optax.sgd(lr), wrt=nnx.Param)
    if compiled:
        # the whole step (forward, backward, update, batch statistics) is one XLA computation;
        # cached_partial walks the model's graph once instead of on every call (measured 1.05x
        # the step here). Its copy of the model stays in training mode; the Variables are shared.
        model.train()
        cached_step = nnx.cached_partial(nnx.jit(_train_step, static_argnames="loss"), model, optimizer)

    def step(x, y, masks):
        x, y, masks = _nhwc(x), jnp.asarray(y), _masks(spec, masks)
        if compiled:  # the masks are jitted arguments, as the batch
            value, correct = cached_step(x, y, masks, loss=loss)
        else:
            model.train()
            with jax.disable_jit():
                value, correct = _train_step(model, optimizer, x, y, masks, loss)
        return float(value), int(correct)

    return step
