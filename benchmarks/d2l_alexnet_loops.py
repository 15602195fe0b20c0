"""d2l's AlexNet chapter, one framework at a time, in plain framework code as the book has it:
each tab's own ``net`` (d2l-zh's tabs; d2l-en's for JAX, which d2l-zh lacks), the tab's init,
and ``train_ch6``'s loop, the one the LeNet chapter uses (``d2l_loops.TRAIN_CH6``, as the book
calls ``d2l.train_ch6`` again), for 1-channel 224x224 inputs and 10 classes. No polylenet code
runs in here.

The tabs do not all define the same network:

* PyTorch, Paddle, MindSpore (d2l-zh) and JAX (d2l-en): the first conv is 96@11x11, stride 4,
  padding 1 (polylenet's ``alexnet`` spec);
* TensorFlow and MXNet (d2l-zh): the same conv unpadded (polylenet's ``alexnet-tf-tab``).
  Both give 54x54 maps, so the cost per step is the same to within a few per cent.

Init, as each tab (or its ``train_ch6``) does it: PyTorch ``xavier_uniform_`` on every Linear and
Conv2d; MXNet ``init.Xavier()``; Keras's default (Glorot uniform); Paddle's ``train_ch6`` calls
``nn.initializer.XavierUniform(m.weight)``, which builds an initializer and applies it to nothing,
so Paddle's own defaults stay (copied here as the book has it); MindSpore ``weight_init=
'xavier_uniform'`` on every layer but the last dense (its default); JAX: Flax's defaults (the
d2l-en tab passes no ``kernel_init``). Dropout 0.5 after each hidden dense layer, the
framework's own.

Inputs: each ``LOOPS[backend](x, y, epochs, lr, batch_size)`` takes ``x`` already resized to
224x224 (NCHW float32 in [0, 1], e.g. by ``polylenet.resize.to_model_inputs``) and int labels, so
the chapter's loop and polylenet train on the same pixels; the book resizes inside each tab's data
pipeline with each framework's own image op (see ``resize_conventions.py``), which is left out
here: the loops time the training only. Each returns ``(wall, steps)`` as ``d2l_loops`` does: the
seconds the training loops took (evaluation excluded), and the seconds d2l's ``Timer`` counts in
``train_ch6`` (the steps without the data loading).

Where the loop differs from the book: MindSpore's ``train_ch6`` steps with ``TrainOneStepCell``
and then runs ``net(X)`` once more for the accuracy (a second forward pass, with dropout on);
here, as for LeNet, one ``value_and_grad`` step returns the logits it used. JAX follows
``train_ch6``'s loop rather than d2l-en's ``Trainer``, with the dropout key split per step as
d2l-en's ``TrainState`` does.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from d2l_loops import _mindspore, _mxnet, _paddle, _tensorflow, loops  # noqa: E402  (the book's train_ch6)

DROPOUT = 0.5


def alexnet_torch():
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 96, kernel_size=11, stride=4, padding=1), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(96, 256, kernel_size=5, padding=2), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(256, 384, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 384, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Flatten(),
        nn.Linear(6400, 4096), nn.ReLU(),
        nn.Dropout(p=DROPOUT),
        nn.Linear(4096, 4096), nn.ReLU(),
        nn.Dropout(p=DROPOUT),
        nn.Linear(4096, 10))


def alexnet_tensorflow():  # the d2l-zh TensorFlow tab: the first conv unpadded
    tf = _tensorflow()
    return tf.keras.models.Sequential([
        tf.keras.layers.Conv2D(filters=96, kernel_size=11, strides=4, activation="relu"),
        tf.keras.layers.MaxPool2D(pool_size=3, strides=2),
        tf.keras.layers.Conv2D(filters=256, kernel_size=5, padding="same", activation="relu"),
        tf.keras.layers.MaxPool2D(pool_size=3, strides=2),
        tf.keras.layers.Conv2D(filters=384, kernel_size=3, padding="same", activation="relu"),
        tf.keras.layers.Conv2D(filters=384, kernel_size=3, padding="same", activation="relu"),
        tf.keras.layers.Conv2D(filters=256, kernel_size=3, padding="same", activation="relu"),
        tf.keras.layers.MaxPool2D(pool_size=3, strides=2),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(4096, activation="relu"),
        tf.keras.layers.Dropout(DROPOUT),
        tf.keras.layers.Dense(4096, activation="relu"),
        tf.keras.layers.Dropout(DROPOUT),
        tf.keras.layers.Dense(10)])


def alexnet_mxnet():  # the d2l-zh MXNet tab: the first conv unpadded; Dense flattens
    nn = _mxnet().gluon.nn
    net = nn.Sequential()
    net.add(
        nn.Conv2D(96, kernel_size=11, strides=4, activation="relu"),
        nn.MaxPool2D(pool_size=3, strides=2),
        nn.Conv2D(256, kernel_size=5, padding=2, activation="relu"),
        nn.MaxPool2D(pool_size=3, strides=2),
        nn.Conv2D(384, kernel_size=3, padding=1, activation="relu"),
        nn.Conv2D(384, kernel_size=3, padding=1, activation="relu"),
        nn.Conv2D(256, kernel_size=3, padding=1, activation="relu"),
        nn.MaxPool2D(pool_size=3, strides=2),
        nn.Dense(4096, activation="relu"), nn.Dropout(DROPOUT),
        nn.Dense(4096, activation="relu"), nn.Dropout(DROPOUT),
        nn.Dense(10))
    return net


def alexnet_paddle():
    nn = _paddle().nn
    return nn.Sequential(
        nn.Conv2D(1, 96, kernel_size=11, stride=4, padding=1), nn.ReLU(),
        nn.MaxPool2D(kernel_size=3, stride=2),
        nn.Conv2D(96, 256, kernel_size=5, padding=2), nn.ReLU(),
        nn.MaxPool2D(kernel_size=3, stride=2),
        nn.Conv2D(256, 384, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2D(384, 384, kernel_size=3, padding=1), nn.ReLU(),
        nn.Conv2D(384, 256, kernel_size=3, padding=1), nn.ReLU(),
        nn.MaxPool2D(kernel_size=3, stride=2), nn.Flatten(),
        nn.Linear(6400, 4096), nn.ReLU(), nn.Dropout(p=DROPOUT),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(p=DROPOUT),
        nn.Linear(4096, 10))


def alexnet_mindspore():
    nn = _mindspore().nn
    xavier = "xavier_uniform"
    return nn.SequentialCell([
        nn.Conv2d(1, 96, kernel_size=11, stride=4, pad_mode="pad", padding=1, has_bias=True, weight_init=xavier),
        nn.ReLU(), nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(96, 256, kernel_size=5, pad_mode="pad", padding=2, has_bias=True, weight_init=xavier),
        nn.ReLU(), nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(256, 384, kernel_size=3, pad_mode="pad", padding=1, has_bias=True, weight_init=xavier), nn.ReLU(),
        nn.Conv2d(384, 384, kernel_size=3, pad_mode="pad", padding=1, has_bias=True, weight_init=xavier), nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, pad_mode="pad", padding=1, has_bias=True, weight_init=xavier), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Flatten(),
        nn.Dense(6400, 4096, weight_init=xavier), nn.ReLU(),
        nn.Dropout(p=DROPOUT),  # the tab's keep_prob=1-0.5, in MindSpore 2's spelling
        nn.Dense(4096, 4096, weight_init=xavier), nn.ReLU(),
        nn.Dropout(p=DROPOUT),
        nn.Dense(4096, 10)])


def alexnet_jax():
    # d2l-en's JAX tab: a Flax Linen AlexNet (NHWC; Conv's default padding is SAME, so the 5x5 and
    # 3x3 convs pad 2 and 1; the first conv pads 1), Flax's default init, dropout from a key in the
    # train state
    from flax import linen as nn

    class AlexNet(nn.Module):
        num_classes: int = 10
        training: bool = True

        def setup(self):
            self.net = nn.Sequential([
                nn.Conv(features=96, kernel_size=(11, 11), strides=4, padding=1),
                nn.relu,
                lambda x: nn.max_pool(x, window_shape=(3, 3), strides=(2, 2)),
                nn.Conv(features=256, kernel_size=(5, 5)),
                nn.relu,
                lambda x: nn.max_pool(x, window_shape=(3, 3), strides=(2, 2)),
                nn.Conv(features=384, kernel_size=(3, 3)), nn.relu,
                nn.Conv(features=384, kernel_size=(3, 3)), nn.relu,
                nn.Conv(features=256, kernel_size=(3, 3)), nn.relu,
                lambda x: nn.max_pool(x, window_shape=(3, 3), strides=(2, 2)),
                lambda x: x.reshape((x.shape[0], -1)),  # flatten
                nn.Dense(features=4096),
                nn.relu,
                nn.Dropout(DROPOUT, deterministic=not self.training),
                nn.Dense(features=4096),
                nn.relu,
                nn.Dropout(DROPOUT, deterministic=not self.training),
                nn.Dense(features=self.num_classes)])

        def __call__(self, X):
            return self.net(X)

    return AlexNet()


NETS = {"torch": alexnet_torch, "tensorflow": alexnet_tensorflow, "mxnet": alexnet_mxnet,
        "paddle": alexnet_paddle, "mindspore": alexnet_mindspore, "jax": alexnet_jax}
LOOPS = loops(NETS)
