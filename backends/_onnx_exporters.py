"""Each framework's own ONNX exporter, run on the model polylenet built, side by side.

``export(backend, model, spec, path)`` writes what the framework's exporter makes of ``model``
(its current weights, evaluation mode) with a dynamic batch dimension. The exporters' own
packages (onnxscript, tf2onnx, paddle2onnx) are pinned in ``requirements/onnx-<backend>.txt``.
The conformance suite runs the file on ONNX Runtime against the oracle and imports it back.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def export_torch(model, spec, path):
    import torch

    model.eval()
    x = torch.zeros((2, *spec.input_shape))
    batch = torch.export.Dim("batch")
    # optimize=False: torch 2.13's default optimizer folds eval-mode BatchNorm into the conv or
    # linear layer before it (same logits, but the running statistics are gone from the file)
    torch.onnx.export(model, (x,), path, dynamo=True, dynamic_shapes=({0: batch},), optimize=False,
                      input_names=["input"], output_names=["logits"], verbose=False)


def export_tensorflow(model, spec, path):
    import tensorflow as tf
    import tf2onnx

    c, h, w = spec.input_shape
    # tf2onnx 1.17's from_keras fails on a Keras 3 model (TF 2.21): KeyError 'keras_tensor_13';
    # the model called inside a tf.function is the same graph
    function = tf.function(lambda x: model(x, training=False))
    signature = [tf.TensorSpec((None, h, w, c), tf.float32, name="input")]
    tf2onnx.convert.from_function(function, input_signature=signature, output_path=str(path))


def export_mxnet(model, spec, path):
    import mxnet as mx
    import numpy as np

    from polylenet.backends import mxnet as adapter

    model = adapter.float32_copy(model, spec)  # no Cast nodes around the float64 BatchNorm layers
    with tempfile.TemporaryDirectory() as folder:
        prefix = os.path.join(folder, "model")
        model.hybridize()
        model(mx.nd.zeros((1, *spec.input_shape)))
        model.export(prefix)
        mx.onnx.export_model(f"{prefix}-symbol.json", f"{prefix}-0000.params", [(1, *spec.input_shape)],
                             [np.float32], str(path), dynamic=True,
                             dynamic_input_shapes=[(None, *spec.input_shape)])


def export_paddle(model, spec, path):
    import paddle

    model.eval()
    spec_in = paddle.static.InputSpec([None, *spec.input_shape], "float32", "input")
    prefix = str(Path(path).with_suffix(""))
    paddle.onnx.export(model, prefix, input_spec=[spec_in])


def export_mindspore(model, spec, path):
    import mindspore as ms
    import numpy as np

    model.set_train(False)
    x = ms.Tensor(np.zeros((1, *spec.input_shape), np.float32))
    name = str(Path(path).resolve().with_suffix(""))
    # MindSpore 2.10 writes rank_0/om/analyze_fail.ir into the working directory when it fails
    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder):
        ms.export(model, x, file_name=name, file_format="ONNX")


EXPORTERS = {"torch": export_torch, "tensorflow": export_tensorflow, "mxnet": export_mxnet,
             "paddle": export_paddle, "mindspore": export_mindspore}
