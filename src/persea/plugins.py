"""Plugins fill the product's registries (built-in models, skill worlds) without any product
module naming them.

Each entry point of the `persea.plugins` group (declared in pyproject.toml; the toy world is
one) is a function that registers what it ships. `load_plugins` calls every one of them once,
the first time a registry is read.
"""

from __future__ import annotations

from importlib.metadata import entry_points

GROUP = "persea.plugins"

_loaded = False


def load_plugins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True  # set first: a plugin that reads a registry while registering must not loop
    for point in entry_points(group=GROUP):
        point.load()()
