"""The signature over a sealed directory, in the OpenSSF Model Signing format.

`model-signing` (github.com/sigstore/model-transparency) hashes every file of the directory
into a manifest, wraps it as an in-toto statement (one resource descriptor per file, with
its SHA-256) in a DSSE envelope, and signs that; the result is a Sigstore bundle,
`model.sig`, kept in the directory and left out of the hashing. Here the key is an EC P-256
private key (`persea keygen`); anyone with the public key checks a copy with

    model_signing verify key SEALED_DIR --signature SEALED_DIR/model.sig \\
        --public_key signing.pub

and a server does the same through the library before it unwraps any key. In CI the same
bundle can be made keyless with Sigstore (docs/seal.md).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from persea.errors import PerseaError
from persea.seal.layout import SIGNATURE


def _hashing():
    from model_signing import hashing

    return hashing.Config().set_ignored_paths(paths=[SIGNATURE])


def sign_directory(directory: Path, private_key: Path) -> Path:
    """Sign every file of `directory` (except the signature itself) into model.sig."""
    from model_signing import signing

    target = Path(directory) / SIGNATURE
    signing.Config().use_elliptic_key_signer(private_key=Path(private_key)) \
        .set_hashing_config(_hashing()).sign(Path(directory), target)
    return target


class SignatureMismatch(PerseaError):
    """Files differ from the signed manifest: `changed` names those whose bytes differ."""

    def __init__(self, message: str, changed: list[str]):
        super().__init__(message)
        self.changed = changed


def _mismatch(directory: Path, message: str, changed: list[str]) -> str:
    """One line naming the files a manifest mismatch is about."""
    parts = []
    if changed:
        parts.append(f"{', '.join(str(directory / n) for n in changed)} changed after signing")
    for kind, what in (("Missing files", "missing"), ("Extra files found", "not signed")):
        m = re.search(kind + r" in model '[^']*': ([^\"'\]]+)", message)
        if m:
            names = [n.strip() for n in m.group(1).split(",") if n.strip()]
            parts.append(f"{', '.join(str(directory / n) for n in names)} {what}")
    return "; ".join(parts) or " ".join(message.split())


def verify_directory(directory: Path, public_key: Path) -> None:
    """Raise PerseaError (one line, naming the file) unless `directory` is exactly what
    the holder of `public_key`'s private key signed."""
    from model_signing import verifying

    directory = Path(directory)
    sig = directory / SIGNATURE
    if not sig.is_file():
        raise PerseaError(f"{sig}: missing; a sealed directory is opened only when signed")
    config = verifying.Config().use_elliptic_key_verifier(public_key=Path(public_key)) \
        .set_hashing_config(_hashing())
    try:
        config.verify(directory, sig)
    except json.JSONDecodeError:
        raise PerseaError(f"{sig}: bad signature: not a readable signature bundle "
                          "(not JSON)") from None
    except ValueError as err:
        # the library reports a list of strings; a digest's bytes can make Python escape
        # the quotes around file names in it
        text = str(err).replace("\\'", "'")
        if text.startswith("Signature mismatch"):
            changed = re.findall(r"Hash mismatch for '([^']+)'", text)
            raise SignatureMismatch(f"bad signature: {_mismatch(directory, text, changed)}",
                                    changed) from None
        if "Key mismatch" in text:
            raise PerseaError(f"{sig}: bad signature: signed by another key than "
                              f"{public_key}") from None
        raise PerseaError(f"{sig}: bad signature: {' '.join(text.split())}") from None
    except Exception as err:  # noqa: BLE001 - a damaged bundle fails in many libraries
        from cryptography.exceptions import InvalidSignature

        if isinstance(err, InvalidSignature):
            raise PerseaError(f"{sig}: bad signature: it does not verify with "
                              f"{public_key} (the signed statement was altered)") from None
        raise PerseaError(f"{sig}: bad signature: not a readable signature bundle "
                          f"({type(err).__name__})") from None
