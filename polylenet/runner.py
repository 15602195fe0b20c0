"""Run the same protocol on several backends, each in its own environment, and gather the results.

The frameworks' numpy pins conflict, so each backend trains in a child process started with the
interpreter of its own environment (the tox env of that backend, or one given with
``--python BACKEND=PYTHON``). The child writes its record (:mod:`polylenet.record`: the history,
shapes, logits, spec, protocol, data checksums, versions, machine); the parent merges the records
into the report, as ``polylenet report`` merges records made on other machines, so it needs no
framework at all.

SIGINT or SIGTERM to the parent (Ctrl-C, ``kill``, ``docker stop``, a CI cancel) is passed on to
every child (each has a process group of its own); those still running a few seconds later are
killed, the report of what finished is written marked incomplete, and the parent exits 130 / 143.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Iterator, Mapping, Optional, Union

from polylenet.errors import BackendError
from polylenet.record import RecordError, merge_records, protocol_of, read_record
from polylenet.registry import BUILTIN, available_backends, known_backends
from polylenet.training import TrainConfig

FRAMEWORKS = [name for name, info in BUILTIN.items() if name != "numpy" and info.trains]
# The order in which parallel jobs start: longest first, so no long run starts last (10-epoch
# lenet5 runs measured two at a time on a 2-core CPU, 2026-11-23: paddle 218 s, mindspore 212,
# jax 199, mxnet 120, torch 104, tensorflow 82).
SLOWEST_FIRST = ["paddle", "mindspore", "jax", "mxnet", "torch", "tensorflow"]


GRACE_SECONDS = 5.0  # how long a stopped child may take to exit before it is killed


class CompareStopped(KeyboardInterrupt):
    """compare was stopped by a signal (SIGINT or SIGTERM): its children were stopped too, and the
    report of what finished was written to ``report``, marked incomplete."""

    def __init__(self, signum: int, report: Path) -> None:
        self.signum, self.report = signum, report
        super().__init__(f"stopped by {signal.Signals(signum).name}; wrote {report}")


class Children:
    """The training children of one compare run. :meth:`stop` (the signal handler) passes a
    signal to each one's process group, kills those still running GRACE_SECONDS later (at once
    on a second signal), and keeps any more from starting."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.signum: Optional[int] = None
        self._timer: Optional[threading.Timer] = None

    def start(self, cmd: list[str], **popen) -> Optional[subprocess.Popen]:
        """Start ``cmd`` in a process group of its own; None once stopping."""
        if self.signum is not None:
            return None
        proc = subprocess.Popen(cmd, start_new_session=True, **popen)
        self.procs.append(proc)
        if self.signum is not None:  # the signal came while it started
            self._send(proc, self.signum)
        return proc

    @staticmethod
    def _send(proc: subprocess.Popen, signum: int) -> None:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signum)

    def stop(self, signum: int, frame=None) -> None:
        first = self.signum is None
        self.signum = self.signum or signum
        for proc in list(self.procs):
            self._send(proc, signum if first else signal.SIGKILL)
        if first:
            self._timer = threading.Timer(GRACE_SECONDS, self.kill)
            self._timer.daemon = True
            self._timer.start()

    def kill(self) -> None:
        for proc in list(self.procs):
            self._send(proc, signal.SIGKILL)

    def close(self) -> None:
        """Kill any child still running (compare is ending: none may outlive it)."""
        if self._timer is not None:
            self._timer.cancel()
        self.kill()


@contextlib.contextmanager
def forwarding_signals(children: Children) -> Iterator[None]:
    """SIGINT and SIGTERM go to ``children.stop`` while the block runs (in the main thread only,
    where Python runs signal handlers); the earlier handlers come back after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, children.stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


def thread_limits(threads: int) -> dict[str, str]:
    """Environment variables that hold each framework to ``threads`` CPU threads (set for a child
    that shares the machine with other jobs; each framework reads its own)."""
    n = str(threads)
    return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n,  # torch, mxnet, paddle
            "TF_NUM_INTRAOP_THREADS": n, "TF_NUM_INTEROP_THREADS": n,  # tensorflow
            "MXNET_CPU_WORKER_NTHREADS": n,
            "XLA_FLAGS": f"--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={n}"}  # jax


def backend_list(backends: str) -> list[str]:
    if backends == "all":
        return list(FRAMEWORKS)
    names = [b.strip() for b in backends.split(",") if b.strip()]
    unknown = [b for b in names if b not in known_backends()]
    if unknown or not names:
        raise BackendError(f"unknown backend(s) {unknown or backends!r}; known: {', '.join(known_backends())}")
    return names


def find_python(backend: str, envs: Optional[Union[str, os.PathLike]] = None,
                pythons: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The interpreter to train ``backend`` with: given, its tox env's, or this one if it has the framework."""
    if pythons and backend in pythons:
        return pythons[backend]
    folder = Path(envs or os.environ.get("POLYLENET_ENVS") or ".tox") / backend
    for candidate in (folder / "bin" / "python", folder / "Scripts" / "python.exe"):
        if candidate.exists():
            return str(candidate)
    if backend in available_backends():
        return sys.executable
    return None


def child_command(python: str, backend: str, spec: str, config: TrainConfig, out: Path,
                  data_dir: Optional[str]) -> list[str]:
    cmd = [python, "-m", "polylenet", "train", "--backend", backend, "--spec", spec,
           "--epochs", str(config.epochs), "--lr", repr(config.lr), "--batch-size", str(config.batch_size),
           "--seed", str(config.seed), "--dataset", config.dataset, "--out", str(out), "--quiet", "--record",
           "--overwrite"]  # a compare run replaces the previous one in its folder
    for flag, value in (("--train-subset", config.train_subset), ("--test-subset", config.test_subset)):
        if value is not None:
            cmd += [flag, str(value)]
    cmd += ["--dropout", config.dropout]
    if data_dir is not None:
        cmd += ["--data-dir", str(data_dir)]
    if not config.compiled:
        cmd.append("--eager")
    return cmd


def run_backend(backend: str, python: Optional[str], spec: str, config: TrainConfig, out: Path,
                data_dir: Optional[str], progress=lambda line: None,
                env: Optional[Mapping[str, str]] = None, children: Optional[Children] = None) -> dict:
    """Train one backend in a child process (started by ``children``, if given); a result dict
    with status ok, skipped, failed or interrupted (``children`` stopped)."""
    if python is None:
        return {"status": "skipped",
                "reason": f"no environment with {backend}; create it with: tox -e {backend} --notest "
                          f"(or pass --python {backend}=/path/to/python)"}
    children = children or Children()
    started = time.perf_counter()
    try:
        proc = children.start(child_command(python, backend, spec, config, out / backend, data_dir),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                              env={**os.environ, **env} if env else None)
    except OSError as exc:  # the interpreter is missing or not executable
        return {"status": "failed", "python": python, "error": f"cannot start {python}: {exc.strerror}"}
    if proc is None:
        return _not_started(children.signum)
    with tempfile.TemporaryFile("w+") as errors:  # drained by a thread, so the child never blocks on it
        drain = threading.Thread(target=shutil.copyfileobj, args=(proc.stderr, errors), daemon=True)
        drain.start()
        for line in proc.stdout:  # one line per epoch, as it happens
            if line.startswith("epoch "):
                progress(line.strip())
        proc.wait()
        drain.join()
        errors.seek(0)
        stderr = errors.read()
    if proc.returncode != 0 and children.signum is not None:
        return {"status": "interrupted", "python": python,
                "reason": f"stopped by {_name(children.signum)} before it finished"}
    if proc.returncode != 0:
        lines = [line for line in stderr.strip().splitlines() if line.strip()]
        return {"status": "failed", "python": python, "error": lines[-1] if lines else f"exit {proc.returncode}"}
    try:
        record = read_record(out / backend)
    except RecordError as exc:  # exit 0 and no whole record: a child that is not polylenet's train
        return {"status": "failed", "python": python, "error": str(exc)}
    return {**record.result(), "python": python, "wall_seconds": time.perf_counter() - started}


def _name(signum: Optional[int]) -> str:
    return signal.Signals(signum).name if signum else "a signal"


def _not_started(signum: Optional[int]) -> dict:
    return {"status": "interrupted", "reason": f"not started: compare was stopped by {_name(signum)}"}


def run_compare(backends: str = "all", config: Optional[TrainConfig] = None, spec: str = "lenet5",
                out: Union[str, os.PathLike] = "runs/compare", envs: Optional[str] = None,
                pythons: Optional[Mapping[str, str]] = None, data_dir: Optional[str] = None,
                log=lambda line: print(line, flush=True), jobs: int = 1) -> Path:
    """Train ``spec`` on every backend with the same seed, initial weights and batch order, then
    write ``report.md``, ``report.json`` and the plots into ``out``; returns the report's path.
    Each child writes a record (``out/<backend>/record.json``) and the report is their merge, as
    ``polylenet report`` makes it from records made anywhere.
    ``jobs`` backends train at once (slowest first), each held to its share of the CPU cores.
    Stopped by SIGINT or SIGTERM (in the main thread), it stops the children, writes the report
    of what finished and raises :class:`CompareStopped`.

    >>> run_compare("torch,tensorflow", TrainConfig(epochs=1))  # doctest: +SKIP
    PosixPath('runs/compare/report.md')
    """
    from polylenet.report import write_report

    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    config = config or TrainConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = backend_list(backends)
    # On a terminal with one job, each backend's epoch lines overwrite one status line; else plain lines.
    live = sys.stdout.isatty() and jobs == 1
    env = thread_limits(max(1, (os.cpu_count() or 1) // jobs)) if jobs > 1 else None
    started = time.perf_counter()
    children = Children()

    def show(line: str) -> None:
        if live:
            print("\r\033[K" + line, end="", flush=True)
        else:
            log(line)

    def train_one(backend: str) -> dict:
        if children.signum is not None:
            return _not_started(children.signum)
        python = find_python(backend, envs, pythons)
        log(f"[{backend}] " + (f"training with {python}" if python else "skipped: no environment"))
        result = run_backend(backend, python, spec, config, out, data_dir,
                             progress=lambda line: show(f"[{backend}] {line}"), env=env, children=children)
        if live:
            print(flush=True)  # keep the last epoch line, start a new one
        if result["status"] == "ok":
            final = result["history"]["epochs"][-1]
            log(f"[{backend}] test acc {final['test_acc']:.3f}, {final['examples_per_sec']:.0f} examples/sec, "
                f"{result['seconds']:.0f} s")
        elif result["status"] == "failed":
            log(f"[{backend}] failed: {result['error']}")
        elif result["status"] == "interrupted":
            log(f"[{backend}] {result['reason']}")
        return result

    with forwarding_signals(children):
        try:
            if jobs == 1:
                results = {backend: train_one(backend) for backend in names}
            else:
                order = sorted(names, key=lambda b: SLOWEST_FIRST.index(b) if b in SLOWEST_FIRST else -1)
                with ThreadPoolExecutor(max_workers=jobs) as pool:
                    futures = {backend: pool.submit(train_one, backend) for backend in order}
                    results = {backend: futures[backend].result() for backend in names}
        finally:
            children.close()
        wall = time.perf_counter() - started
        stopped = children.signum
        incomplete = None
        if stopped is None:
            log(f"trained {len(names)} backend(s) in {wall:.0f} s ({jobs} at a time)")
        else:
            incomplete = {"signal": _name(stopped),
                          "unfinished": [b for b, r in results.items() if r["status"] == "interrupted"]}
            log(f"stopped by {_name(stopped)} after {wall:.0f} s; the report holds the backends that finished")
        timing = {"wall_seconds": wall, "jobs": jobs}
        others = {b: r for b, r in results.items() if r["status"] != "ok"}
        if len(others) < len(results):  # the children's records, merged as polylenet report merges them
            report = merge_records([out / b for b, r in results.items() if r["status"] == "ok"], out,
                                   others=others, order=names, timing=timing, incomplete=incomplete)
        else:
            report = write_report(out, results, {"spec": spec, **protocol_of(asdict(config))}, timing, incomplete)
    if children.signum is not None:
        raise CompareStopped(children.signum, report)
    return report
