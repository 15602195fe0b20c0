"""d2l's LeNet chapter, one framework at a time, in plain framework code as the book has it:
the chapter's ``net``, Xavier init, the framework's own data pipeline and ``train_ch6``'s loop
(SGD, cross-entropy, per-batch loss/accuracy accumulation). No polylenet code runs in here.

Each chapter's net is ``lenet_<backend>()``; ``train_ch6_<backend>(net, x, y, epochs, lr,
batch_size)`` is the book's loop, shared with the AlexNet and ResNet chapters
(``d2l_alexnet_loops.py``, ``d2l_resnet_loops.py``), as the book shares its ``train_ch6``.
``LOOPS[backend](x, y, epochs, lr, batch_size)`` takes NCHW float32 images in [0, 1] and int
labels, and returns ``(wall, steps)``: the seconds the training loops took (evaluation excluded),
and the seconds d2l's ``Timer`` counts in ``train_ch6`` (started after a batch is fetched, stopped
after its metrics are added: the steps without the data loading).
"""

from __future__ import annotations

import time

import numpy as np


class Timer:
    """d2l's Timer, as train_ch6 uses it: start() and stop() around each step; sum() in seconds."""

    def __init__(self):
        self.times, self.tik = [], None

    def start(self):
        self.tik = time.perf_counter()

    def stop(self):
        self.times.append(time.perf_counter() - self.tik)

    def sum(self):
        return sum(self.times)


def lenet_torch():
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.Sigmoid(),
        nn.Linear(120, 84), nn.Sigmoid(),
        nn.Linear(84, 10))


def train_ch6_torch(net, x, y, epochs, lr, batch_size):
    import torch
    from torch import nn

    def init_weights(m):
        if type(m) == nn.Linear or type(m) == nn.Conv2d:
            nn.init.xavier_uniform_(m.weight)

    net.apply(init_weights)
    train_iter = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y).long()),
        batch_size, shuffle=True)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    loss = nn.CrossEntropyLoss()
    timer, start = Timer(), time.perf_counter()
    for epoch in range(epochs):
        metric = np.zeros(3)
        net.train()
        for X, y_ in train_iter:
            timer.start()
            optimizer.zero_grad()
            y_hat = net(X)
            l = loss(y_hat, y_)
            l.backward()
            optimizer.step()
            with torch.no_grad():
                metric += (float(l) * X.shape[0], float((y_hat.argmax(1) == y_).sum()), X.shape[0])
            timer.stop()
    return time.perf_counter() - start, timer.sum()


def _tensorflow():
    import os
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


def lenet_tensorflow():
    tf = _tensorflow()
    return tf.keras.models.Sequential([
        tf.keras.layers.Conv2D(filters=6, kernel_size=5, activation="sigmoid", padding="same"),
        tf.keras.layers.AvgPool2D(pool_size=2, strides=2),
        tf.keras.layers.Conv2D(filters=16, kernel_size=5, activation="sigmoid"),
        tf.keras.layers.AvgPool2D(pool_size=2, strides=2),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(120, activation="sigmoid"),
        tf.keras.layers.Dense(84, activation="sigmoid"),
        tf.keras.layers.Dense(10)])


def train_ch6_tensorflow(net, x, y, epochs, lr, batch_size):
    tf = _tensorflow()
    train_iter = tf.data.Dataset.from_tensor_slices((x.transpose(0, 2, 3, 1), y)).shuffle(len(x)).batch(batch_size)
    net.compile(optimizer=tf.keras.optimizers.SGD(learning_rate=lr),
                loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
    class StepTimer(tf.keras.callbacks.Callback):  # Keras runs the step, batch fetch included, in fit
        def on_train_batch_begin(self, batch, logs=None):
            timer.start()

        def on_train_batch_end(self, batch, logs=None):
            timer.stop()

    timer, start = Timer(), time.perf_counter()
    net.fit(train_iter, epochs=epochs, verbose=0, callbacks=[StepTimer()])
    return time.perf_counter() - start, timer.sum()


def _mxnet():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import mxnet
        from mxnet import autograd, gluon, init  # noqa: F401  (loaded with the warnings silenced)
        from mxnet.gluon import nn  # noqa: F401
    return mxnet


def lenet_mxnet():
    nn = _mxnet().gluon.nn
    net = nn.Sequential()
    net.add(nn.Conv2D(channels=6, kernel_size=5, padding=2, activation="sigmoid"),
            nn.AvgPool2D(pool_size=2, strides=2),
            nn.Conv2D(channels=16, kernel_size=5, activation="sigmoid"),
            nn.AvgPool2D(pool_size=2, strides=2),
            nn.Dense(120, activation="sigmoid"),
            nn.Dense(84, activation="sigmoid"),
            nn.Dense(10))
    return net


def train_ch6_mxnet(net, x, y, epochs, lr, batch_size):
    mxnet = _mxnet()
    autograd, gluon, init = mxnet.autograd, mxnet.gluon, mxnet.init
    net.initialize(force_reinit=True, init=init.Xavier())
    train_iter = gluon.data.DataLoader(gluon.data.ArrayDataset(x, y.astype(np.float32)), batch_size, shuffle=True)
    loss = gluon.loss.SoftmaxCrossEntropyLoss()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": lr})
    timer, start = Timer(), time.perf_counter()
    for epoch in range(epochs):
        metric = np.zeros(3)
        for X, y_ in train_iter:
            timer.start()
            with autograd.record():
                y_hat = net(X)
                l = loss(y_hat, y_)
            l.backward()
            trainer.step(X.shape[0])
            metric += (float(l.sum().asscalar()), float((y_hat.argmax(axis=1) == y_).sum().asscalar()), X.shape[0])
            timer.stop()
    return time.perf_counter() - start, timer.sum()


def _paddle():
    import warnings
    warnings.filterwarnings("ignore", message="No ccache found")
    import paddle

    paddle.set_device("cpu")
    return paddle


def lenet_paddle():
    nn = _paddle().nn
    return nn.Sequential(
        nn.Conv2D(in_channels=1, out_channels=6, kernel_size=5, padding=2), nn.Sigmoid(),
        nn.AvgPool2D(kernel_size=2, stride=2),
        nn.Conv2D(in_channels=6, out_channels=16, kernel_size=5), nn.Sigmoid(),
        nn.AvgPool2D(kernel_size=2, stride=2),
        nn.Flatten(),
        nn.Linear(in_features=16 * 5 * 5, out_features=120), nn.Sigmoid(),
        nn.Linear(120, 84), nn.Sigmoid(),
        nn.Linear(84, 10))


def train_ch6_paddle(net, x, y, epochs, lr, batch_size):
    paddle = _paddle()
    nn = paddle.nn

    def init_weights(m):  # as d2l-zh's train_ch6 has it: it builds an initializer and applies it to nothing
        if type(m) == nn.Linear or type(m) == nn.Conv2D:
            nn.initializer.XavierUniform(m.weight)

    net.apply(init_weights)
    train_iter = paddle.io.DataLoader(
        paddle.io.TensorDataset([paddle.to_tensor(x), paddle.to_tensor(y.astype(np.int64))]),
        batch_size=batch_size, shuffle=True, return_list=True)
    optimizer = paddle.optimizer.SGD(learning_rate=lr, parameters=net.parameters())
    loss = nn.CrossEntropyLoss()
    timer, start = Timer(), time.perf_counter()
    for epoch in range(epochs):
        metric = np.zeros(3)
        net.train()
        for X, y_ in train_iter:
            timer.start()
            optimizer.clear_grad()
            y_hat = net(X)
            l = loss(y_hat, y_)
            l.backward()
            optimizer.step()
            with paddle.no_grad():
                metric += (float(l) * X.shape[0], float((y_hat.argmax(1) == y_.flatten()).sum()), X.shape[0])
            timer.stop()
    return time.perf_counter() - start, timer.sum()


def _mindspore():
    import os
    os.environ.setdefault("GLOG_v", "3")
    import mindspore as ms
    import mindspore.dataset  # noqa: F401

    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_device("CPU")
    return ms


def lenet_mindspore():
    from mindspore.common.initializer import XavierUniform

    nn = _mindspore().nn
    return nn.SequentialCell(
        nn.Conv2d(1, 6, kernel_size=5, pad_mode="pad", padding=2, has_bias=True, weight_init=XavierUniform()),
        nn.Sigmoid(), nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5, pad_mode="valid", has_bias=True, weight_init=XavierUniform()),
        nn.Sigmoid(), nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Flatten(),
        nn.Dense(16 * 5 * 5, 120, weight_init=XavierUniform()), nn.Sigmoid(),
        nn.Dense(120, 84, weight_init=XavierUniform()), nn.Sigmoid(),
        nn.Dense(84, 10, weight_init=XavierUniform()))


def train_ch6_mindspore(net, x, y, epochs, lr, batch_size):
    ms = _mindspore()
    ds, nn = ms.dataset, ms.nn
    train_iter = ds.NumpySlicesDataset((x, y.astype(np.int32)), ["X", "y"], shuffle=True).batch(batch_size)
    loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    optimizer = nn.SGD(net.trainable_params(), learning_rate=lr)

    def forward_fn(X, y_):
        y_hat = net(X)
        return loss(y_hat, y_), y_hat

    grad_fn = ms.value_and_grad(forward_fn, None, optimizer.parameters, has_aux=True)
    timer, start = Timer(), time.perf_counter()
    for epoch in range(epochs):
        metric = np.zeros(3)
        net.set_train()
        for X, y_ in train_iter.create_tuple_iterator():
            timer.start()
            (l, y_hat), grads = grad_fn(X, y_)
            optimizer(grads)
            metric += (float(l.asnumpy()) * X.shape[0], float((y_hat.argmax(1) == y_).sum().asnumpy()), X.shape[0])
            timer.stop()
    return time.perf_counter() - start, timer.sum()


def lenet_jax():
    # d2l-en's JAX tab: a Flax Linen LeNet (NHWC, Xavier-uniform kernels)
    from flax import linen as nn

    class LeNet(nn.Module):
        num_classes: int = 10

        def setup(self):
            init = nn.initializers.xavier_uniform
            self.net = nn.Sequential([
                nn.Conv(features=6, kernel_size=(5, 5), padding="SAME", kernel_init=init()), nn.sigmoid,
                lambda x: nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2)),
                nn.Conv(features=16, kernel_size=(5, 5), padding="VALID", kernel_init=init()), nn.sigmoid,
                lambda x: nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2)),
                lambda x: x.reshape((x.shape[0], -1)),
                nn.Dense(features=120, kernel_init=init()), nn.sigmoid,
                nn.Dense(features=84, kernel_init=init()), nn.sigmoid,
                nn.Dense(features=self.num_classes, kernel_init=init())])

        def __call__(self, X):
            return self.net(X)

    return LeNet()


def train_ch6_jax(net, x, y, epochs, lr, batch_size):
    # optax SGD in a flax TrainState, one jax.jit-compiled training step; a dropout key in the
    # state, split every step, and the BatchNorm statistics ('batch_stats', updated every step),
    # as d2l-en's TrainState does (unused by a net without dropout or BatchNorm)
    import jax
    import jax.numpy as jnp
    import optax
    from flax.training.train_state import TrainState

    class State(TrainState):
        batch_stats: dict
        dropout_rng: jax.Array

    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    _, params_key, dropout_key = jax.random.split(jax.random.PRNGKey(0), 3)
    variables = net.init({"params": params_key, "dropout": dropout_key}, jnp.zeros((1, *nhwc.shape[1:])))
    state = State.create(apply_fn=net.apply, params=variables["params"], tx=optax.sgd(lr),
                         batch_stats=variables.get("batch_stats", {}), dropout_rng=dropout_key)

    @jax.jit
    def training_step(state, X, y_):
        def loss(params):
            if not state.batch_stats:
                y_hat = state.apply_fn({"params": params}, X, rngs={"dropout": state.dropout_rng})
                return optax.softmax_cross_entropy_with_integer_labels(y_hat, y_).mean(), (y_hat, {})
            y_hat, updates = state.apply_fn({"params": params, "batch_stats": state.batch_stats}, X,
                                            mutable=["batch_stats"], rngs={"dropout": state.dropout_rng})
            return optax.softmax_cross_entropy_with_integer_labels(y_hat, y_).mean(), (y_hat, updates)

        (l, (y_hat, updates)), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
        state = state.apply_gradients(grads=grads).replace(dropout_rng=jax.random.split(state.dropout_rng)[0],
                                                           batch_stats=updates.get("batch_stats", state.batch_stats))
        return state, l, (y_hat.argmax(1) == y_).sum()

    rng = np.random.default_rng(0)
    timer, start = Timer(), time.perf_counter()
    for epoch in range(epochs):
        metric = np.zeros(3)
        order = rng.permutation(len(nhwc))  # d2l's loader shuffles each epoch
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            X, y_ = nhwc[idx], y[idx]
            timer.start()
            state, l, correct = training_step(state, X, y_)
            metric += (float(l) * len(idx), float(correct), len(idx))
            timer.stop()
    return time.perf_counter() - start, timer.sum()


# d2l's train_ch6 per framework, shared by the chapters (d2l_alexnet_loops.py, d2l_resnet_loops.py)
TRAIN_CH6 = {"torch": train_ch6_torch, "tensorflow": train_ch6_tensorflow, "mxnet": train_ch6_mxnet,
             "paddle": train_ch6_paddle, "mindspore": train_ch6_mindspore, "jax": train_ch6_jax}
NETS = {"torch": lenet_torch, "tensorflow": lenet_tensorflow, "mxnet": lenet_mxnet, "paddle": lenet_paddle,
        "mindspore": lenet_mindspore, "jax": lenet_jax}


def loops(nets):
    """``{backend: train(x, y, epochs, lr, batch_size)}``: each chapter's net through train_ch6."""
    return {name: (lambda x, y, epochs, lr, batch_size, name=name:
                   TRAIN_CH6[name](nets[name](), x, y, epochs, lr, batch_size)) for name in nets}


LOOPS = loops(NETS)
