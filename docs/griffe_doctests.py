"""A griffe extension for the API pages (mkdocs.yml): polylenet's docstrings hold plain doctest
blocks, which Markdown would read as prose (``x[-1][-1]`` as a reference link); each becomes a
fenced ``pycon`` block, as the doctest module reads it: from a ``>>>`` line to the next blank one."""

from __future__ import annotations

from typing import Any

import griffe


def fence_doctests(text: str) -> str:
    out: list[str] = []
    in_example = False
    for line in text.splitlines():
        if not in_example and line.lstrip().startswith(">>>"):
            out += ["", "```pycon"]
            in_example = True
        elif in_example and not line.strip():
            out += ["```", ""]
            in_example = False
            continue
        out.append(line)
    if in_example:
        out.append("```")
    return "\n".join(out)


class DoctestBlocks(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        # the top-level package gets no on_object event of its own
        self.on_object(obj=pkg, loader=loader)
