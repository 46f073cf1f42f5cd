"""Built-in models: named model directories that a plugin ships inside its package (the toy
world's three teachers), so that a project can say `builtin: qwen3-toy`.

A plugin registers them through the `persea.plugins` entry point group (see
`persea.plugins`); the registry is read in the plugins' order of registration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from persea.plugins import load_plugins


class BuiltinModel(Protocol):
    name: str
    # the licence the plugin ships the weights under (an SPDX id), read by persea.licences
    # when the project declares none; None: undeclared
    license: str | None

    @property
    def path(self) -> Path: ...


_BUILTINS: dict[str, BuiltinModel] = {}


def register_builtin(model: BuiltinModel) -> None:
    _BUILTINS[model.name] = model


def builtin_models() -> dict[str, BuiltinModel]:
    load_plugins()
    return dict(_BUILTINS)
