"""The output folder of a training run: claimed before training starts, one writer at a time,
and never mixed with another run's checkpoints."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Iterator, Optional, Union

from polylenet.errors import RunFolderError

LOCK = ".polylenet.lock"
# A lock records its writer as {"pid", "start" (field 22 of /proc/PID/stat: clock ticks after
# boot), "host", "boot" (/proc/sys/kernel/random/boot_id)}: a pid alone is reused after a reboot,
# in another container, or by any later process.
_PID_MAX = 2**31 - 1  # pid_t; a larger number can belong to no process


def _proc_start(pid: int) -> Optional[int]:
    """When process ``pid`` started (clock ticks after boot); None without /proc or the process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])  # after "(comm)", which may hold spaces: field 3 on
    except (OSError, IndexError, ValueError):
        return None


def _read(path: str) -> Optional[str]:
    try:
        return Path(path).read_text(errors="replace").strip()
    except OSError:
        return None


def _started_after(pid: int, when: float) -> bool:
    """Whether process ``pid`` started more than a second after ``when`` (a time.time()), so it
    cannot have written a file modified then; False where that cannot be told."""
    start, stat = _proc_start(pid), _read("/proc/stat")
    btime = next((line.split()[1] for line in (stat or "").splitlines() if line.startswith("btime ")), None)
    if start is None or btime is None:
        return False
    return int(btime) + start / os.sysconf("SC_CLK_TCK") > when + 1.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _record() -> str:
    pid = os.getpid()
    return json.dumps({"pid": pid, "start": _proc_start(pid), "host": socket.gethostname(),
                       "boot": _read("/proc/sys/kernel/random/boot_id")})


def _parse(text: str) -> dict:
    """A lock's record; {} for what polylenet did not write (it holds no usable pid)."""
    try:
        record = json.loads(text) if text.startswith("{") else {"pid": int(text)}  # older locks: the pid
    except (ValueError, RecursionError):
        return {}
    pid = record.get("pid") if isinstance(record, dict) else None
    if type(pid) is not int or not 0 < pid <= _PID_MAX:
        return {}
    return record


def _refusal(record: dict, lock: Path) -> Optional[str]:
    """Why ``lock`` still holds its folder; None when it is stale (its writer is gone)."""
    if not record:
        return None  # no pid: not a lock a training wrote, or a garbled one
    pid, host, here = record["pid"], record.get("host"), socket.gethostname()
    if isinstance(host, str) and host != here:
        return (f"{lock.parent} is locked by pid {pid} on host {host}, which cannot be checked from {here}: "
                f"if no training runs there any more, remove the lock file {lock} (rm {lock}) and rerun")
    boot = _read("/proc/sys/kernel/random/boot_id")
    if isinstance(record.get("boot"), str) and boot and record["boot"] != boot:
        return None  # written before this machine restarted
    if not _alive(pid):
        return None
    start = record.get("start")
    if type(start) is int and _proc_start(pid) not in (None, start):
        return None  # the pid now belongs to another process
    if start is None:  # a lock without the start time: its writer started before it was written
        try:
            if _started_after(pid, lock.stat().st_mtime):
                return None
        except OSError:
            pass
    command = " ".join(part for part in (_read(f"/proc/{pid}/cmdline") or "").split("\0") if part)
    command = f" ({command[:100]}{'...' if len(command) > 100 else ''})" if command else ""
    return (f"another training (pid {pid}) is writing to {lock.parent}{command}, its lock file {lock}; wait "
            "for it to finish or choose another --out (--overwrite and --resume do not take a folder from a "
            f"live process; if pid {pid} is not a polylenet training, remove {lock})")


def _place(lock: Path, record: str) -> bool:
    """Create ``lock`` holding ``record``, whole from its first moment (written beside it, then
    hard-linked into place, so no reader finds it empty); False if a lock is there already."""
    fd, tmp = tempfile.mkstemp(dir=lock.parent, prefix=f"{LOCK}.", suffix=".new")  # not .tmp: claims clear those
    try:
        with os.fdopen(fd, "w") as f:
            f.write(record)
        os.chmod(tmp, 0o644)
        try:
            os.link(tmp, lock)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as f:
                f.write(record)
        return True
    finally:
        os.unlink(tmp)


def _head(lock: Path) -> str:
    with open(lock, "rb") as f:
        return f.read(4096).decode("utf-8", "replace").strip()  # a lock is short; a huge file is not one


def _take_lock(lock: Path) -> str:
    """Take ``lock`` (after removing a stale one); the record written in it."""
    record = _record()
    for _ in range(3):  # further tries after removing a dead writer's lock
        if _place(lock, record):
            return record
        try:
            text = _head(lock)
        except FileNotFoundError:
            continue  # removed meanwhile
        except OSError as exc:
            raise RunFolderError(f"cannot read the lock file {lock}: {exc.strerror}; if no training is writing "
                                 f"to {lock.parent}, remove it") from None
        refusal = _refusal(_parse(text), lock)
        if refusal:
            raise RunFolderError(refusal)
        with contextlib.suppress(OSError):
            if _head(lock) == text:  # unless taken over meanwhile
                lock.unlink()
    raise RunFolderError(f"cannot take the lock {lock}: another process keeps creating it")


RUN_FILES = ("history.json", "record.json", "logits.npz")  # besides the checkpoints: a record's (polylenet.record)


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
        mine = _take_lock(lock)
    except PermissionError as exc:
        raise RunFolderError(f"cannot write to output folder {path}: {exc.strerror}; choose another --out") from None
    except OSError as exc:
        if isinstance(exc, RunFolderError):
            raise
        raise RunFolderError(f"cannot use output folder {path}: {exc.strerror or exc}") from None
    try:
        for partial in path.glob(".*.tmp"):  # an atomic write cut short by a killed run: never renamed
            partial.unlink(missing_ok=True)
        earlier = sorted(path.glob("checkpoint-epoch*.npz")) + [path / name for name in RUN_FILES
                                                                 if (path / name).exists()]
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
        with contextlib.suppress(OSError):
            if (path / LOCK).read_text() == mine:  # never another process's lock
                (path / LOCK).unlink()
