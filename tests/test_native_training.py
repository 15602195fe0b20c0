"""Each backend returns the framework's idiomatic model: its own training tools work on it
without polylenet, and polylenet reads back what they learned."""

import os

import numpy as np
import pytest

import polylenet

TESTED = os.environ.get("POLYLENET_TEST_BACKENDS", ",".join(polylenet.available_backends())).split(",")
STEPS, LR = 30, 0.1


def _data():
    """Noise with a bright 6x6 patch whose position encodes the class: learnable in a few steps."""
    rng = np.random.default_rng(0)
    y = np.arange(32, dtype=np.int32) % 10
    x = 0.2 * rng.random((32, 1, 28, 28), dtype=np.float32)
    for i, label in enumerate(y):
        row, col = divmod(int(label), 4)
        x[i, 0, 2 + 8 * row:8 + 8 * row, 2 + 6 * col:8 + 6 * col] = 1.0
    return x, y


def _train_torch(model, x, y):
    import torch
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    for _ in range(STEPS):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y).long()).backward()
        optimizer.step()


def _train_tensorflow(model, x, y):
    import keras
    model.compile(optimizer=keras.optimizers.SGD(LR),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x.transpose(0, 2, 3, 1), y, batch_size=32, epochs=STEPS, verbose=0, shuffle=False)


def _train_mxnet(model, x, y):
    from mxnet import autograd, gluon, nd
    trainer = gluon.Trainer(model.collect_params(), "sgd", {"learning_rate": LR})
    loss = gluon.loss.SoftmaxCrossEntropyLoss()
    for _ in range(STEPS):
        with autograd.record():
            batch_loss = loss(model(nd.array(x)), nd.array(y))
        batch_loss.backward()
        trainer.step(len(x))


def _train_paddle(model, x, y):
    import paddle
    hapi = paddle.Model(model)
    hapi.prepare(paddle.optimizer.SGD(learning_rate=LR, parameters=model.parameters()),
                 paddle.nn.CrossEntropyLoss())
    for _ in range(STEPS):
        hapi.train_batch([x], [y.astype(np.int64)[:, None]])


def _train_mindspore(model, x, y):
    import mindspore as ms
    model.set_train(True)
    optimizer = ms.nn.SGD(model.trainable_params(), learning_rate=LR)
    loss = ms.nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    grad_fn = ms.value_and_grad(lambda a, b: loss(model(a), b), None, optimizer.parameters)
    for _ in range(STEPS):
        _, grads = grad_fn(ms.Tensor(x), ms.Tensor(y))
        optimizer(grads)


def _train_jax(model, x, y):
    import jax.numpy as jnp
    import optax
    from flax import nnx

    model.train()
    optimizer = nnx.Optimizer(model, optax.sgd(LR), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, images, labels):
        def loss(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(images), labels).mean()

        optimizer.update(model, nnx.grad(loss)(model))

    for _ in range(STEPS):
        step(model, optimizer, jnp.asarray(x.transpose(0, 2, 3, 1)), jnp.asarray(y))


NATIVE = {"torch": _train_torch, "tensorflow": _train_tensorflow, "mxnet": _train_mxnet,
          "paddle": _train_paddle, "mindspore": _train_mindspore, "jax": _train_jax}


@pytest.mark.parametrize("spec", ["lenet-relu", "lenet-bn"])
@pytest.mark.parametrize("backend", [b for b in NATIVE if b in TESTED])
def test_framework_trains_the_model_with_its_own_tools(backend, spec):
    x, y = _data()
    model = polylenet.build(spec, backend=backend, seed=0)
    before = polylenet.get_weights(model)
    NATIVE[backend](model, x, y)
    after = polylenet.get_weights(model)
    # the framework's own training mode updated batchnorm's running statistics, read back neutrally
    for key in (k for k in after if k.endswith((".running_mean", ".running_var"))):
        assert not np.array_equal(after[key], before[key]), key
    oracle = polylenet.build(spec, backend="numpy")
    losses = []
    for weights in (before, after):
        polylenet.set_weights(oracle, weights)
        losses.append(polylenet.loss_and_grads(oracle, x, y)[0])
    assert losses[1] < 0.5 * losses[0], losses
