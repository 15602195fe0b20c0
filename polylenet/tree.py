"""The spec as a tree of layers, groups and blocks: the one recursion every backend shares.

:func:`fold` builds a framework's model bottom-up (each layer by its type's translation, each
group and block as the framework's own container); :func:`run` interprets the tree with a
framework's ops (``layer_outputs``, and a training pass that multiplies given dropout masks).
Paths name every node: ``b3.inception2.branch3.conv1``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from polylenet.layers import Block, Layer, Node, Sequential, Shape, node_names
from polylenet.spec import Spec

Named = list[tuple[str, Any]]


def fold(spec: Spec, leaf: Callable[[str, Layer, Shape], Any],
         group: Callable[[str, Sequential, Named], Any],
         block: Callable[[str, Block, list[Named], Named], Any]) -> Named:
    """``[(name, built), ...]`` for the spec's top-level nodes, where a layer is built by
    ``leaf(path, layer, input_shape)``, a group by ``group(path, node, children)`` and a block by
    ``block(path, node, branches, after)``; ``children``, each branch and ``after`` are
    ``[(name, built), ...]`` lists, already built.

    >>> import polylenet
    >>> fold(polylenet.load_spec("resnet18"), lambda p, layer, s: p, lambda p, n, c: p,
    ...      lambda p, n, branches, after: [len(b) for b in branches])[1]
    ('b2', 'b2')
    """
    shapes = {path: in_shape for path, _, in_shape, _ in spec.outputs}

    def nodes(items, prefix: str, counts: Optional[dict] = None) -> Named:
        built = []
        for name, node in zip(node_names(items, counts), items):
            path = prefix + name
            if isinstance(node, Sequential):
                built.append((name, group(path, node, nodes(node.layers, path + "."))))
            elif isinstance(node, Block):
                branches = [nodes(b, f"{path}.{n}.") for n, b in zip(node.branch_names(), node.branches)]
                after = nodes(node.after, path + ".", {"branch": len(node.branches)})
                built.append((name, block(path, node, branches, after)))
            else:
                built.append((name, leaf(path, node, shapes[path])))
        return built

    return nodes(spec.layers, "")


def run(spec: Spec, x: Any, leaf: Callable[[str, Layer, Any], Any], merge: Callable[[Block, list], Any],
        record: Optional[Callable[[str, Any], None]] = None) -> Any:
    """The spec's output for ``x``, each layer computed by ``leaf(path, layer, h)`` and each
    block's branch outputs joined by ``merge(block, outputs)`` (concatenation on the framework's
    channel axis, or the sum); ``record(path, h)`` sees every node's output in :attr:`Spec.outputs`
    order."""

    def nodes(items, prefix: str, h: Any, counts: Optional[dict] = None) -> Any:
        for name, node in zip(node_names(items, counts), items):
            path = prefix + name
            if isinstance(node, Sequential):
                h = nodes(node.layers, path + ".", h)
            elif isinstance(node, Block):
                outs = [nodes(b, f"{path}.{n}.", h) for n, b in zip(node.branch_names(), node.branches)]
                h = nodes(node.after, path + ".", merge(node, outs), {"branch": len(node.branches)})
            else:
                h = leaf(path, node, h)
            if record is not None:
                record(path, h)
        return h

    return nodes(spec.layers, "", x)


def named_nodes(spec: Spec) -> dict[str, Node]:
    """Every node by its path."""
    return {path: node for path, node, _, _ in spec.outputs}
