"""ONNX Runtime: inference on the graph polylenet exports (polylenet.onnxfile), no framework.

The model is the ONNX graph itself (weights as initializers) and a session built from it; every
layer's output tensor is a graph output too, so ``layer_outputs`` reads what the runtime computed.
ONNX Runtime does not train here (its training API is a separate build), so this backend
declares inference only.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from polylenet.onnxfile import INPUT, OUTPUT, from_onnx, output_tensors, to_onnx
from polylenet.shapes import param_shapes

NAME = "onnxruntime"
CAPABILITIES = frozenset({"inference"})


def version() -> str:
    return ort.__version__


class OnnxModel:
    """An ONNX graph and the ONNX Runtime session that runs it; ``load`` replaces both."""

    def load(self, graph) -> None:
        from onnx import TensorProto, helper

        self.graph = graph  # as exported: one output, the logits
        self.outputs = [node.output[0] for node in graph.graph.node]
        runnable = type(graph)()
        runnable.CopyFrom(graph)
        runnable.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
                                     for name in self.outputs if name != OUTPUT)
        self.session = ort.InferenceSession(runnable.SerializeToString(), providers=["CPUExecutionProvider"])


def build(spec):
    model = OnnxModel()
    model.load(to_onnx(spec, {k: np.zeros(s, np.float32) for k, s in param_shapes(spec).items()}, NAME))
    return model


def set_weights(model, spec, weights):
    model.load(to_onnx(spec, weights, NAME))


def get_weights(model, spec):
    return from_onnx(model.graph, f"the {NAME} model")[1]


def forward(model, spec, x):
    return model.session.run([OUTPUT], {INPUT: x})[0]


def layer_outputs(model, spec, x):
    outputs = dict(zip(model.outputs, model.session.run(model.outputs, {INPUT: x})))
    return [(path, np.asarray(outputs[tensor], np.float32)) for path, tensor in output_tensors(spec).items()]
