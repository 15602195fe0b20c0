"""Which source produced a result: a digest of the installed polylenet package (core and
adapters), so results written by separate environments of one checkout can be told from stale
ones written by another.

>>> len(source_digest())
16
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def source_digest() -> str:
    """The first 16 hex digits of SHA-256 over every ``.py`` file of the installed package
    (``polylenet/`` and ``polylenet/backends/``), names and contents, in sorted order."""
    from polylenet.registry import adapters_package  # installed, or backends/ of a source checkout

    adapters = adapters_package()
    digest = hashlib.sha256()
    roots = [Path(__file__).parent, Path(adapters.__file__).parent]
    for root in roots:
        for path in sorted(root.glob("*.py")):
            digest.update(f"{root.name}/{path.name}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
