"""TensorFlow/Keras: the spec as a keras.Sequential on NHWC images, as in d2l's TensorFlow tab; a
group is a keras.Sequential, a block d2l's own kind of keras.Model (:class:`Residual`,
:class:`Concat` as ``Inception``), each Keras layer named as the spec names it among its
siblings, so ``get_layer`` per part of a path (``b3``, ``residual1``, ``branch1``, ``conv1``)
finds it.

Keras pads only as 'valid' or 'same'; a layer with other pads is a small keras.Sequential in its
slot (named as the spec layer, so each slot is one spec layer): the padding layer, then the layer.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from polylenet.backends._nhwc import (
    flattens_channels_first,
    layouts,
    masks_to_native,
    to_native,
    to_nchw,
    to_neutral,
)
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
    same_pads,
    unsupported_layer,
)
from polylenet.quiet import quiet_import
from polylenet.shapes import is_state
from polylenet.tree import fold, run

# TF 2.21 prints its oneDNN banner from C++ while importing, before absl logging starts, so
# TF_CPP_MIN_LOG_LEVEL alone cannot hide it: file descriptor 2 is silenced for the import.
with quiet_import({"TF_CPP_MIN_LOG_LEVEL": "2"}, silence_stderr=True):
    import keras
    import tensorflow as tf

NAME = "tensorflow"
CAPABILITIES = frozenset({"inference", "training"})
_POOLS = {"avg": keras.layers.AvgPool2D, "max": keras.layers.MaxPool2D}


def version() -> str:
    return f"{tf.__version__} (keras {keras.__version__})"


class ConstantPadding2D(keras.layers.ZeroPadding2D):
    """ZeroPadding2D with another fill value: -inf before a max pool, so that a pad never wins."""

    def __init__(self, padding, value, **kwargs):
        super().__init__(padding, **kwargs)
        self.value = value

    def call(self, inputs):
        return keras.ops.pad(inputs, ((0, 0), *self.padding, (0, 0)), constant_values=self.value)


def _keras_padding(pads, in_shape, kernel, stride):
    """Keras's own name for ``pads`` ('valid'; 'same', TensorFlow's split with the odd row at the
    bottom/right), or None: Keras has no other padding."""
    if not any(sum(pads, ())):
        return "valid"
    return "same" if pads == same_pads(in_shape[2:], kernel, stride) else None


def _conv(spec, name, layer, in_shape):
    kernel, stride = layer.kernel_hw, layer.stride_hw
    padding = _keras_padding(layer.pads, in_shape, kernel, stride)
    conv = partial(keras.layers.Conv2D, layer.out_channels, kernel, strides=stride, use_bias=layer.bias, name=name)
    if padding:
        return conv(padding=padding)
    return keras.Sequential([keras.layers.ZeroPadding2D(layer.pads, name=f"{name}_pad"), conv()], name=name)


def _avg_divisor(layer, pads, in_hw):
    """(OH, OW): the positions each window of the pool over the input padded by ``pads`` divides
    by: the input's, and with count_include_pad the explicit pads' too, never ceil_mode's overhang."""
    counts = []
    for size, (top, bottom), explicit, k, s in zip(in_hw, pads, layer.pads, layer.size_hw, layer.stride_hw):
        counted = np.zeros(top + size + bottom)  # along this axis, 1 where a position counts
        if layer.count_include_pad:
            counted[:top + size + explicit[1]] = 1
        else:
            counted[top:top + size] = 1
        counts.append([counted[start:start + k].sum() for start in range(0, len(counted) - k + 1, s)])
    return np.outer(*counts)


def _pool(spec, name, layer, in_shape):
    size, stride = layer.size_hw, layer.stride_hw
    pads = pool_pads(layer, in_shape[2:])  # ceil_mode's overhang included, so the pool has no ceil_mode
    padding = _keras_padding(pads, in_shape, size, stride)
    pool = partial(_POOLS[layer.kind], size, stride, name=name)
    if layer.kind == "max":
        if padding:  # TensorFlow's 'same' max pool never picks a pad
            return pool(padding=padding)
        return keras.Sequential([ConstantPadding2D(pads, -np.inf, name=f"{name}_pad"), pool()], name=name)
    # Keras's 'same' average divides by the input positions alone: the spec's divisor where no
    # explicit pad counts in it
    if padding == "valid" or padding == "same" and (not layer.count_include_pad or not any(sum(layer.pads, ()))):
        return pool(padding=padding)
    # Otherwise zero pads and a valid pool, which divides by the whole window (kh * kw): right for
    # count_include_pad without an overhang, else rescaled per output position to the spec's divisor
    slot = [keras.layers.ZeroPadding2D(pads, name=f"{name}_pad"), pool()]
    divisor = _avg_divisor(layer, pads, in_shape[2:])
    if np.any(divisor != np.prod(size)):
        slot.append(keras.layers.Rescaling((np.prod(size) / divisor)[..., None].astype(np.float32),
                                           name=f"{name}_divisor"))
    return keras.Sequential(slot, name=name)


def _activation(spec, name, layer, in_shape):
    return keras.layers.Activation(layer.fn, name=name)


def _flatten(spec, name, layer, in_shape):
    if not flattens_channels_first(spec):  # the next dense layer's rows are reordered instead
        return keras.layers.Flatten(name=name)
    # no dense layer after it to take up Keras's H*W*C order: NHWC -> NCHW first, so C*H*W
    return keras.Sequential([keras.layers.Permute((3, 1, 2), name=f"{name}_nchw"), keras.layers.Flatten()], name=name)


def _dense(spec, name, layer, in_shape):
    return keras.layers.Dense(layer.units, name=name)


class BatchNormalization(keras.layers.BatchNormalization):
    """Keras's BatchNormalization with a 4-D batch's moments taken in two stages, per image over
    H, W, then over the batch (as torch's CPU kernel sums): Keras 3.15 reduces each channel's
    N*H*W values in one float32 pass, which on 256x64x48x48 puts its outputs 1.0e-4 from the
    oracle's (3.8e-4 on an ill-conditioned channel); staged, 9.4e-7 (1.2e-5), and faster (95 ms
    against 102-114)."""

    def _moments(self, inputs, mask):
        if mask is not None or len(inputs.shape) != 4:
            return super()._moments(inputs, mask)
        mean = tf.reduce_mean(tf.reduce_mean(inputs, axis=(1, 2), keepdims=True), axis=0, keepdims=True)
        variance = tf.reduce_mean(tf.reduce_mean(tf.square(inputs - mean), axis=(1, 2)), axis=0)
        return tf.reshape(mean, [-1]), variance


def _batchnorm(spec, name, layer, in_shape):
    # Keras 3.15 (TF 2.21) follows the neutral conventions as they are: momentum weights the old
    # running value, eps is used as given, the moving variance is the biased one.
    return BatchNormalization(axis=-1, momentum=layer.momentum, epsilon=layer.eps, name=name)


def _dropout(spec, name, layer, in_shape):
    return keras.layers.Dropout(layer.p, name=name)


def _global_avg_pool(spec, name, layer, in_shape):
    return keras.layers.GlobalAvgPool2D(keepdims=True, name=name)  # (N, 1, 1, C), as the spec's (N, C, 1, 1)


# layer type -> (spec, name, layer, input shape) -> the Keras layer for it
_LAYERS = {Conv2D: _conv, Pool2D: _pool, Activation: _activation, Flatten: _flatten, Dense: _dense,
           BatchNorm: _batchnorm, Dropout: _dropout, GlobalAvgPool: _global_avg_pool}


class Concat(keras.Model):
    """d2l's ``Inception`` (and DenseNet's ``tf.keras.layers.concatenate([X, Y])``): every branch
    on the input, the outputs concatenated on the channel axis (NHWC: the last) in branch order,
    then the ``after`` layers."""

    def __init__(self, branches, after, **kwargs):
        super().__init__(**kwargs)
        self.nodes = dict(branches + after)  # tracked by Keras, so get_layer(name) finds each
        self.branches = [name for name, _ in branches]
        self.after = [name for name, _ in after]

    @staticmethod
    def merge(outputs):
        return keras.ops.concatenate(outputs, axis=-1)

    def call(self, x, training=None):
        y = self.merge([self.nodes[name](x, training=training) for name in self.branches])
        for name in self.after:
            y = self.nodes[name](y, training=training)
        return y


class Residual(Concat):
    """d2l's ``Residual``: the body (branch1) plus the shortcut (branch2: identity or a 1x1
    conv), then the ``after`` layers (its final ReLU)."""

    @staticmethod
    def merge(outputs):
        return sum(outputs[1:], outputs[0])


_BLOCKS = {"concat": Concat, "add": Residual}


def _name(path):
    return path.rsplit(".", 1)[-1]


def _leaf(spec, path, layer, in_shape):
    return _LAYERS[type(layer)](spec, _name(path), layer, in_shape)


def _sequential(path, children):
    # an empty branch is the identity (an empty keras.Sequential cannot be built)
    if not children:
        return keras.layers.Identity(name=_name(path))
    return keras.Sequential([layer for _, layer in children], name=_name(path))


def build(spec):
    for path, layer, _, _ in spec.leaves:  # all first: a flatten's translation reads the layers after it
        if type(layer) not in _LAYERS:
            raise unsupported_layer(NAME, path, layer)
    c, h, w = spec.input_shape
    nodes = fold(spec, partial(_leaf, spec), lambda path, node, children: _sequential(path, children),
                 lambda path, node, branches, after: _BLOCKS[node.merge](
                     [(f"branch{i}", _sequential(f"branch{i}", b)) for i, b in enumerate(branches, 1)], after,
                     name=_name(path)))
    return keras.Sequential([keras.Input(shape=(h, w, c)), *(layer for _, layer in nodes)],
                            name=spec.name.replace("-", "_"))


def _find(model, path):
    """The Keras layer at a spec path: get_layer per part (a padded layer: its slot)."""
    for name in path.split("."):
        model = model.get_layer(name)
    return model


# Keras's names for the neutral arrays, per layer type
_KERAS_NAMES = {"conv2d": {"weight": "kernel", "bias": "bias"}, "dense": {"weight": "kernel", "bias": "bias"},
                "batchnorm": {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
                              "running_var": "moving_variance"}}


def _variables(model, spec):
    """(key, layout, variable) for every neutral array, in the neutral order."""
    for key, (keras_name, layout) in layouts(spec, _KERAS_NAMES).items():
        slot = _find(model, key.rsplit(".", 1)[0])
        if isinstance(slot, keras.Sequential):  # a padded conv: the Conv2D inside has the slot's name
            slot = slot.get_layer(slot.name)
        yield key, layout, getattr(slot, keras_name)


def set_weights(model, spec, weights):
    for key, layout, variable in _variables(model, spec):
        variable.assign(np.ascontiguousarray(to_native(weights[key], layout)))


def get_weights(model, spec):
    return {key: np.ascontiguousarray(to_neutral(variable.numpy(), layout))
            for key, layout, variable in _variables(model, spec)}


def _nhwc(x):
    return tf.constant(x.transpose(0, 2, 3, 1))


def forward(model, spec, x):
    return model(_nhwc(x), training=False).numpy()


def _merge(block, outputs):
    return _BLOCKS[block.merge].merge(outputs)


def layer_outputs(model, spec, x):
    outputs = []
    run(spec, _nhwc(x), lambda path, layer, h: _find(model, path)(h, training=False), _merge,
        lambda path, h: outputs.append((path, h.numpy())))
    return to_nchw(spec, outputs)


def _correct(y, logits):
    return tf.reduce_sum(tf.cast(tf.argmax(logits, axis=1, output_type=tf.int32) == y, tf.int32))


# loss -> (loss of (y, output), the predictions it got right); squared_error counts none (as d2l's
# `l = (Y_hat - Y) ** 2; l.sum()`: Keras's MeanSquaredError averages over the classes instead)
_LOSSES = {"cross_entropy": (keras.losses.SparseCategoricalCrossentropy(from_logits=True), _correct),
           "squared_error": (lambda y, out: tf.reduce_sum(tf.square(out - y)), lambda y, out: tf.constant(0))}


def _training_forward(model, spec, x, masks):
    """The model in training mode; with ``masks`` (NHWC tensors keyed by path), each Dropout
    layer's output is its input times the given mask instead of the layer's own draw."""
    if masks is None:
        return model(x, training=True)
    return run(spec, x, lambda path, layer, h: h * masks[path] if path in masks else
               _find(model, path)(h, training=True), _merge)


def _tf_masks(spec, masks):
    return None if masks is None else {k: tf.constant(v) for k, v in masks_to_native(spec, masks).items()}


def loss_and_grads(model, spec, x, y, loss, masks):
    keys, layouts, variables = zip(*(v for v in _variables(model, spec) if not is_state(v[0])))
    with tf.GradientTape() as tape:
        value = _LOSSES[loss][0](tf.constant(y), _training_forward(model, spec, _nhwc(x), _tf_masks(spec, masks)))
    grads = tape.gradient(value, list(variables))
    return float(value), {k: np.ascontiguousarray(to_neutral(g.numpy(), layout))
                          for k, layout, g in zip(keys, layouts, grads)}


def trainer(model, spec, lr, compiled, loss):
    optimizer = keras.optimizers.SGD(learning_rate=lr)
    loss_fn, correct = _LOSSES[loss]

    def train_step(x, y, masks):
        with tf.GradientTape() as tape:
            out = _training_forward(model, spec, x, masks)
            value = loss_fn(y, out)
        optimizer.apply_gradients(zip(tape.gradient(value, model.trainable_variables),
                                      model.trainable_variables))
        return value, correct(y, out)

    if compiled:
        train_step = tf.function(train_step)

    def step(x, y, masks):
        value, right = train_step(_nhwc(x), tf.constant(y), _tf_masks(spec, masks))
        return float(value), int(right)

    return step
