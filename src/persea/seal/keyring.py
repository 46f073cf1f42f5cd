"""Where the keys of sealing come from: the key-encryption key, the signing key, the
public key that checks signatures.

Envelope encryption: each sealed model gets a fresh random 32-byte data key, which
encrypts its files; only the data key *wrapped* by a key-encryption key (KEK) is stored
beside them. The KEK never touches a sealed directory. Here it comes from

- the environment: `PERSEA_SEAL_KEY`, base64 of 32 bytes (how a deployment injects a
  secret without a file), or
- a key file `<keyring>/kek.key` of exactly 32 bytes that only its owner may read
  (mode 0600 or narrower; a wider mode or another size is refused, naming the file).

`KeyEncryptionKey` is the whole interface a KEK offers, so a key held by a KMS or Vault
(which wraps and unwraps but never hands the key out) fits behind it: docs/seal.md sketches
such an adapter. The local one wraps with AES key wrap (RFC 3394, AES-256).

A keyring directory (`persea keygen DIR`; `--keyring DIR` or `$PERSEA_KEYRING`) holds
`kek.key`, `signing.key` (an EC P-256 private key, PEM, 0600: only sealing needs it) and
`signing.pub` (what a server checks signatures with; `$PERSEA_SEAL_PUBLIC_KEY` may name
another file).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from persea.errors import PerseaError

KEY_SIZE = 32
KEK_FILE = "kek.key"
SIGNING_KEY = "signing.key"
PUBLIC_KEY = "signing.pub"
ENV_KEK = "PERSEA_SEAL_KEY"
ENV_KEYRING = "PERSEA_KEYRING"
ENV_PUBLIC_KEY = "PERSEA_SEAL_PUBLIC_KEY"


class UnwrapError(Exception):
    """The KEK does not unwrap this data key (the wrong key, or a damaged wrapped key)."""


@runtime_checkable
class KeyEncryptionKey(Protocol):
    """A key-encryption key: the interface for a KMS or Vault adapter.

    `key_id` names the key (it is recorded in seal.json, so a wrong key is reported as such;
    it must not reveal the key), `algorithm` says how it wraps; `wrap` returns the wrapped
    data key, `unwrap` the data key or raises `UnwrapError`. Nothing else is asked of it:
    the data key is the only secret that crosses this interface.
    """

    key_id: str
    algorithm: str

    def wrap(self, data_key: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes) -> bytes: ...


class LocalKey:
    """A 32-byte KEK held in this process, wrapping with AES key wrap (RFC 3394)."""

    algorithm = "AES-256-KW (RFC 3394)"

    def __init__(self, key: bytes, origin: str):
        if len(key) != KEY_SIZE:
            raise PerseaError(f"{origin}: the key is {len(key)} bytes; a key-encryption key "
                              f"is exactly {KEY_SIZE} random bytes")
        self._key = key
        self.origin = origin
        # an identifier derived one way from the key, so two keys can be told apart
        self.key_id = "local:" + hmac.new(key, b"persea key id", hashlib.sha256).hexdigest()[:16]

    def wrap(self, data_key: bytes) -> bytes:
        return aes_key_wrap(self._key, data_key)

    def unwrap(self, wrapped: bytes) -> bytes:
        try:
            return aes_key_unwrap(self._key, wrapped)
        except InvalidUnwrap:
            raise UnwrapError(f"the key from {self.origin} does not unwrap it") from None


def _owner_only(path: Path, what: str) -> None:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise PerseaError(f"{path}: no {what} there") from None
    if not stat.S_ISREG(st.st_mode):
        raise PerseaError(f"{path}: the {what} is not a regular file")
    wide = stat.S_IMODE(st.st_mode) & 0o077
    if wide:
        raise PerseaError(f"{path}: permissions {stat.S_IMODE(st.st_mode):04o} let others "
                          f"than its owner read the {what}; run `chmod 600 {path}`")


def kek_from_file(path: Path) -> LocalKey:
    path = Path(path).expanduser()
    _owner_only(path, "key-encryption key")
    data = path.read_bytes()
    if len(data) != KEY_SIZE:
        raise PerseaError(f"{path}: the key file holds {len(data)} bytes; a key-encryption "
                          f"key is exactly {KEY_SIZE} random bytes (`persea keygen DIR` "
                          "writes one)")
    return LocalKey(data, str(path))


def kek_from_env(name: str = ENV_KEK, environ=None) -> LocalKey:
    value = (environ if environ is not None else os.environ)[name]
    try:
        key = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise PerseaError(f"${name}: not base64 (expected base64 of {KEY_SIZE} random "
                          "bytes, e.g. `head -c 32 /dev/urandom | base64`)") from None
    if len(key) != KEY_SIZE:
        raise PerseaError(f"${name}: decodes to {len(key)} bytes; a key-encryption key is "
                          f"exactly {KEY_SIZE} bytes")
    return LocalKey(key, f"${name}")


@dataclass
class Keyring:
    """The keys one command uses: `directory` (may be None) and the environment."""

    directory: Path | None = None
    environ: dict | None = None

    @classmethod
    def of(cls, directory: str | Path | None, environ=None) -> "Keyring":
        env = environ if environ is not None else os.environ
        chosen = directory or env.get(ENV_KEYRING) or None
        return cls(Path(chosen).expanduser() if chosen else None, environ)

    @property
    def _env(self):
        return self.environ if self.environ is not None else os.environ

    def kek(self) -> KeyEncryptionKey:
        if self._env.get(ENV_KEK):
            return kek_from_env(ENV_KEK, self._env)
        if self.directory is not None:
            return kek_from_file(self.directory / KEK_FILE)
        raise PerseaError(f"no key-encryption key: pass --keyring DIR (holding {KEK_FILE}) "
                          f"or set ${ENV_KEK} to base64 of 32 bytes; `persea keygen DIR` "
                          "makes a keyring")

    def signing_key_path(self) -> Path:
        if self.directory is None:
            raise PerseaError(f"no signing key: pass --keyring DIR (holding {SIGNING_KEY}, "
                              "an EC P-256 private key); `persea keygen DIR` makes one")
        path = self.directory / SIGNING_KEY
        _owner_only(path, "signing key")
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), None)
        except (ValueError, TypeError) as err:
            raise PerseaError(f"{path}: not an unencrypted PEM private key "
                              f"({' '.join(str(err).split())})") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise PerseaError(f"{path}: expected an EC P-256 private key")
        return path

    def public_key_path(self) -> Path:
        if self._env.get(ENV_PUBLIC_KEY):
            path = Path(self._env[ENV_PUBLIC_KEY]).expanduser()
        elif self.directory is not None:
            path = self.directory / PUBLIC_KEY
        else:
            raise PerseaError(f"no public key to check the signature with: pass --keyring "
                              f"DIR (holding {PUBLIC_KEY}) or set ${ENV_PUBLIC_KEY}")
        if not path.is_file():
            raise PerseaError(f"{path}: no public key there (the signing.pub that "
                              "`persea keygen` wrote)")
        return path


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def generate_keyring(directory: Path) -> dict[str, Path]:
    """A new keyring: a random KEK and an EC P-256 signing key pair. Refuses to replace
    an existing key (a lost KEK makes every model sealed under it unreadable)."""
    directory = Path(directory).expanduser()
    paths = {n: directory / n for n in (KEK_FILE, SIGNING_KEY, PUBLIC_KEY)}
    present = [str(p) for p in paths.values() if p.exists()]
    if present:
        raise PerseaError(f"{present[0]} already exists; a keyring is never overwritten "
                          "(models sealed under its key need it): choose another directory")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = ec.generate_private_key(ec.SECP256R1())
    _write_private(paths[KEK_FILE], os.urandom(KEY_SIZE))
    _write_private(paths[SIGNING_KEY], private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    paths[PUBLIC_KEY].write_bytes(private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return paths
