"""d2l's ResNet chapter, one framework at a time, in plain framework code as the book has it:
each tab's own ResNet-18 (d2l-zh's tabs; d2l-en's for JAX, which d2l-zh lacks), the tab's init,
and ``train_ch6``'s loop, the one the LeNet and AlexNet chapters use (``d2l_loops.TRAIN_CH6``),
for 1-channel 96x96 inputs and 10 classes. No polylenet code runs in here.

The tabs do not all define the same network:

* PyTorch, MXNet and Paddle (d2l-zh): the stem's 7x7 stride-2 conv pads 3, its 3x3 stride-2
  max-pool pads 1, every 3x3 residual conv pads 1 (polylenet's ``resnet18``);
* TensorFlow (d2l-zh) and JAX (d2l-en): ``padding='same'`` in the stem's conv, its max-pool and
  every 3x3 residual conv: on 96x96 the stem pads ((2, 3), (2, 3)) and the pool ((0, 1), (0, 1))
  (polylenet's ``resnet18-tf-tab``; the stride-2 residual convs pad (0, 1) too);
* MindSpore (d2l-zh's MindSpore tabs, pull request 1249, not on its master): the PyTorch tab's
  convs, but the stem's max-pool ``pad_mode='same'`` as in the TensorFlow tab, and no conv bias
  (``nn.Conv2d``'s ``has_bias=False`` default): neither spec, 11,173,578 parameters against the
  others' 11,178,378.

BatchNorm, as each tab leaves it (each framework's defaults; the running statistics move by
(1 - m) of the batch's): PyTorch momentum 0.1 (its other convention: m = 0.9), eps 1e-5; Keras
m = 0.99, eps 1e-3; MXNet, Paddle and MindSpore m = 0.9, eps 1e-5; Flax m = 0.99, eps 1e-5.
The shapes of all of them agree: 64x24x24 after the stem, 512x3x3 before the average pool.

Init, as each tab (or its ``train_ch6``) does it: PyTorch ``xavier_uniform_`` on every Linear and
Conv2d; MXNet ``init.Xavier()``; Keras's default (Glorot uniform); Paddle: its defaults (the
``train_ch6`` init applies to nothing, see ``d2l_alexnet_loops.py``); MindSpore: d2l-zh's
``train_ch6`` starts with ``init_cells(net)``, Xavier-uniform weights on every Conv2d and Dense
and a Uniform(1/sqrt(fan_in)) Dense bias, done here when the net is built; JAX: Flax's defaults.

Where the code differs from the tabs: MXNet's ``Residual`` calls ``nd.relu`` for the tab's
``npx.relu`` (the shared loop runs Gluon's NDArray API, without ``npx.set_np()``); the Keras
``ResnetBlock`` iterates its list of layers itself (the tab's ``self.residual_layers.layers`` is
Keras 2's list wrapper); JAX's step carries the BatchNorm statistics as d2l-en's ``TrainState``
does (``d2l_loops.train_ch6_jax``). Inputs and the returned ``(wall, steps)`` are as in
``d2l_alexnet_loops.py``: ``x`` NCHW float32 already at 96x96 (the book's ``resize=96`` is left
out of the timing).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from d2l_loops import _mindspore, _mxnet, _paddle, _tensorflow, loops  # noqa: E402  (the book's train_ch6)


def resnet_torch():
    from torch import nn
    from torch.nn import functional as F

    class Residual(nn.Module):
        def __init__(self, input_channels, num_channels, use_1x1conv=False, strides=1):
            super().__init__()
            self.conv1 = nn.Conv2d(input_channels, num_channels, kernel_size=3, padding=1, stride=strides)
            self.conv2 = nn.Conv2d(num_channels, num_channels, kernel_size=3, padding=1)
            if use_1x1conv:
                self.conv3 = nn.Conv2d(input_channels, num_channels, kernel_size=1, stride=strides)
            else:
                self.conv3 = None
            self.bn1 = nn.BatchNorm2d(num_channels)
            self.bn2 = nn.BatchNorm2d(num_channels)

        def forward(self, X):
            Y = F.relu(self.bn1(self.conv1(X)))
            Y = self.bn2(self.conv2(Y))
            if self.conv3:
                X = self.conv3(X)
            Y += X
            return F.relu(Y)

    def resnet_block(input_channels, num_channels, num_residuals, first_block=False):
        blk = []
        for i in range(num_residuals):
            if i == 0 and not first_block:
                blk.append(Residual(input_channels, num_channels, use_1x1conv=True, strides=2))
            else:
                blk.append(Residual(num_channels, num_channels))
        return blk

    b1 = nn.Sequential(nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3),
                       nn.BatchNorm2d(64), nn.ReLU(),
                       nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    b2 = nn.Sequential(*resnet_block(64, 64, 2, first_block=True))
    b3 = nn.Sequential(*resnet_block(64, 128, 2))
    b4 = nn.Sequential(*resnet_block(128, 256, 2))
    b5 = nn.Sequential(*resnet_block(256, 512, 2))
    return nn.Sequential(b1, b2, b3, b4, b5, nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(512, 10))


def resnet_tensorflow():  # the d2l-zh TensorFlow tab: padding='same' in the stem and the residual convs
    tf = _tensorflow()

    class Residual(tf.keras.Model):
        def __init__(self, num_channels, use_1x1conv=False, strides=1):
            super().__init__()
            self.conv1 = tf.keras.layers.Conv2D(num_channels, padding="same", kernel_size=3, strides=strides)
            self.conv2 = tf.keras.layers.Conv2D(num_channels, kernel_size=3, padding="same")
            self.conv3 = None
            if use_1x1conv:
                self.conv3 = tf.keras.layers.Conv2D(num_channels, kernel_size=1, strides=strides)
            self.bn1 = tf.keras.layers.BatchNormalization()
            self.bn2 = tf.keras.layers.BatchNormalization()

        def call(self, X):
            Y = tf.keras.activations.relu(self.bn1(self.conv1(X)))
            Y = self.bn2(self.conv2(Y))
            if self.conv3 is not None:
                X = self.conv3(X)
            Y += X
            return tf.keras.activations.relu(Y)

    class ResnetBlock(tf.keras.layers.Layer):
        def __init__(self, num_channels, num_residuals, first_block=False, **kwargs):
            super().__init__(**kwargs)
            self.residual_layers = []
            for i in range(num_residuals):
                if i == 0 and not first_block:
                    self.residual_layers.append(Residual(num_channels, use_1x1conv=True, strides=2))
                else:
                    self.residual_layers.append(Residual(num_channels))

        def call(self, X):
            for layer in self.residual_layers:
                X = layer(X)
            return X

    return tf.keras.Sequential([
        tf.keras.layers.Conv2D(64, kernel_size=7, strides=2, padding="same"),
        tf.keras.layers.BatchNormalization(),
        tf.keras.layers.Activation("relu"),
        tf.keras.layers.MaxPool2D(pool_size=3, strides=2, padding="same"),
        ResnetBlock(64, 2, first_block=True),
        ResnetBlock(128, 2),
        ResnetBlock(256, 2),
        ResnetBlock(512, 2),
        tf.keras.layers.GlobalAvgPool2D(),
        tf.keras.layers.Dense(units=10)])


def resnet_mxnet():  # the d2l-zh MXNet tab: channels inferred, GlobalAvgPool2D + Dense (which flattens)
    mxnet = _mxnet()
    nd, nn = mxnet.nd, mxnet.gluon.nn

    class Residual(nn.Block):
        def __init__(self, num_channels, use_1x1conv=False, strides=1, **kwargs):
            super().__init__(**kwargs)
            self.conv1 = nn.Conv2D(num_channels, kernel_size=3, padding=1, strides=strides)
            self.conv2 = nn.Conv2D(num_channels, kernel_size=3, padding=1)
            if use_1x1conv:
                self.conv3 = nn.Conv2D(num_channels, kernel_size=1, strides=strides)
            else:
                self.conv3 = None
            self.bn1 = nn.BatchNorm()
            self.bn2 = nn.BatchNorm()

        def forward(self, X):
            Y = nd.relu(self.bn1(self.conv1(X)))
            Y = self.bn2(self.conv2(Y))
            if self.conv3:
                X = self.conv3(X)
            return nd.relu(Y + X)

    def resnet_block(num_channels, num_residuals, first_block=False):
        blk = nn.Sequential()
        for i in range(num_residuals):
            if i == 0 and not first_block:
                blk.add(Residual(num_channels, use_1x1conv=True, strides=2))
            else:
                blk.add(Residual(num_channels))
        return blk

    net = nn.Sequential()
    net.add(nn.Conv2D(64, kernel_size=7, strides=2, padding=3),
            nn.BatchNorm(), nn.Activation("relu"),
            nn.MaxPool2D(pool_size=3, strides=2, padding=1))
    net.add(resnet_block(64, 2, first_block=True),
            resnet_block(128, 2),
            resnet_block(256, 2),
            resnet_block(512, 2))
    net.add(nn.GlobalAvgPool2D(), nn.Dense(10))
    return net


def resnet_paddle():
    paddle = _paddle()
    nn, F = paddle.nn, paddle.nn.functional

    class Residual(nn.Layer):
        def __init__(self, input_channels, num_channels, use_1x1conv=False, strides=1):
            super().__init__()
            self.conv1 = nn.Conv2D(input_channels, num_channels, kernel_size=3, padding=1, stride=strides)
            self.conv2 = nn.Conv2D(num_channels, num_channels, kernel_size=3, padding=1)
            if use_1x1conv:
                self.conv3 = nn.Conv2D(input_channels, num_channels, kernel_size=1, stride=strides)
            else:
                self.conv3 = None
            self.bn1 = nn.BatchNorm2D(num_channels)
            self.bn2 = nn.BatchNorm2D(num_channels)
            self.relu = nn.ReLU()

        def forward(self, X):
            Y = F.relu(self.bn1(self.conv1(X)))
            Y = self.bn2(self.conv2(Y))
            if self.conv3:
                X = self.conv3(X)
            Y += X
            return F.relu(Y)

    def resnet_block(input_channels, num_channels, num_residuals, first_block=False):
        blk = []
        for i in range(num_residuals):
            if i == 0 and not first_block:
                blk.append(Residual(input_channels, num_channels, use_1x1conv=True, strides=2))
            else:
                blk.append(Residual(num_channels, num_channels))
        return blk

    b1 = nn.Sequential(nn.Conv2D(1, 64, kernel_size=7, stride=2, padding=3),
                       nn.BatchNorm2D(64), nn.ReLU(),
                       nn.MaxPool2D(kernel_size=3, stride=2, padding=1))
    b2 = nn.Sequential(*resnet_block(64, 64, 2, first_block=True))
    b3 = nn.Sequential(*resnet_block(64, 128, 2))
    b4 = nn.Sequential(*resnet_block(128, 256, 2))
    b5 = nn.Sequential(*resnet_block(256, 512, 2))
    return nn.Sequential(b1, b2, b3, b4, b5, nn.AdaptiveAvgPool2D((1, 1)), nn.Flatten(), nn.Linear(512, 10))


def resnet_mindspore():  # the d2l-zh MindSpore tab: the stem's max-pool pad_mode='same'; convs without bias
    import math

    from mindspore.common.initializer import Uniform, XavierUniform, _calculate_fan_in_and_fan_out, initializer

    nn = _mindspore().nn

    class Residual(nn.Cell):
        def __init__(self, input_channels, num_channels, use_1x1conv=False, strides=1):
            super().__init__()
            self.conv1 = nn.Conv2d(input_channels, num_channels, kernel_size=3, padding=1, stride=strides,
                                   pad_mode="pad")
            self.conv2 = nn.Conv2d(num_channels, num_channels, kernel_size=3, padding=1, pad_mode="pad")
            if use_1x1conv:
                self.conv3 = nn.Conv2d(input_channels, num_channels, kernel_size=1, stride=strides)
            else:
                self.conv3 = None
            self.bn1 = nn.BatchNorm2d(num_channels)
            self.bn2 = nn.BatchNorm2d(num_channels)
            self.relu = nn.ReLU()

        def construct(self, X):
            Y = self.relu(self.bn1(self.conv1(X)))
            Y = self.bn2(self.conv2(Y))
            if self.conv3:
                X = self.conv3(X)
            Y += X
            return self.relu(Y)

    def resnet_block(input_channels, num_channels, num_residuals, first_block=False):
        blk = []
        for i in range(num_residuals):
            if i == 0 and not first_block:
                blk.append(Residual(input_channels, num_channels, use_1x1conv=True, strides=2))
            else:
                blk.append(Residual(num_channels, num_channels))
        return blk

    b1 = nn.SequentialCell([
        nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, pad_mode="pad"),
        nn.BatchNorm2d(64), nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="same")])
    b2 = nn.SequentialCell([*resnet_block(64, 64, 2, first_block=True)])
    b3 = nn.SequentialCell([*resnet_block(64, 128, 2)])
    b4 = nn.SequentialCell([*resnet_block(128, 256, 2)])
    b5 = nn.SequentialCell([*resnet_block(256, 512, 2)])
    net = nn.SequentialCell([b1, b2, b3, b4, b5, nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Dense(512, 10)])
    for _, cell in net.cells_and_names():  # d2l-zh's init_cells, the first line of its train_ch6
        if isinstance(cell, (nn.Conv2d, nn.Dense)):
            cell.weight.set_data(initializer(XavierUniform(), cell.weight.shape))
            if cell.has_bias:
                fan_in, _ = _calculate_fan_in_and_fan_out(cell.weight.shape)
                cell.bias.set_data(initializer(Uniform(1 / math.sqrt(fan_in)), [cell.out_channels]))
    return net


def resnet_jax():
    # d2l-en's JAX tab: Flax Linen (NHWC), padding='same' as in the TensorFlow tab, Flax's default
    # init, BatchNorm statistics in the 'batch_stats' collection
    from flax import linen as nn

    class Residual(nn.Module):
        num_channels: int
        use_1x1conv: bool = False
        strides: tuple = (1, 1)
        training: bool = True

        def setup(self):
            self.conv1 = nn.Conv(self.num_channels, kernel_size=(3, 3), padding="same", strides=self.strides)
            self.conv2 = nn.Conv(self.num_channels, kernel_size=(3, 3), padding="same")
            if self.use_1x1conv:
                self.conv3 = nn.Conv(self.num_channels, kernel_size=(1, 1), strides=self.strides)
            else:
                self.conv3 = None
            self.bn1 = nn.BatchNorm(not self.training)
            self.bn2 = nn.BatchNorm(not self.training)

        def __call__(self, X):
            Y = nn.relu(self.bn1(self.conv1(X)))
            Y = self.bn2(self.conv2(Y))
            if self.conv3:
                X = self.conv3(X)
            Y += X
            return nn.relu(Y)

    class ResNet18(nn.Module):
        arch: tuple = ((2, 64), (2, 128), (2, 256), (2, 512))
        num_classes: int = 10
        training: bool = True

        def setup(self):
            self.net = self.create_net()

        def b1(self):
            return nn.Sequential([
                nn.Conv(64, kernel_size=(7, 7), strides=(2, 2), padding="same"),
                nn.BatchNorm(not self.training), nn.relu,
                lambda x: nn.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding="same")])

        def block(self, num_residuals, num_channels, first_block=False):
            blk = []
            for i in range(num_residuals):
                if i == 0 and not first_block:
                    blk.append(Residual(num_channels, use_1x1conv=True, strides=(2, 2), training=self.training))
                else:
                    blk.append(Residual(num_channels, training=self.training))
            return nn.Sequential(blk)

        def create_net(self):
            net = nn.Sequential([self.b1()])
            for i, b in enumerate(self.arch):
                net.layers.extend([self.block(*b, first_block=(i == 0))])
            net.layers.extend([nn.Sequential([
                lambda x: nn.avg_pool(x, window_shape=x.shape[1:3], strides=x.shape[1:3], padding="valid"),
                lambda x: x.reshape((x.shape[0], -1)),
                nn.Dense(self.num_classes)])])
            return net

        def __call__(self, X):
            return self.net(X)

    return ResNet18()


NETS = {"torch": resnet_torch, "tensorflow": resnet_tensorflow, "mxnet": resnet_mxnet,
        "paddle": resnet_paddle, "mindspore": resnet_mindspore, "jax": resnet_jax}
LOOPS = loops(NETS)
