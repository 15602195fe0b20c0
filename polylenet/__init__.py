"""polylenet: one framework-neutral CNN spec, compiled into PyTorch, TensorFlow/Keras, MXNet
Gluon, PaddlePaddle, MindSpore and JAX/Flax models, checked against a NumPy reference.

>>> import polylenet
>>> spec = polylenet.load_spec("lenet5")
>>> polylenet.spec_layer_shapes(spec)[-1]
('dense3', (1, 10))
"""

from polylenet.api import (
    backend_of,
    build,
    forward,
    get_weights,
    layer_outputs,
    layer_shapes,
    loss_and_grads,
    set_weights,
    spec_of,
    trainer,
)
from polylenet.checkpoint import load_checkpoint, save_checkpoint
from polylenet.comparison import Comparison, compare
from polylenet.data import DataError, load_data, read_idx
from polylenet.errors import (
    BackendError,
    BackendUnavailable,
    CheckpointError,
    InputError,
    OnnxError,
    OptionError,
    PolylenetError,
    SpecError,
    TrainingDiverged,
    WeightsError,
)
from polylenet.layers import (
    activation,
    add,
    batchnorm,
    concat,
    conv2d,
    dense,
    dropout,
    flatten,
    global_avg_pool,
    pool2d,
    sequential,
)
from polylenet.onnxfile import export_onnx, import_onnx
from polylenet.registry import available_backends, known_backends
from polylenet.shapes import format_shape_table, param_shapes, spec_layer_shapes
from polylenet.spec import VARIANTS, Spec
from polylenet.specfile import load_spec, save_spec
from polylenet.training import (
    EpochStats,
    History,
    TrainConfig,
    batch_order,
    book_batch_size,
    book_lr,
    evaluate,
    train,
)
from polylenet.weights import init_weights, load_weights, save_weights

__version__ = "0.1.0"

__all__ = [
    "BackendError", "BackendUnavailable", "InputError", "OptionError", "PolylenetError", "SpecError", "WeightsError",
    "backend_of", "build", "forward", "get_weights", "layer_outputs", "layer_shapes", "loss_and_grads",
    "set_weights", "spec_of", "trainer", "available_backends", "known_backends",
    "format_shape_table", "param_shapes", "spec_layer_shapes", "VARIANTS", "Spec", "activation",
    "conv2d", "batchnorm", "dense", "dropout", "flatten", "global_avg_pool", "load_spec", "pool2d", "save_spec",
    "sequential", "concat", "add",
    "init_weights",
    "load_weights", "save_weights", "load_checkpoint", "save_checkpoint", "DataError", "load_data",
    "read_idx", "CheckpointError", "TrainingDiverged", "EpochStats", "History", "TrainConfig",
    "batch_order", "book_batch_size", "book_lr", "evaluate", "train", "OnnxError", "export_onnx", "import_onnx",
    "Comparison", "compare",
]
