"""A backend's run as a self-contained, versioned record, and the merge of records into one report.

A record is a folder: ``record.json`` (the format and its version, the backend, the spec, the
protocol, the data's checksums, the framework versions, the machine, the history and the layer
shapes) and ``logits.npz`` (the test-set logits before and after training, its SHA-256 in
record.json). ``polylenet train --record --out DIR`` writes one; records made on different
machines (a CI matrix, one job per backend) merge into the report ``compare`` writes:

    polylenet report runs/torch runs/jax --out runs/merged

The merge refuses records whose spec, protocol or data differ, naming what differs, and two
records of one backend. ``compare`` itself runs its children, then merges their records.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import numpy as np

from polylenet.atomic import atomic_write_all
from polylenet.errors import PolylenetError

FORMAT = "polylenet-record"
VERSION = 1
RECORD_FILE = "record.json"
LOGITS_FILE = "logits.npz"
# A protocol is what changes the numbers; how a run got them (compiled or eager, the evaluation
# batch) is kept beside it, and may differ between the records of one report.
RUN_OPTIONS = ("compiled", "eval_batch_size")


class RecordError(PolylenetError, ValueError):
    """A folder that is not a readable record, or records that cannot be merged (their spec,
    protocol or data differ, or two are of one backend); the message names the records and what
    differs."""


def protocol_of(config: dict[str, Any]) -> dict[str, Any]:
    """The settings of a TrainConfig (as a dict) that decide the numbers a run computes."""
    return {k: v for k, v in config.items() if k not in RUN_OPTIONS}


def data_digest(dataset) -> dict[str, Any]:
    """What identifies a data set's content: SHA-256 over its decoded arrays (the same for a
    re-encoded copy of the same images, so records from machines that stored it differently still
    merge) and, for reference, each file's SHA-256 as it was read."""
    digest = hashlib.sha256()
    for array in (dataset.train_images, dataset.train_labels, dataset.test_images, dataset.test_labels):
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return {"dataset": dataset.name, "arrays_sha256": digest.hexdigest(), "files_sha256": dict(dataset.checksums)}


def machine() -> dict[str, Any]:
    """The machine a record was made on: enough to tell two apart and to read its timings."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"node": platform.node(), "platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "python": sys.version.split()[0]}


@dataclass(frozen=True)
class Record:
    """One backend's run, read from its folder."""

    path: Path
    backend: str
    spec: dict[str, Any]
    protocol: dict[str, Any]
    data: dict[str, Any]
    run: dict[str, Any]
    versions: dict[str, str]
    machine: dict[str, Any]
    polylenet: dict[str, str]
    seconds: float
    history: dict[str, Any]
    shapes: list
    logits: Path

    def result(self) -> dict[str, Any]:
        """The entry of a report's ``results`` for this record."""
        return {"status": "ok", "record": str(self.path), "seconds": self.seconds, "history": self.history,
                "shapes": self.shapes, "logits": str(self.logits), "machine": self.machine, "run": self.run}


def write_record(out: Union[str, os.PathLike], history, shapes: list, logits: dict[str, np.ndarray],
                 data: dict[str, Any], seconds: float) -> Path:
    """Write ``out/record.json`` and ``out/logits.npz`` together (record.json last, so a folder
    with a record.json holds its logits). ``history``: the run's History. Returns record.json's path."""
    from polylenet import __version__
    from polylenet.provenance import source_digest

    out = Path(out)
    buffer = io.BytesIO()
    np.savez(buffer, **logits)
    npz = buffer.getvalue()
    config = dict(history.config)
    record = {"format": FORMAT, "version": VERSION, "backend": history.backend,
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "spec": history.spec, "protocol": protocol_of(config),
              "run": {k: config[k] for k in RUN_OPTIONS if k in config},
              "data": data, "versions": history.versions, "machine": machine(),
              "polylenet": {"version": __version__, "source_digest": source_digest()},
              "seconds": seconds, "history": history.to_dict(), "shapes": shapes,
              "logits": {"file": LOGITS_FILE, "sha256": hashlib.sha256(npz).hexdigest(),
                         "shapes": {k: list(v.shape) for k, v in logits.items()}}}
    atomic_write_all({out / LOGITS_FILE: npz, out / RECORD_FILE: (json.dumps(record, indent=1) + "\n").encode()})
    return out / RECORD_FILE


def read_record(folder: Union[str, os.PathLike]) -> Record:
    """Read and check one record folder; RecordError saying what is wrong and how to make one."""
    folder = Path(folder)
    path = folder / RECORD_FILE
    if not path.is_file():
        what = "does not exist" if not folder.exists() else f"holds no {RECORD_FILE}"
        raise RecordError(f"{folder} {what}: not a polylenet record; make one with "
                          f"polylenet train --backend B --record --out {folder}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordError(f"{path}: not readable as JSON ({exc}); the record is damaged: make it again") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise RecordError(f"{path}: not a polylenet record (no \"format\": \"{FORMAT}\")")
    version = data.get("version")
    if version != VERSION:
        newer = isinstance(version, int) and version > VERSION
        raise RecordError(f"{path}: record version {version!r}, this polylenet reads version {VERSION}"
                          + ("; upgrade polylenet to merge it" if newer else "; make the record again"))
    missing = [k for k in ("backend", "spec", "protocol", "data", "history", "shapes", "logits") if k not in data]
    if missing:
        raise RecordError(f"{path}: the record lacks {', '.join(missing)}; make it again")
    logits = folder / data["logits"].get("file", LOGITS_FILE)
    try:
        digest = hashlib.sha256(logits.read_bytes()).hexdigest()
    except OSError as exc:
        raise RecordError(f"{logits}: cannot read the record's logits ({exc.strerror}); copy the whole "
                          "record folder") from None
    if digest != data["logits"].get("sha256"):
        raise RecordError(f"{logits}: SHA-256 {digest[:16]}... is not the {data['logits'].get('sha256', '?')[:16]}... "
                          f"that {RECORD_FILE} records: the logits belong to another run or are damaged")
    return Record(folder, data["backend"], data["spec"], data["protocol"], data["data"], data.get("run", {}),
                  data.get("versions", {}), data.get("machine", {}), data.get("polylenet", {}),
                  float(data.get("seconds", 0.0)), data["history"], data["shapes"], logits)


def record_folders(paths: Iterable[Union[str, os.PathLike]]) -> list[Path]:
    """Each path as given if it holds a record, else the records in its subfolders (a folder of
    downloaded CI artifacts, a compare run), sorted; a path holding neither is kept (read_record
    then says what is wrong with it)."""
    folders: list[Path] = []
    for p in map(Path, paths):
        inner = sorted(q.parent for q in p.glob(f"*/{RECORD_FILE}")) if p.is_dir() else []
        folders += [p] if (p / RECORD_FILE).is_file() or not inner else inner
    return folders


def _differences(a: Any, b: Any, where: str = "") -> list[str]:
    """Where two JSON values differ, as dotted paths (``protocol.lr``, ``spec.layers[3].kernel``)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str)
                for d in _differences(a.get(k), b.get(k), f"{where}.{k}" if where else str(k))]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [where]


def _value(data: Any, where: str) -> Any:
    for part in where.replace("[", ".[").split("."):
        if part.startswith("["):
            data = data[int(part[1:-1])]
        elif part:
            data = data.get(part) if isinstance(data, dict) else None
    return data


def check_mergeable(records: list[Record]) -> None:
    """Refuse records that do not belong in one report: two of one backend, or a spec, protocol
    or data set (its decoded content) that differs from the first record's."""
    if not records:
        raise RecordError("no records to merge; pass the folders that polylenet train --record wrote")
    seen: dict[str, Path] = {}
    for r in records:
        if r.backend in seen:
            raise RecordError(f"two records of {r.backend}: {seen[r.backend]} and {r.path}; pass one of them")
        seen[r.backend] = r.path
    first = records[0]
    for r in records[1:]:
        for part in ("spec", "protocol", "data"):
            ours, theirs = getattr(first, part), getattr(r, part)
            if part == "spec":  # a name alone may differ (an imported copy of the spec)
                ours, theirs = {**ours, "name": ""}, {**theirs, "name": ""}
            if part == "data":  # the files may be encoded differently; their content must not differ
                ours, theirs = ({k: d.get(k) for k in ("dataset", "arrays_sha256")} for d in (ours, theirs))
            diff = _differences(ours, theirs)
            if diff:
                shown = "; ".join(f"{part}.{d}: {_value(ours, d)!r} in {first.path} ({first.backend}), "
                                  f"{_value(theirs, d)!r} in {r.path} ({r.backend})" for d in diff[:3])
                more = f" (and {len(diff) - 3} more)" if len(diff) > 3 else ""
                which = "different" if part == "data" else "a different"
                raise RecordError(f"records with {which} {part} cannot be merged: {shown}{more}; "
                                  f"make them with the same {part}")


def merge_records(paths: Iterable[Union[str, os.PathLike]], out: Union[str, os.PathLike],
                  others: Optional[dict[str, dict]] = None, order: Optional[list[str]] = None,
                  timing: Optional[dict] = None, incomplete: Optional[dict] = None) -> Path:
    """Merge record folders into the report ``compare`` writes (report.md, report.json, plots) in
    ``out``; ``others``: results of backends with no record (skipped, failed, interrupted);
    ``order``: the backends in the order to show them (else the registry's, whatever order the
    records came in).
    Returns report.md's path.

    >>> merge_records(["runs/compare/torch", "ci/records/jax"], "runs/merged")  # doctest: +SKIP
    PosixPath('runs/merged/report.md')
    """
    from polylenet.registry import known_backends
    from polylenet.report import write_report

    records = [read_record(p) for p in record_folders(paths)]
    check_mergeable(records)
    first = records[0]
    settings = {"spec": first.spec.get("name", "?"), **first.protocol}
    results = {**{r.backend: r.result() for r in records}, **(others or {})}
    order = [*(order or known_backends()), *sorted(results)]  # by default the registry's: torch before jax
    results = {name: results[name] for name in order if name in results}
    Path(out).mkdir(parents=True, exist_ok=True)
    return write_report(Path(out), results, settings, timing, incomplete)
