"""One adapter module per framework, all with the same interface (installed as polylenet.backends).

Each module defines, in this order: NAME, CAPABILITIES, version, build, set_weights, get_weights,
forward, layer_outputs, loss_and_grads, trainer (the contract: polylenet.adapter.Adapter). Only
these modules import a framework, and polylenet imports one only when its backend is asked for.
A third-party backend registers a module with the same interface under the
``polylenet.backends`` entry-point group.
"""
