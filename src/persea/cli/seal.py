"""`persea seal` and `persea keygen`: a released student sealed, and the keys to do it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from persea.cli.output import wide_console
from persea.project import load_project
from persea.seal.keyring import Keyring, generate_keyring
from persea.seal.seal import seal_student

out = wide_console()

KeyringOpt = typer.Option(None, "--keyring", help="Directory with kek.key and signing.key "
                          "(`persea keygen`; default: $PERSEA_KEYRING). $PERSEA_SEAL_KEY "
                          "(base64 of 32 bytes) overrides kek.key.")


def seal(project: Optional[Path] = typer.Option(
             None, "--project", "-p",
             help="Project directory or persea.yaml (default: current directory)."),
         out_dir: Optional[Path] = typer.Option(
             None, "--out", help="Where the sealed directory goes (default: sealed/ in the "
             "project directory; never overwritten)."),
         keyring: Optional[Path] = KeyringOpt,
         force_release: bool = typer.Option(
             False, "--force-release", help="Seal a student that has no passing release "
             "gate; needs --reason, and is recorded."),
         reason: Optional[str] = typer.Option(None, help="Why the release is forced."),
         forced_by: Optional[str] = typer.Option(
             None, help="Who forces it (default: the OS user).")):
    """Encrypt, sign and describe the released student: only a student whose weights
    passed `persea gate` (or whose release was forced, and recorded) is sealed."""
    proj = load_project(project)
    target = out_dir if out_dir is not None else proj.root / "sealed"
    result = seal_student(proj, target, Keyring.of(keyring), force=force_release,
                          reason=reason, who=forced_by)
    how = (f"gate {result.release['gate_id']}" if result.release["kind"] == "gate" else
           f"forced release {result.release['release_id']} by {result.release['who']}")
    out.print(f"sealed {result.out} ({result.sealed_id}; weights {result.fingerprint[:12]}, "
              f"released by {how}; {result.plain_bytes / 1e6:.2f} MB in "
              f"{result.seconds:.2f} s)", highlight=False, soft_wrap=True)


def keygen(directory: Path = typer.Argument(..., help="Directory for the new keyring.")):
    """Write a new keyring: kek.key (32 random bytes) and an EC P-256 signing key pair
    (signing.key, signing.pub). Existing keys are never overwritten."""
    paths = generate_keyring(directory)
    out.print(f"wrote {', '.join(str(p) for p in paths.values())} (kek.key and signing.key "
              "are readable by their owner only; keep them out of version control)",
              highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add the sealing commands to the `persea` app."""
    app.command("seal")(seal)
    app.command("keygen")(keygen)
