"""TensorFlow/Keras: LeNet as a keras.Sequential on NHWC images, as in d2l's TensorFlow tab."""

from __future__ import annotations

import numpy as np

from polylenet.backends._nhwc import layouts, to_native, to_nchw, to_neutral
from polylenet.layers import Activation, BatchNorm, Conv2D, Dense, Flatten, Pool2D, unsupported_layer
from polylenet.quiet import quiet_import
from polylenet.shapes import is_state, layer_table

# TF 2.21 prints its oneDNN banner from C++ while importing, before absl logging starts, so
# TF_CPP_MIN_LOG_LEVEL alone cannot hide it: file descriptor 2 is silenced for the import.
with quiet_import({"TF_CPP_MIN_LOG_LEVEL": "2"}, silence_stderr=True):
    import keras
    import tensorflow as tf

NAME = "tensorflow"
CAPABILITIES = frozenset({"inference", "training"})
_POOLS = {"avg": keras.layers.AvgPool2D, "max": keras.layers.MaxPool2D}
_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def version() -> str:
    return f"{tf.__version__} (keras {keras.__version__})"


def build(spec):
    c, h, w = spec.input_shape
    layers = [keras.Input(shape=(h, w, c))]
    for name, layer, _, _ in layer_table(spec):
        if isinstance(layer, Conv2D):
            if layer.padding:  # Keras has only 'valid'/'same'; explicit zero padding is exact
                layers.append(keras.layers.ZeroPadding2D(layer.padding, name=f"{name}_pad"))
            layers.append(keras.layers.Conv2D(layer.out_channels, layer.kernel, strides=layer.stride,
                                              name=name))
        elif isinstance(layer, Pool2D):
            layers.append(_POOLS[layer.kind](pool_size=layer.size, strides=layer.stride, name=name))
        elif isinstance(layer, Activation):
            layers.append(keras.layers.Activation(layer.fn, name=name))
        elif isinstance(layer, Flatten):
            layers.append(keras.layers.Flatten(name=name))
        elif isinstance(layer, Dense):
            layers.append(keras.layers.Dense(layer.units, name=name))
        elif isinstance(layer, BatchNorm):
            # Keras 3.15 (TF 2.21) follows the neutral conventions as they are: momentum weights
            # the old running value, eps is used as given, the moving variance is the biased one.
            layers.append(keras.layers.BatchNormalization(axis=-1, momentum=layer.momentum,
                                                          epsilon=layer.eps, name=name))
        else:
            raise unsupported_layer(NAME, name, layer)
    return keras.Sequential(layers, name=spec.name.replace("-", "_"))


# Keras's names for the neutral arrays, per layer type
_KERAS_NAMES = {"conv2d": {"weight": "kernel", "bias": "bias"}, "dense": {"weight": "kernel", "bias": "bias"},
                "batchnorm": {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
                              "running_var": "moving_variance"}}


def _variables(model, spec):
    """(key, layout, variable) for every neutral array, in the neutral order."""
    for key, (keras_name, layout) in layouts(spec, _KERAS_NAMES).items():
        yield key, layout, getattr(model.get_layer(key.split(".")[0]), keras_name)


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


def layer_outputs(model, spec, x):
    h, outputs = _nhwc(x), []
    for layer in model.layers:
        h = layer(h, training=False)
        if not layer.name.endswith("_pad"):
            outputs.append((layer.name, h.numpy()))
    return to_nchw(spec, outputs)


def loss_and_grads(model, spec, x, y):
    keys, layouts, variables = zip(*(v for v in _variables(model, spec) if not is_state(v[0])))
    with tf.GradientTape() as tape:
        loss = _loss(tf.constant(y), model(_nhwc(x), training=True))
    grads = tape.gradient(loss, list(variables))
    return float(loss), {k: np.ascontiguousarray(to_neutral(g.numpy(), layout))
                         for k, layout, g in zip(keys, layouts, grads)}


def trainer(model, spec, lr, compiled):
    optimizer = keras.optimizers.SGD(learning_rate=lr)

    def train_step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = _loss(y, logits)
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                      model.trainable_variables))
        return loss, tf.reduce_sum(tf.cast(tf.argmax(logits, axis=1, output_type=tf.int32) == y, tf.int32))

    if compiled:
        train_step = tf.function(train_step)

    def step(x, y):
        loss, correct = train_step(_nhwc(x), tf.constant(y))
        return float(loss), int(correct)

    return step
