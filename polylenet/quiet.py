"""Hide a framework's import-time log noise, and leave nothing behind once it is imported."""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Iterator, Mapping


@contextlib.contextmanager
def quiet_import(env: Mapping[str, str] = {}, silence_stderr: bool = False,
                 ignore: Mapping[str, type] = {}) -> Iterator[None]:
    """For the ``with`` block only: set the log-level variables in ``env``, ignore warnings whose
    message starts with a key of ``ignore`` (of that category), and with ``silence_stderr`` send
    file descriptor 2 (C++ logging) to /dev/null. Afterwards the variables are removed again and
    the warning filters restored. A user who set any of the variables sees everything.
    """
    if any(name in os.environ for name in env):
        yield
        return
    os.environ.update(env)
    saved = os.dup(2) if silence_stderr else None
    try:
        with warnings.catch_warnings():
            for message, category in ignore.items():
                warnings.filterwarnings("ignore", message=message, category=category)
            if saved is not None:
                with open(os.devnull, "w") as devnull:
                    os.dup2(devnull.fileno(), 2)
            yield
    finally:
        if saved is not None:
            os.dup2(saved, 2)
            os.close(saved)
        for name in env:
            os.environ.pop(name, None)
