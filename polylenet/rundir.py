"""The output folder of a training run: claimed before training starts, one writer at a time,
and never mixed with another run's checkpoints."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Union

from polylenet.errors import RunFolderError

LOCK = ".polylenet.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _take_lock(lock: Path) -> None:
    for _ in range(2):  # a second try after removing a dead writer's lock
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and _alive(pid):
                raise RunFolderError(f"another training (pid {pid}) is writing to {lock.parent}; wait for it "
                                     "to finish or choose another --out") from None
            lock.unlink(missing_ok=True)  # left by a run that was killed
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return
    raise RunFolderError(f"cannot take the lock {lock}: another process keeps creating it")


@contextlib.contextmanager
def claim_run_folder(folder: Union[str, os.PathLike], resuming: bool = False,
                     overwrite: bool = False) -> Iterator[Path]:
    """Make ``folder`` this run's: refuse a file or an unwritable place, a folder another training
    is writing to (a lock file holding its pid), and one that already holds a run unless
    ``resuming`` it or ``overwrite`` (which removes that run's checkpoints and history first)."""
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"output folder {path} is a file; choose a folder for --out")
    try:
        path.mkdir(parents=True, exist_ok=True)
        lock = path / LOCK
        _take_lock(lock)
    except PermissionError as exc:
        raise RunFolderError(f"cannot write to output folder {path}: {exc.strerror}; choose another --out") from None
    except OSError as exc:
        if isinstance(exc, RunFolderError):
            raise
        raise RunFolderError(f"cannot use output folder {path}: {exc.strerror or exc}") from None
    try:
        for partial in path.glob(".*.tmp"):  # an atomic write cut short by a killed run: never renamed
            partial.unlink(missing_ok=True)
        earlier = sorted(path.glob("checkpoint-epoch*.npz")) + [p for p in [path / "history.json"] if p.exists()]
        if earlier and not resuming:
            if not overwrite:
                names = ", ".join(p.name for p in earlier[:3]) + (", ..." if len(earlier) > 3 else "")
                raise RunFolderError(f"output folder {path} already holds a run ({names}): continue it with "
                                     f"--resume {earlier[0].parent / 'checkpoint-epochNN.npz'}, choose another "
                                     "--out, or pass --overwrite to replace it")
            for old in earlier:
                old.unlink()
        yield path
    finally:
        (path / LOCK).unlink(missing_ok=True)
