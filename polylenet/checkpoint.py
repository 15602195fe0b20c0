"""Checkpoints in the neutral layout: an ``.npz`` of float32 weights plus a JSON header.

No pickle anywhere, so loading a checkpoint cannot execute code. Any backend can load one.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, Mapping, Union

import numpy as np

from polylenet.atomic import atomic_write
from polylenet.errors import CheckpointError
from polylenet.weights import Weights, check_finite, read_npz

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
    # headers first: no array is decompressed before its key, dtype and size are checked
    arrays = read_npz(path, "polylenet checkpoint", "give a checkpoint-epochNN.npz that polylenet.train wrote",
                      CheckpointError)
    if _META not in arrays:
        raise CheckpointError(f"{where} is not a polylenet checkpoint (no {_META} inside)")
    weights = {k[len(_PREFIX):]: v for k, v in arrays.items() if k.startswith(_PREFIX)}
    check_finite(weights, where, CheckpointError)
    try:
        meta = json.loads(arrays[_META].tobytes().decode())
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, nested too deeply
        raise CheckpointError(f"{where}: its {_META} header is damaged ({type(exc).__name__}); it was not "
                              "written by polylenet.train, or the file was changed since") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("epoch"), int) or isinstance(meta.get("epoch"), bool):
        raise CheckpointError(f"{where}: its header lacks an integer 'epoch'; it was not written by polylenet.train")
    return weights, meta
