"""Checkpoints in the neutral layout: an ``.npz`` of float32 weights plus a JSON header.

No pickle anywhere, so loading a checkpoint cannot execute code. Any backend can load one.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any, Mapping, Union

import numpy as np

from polylenet.atomic import atomic_write
from polylenet.errors import CheckpointError
from polylenet.weights import Weights

_PREFIX = "weight:"
_META = "meta.json"


def save_checkpoint(path: Union[str, os.PathLike], weights: Mapping[str, np.ndarray],
                    meta: Mapping[str, Any]) -> Path:
    """Write weights and a JSON-serialisable ``meta`` dict atomically to ``path``."""
    arrays = {_PREFIX + k: np.asarray(v, np.float32) for k, v in weights.items()}
    arrays[_META] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return atomic_write(path, buffer.getvalue())


def load_checkpoint(path: Union[str, os.PathLike]) -> tuple[Weights, dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`: ``(weights, meta)``.

    >>> import tempfile, numpy as np
    >>> p = save_checkpoint(tempfile.mktemp(suffix=".npz"), {"conv1.bias": np.zeros(6)}, {"epoch": 1})
    >>> load_checkpoint(p)[1]
    {'epoch': 1}
    """
    where = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            if _META not in data.files:
                raise CheckpointError(f"{where} is not a polylenet checkpoint (no {_META} inside)")
            weights = {k[len(_PREFIX):]: data[k] for k in data.files if k.startswith(_PREFIX)}
            meta = json.loads(data[_META].tobytes().decode())
    except CheckpointError:
        raise
    except PermissionError as exc:
        raise CheckpointError(f"cannot read checkpoint {where}: {exc.strerror} (check its permissions)") from None
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {where} does not exist") from None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        # what np.load, zipfile and json raise on damaged or foreign bytes (measured by
        # tests/test_fuzz.py); anything else is a bug and keeps its traceback. np.load of
        # arbitrary bytes suggests allow_pickle; it is never turned on here
        raise CheckpointError(f"{where} is not a readable polylenet checkpoint (damaged, truncated or another "
                              f"kind of file: {type(exc).__name__})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("epoch"), int) or isinstance(meta.get("epoch"), bool):
        raise CheckpointError(f"{where}: its header lacks an integer 'epoch'; it was not written by polylenet.train")
    return weights, meta
