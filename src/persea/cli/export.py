"""`persea export --open`: a checkpoint as open weights, when the export policy allows it
(persea.seal.export; docs/seal.md, "The open track")."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from persea.cli.output import wide_console
from persea.errors import PerseaError
from persea.project import load_project
from persea.seal.export import export_open
from persea.seal.keyring import Keyring

out = wide_console()


def export(open_weights: bool = typer.Option(
               False, "--open", help="Write open weights (safetensors, tokenizer, a Hugging "
               "Face model card, NOTICE): the one track there is."),
           project: Optional[Path] = typer.Option(
               None, "--project", "-p",
               help="Project directory or persea.yaml (default: current directory)."),
           checkpoint: Optional[Path] = typer.Option(
               None, "--checkpoint", help="A model directory or a sealed directory "
               "(default: the run's student directory)."),
           generation: Optional[int] = typer.Option(
               None, "--generation", help="Sealed generation N of the register "
               "(generations.jsonl): its sealed directory."),
           out_dir: Optional[Path] = typer.Option(
               None, "--out", help="Where the export goes (default: export.out/NAME-"
               "FINGERPRINT in the project; never overwritten)."),
           keyring: Optional[Path] = typer.Option(
               None, "--keyring", help="For a sealed checkpoint: the directory with kek.key "
               "and signing.pub (default: $PERSEA_KEYRING; $PERSEA_SEAL_KEY overrides "
               "kek.key).")):
    """Export a checkpoint as open weights if persea.yaml's export policy allows it. The
    policy's decision, allowed or refused, is recorded in the project's register of
    generations (generations.jsonl); a refusal writes nothing else and exits with status 1."""
    if not open_weights:
        raise PerseaError("persea export: pass --open (open weights are the only track)")
    proj = load_project(project)
    result = export_open(proj, checkpoint, out_dir, Keyring.of(keyring), generation)
    gen = (f"sealed generation {result.decision.generation} of {result.decision.sealed}"
           if result.decision.generation is not None else "not a sealed generation")
    out.print(f"exported {result.out} (weights {result.fingerprint[:12]}, {gen}; licence "
              f"{result.license['license']}; {', '.join(result.files)}; policy: "
              f"{result.decision.line()}; recorded as {result.entry['id']})",
              highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add `persea export` to the `persea` app."""
    app.command("export")(export)
