"""The errors polylenet raises: each names the problem and the fix."""


class PolylenetError(Exception):
    """Base class of every error polylenet raises on bad input or a missing dependency."""


class SpecError(PolylenetError, ValueError):
    """A spec (named variant or file) is invalid; the message names the layer at fault."""


class BackendError(PolylenetError, LookupError):
    """An unknown backend name, or a model that no backend built."""


class BackendUnavailable(BackendError, ImportError):
    """The backend's framework is not installed; the message gives the command that installs it."""


class WeightsError(PolylenetError, ValueError):
    """Neutral weights that do not fit the spec (a missing key, a wrong shape)."""


class ConfigError(PolylenetError, ValueError):
    """A training setting out of range (epochs < 1, a non-positive learning rate, ...)."""


class InputError(PolylenetError, ValueError):
    """A batch, labels, targets or dropout masks handed to ``forward``, ``loss_and_grads`` or a
    ``trainer`` step that the model cannot take (wrong dtype, shape or range, an empty batch)."""


class OptionError(PolylenetError, ValueError):
    """Options that cannot be used together or name nothing there is (an unknown class or layer);
    the message names the option and what to give instead."""


class TrainingDiverged(PolylenetError, ArithmeticError):
    """The training loss became NaN or infinite; the message names the epoch and batch."""


class CheckpointError(PolylenetError, ValueError):
    """A checkpoint that cannot be read or does not fit the run resuming from it."""


class RunFolderError(PolylenetError, OSError):
    """An output folder that cannot be used: a file, unwritable, locked by another training, or
    holding another run."""


class OnnxError(PolylenetError, ValueError):
    """An ONNX file that cannot be read, or a node polylenet cannot map exactly to a layer; the
    message names the node and the attribute."""


class MissingDependency(PolylenetError, ImportError):
    """An optional package a feature needs (matplotlib for plots) is not installed; the message
    gives the command that installs it."""
