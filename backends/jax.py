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

from polylenet.backends._nhwc import layouts, to_native, to_nchw, to_neutral
from polylenet.layers import Activation, BatchNorm, Conv2D, Dense, Flatten, Pool2D, unsupported_layer
from polylenet.shapes import is_state, layer_table

NAME = "jax"
CAPABILITIES = frozenset({"inference", "training"})
_ACTIVATIONS = {"sigmoid": nnx.sigmoid, "relu": nnx.relu, "tanh": jnp.tanh}
_POOLS = {"avg": nnx.avg_pool, "max": nnx.max_pool}
# Flax's names for the neutral arrays, per layer type
_FLAX_NAMES = {"conv2d": {"weight": "kernel", "bias": "bias"}, "dense": {"weight": "kernel", "bias": "bias"},
               "batchnorm": {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}}


def _flatten(x):
    return x.reshape(x.shape[0], -1)  # H*W*C order: the first dense layer's rows are reordered


def version() -> str:
    import flax

    return f"{jax.__version__} (flax {flax.__version__}, optax {optax.__version__})"


def build(spec):
    # The parameters are abstract (shapes only): set_weights gives every one its value. Initializing
    # them for real compiled a few dozen small XLA kernels: 3.7 s of a process's first build here.
    return nnx.eval_shape(lambda: _sequential(spec))


def _sequential(spec):
    rngs = nnx.Rngs(0)
    layers = []
    for name, layer, in_shape, _ in layer_table(spec):
        if isinstance(layer, Conv2D):
            p = layer.padding
            layers.append(nnx.Conv(in_shape[1], layer.out_channels, (layer.kernel, layer.kernel),
                                   strides=layer.stride, padding=((p, p), (p, p)), rngs=rngs))
        elif isinstance(layer, Pool2D):
            layers.append(partial(_POOLS[layer.kind], window_shape=(layer.size, layer.size),
                                  strides=(layer.stride, layer.stride), padding="VALID"))
        elif isinstance(layer, Activation):
            layers.append(_ACTIVATIONS[layer.fn])
        elif isinstance(layer, Flatten):
            layers.append(_flatten)
        elif isinstance(layer, Dense):
            layers.append(nnx.Linear(in_shape[1], layer.units, rngs=rngs))
        elif isinstance(layer, BatchNorm):
            # Flax's momentum is the neutral one (it weights the old running value). Its default
            # "fast" variance E[x^2] - E[x]^2 cancels when the mean is large against the spread
            # (flax 0.12.8: mean 100, std 0.01 gives 0 or 0.002 for 1e-4); the book's two-pass
            # biased variance does not.
            layers.append(nnx.BatchNorm(in_shape[1], momentum=layer.momentum, epsilon=layer.eps,
                                        use_fast_variance=False, rngs=rngs))
        else:
            raise unsupported_layer(NAME, name, layer)
    return nnx.Sequential(*layers)


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


def _loss(model, x, y):
    logits = model(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits


def loss_and_grads(model, spec, x, y):
    model.train()
    (loss, _), grads = nnx.value_and_grad(_loss, has_aux=True)(model, _nhwc(x), jnp.asarray(y))
    index = {name: i for i, name in enumerate(spec.layer_names())}
    out = {}
    for key, (flax_name, layout) in layouts(spec, _FLAX_NAMES).items():
        if not is_state(key):
            grad = grads["layers"][index[key.split(".")[0]]][flax_name]
            out[key] = np.ascontiguousarray(to_neutral(np.asarray(grad.get_value()), layout))
    return float(loss), out


def _train_step(model, optimizer, x, y):
    (loss, logits), grads = nnx.value_and_grad(_loss, has_aux=True)(model, x, y)
    optimizer.update(model, grads)  # optax SGD: w -= lr * grad
    return loss, (logits.argmax(axis=1) == y).sum()


def trainer(model, spec, lr, compiled):
    optimizer = nnx.Optimizer(model, optax.sgd(lr), wrt=nnx.Param)
    if compiled:
        # the whole step (forward, backward, update, batch statistics) is one XLA computation;
        # cached_partial walks the model's graph once instead of on every call (measured 1.05x
        # the step here). Its copy of the model stays in training mode; the Variables are shared.
        model.train()
        cached_step = nnx.cached_partial(nnx.jit(_train_step), model, optimizer)

    def step(x, y):
        if compiled:
            loss, correct = cached_step(_nhwc(x), jnp.asarray(y))
        else:
            model.train()
            with jax.disable_jit():
                loss, correct = _train_step(model, optimizer, _nhwc(x), jnp.asarray(y))
        return float(loss), int(correct)

    return step
