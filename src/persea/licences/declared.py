"""The licence a teacher declares: `license:` in persea.yaml first, else the model's own
metadata where it has one: the `license:` field of a Hugging Face model card's front matter
(README.md in the model directory, or in the local cache of a hub id; `license_name` when
it says `other`), the licence a built-in model is registered with, or a GGUF file's
`general.license`. None when nothing declares one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from persea.models.builtin import builtin_models


@dataclass(frozen=True)
class Declared:
    license: str | None
    where: str  # persea.yaml, the file it was read from, or "undeclared"


def _card_license(directory: Path) -> str | None:
    card = directory / "README.md"
    try:
        text = card.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if not text.startswith("---"):
        return None
    front, sep, _ = text[3:].partition("\n---")
    if not sep:
        return None
    try:
        meta = yaml.safe_load(front)
    except yaml.YAMLError:
        return None
    if not isinstance(meta, dict):
        return None
    value = meta.get("license")
    if value == "other" and meta.get("license_name"):
        value = meta["license_name"]
    return str(value) if value else None


def _gguf_license(path: Path) -> str | None:
    try:
        from gguf import GGUFReader  # heavy: numpy memory map of the file

        field = GGUFReader(str(path)).fields.get("general.license")
        if field is None:
            return None
        return bytes(field.parts[field.data[0]]).decode("utf-8") or None
    except Exception:  # noqa: BLE001 - an unreadable file declares nothing here
        return None


def _hub_card(repo_id: str, revision: str | None) -> Path | None:
    """The model card of a hub id in the local Hugging Face cache (never downloaded)."""
    try:
        from huggingface_hub import try_to_load_from_cache  # heavy: the hub client

        found = try_to_load_from_cache(repo_id, "README.md", revision=revision)
    except Exception:  # noqa: BLE001 - a malformed id or cache declares nothing here
        return None
    return Path(found).parent if isinstance(found, str) else None


def declared_license(spec, resolve=Path) -> Declared:
    """`spec` is a project TeacherSpec; `resolve` turns a project-relative path into a
    Path (LoadedProject.resolve)."""
    if spec.license:
        return Declared(spec.license, "persea.yaml")
    directory = builtin = None
    if spec.builtin is not None and spec.builtin in builtin_models():
        builtin = builtin_models()[spec.builtin]
        directory = builtin.path
    elif spec.path is not None:
        directory = resolve(spec.path)
    elif spec.hub is not None:
        directory = _hub_card(spec.hub, spec.revision)
    if directory is not None and (found := _card_license(directory)):
        return Declared(found, str(directory / "README.md"))
    if builtin is not None and getattr(builtin, "license", None):
        return Declared(builtin.license, f"built-in model {spec.builtin}")
    if spec.gguf is not None and (found := _gguf_license(resolve(spec.gguf))):
        return Declared(found, f"{resolve(spec.gguf)} (general.license)")
    return Declared(None, "undeclared")
