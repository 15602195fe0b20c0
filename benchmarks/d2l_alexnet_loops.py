"""d2l's AlexNet chapter, one framework at a time, in plain framework code as the book has it:
each tab's own ``net`` (d2l-zh's tabs; d2l-en's for JAX, which d2l-zh lacks), the tab's init,
and ``train_ch6``'s loop (SGD, cross-entropy, per-batch loss/accuracy accumulation), for 1-channel
224x224 inputs and 10 classes. No polylenet code runs in here.

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

Inputs: each ``train_<backend>(x, y, epochs, lr, batch_size)`` takes ``x`` already resized to
224x224 (NCHW float32 in [0, 1], e.g. by ``polylenet.resize.to_model_inputs``) and int labels, so
the chapter's loop and polylenet train on the same pixels; the book resizes inside each tab's data
pipeline with each framework's own image op (see ``resize_conventions.py``), which is left out
here: the loops time the training only. Each returns ``(wall, steps)`` as ``d2l_loops`` does: the
seconds the training loops took (evaluation excluded), and the seconds d2l's ``Timer`` counts in
``train_ch6`` (the steps without the data loading).

Where the loop differs from the book: MindSpore's ``train_ch6`` steps with ``TrainOneStepCell``
and then runs ``net(X)`` once more for the accuracy (a second forward pass, with dropout on);
here, as in ``d2l_loops``, one ``value_and_grad`` step returns the logits it used. JAX follows
``train_ch6``'s loop (as ``d2l_loops`` does) rather than d2l-en's ``Trainer``, with the dropout
key split per step as d2l-en's ``TrainState`` does.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from d2l_loops import Timer  # noqa: E402  (d2l's Timer, as train_ch6 uses it)

DROPOUT = 0.5


def train_torch(x, y, epochs, lr, batch_size):
    import torch
    from torch import nn

    net = nn.Sequential(
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


def train_tensorflow(x, y, epochs, lr, batch_size):
    import os
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    def net():  # the d2l-zh TensorFlow tab: the first conv unpadded
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

    train_iter = tf.data.Dataset.from_tensor_slices((x.transpose(0, 2, 3, 1), y)).shuffle(len(x)).batch(batch_size)
    model = net()
    model.compile(optimizer=tf.keras.optimizers.SGD(learning_rate=lr),
                  loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])

    class StepTimer(tf.keras.callbacks.Callback):  # Keras runs the step, batch fetch included, in fit
        def on_train_batch_begin(self, batch, logs=None):
            timer.start()

        def on_train_batch_end(self, batch, logs=None):
            timer.stop()

    timer, start = Timer(), time.perf_counter()
    model.fit(train_iter, epochs=epochs, verbose=0, callbacks=[StepTimer()])
    return time.perf_counter() - start, timer.sum()


def train_mxnet(x, y, epochs, lr, batch_size):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from mxnet import autograd, gluon, init
        from mxnet.gluon import nn

    net = nn.Sequential()  # the d2l-zh MXNet tab: the first conv unpadded; Dense flattens
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


def train_paddle(x, y, epochs, lr, batch_size):
    import warnings
    warnings.filterwarnings("ignore", message="No ccache found")
    import paddle
    from paddle import nn

    paddle.set_device("cpu")
    net = nn.Sequential(
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

    def init_weights(m):  # as d2l-zh's Paddle train_ch6 has it (it leaves Paddle's default init)
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


def train_mindspore(x, y, epochs, lr, batch_size):
    import os
    os.environ.setdefault("GLOG_v", "3")
    import mindspore as ms
    import mindspore.dataset as ds
    from mindspore import nn

    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_device("CPU")
    xavier = "xavier_uniform"
    net = nn.SequentialCell([
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


def train_jax(x, y, epochs, lr, batch_size):
    # d2l-en's JAX tab: a Flax Linen AlexNet (NHWC; Conv's default padding is SAME, so the 5x5 and
    # 3x3 convs pad 2 and 1; the first conv pads 1), Flax's default init, dropout from a key in the
    # train state; optax SGD, one jax.jit-compiled training step.
    import jax
    import jax.numpy as jnp
    import optax
    from flax import linen as nn
    from flax.training.train_state import TrainState

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

    class State(TrainState):
        dropout_rng: jax.Array

    net = AlexNet()
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    _, params_key, dropout_key = jax.random.split(jax.random.PRNGKey(0), 3)
    params = net.init({"params": params_key, "dropout": dropout_key}, jnp.zeros((1, *nhwc.shape[1:])))["params"]
    state = State.create(apply_fn=net.apply, params=params, tx=optax.sgd(lr), dropout_rng=dropout_key)

    @jax.jit
    def training_step(state, X, y_):
        def loss(params):
            y_hat = state.apply_fn({"params": params}, X, rngs={"dropout": state.dropout_rng})
            return optax.softmax_cross_entropy_with_integer_labels(y_hat, y_).mean(), y_hat

        (l, y_hat), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
        state = state.apply_gradients(grads=grads).replace(dropout_rng=jax.random.split(state.dropout_rng)[0])
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


LOOPS = {"torch": train_torch, "tensorflow": train_tensorflow, "mxnet": train_mxnet,
         "paddle": train_paddle, "mindspore": train_mindspore, "jax": train_jax}
