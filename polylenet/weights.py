"""Neutral weights: a dict of float32 NumPy arrays keyed ``conv1.weight`` ... ``dense3.bias``.

Layouts: conv kernels (out, in, kh, kw), dense weights (out, in), biases (out,). Adapters
convert to and from their framework's layout; nothing else does.
"""

from __future__ import annotations

import io
import lzma
import math
import os
import struct
import tokenize
import zipfile
import zlib
from pathlib import Path
from typing import Mapping, Optional, Union

import numpy as np
from numpy.lib import format as npy

from polylenet.atomic import atomic_write
from polylenet.errors import PolylenetError, WeightsError
from polylenet.layers import BatchNorm, Shape
from polylenet.shapes import param_shapes
from polylenet.spec import MAX_PARAMETERS, Spec, _limit
from polylenet.specfile import load_spec

Weights = dict[str, np.ndarray]

# What zipfile, zlib, bz2, lzma and numpy's .npy reader raise on damaged or foreign bytes (measured
# by tests/test_fuzz.py); anything else is a bug and keeps its traceback
_DAMAGED = (OSError, EOFError, ValueError, KeyError, NotImplementedError, RuntimeError, SyntaxError, OverflowError,
           RecursionError, struct.error, tokenize.TokenError, zipfile.BadZipFile, zlib.error, lzma.LZMAError)
_NPY_MAGIC = b"\x93NUMPY"


def init_weights(spec: Union[Spec, str] = "lenet5", seed: int = 0) -> Weights:
    """Xavier-uniform weights and zero biases (d2l's ``init_cnn``), identical for every backend;
    batchnorm starts at gamma 1, beta 0, running mean 0, running variance 1.

    >>> w = init_weights("lenet5", seed=0)
    >>> w["conv1.weight"].shape, w["dense3.bias"].dtype
    ((6, 1, 5, 5), dtype('float32'))
    """
    spec = load_spec(spec)
    rng = np.random.default_rng(seed)
    kinds = {name: type(layer) for name, layer, _, _ in spec.leaves}
    weights: Weights = {}
    for key, shape in param_shapes(spec).items():  # a bias-free conv has no bias key
        name, attr = key.rsplit(".", 1)
        if kinds[name] is BatchNorm:  # gamma 1, beta 0, running mean 0, running variance 1
            weights[key] = np.full(shape, 1.0 if attr in ("weight", "running_var") else 0.0, np.float32)
            continue
        if attr == "bias":
            weights[key] = np.zeros(shape, np.float32)
            continue
        receptive = shape[2] * shape[3] if len(shape) == 4 else 1  # conv (out, in, kh, kw): kh * kw
        fan_in, fan_out = shape[1] * receptive, shape[0] * receptive
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        weights[key] = rng.uniform(-bound, bound, size=shape).astype(np.float32)
    return weights


def parameter_limit() -> int:
    """The most values polylenet reads from a file (or computes from one): the spec's parameter
    limit, ``$POLYLENET_MAX_PARAMETERS`` (10**8 by default)."""
    return _limit("POLYLENET_MAX_PARAMETERS", MAX_PARAMETERS)


def _check_fit(spec: Spec, shapes: Mapping[str, Shape], source: str) -> None:
    """Raise naming the missing, unexpected or misfit key of arrays of ``shapes``."""
    expected = param_shapes(spec)
    missing = sorted(set(expected) - set(shapes))
    extra = sorted(set(shapes) - set(expected))
    if missing or extra:
        raise WeightsError(f"{source} do not fit spec {spec.name!r}: missing {missing}, "
                           f"unexpected {extra}; expected keys {sorted(expected)}")
    for key, shape in expected.items():
        if tuple(shapes[key]) != shape:
            raise WeightsError(f"{source}: {key} has shape {tuple(shapes[key])}, spec {spec.name!r} needs "
                               f"{shape} (neutral layout: conv (out, in, kh, kw), dense (out, in))")


def check_finite(weights: Mapping[str, np.ndarray], source: str = "weights",
                 error: type[PolylenetError] = WeightsError) -> None:
    """Raise ``error`` naming the first array that holds a NaN or an infinity."""
    for key, value in weights.items():
        if value.dtype.kind != "f" or np.isfinite(value).all():
            continue
        nan, inf = int(np.isnan(value).sum()), int(np.isinf(value).sum())
        counts = " and ".join(f"{n:,} {what}" for n, what in ((nan, "NaN"), (inf, "infinite")) if n)
        raise error(f"{source}: {key} holds {counts} value{'s' if nan + inf > 1 else ''}; polylenet refuses "
                    "non-finite weights (from a training that diverged, or a damaged file): use weights saved "
                    "before that (an earlier checkpoint) or retrain")


def check_weights(spec: Spec, weights: Mapping[str, np.ndarray], source: str = "weights") -> Weights:
    """Return ``weights`` as contiguous float32 arrays, or raise naming the missing/misfit key or
    the array that holds a NaN or an infinity."""
    if not isinstance(weights, Mapping):
        raise WeightsError(f"{source} must be a mapping of neutral arrays (as get_weights returns), "
                           f"got {type(weights).__name__}")
    arrays = {key: np.asarray(value) for key, value in weights.items()}
    _check_fit(spec, {key: value.shape for key, value in arrays.items()}, source)
    with np.errstate(over="ignore"):  # a float64 beyond float32's range: an infinity, refused next
        out = {key: np.ascontiguousarray(arrays[key], dtype=np.float32) for key in param_shapes(spec)}
    check_finite(out, source)
    return out


def save_weights(weights: Mapping[str, np.ndarray], path: Union[str, os.PathLike]) -> Path:
    """Save neutral weights as an ``.npz`` (no pickle), atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v, np.float32) for k, v in weights.items()})
    return atomic_write(path, buffer.getvalue())


def _npy_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[Shape, np.dtype]:
    """The shape and dtype an ``.npz`` member's ``.npy`` header declares (its data unread)."""
    with archive.open(info) as member:
        version = npy.read_magic(member)
        if version not in ((1, 0), (2, 0)):  # 3.0 holds only structured dtypes' unicode names
            raise ValueError(f"an .npy version {version} header")
        read = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, _, dtype = read(member)
    return shape, dtype


def _npy_array(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    with archive.open(info) as member:
        array = npy.read_array(member, allow_pickle=False)
        if member.read(1):  # reading to the end also checks the member's CRC
            raise ValueError("bytes after the array's data")
    return array


def read_npz(path: Union[str, os.PathLike], what: str, fix: str, error: type[PolylenetError] = WeightsError,
             kinds: str = "fiu", expected: Optional[Spec] = None) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` as ``np.load`` names them, read safely from an untrusted file: every
    member's ``.npy`` header is read first, and its keys, dtypes (of ``kinds``, never pickled
    objects), shapes (those of ``expected`` if given) and size (at most :func:`parameter_limit`
    values in all) are checked before any array is decompressed. Raises ``error`` naming the file,
    ``what`` it should be and the ``fix``."""
    where = os.fspath(path)
    try:
        with open(path, "rb") as file:
            if file.read(len(_NPY_MAGIC)) == _NPY_MAGIC:
                raise error(f"{where} is a single .npy array, not an .npz of named arrays (a {what}); {fix}")
            file.seek(0)
            with zipfile.ZipFile(file) as archive:
                members = {}
                for info in archive.infolist():
                    key = info.filename[:-len(".npy")]
                    if not info.filename.endswith(".npy") or key in members:
                        raise error(f"{where}: member {info.filename!r} is not an .npy array, or is there "
                                    f"twice; {fix}")
                    members[key] = info
                headers = {key: _npy_header(archive, info) for key, info in members.items()}
                _check_headers(headers, where, error, kinds, expected)
                return {key: _npy_array(archive, info) for key, info in members.items()}
    except PolylenetError:
        raise
    except FileNotFoundError:
        raise error(f"{where} does not exist; {fix}") from None
    except IsADirectoryError:
        raise error(f"{where} is a folder, not a file; {fix}") from None
    except PermissionError as exc:
        raise error(f"cannot read {where}: {exc.strerror} (check its permissions)") from None
    except _DAMAGED as exc:
        raise error(f"{where} is not a readable {what} (damaged, truncated or another kind of file: "
                    f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}); {fix}") from None


def _check_headers(headers: Mapping[str, tuple[Shape, np.dtype]], where: str, error: type[PolylenetError],
                   kinds: str, expected: Optional[Spec]) -> None:
    for key, (shape, dtype) in headers.items():
        if dtype.hasobject:
            raise error(f"{where}: {key} holds pickled Python objects, which polylenet never loads "
                        "(they can run code); save plain float32 arrays (polylenet.save_weights)")
        if dtype.kind not in kinds or dtype.fields is not None:
            raise error(f"{where}: {key} holds {dtype} values; polylenet reads arrays of numbers "
                        "(float32, as polylenet.save_weights writes)")
    sizes = {key: math.prod(shape) for key, (shape, _) in headers.items()}
    limit = parameter_limit()
    if sum(sizes.values()) > limit:
        biggest = max(sizes, key=sizes.__getitem__)
        raise error(f"{where}: its arrays declare {sum(sizes.values()):,} values ({biggest} alone "
                    f"{headers[biggest][0]}), over the limit of {limit:,} parameters; the weights of a spec "
                    "polylenet accepts take fewer (or raise $POLYLENET_MAX_PARAMETERS)")
    if expected is not None:
        try:
            _check_fit(expected, {key: shape for key, (shape, _) in headers.items()}, where)
        except WeightsError as exc:
            raise error(str(exc)) from None


def load_weights(path: Union[str, os.PathLike], spec: Optional[Spec] = None) -> Weights:
    """Load neutral weights saved by :func:`save_weights`. Damaged files, pickled objects, more
    values than the parameter limit and, given ``spec``, keys and shapes that do not fit it are
    refused before any array is decompressed; NaN and infinities once read."""
    where = os.fspath(path)
    weights = read_npz(path, "neutral weights file", "give the weights.npz that polylenet.save_weights "
                       "or `polylenet import` wrote", WeightsError, expected=spec)
    check_finite(weights, where)
    return weights
