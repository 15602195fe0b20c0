"""The d2l training protocol, shared by every backend: same data, same batches, same start.

The batch order is decided once, in NumPy, from the seed, and fed identically to every
backend; the initial weights come from :func:`polylenet.init_weights`. Each backend only
supplies its framework's SGD step and forward pass.
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

import numpy as np

from polylenet.api import build, forward, get_weights, spec_of, trainer
from polylenet.atomic import atomic_write
from polylenet.checkpoint import load_checkpoint, save_checkpoint
from polylenet.data import Dataset, load_data
from polylenet.errors import CheckpointError, ConfigError, TrainingDiverged
from polylenet.masks import DROPOUT_MODES, dropout_masks
from polylenet.optional import require_matplotlib
from polylenet.progress import ProgressBar
from polylenet.registry import get_backend, resolve_name
from polylenet.resize import to_model_inputs
from polylenet.rundir import claim_run_folder
from polylenet.spec import Spec, spec_from_dict
from polylenet.specfile import load_spec

# A training loss above this many times ln(classes) (the loss of a uniform guess) has blown up:
# the worst step loss in every full protocol run measured here (lenet5, lenet-relu, lenet-bn, all
# backends) is 2.71 = 1.2 x ln(10); lenet5 at lr 1e6 reaches 2.2e7.
BLOWN_UP = 50.0

SUBSET_SEED = 20170825  # fixes which examples a train_subset/test_subset takes, whatever the run's seed


@dataclass(frozen=True)
class TrainConfig:
    """d2l's protocol: minibatch SGD at lr 0.9, batch 256, 10 epochs, cross-entropy on logits,
    Xavier-uniform init from ``init_weights(seed)``, pixels scaled to [0, 1].

    ``train_subset``/``test_subset`` take a fixed random subset of that many examples (for quick
    runs); ``max_steps`` stops after that many SGD steps; ``compiled=False`` runs every backend
    eagerly (no ``tf.function``, no Gluon ``hybridize``) for debugging. ``dropout``: ``"native"``
    (each framework's own dropout draws) or ``"shared"`` (the same NumPy-drawn masks on every
    backend, :func:`polylenet.masks.dropout_masks`; what ``compare`` uses).
    """

    lr: float = 0.9
    batch_size: int = 256
    epochs: int = 10
    seed: int = 0
    dataset: str = "fashion-mnist"
    train_subset: Optional[int] = None
    test_subset: Optional[int] = None
    max_steps: Optional[int] = None
    eval_batch_size: int = 1000
    compiled: bool = True  # the framework's compiled step where it has one; False for eager debugging
    dropout: str = "native"

    def __post_init__(self) -> None:
        def whole(value, allow_none=False, least=1):
            if value is None and allow_none:
                return True
            return isinstance(value, int) and not isinstance(value, bool) and value >= least

        lr = self.lr
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
            raise ConfigError(f"lr must be a positive finite number, got {lr!r}")
        for key in ("epochs", "batch_size", "eval_batch_size"):
            if not whole(getattr(self, key)):
                raise ConfigError(f"{key} must be a whole number >= 1, got {getattr(self, key)!r}")
        for key in ("train_subset", "test_subset", "max_steps"):
            if not whole(getattr(self, key), allow_none=True):
                raise ConfigError(f"{key} must be a whole number >= 1 (or left out), got {getattr(self, key)!r}")
        if not whole(self.seed, least=0):
            raise ConfigError(f"seed must be a whole number >= 0, got {self.seed!r}")
        if self.dropout not in DROPOUT_MODES:
            raise ConfigError(f"dropout must be one of {list(DROPOUT_MODES)}, got {self.dropout!r}")


# The settings each d2l chapter trains its variant with, where they are not TrainConfig's (lr 0.9,
# batch 256, 10 epochs): the batch-normalization chapter (Chinese edition) trains lenet-bn at
# lr 1.0; the modern-CNN chapter trains at batch 128 on 224x224 images (the resize is the spec's
# input shape) with lr 0.01 (AlexNet), 0.05 (VGG), 0.1 (NiN).
BOOK = {"lenet-bn": {"lr": 1.0},
        "alexnet": {"lr": 0.01, "batch_size": 128}, "alexnet-tf-tab": {"lr": 0.01, "batch_size": 128},
        "vgg11-small": {"lr": 0.05, "batch_size": 128}, "nin": {"lr": 0.1, "batch_size": 128},
        "googlenet": {"lr": 0.1, "batch_size": 128}, "resnet18": {"lr": 0.05, "batch_size": 256},
        "resnet18-tf-tab": {"lr": 0.05, "batch_size": 256}, "densenet": {"lr": 0.1, "batch_size": 256}}


def _name(spec: Union[Spec, str]) -> str:
    return spec.name if isinstance(spec, Spec) else str(spec)


def book_lr(spec: Union[Spec, str]) -> float:
    """The learning rate d2l trains ``spec`` with (0.9 unless its chapter says otherwise).

    >>> book_lr("lenet5"), book_lr("lenet-bn"), book_lr("alexnet")
    (0.9, 1.0, 0.01)
    """
    return BOOK.get(_name(spec), {}).get("lr", TrainConfig.lr)


def book_batch_size(spec: Union[Spec, str]) -> int:
    """The batch size d2l trains ``spec`` with (256 for LeNet, 128 for the modern CNNs).

    >>> book_batch_size("lenet5"), book_batch_size("nin")
    (256, 128)
    """
    return BOOK.get(_name(spec), {}).get("batch_size", TrainConfig.batch_size)


@dataclass
class EpochStats:
    epoch: int
    train_loss: float
    train_acc: float
    test_acc: float
    examples_per_sec: float
    seconds: float


@dataclass
class History:
    """What a run did: per-epoch metrics, every step's loss, and the run's settings and versions."""

    backend: str
    spec: dict[str, Any]
    config: dict[str, Any]
    versions: dict[str, str]
    epochs: list[EpochStats] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    peak_memory_mb: float = 0.0
    data_source: str = ""
    stopped: str = ""  # why the run stopped early (divergence), else empty

    @property
    def final(self) -> EpochStats:
        return self.epochs[-1]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "History":
        data = dict(data)
        data["epochs"] = [EpochStats(**e) for e in data.get("epochs", [])]
        return cls(**data)

    def save(self, path: Union[str, os.PathLike]) -> Path:
        """Write the history as JSON, atomically."""
        return atomic_write(path, (json.dumps(self.to_dict(), indent=2) + "\n").encode())

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "History":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def plot(self, ax: Any = None) -> Any:
        """d2l's three curves, train loss, train accuracy and test accuracy against the epoch, on
        one axes with a legend, as d2l's ``Animator`` draws them; into ``ax`` if given. Returns the
        matplotlib Figure: a notebook shows it, elsewhere save it with ``.savefig(path)``.

        >>> import polylenet
        >>> h = polylenet.train("lenet5", backend="numpy", config=polylenet.TrainConfig(epochs=2))  # doctest: +SKIP
        >>> h.plot().savefig("curves.png")  # doctest: +SKIP
        """
        require_matplotlib("History.plot")
        from polylenet.plotting import plot_history

        return plot_history(self, ax)


def to_inputs(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W) images -> float32 NCHW in [0, 1], as d2l's ToTensor does (no resize)."""
    return to_model_inputs(images, (1, *images.shape[1:]))


def fixed_subset(n: int, size: Optional[int]) -> np.ndarray:
    """Indices of a fixed random subset (sorted), or all of them when ``size`` is None."""
    if size is None or size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(SUBSET_SEED).permutation(n)[:size])


def batch_order(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The shuffled minibatches of one epoch, a function of (seed, epoch) alone; the last may be short."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def evaluate(model: Any, x: np.ndarray, y: np.ndarray, batch_size: int = 1000) -> float:
    """Accuracy of ``model`` on ``x`` with labels ``y``: NCHW float32 inputs, or uint8 (N, H, W)
    images as the data set holds them, made into the model's inputs one batch at a time as
    ``train`` does (scaled to [0, 1], resized to the spec's input size: 10,000 test images at
    224x224 would be 2 GB at once)."""
    correct = 0
    images = x.dtype == np.uint8 and x.ndim == 3
    for i in range(0, len(x), batch_size):
        batch = x[i:i + batch_size]
        if images:
            batch = to_model_inputs(batch, spec_of(model).input_shape)
        correct += int((forward(model, batch).argmax(axis=1) == y[i:i + batch_size]).sum())
    return correct / max(len(x), 1)


# Evaluation batches hold at most this many input values: 1000 LeNet images (28x28), 227 at 96x96,
# 41 at 224x224 (AlexNet's activations for 1000 such images would be over 1 GB; MindSpore's
# graph-mode ResNet-18 runs out of memory on 512 images at 96x96 on a 24 GB machine, 2026-12-02).
EVAL_INPUT_VALUES = 2**21


def eval_batch_size(config: TrainConfig, spec: Spec) -> int:
    """``config.eval_batch_size``, capped so a batch holds at most :data:`EVAL_INPUT_VALUES` inputs."""
    return max(1, min(config.eval_batch_size, EVAL_INPUT_VALUES // math.prod(spec.input_shape)))


def _versions(backend: str) -> dict[str, str]:
    from polylenet import __version__

    return {"polylenet": __version__, "python": platform.python_version(), "numpy": np.__version__,
            backend: get_backend(backend).version()}


def _peak_memory_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def _batches(images: np.ndarray, y: np.ndarray, spec: Spec, config: TrainConfig, epoch: int) -> Iterator[tuple]:
    """(x, y, masks) per step: the same inputs, labels and (shared) dropout masks for every backend."""
    # One gather per epoch; each batch is then a contiguous slice, made into inputs (and resized)
    # on its own: the whole training set at 224x224 would not fit in memory.
    order = np.concatenate(batch_order(len(images), config.batch_size, config.seed, epoch))
    xs, ys = images[order], y[order]
    for step, i in enumerate(range(0, len(xs), config.batch_size)):
        yb = ys[i:i + config.batch_size]
        masks = dropout_masks(spec, len(yb), config.seed, epoch, step) if config.dropout == "shared" else None
        yield to_model_inputs(xs[i:i + config.batch_size], spec.input_shape), yb, masks


def train(spec: Union[Spec, str] = "lenet5", backend: Optional[str] = None,
          config: Optional[TrainConfig] = None, data_dir: Optional[Union[str, os.PathLike]] = None,
          out_dir: Optional[Union[str, os.PathLike]] = None,
          resume_from: Optional[Union[str, os.PathLike]] = None,
          progress: Optional[bool] = None, data: Optional[Dataset] = None, overwrite: bool = False,
          on_epoch: Optional[Callable[[EpochStats], None]] = None) -> History:
    """Run the d2l LeNet protocol on one backend and return its :class:`History`.

    With ``out_dir``, a checkpoint (``checkpoint-epochNN.npz``, neutral layout) and
    ``history.json`` are written atomically after every epoch; ``resume_from`` continues from
    such a checkpoint exactly where the uninterrupted run would be. An ``out_dir`` that already
    holds a run is refused unless resuming or ``overwrite``; two trainings cannot write to one
    folder at once. ``progress`` shows a bar per epoch (default: when stderr is a terminal);
    ``on_epoch(stats)`` is called after each epoch.

    >>> import polylenet
    >>> h = polylenet.train("lenet5", backend="torch", config=polylenet.TrainConfig(epochs=1))  # doctest: +SKIP
    >>> round(h.final.test_acc, 2)  # doctest: +SKIP
    0.55
    """
    config = config or TrainConfig()
    spec = load_spec(spec)
    name = resolve_name(backend)
    if out_dir is None:
        return _train(spec, name, config, data_dir, None, resume_from, progress, data, on_epoch)
    with claim_run_folder(out_dir, resuming=resume_from is not None, overwrite=overwrite):
        return _train(spec, name, config, data_dir, out_dir, resume_from, progress, data, on_epoch)


def _train(spec: Spec, name: str, config: TrainConfig, data_dir, out_dir, resume_from, progress,
           data: Optional[Dataset], on_epoch) -> History:
    start_epoch, history = 0, None
    weights = None
    if resume_from is not None:
        weights, meta = load_checkpoint(resume_from)
        _check_resume(meta, spec, name, config, resume_from)
        start_epoch, history = meta["epoch"], History.from_dict(meta["history"])
    model = build(spec, backend=name, weights=weights, seed=config.seed)
    step = trainer(model, config.lr, compiled=config.compiled)
    history = history or History(name, spec.to_dict(), asdict(config), _versions(name))

    data = data or load_data(config.dataset, data_dir)
    classes = int(max(data.train_labels.max(initial=0), data.test_labels.max(initial=0))) + 1
    if classes > spec.num_classes:
        raise ConfigError(f"spec {spec.name!r} has num_classes={spec.num_classes}, but {data.name} has labels up to "
                          f"{classes - 1}; give the spec's last dense layer (and num_classes) {classes} units")
    history.data_source = str(data.source)
    train_idx = fixed_subset(len(data.train_labels), config.train_subset)
    test_idx = fixed_subset(len(data.test_labels), config.test_subset)
    x_train, y_train = data.train_images[train_idx], data.train_labels[train_idx]
    x_test, y_test = data.test_images[test_idx], data.test_labels[test_idx]

    steps_done = len(history.step_losses)
    for epoch in range(start_epoch, config.epochs):
        if config.max_steps is not None and steps_done >= config.max_steps:
            break
        bar = ProgressBar(math.ceil(len(x_train) / config.batch_size),
                          f"{name} epoch {epoch + 1}/{config.epochs}", enabled=progress)
        started = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        for batch, (xb, yb, masks) in enumerate(_batches(x_train, y_train, spec, config, epoch)):
            loss, right = step(xb, yb, masks)
            if not math.isfinite(loss) or loss > BLOWN_UP * math.log(spec.num_classes):
                what = f"became {loss}" if not math.isfinite(loss) else \
                    f"blew up to {loss:.4g} (over {BLOWN_UP:g} x ln({spec.num_classes}))"
                history.stopped = (f"{name}: training loss {what} at epoch {epoch + 1}, batch {batch + 1} "
                                   f"(lr {config.lr}); lower the learning rate or check the inputs")
                if out_dir is not None:  # the run up to here; the last good checkpoint stays as it is
                    history.save(Path(out_dir) / "history.json")
                raise TrainingDiverged(history.stopped)
            history.step_losses.append(loss)
            loss_sum, correct, seen = loss_sum + loss * len(yb), correct + right, seen + len(yb)
            steps_done += 1
            bar.update(loss=loss_sum / seen, acc=correct / seen)
            if config.max_steps is not None and steps_done >= config.max_steps:
                break
        train_seconds = time.perf_counter() - started
        test_acc = evaluate(model, x_test, y_test, eval_batch_size(config, spec))
        stats = EpochStats(epoch + 1, loss_sum / seen, correct / seen, test_acc,
                           seen / train_seconds, time.perf_counter() - started)
        history.epochs.append(stats)
        history.peak_memory_mb = max(history.peak_memory_mb, _peak_memory_mb())
        bar.close(f"loss {stats.train_loss:.3f}, train acc {stats.train_acc:.3f}, "
                  f"test acc {stats.test_acc:.3f}, {stats.examples_per_sec:.0f} examples/sec")
        if out_dir is not None:
            save_checkpoint(Path(out_dir) / f"checkpoint-epoch{epoch + 1:02d}.npz", get_weights(model),
                            {"epoch": epoch + 1, "backend": name, "spec": spec.to_dict(),
                             "config": asdict(config), "history": history.to_dict()})
            history.save(Path(out_dir) / "history.json")
        if on_epoch is not None:
            on_epoch(stats)
    return history


def _difference(saved: dict, wanted: dict) -> str:
    """Where two specs' dicts first differ, for a message."""
    for what in ("input_shape", "num_classes"):
        if saved[what] != wanted[what]:
            return f"{what} {saved[what]} vs {wanted[what]}"
    for index, (a, b) in enumerate(zip(saved["layers"], wanted["layers"])):
        if a != b:
            return f"first at layer {index}: {a} vs {b}"
    return f"{len(saved['layers'])} vs {len(wanted['layers'])} layers"


def checkpoint_spec(meta: dict, path: Union[str, os.PathLike], spec: Optional[Spec] = None) -> Spec:
    """The spec a checkpoint's ``meta`` records, or ``spec`` (what the user asked for) once it is
    checked to be that one: the same weight shapes under another spec would score silently wrong.
    A name alone may differ (an imported copy of the spec); a checkpoint recording no spec (older
    files) takes ``spec`` as given."""
    if meta.get("spec") is None:
        if spec is None:
            raise CheckpointError(f"{path} records no spec; name it with --spec")
        return spec
    saved = spec_from_dict(meta["spec"], f"{path} (its header)")
    if spec is None:
        return saved
    recorded, wanted = {**saved.to_dict(), "name": ""}, {**spec.to_dict(), "name": ""}
    if recorded != wanted:
        raise CheckpointError(f"{path} was saved for spec {saved.name!r}, not {spec.name!r} (they differ: "
                              f"{_difference(recorded, wanted)}); leave --spec out to use the checkpoint's spec, or "
                              f"give a checkpoint of a {spec.name} run")
    return spec


def _check_resume(meta: dict, spec: Spec, backend: str, config: TrainConfig, path) -> None:
    missing = [k for k in ("spec", "config", "history") if not isinstance(meta.get(k), dict)]
    if missing:
        raise CheckpointError(f"{path}: its header lacks {missing}; it was not written by polylenet.train")
    try:
        saved_spec, saved = spec_from_dict(meta["spec"], str(path)), TrainConfig(**meta["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: its header does not describe a run ({exc})") from None
    if meta["epoch"] >= config.epochs:
        raise CheckpointError(f"{path} is at epoch {meta['epoch']}, and --epochs is {config.epochs}: nothing is "
                              f"left to train; ask for more epochs (e.g. --epochs {meta['epoch'] + 1})")
    if saved_spec != spec:
        raise CheckpointError(f"{path} was saved for spec {saved_spec.name!r}, which differs from {spec.name!r}")
    # Only the number of epochs may change on resume: everything else shapes the batches and steps.
    if replace(saved, epochs=config.epochs) != config:
        raise CheckpointError(f"{path} was saved with {saved}; resuming needs the same settings "
                              "(only epochs may differ)")
    if meta["history"].get("backend") != backend:
        # Weights are neutral, so this works; the history would then mix two backends.
        raise CheckpointError(f"{path} holds a {meta['history']['backend']} run; to continue on "
                              f"{backend}, load its weights with polylenet.build(..., weights=...)")
