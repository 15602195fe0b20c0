"""Atomic file writes: nothing half-written is ever left at the destination, and files that belong
together (a spec and its weights, a report's parts) appear together or not at all."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional, Sequence, Union

from polylenet.errors import PolylenetError

Content = Union[bytes, Callable]  # the bytes, or write(binary_file)

_REASONS = {errno.ENOSPC: "no space left on device; free some space and rerun",
            errno.EDQUOT: "disk quota exceeded; free some space and rerun",
            errno.EFBIG: "file too large (for the file system, or for the file size limit: ulimit -f)",
            errno.EACCES: "permission denied; choose a place you can write to",
            errno.EPERM: "permission denied; choose a place you can write to",
            errno.EROFS: "read-only file system; choose another place"}


class WriteError(PolylenetError, OSError):
    """A file that could not be written (a full disk, no permission, a folder in its place, an
    output kept without --overwrite); the message names the file, never the temporary one beside
    it, and ``errno`` is the cause's."""

    def __init__(self, path: Union[str, os.PathLike], reason: str, cause: Optional[OSError] = None) -> None:
        super().__init__(f"cannot write {path}: {reason}")
        self.path, self.reason = Path(path), reason
        if cause is not None:
            self.errno, self.strerror = cause.errno, cause.strerror

    def __str__(self) -> str:  # OSError's would be "[Errno N] strerror"
        return self.args[0]


def write_error(path: Path, exc: OSError) -> WriteError:
    """``exc``, met while writing ``path``, as a :class:`WriteError` naming ``path`` and the fix."""
    if isinstance(exc, WriteError):
        return exc
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)) and not path.parent.is_dir():
        reason = f"its folder {path.parent} does not exist" if not path.parent.exists() else \
            f"{path.parent} is not a folder"
    else:
        reason = _REASONS.get(exc.errno, exc.strerror or str(exc))
    return WriteError(path, reason, exc)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _stage(path: Path, content: Content) -> str:
    """Write ``content`` to a temporary file beside ``path`` (making its folder); its name."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise write_error(path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a written file gets the usual mode
    except BaseException as exc:
        os.unlink(tmp)
        if isinstance(exc, OSError):
            raise write_error(path, exc) from exc
        raise
    return tmp


def atomic_write(path: Union[str, os.PathLike], data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place."""
    return atomic_write_with(path, lambda f: f.write(data))


def atomic_write_with(path: Union[str, os.PathLike], write: Callable) -> Path:
    """Call ``write(binary_file)`` on a temporary file beside ``path``; rename it on success."""
    return atomic_write_all({path: write})[0]


def atomic_write_all(files: Mapping[Union[str, os.PathLike], Content]) -> list[Path]:
    """Write every file (its bytes, or ``write(binary_file)``) to a temporary file beside it, then
    rename them all into place, in order: if any write fails (a full disk), none is renamed, and
    a reader that finds the last one finds the others. Returns the paths."""
    paths = [Path(p) for p in files]
    staged: list[str] = []
    try:
        for path in paths:  # a folder in the way is found before anything is written
            if path.is_dir():
                raise WriteError(path, "it is a folder; name a file (inside it, or elsewhere)")
        for path, content in zip(paths, files.values()):
            staged.append(_stage(path, content))
        for i, (tmp, path) in enumerate(zip(staged, paths)):
            try:
                os.replace(tmp, path)
            except OSError as exc:
                raise write_error(path, exc) from exc
            staged[i] = ""
    finally:
        for tmp in staged:
            if tmp:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
    return paths


def check_output_file(path: Path, overwrite: bool = False, example: str = "out.dat") -> None:
    """Raise :class:`WriteError` if ``path`` is a folder, its folder does not exist, or it exists
    without ``overwrite``: before anything is computed."""
    if path.is_dir():
        raise WriteError(path, f"it is a folder; name the file to write, e.g. --out {path / example}")
    if not path.parent.is_dir():
        raise WriteError(path, f"its folder {path.parent} does not exist; create it (mkdir -p {path.parent}) or "
                               "choose another --out")
    if path.exists() and not overwrite:
        raise WriteError(path, "it already exists; pass --overwrite to replace it, or choose another --out")


def check_output_folder(path: Path, names: Sequence[str], overwrite: bool = False) -> list[str]:
    """The files of ``names`` that folder ``path`` already holds; raise :class:`WriteError` if it
    is a file, holds other files, or holds any of these without ``overwrite``."""
    if path.exists() and not path.is_dir():
        raise WriteError(path, "it is a file; choose a folder for --out")
    try:
        held = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    except OSError as exc:
        raise write_error(path, exc) from exc
    others = [name for name in held if name not in names]
    if others:
        raise WriteError(path, f"it holds other files ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''});"
                               " choose a new or empty folder for --out")
    if held and not overwrite:
        raise WriteError(path, f"it already holds {', '.join(held)}; pass --overwrite to replace them, or "
                               "choose another --out")
    return held


@contextlib.contextmanager
def folder_written_whole(path: Union[str, os.PathLike], names: Sequence[str],
                         overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path`` to write the files ``names`` into; when the block
    ends without an error it becomes ``path`` (renamed into place, so the files appear together),
    else it is removed and ``path`` is untouched. ``path`` may be missing or an empty folder; one
    holding these files (an earlier output) is replaced only with ``overwrite``; one holding other
    files, or a file, is refused."""
    path = Path(path)
    held = check_output_folder(path, names, overwrite)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
    except OSError as exc:
        raise write_error(path, exc) from exc
    try:
        try:
            yield tmp
        except WriteError as exc:  # name the file as it was meant to be, not its temporary folder
            if exc.path.parent == tmp:
                raise WriteError(path / exc.path.name, exc.reason) from exc.__cause__
            raise
        aside = None
        try:
            if held:  # move the earlier output aside, then the new one in: no moment mixes the two
                aside = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old")) / path.name
                os.replace(path, aside)
            os.replace(tmp, path)  # over a missing or empty folder
        except OSError as exc:
            if aside is not None and aside.exists():
                os.replace(aside, path)
            raise write_error(path, exc) from exc
        if aside is not None:
            shutil.rmtree(aside.parent, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
