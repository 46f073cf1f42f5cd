"""Streaming authenticated encryption of one file, after Tink's AES-GCM-HKDF streaming AEAD.

The design follows Tink's `StreamingAeadAesGcmHkdf` (github.com/tink-crypto, "Streaming
AEAD" in its documentation; the construction is the online AE scheme of Hoang, Reyhanitabar,
Rogaway and Vizár, "Online Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance",
CRYPTO 2015): the plaintext is cut into segments, each sealed with AES-256-GCM under

- a key for this file only, derived with HKDF-SHA256 from the data key, a random salt
  stored in the file's header, and the file's associated data (which sealed model, which
  stream) as HKDF's `info`; and
- a nonce made of a random 7-byte prefix (in the header), the segment's 4-byte big-endian
  counter and a 1-byte flag that is 1 on the last segment only.

So a segment is only accepted at its own position: a flipped byte, segments swapped,
removed or repeated, a file cut short (its new last segment was sealed as "not last") or
data appended after the end (the real last segment is then read as "not last") all fail
GCM's authentication, never only the tag of one chunk. Decryption goes segment by
segment straight into one buffer in memory.

On disk: `header_length (1 byte) | salt (32) | nonce prefix (7) | segment 0 | segment 1 ...`,
each segment `ciphertext || 16-byte tag`; every plaintext segment holds `segment_size` bytes
except the last (Tink makes the first segment shorter by the header instead; here every
segment has the same length, which keeps the offsets simple).
"""

from __future__ import annotations

import hashlib
import io
import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_SIZE = 32  # AES-256
SALT_SIZE = KEY_SIZE
PREFIX_SIZE = 7
TAG_SIZE = 16
HEADER_SIZE = 1 + SALT_SIZE + PREFIX_SIZE
DEFAULT_SEGMENT = 1 << 20  # plaintext bytes per segment
MAX_SEGMENTS = 1 << 32


class StreamError(Exception):
    """A stream that does not decrypt: `reason` says what failed, for one line."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Sealed:
    plain_bytes: int
    segments: int
    sha256: str  # of the plaintext


def _file_key(data_key: bytes, salt: bytes, aad: bytes) -> AESGCM:
    key = HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=salt, info=aad).derive(data_key)
    return AESGCM(key)


def _nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    return prefix + counter.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


def encrypt_stream(src: BinaryIO, dst: BinaryIO, data_key: bytes, aad: bytes,
                   segment_size: int = DEFAULT_SEGMENT) -> Sealed:
    """Encrypt everything `src` holds into `dst`, one segment at a time (one segment is read
    ahead, to know which is the last)."""
    if len(data_key) != KEY_SIZE:
        raise ValueError("the data key must be 32 bytes")
    salt, prefix = os.urandom(SALT_SIZE), os.urandom(PREFIX_SIZE)
    aead = _file_key(data_key, salt, aad)
    dst.write(bytes([HEADER_SIZE]) + salt + prefix)
    digest = hashlib.sha256()
    out = bytearray(segment_size + TAG_SIZE)
    current = src.read(segment_size)
    counter = total = 0
    while True:
        following = src.read(segment_size) if len(current) == segment_size else b""
        last = not following
        if counter >= MAX_SEGMENTS:
            raise ValueError("too many segments for one stream")
        n = aead.encrypt_into(_nonce(prefix, counter, last), current, None,
                              memoryview(out)[:len(current) + TAG_SIZE])
        dst.write(memoryview(out)[:n])
        digest.update(current)
        total += len(current)
        counter += 1
        if last:
            return Sealed(total, counter, digest.hexdigest())
        current = following


def encrypt_bytes(data: bytes, dst: BinaryIO, data_key: bytes, aad: bytes,
                  segment_size: int = DEFAULT_SEGMENT) -> Sealed:
    return encrypt_stream(io.BytesIO(data), dst, data_key, aad, segment_size)


def _layout(size: int, segment_size: int) -> tuple[int, int]:
    """(segments, plaintext bytes) of a stream file of `size` bytes."""
    body = size - HEADER_SIZE
    if body < TAG_SIZE:
        raise StreamError(f"truncated: {size} bytes is shorter than a header and one segment")
    step = segment_size + TAG_SIZE
    n = max(1, -(-body // step))
    if body - (n - 1) * step < TAG_SIZE:
        raise StreamError("truncated: the last segment is shorter than its tag")
    return n, body - n * TAG_SIZE


def _diagnose(aead: AESGCM, prefix: bytes, ct: memoryview, i: int, n: int) -> str:
    """Why segment `i` of `n` fails (only called once it has): which position and flag it
    was sealed under, if any."""
    expected_last = i == n - 1
    try:
        aead.decrypt(_nonce(prefix, i, not expected_last), bytes(ct), None)
        if expected_last:
            return (f"truncated: segment {i} is the last one in the file but was not the "
                    "last one sealed")
        return (f"data appended: segment {i} was the last one sealed, and "
                f"{n - 1 - i} more segment(s) follow it")
    except InvalidTag:
        pass
    for j in range(min(n + 2, MAX_SEGMENTS)):
        if j == i:
            continue
        for last in (False, True):
            try:
                aead.decrypt(_nonce(prefix, j, last), bytes(ct), None)
            except InvalidTag:
                continue
            return (f"segment {i} of {n} is segment {j} of the sealed stream: segments "
                    "reordered, missing or repeated")
    return (f"segment {i} of {n} fails authentication: its bytes were altered (or the "
            "header was, or the file was cut or appended to inside it)")


def decrypt_file(path: Path, data_key: bytes, aad: bytes,
                 segment_size: int = DEFAULT_SEGMENT,
                 sealed_size: int | None = None) -> bytearray:
    """The plaintext of the stream file at `path`, decrypted into memory only; raises
    StreamError (the reason, without the path) when any segment does not authenticate.
    `sealed_size`, the file's size when sealed (from the signed record), adds how many
    bytes a failing file gained or lost; the segments' nonces refuse a file cut short or
    appended to without it."""
    try:
        return _decrypt_file(path, data_key, aad, segment_size)
    except StreamError as err:
        size = os.stat(path).st_size
        if sealed_size is None or size == sealed_size:
            raise
        how = (f"{size - sealed_size} byte(s) longer" if size > sealed_size else
               f"{sealed_size - size} byte(s) shorter")
        raise StreamError(f"{err.reason} (the file is {how} than sealed)") from None


def _decrypt_file(path: Path, data_key: bytes, aad: bytes, segment_size: int) -> bytearray:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        header = f.read(HEADER_SIZE)
        if len(header) < HEADER_SIZE or header[0] != HEADER_SIZE:
            raise StreamError("not a sealed stream (bad header)")
        salt, prefix = header[1:1 + SALT_SIZE], header[1 + SALT_SIZE:]
        n, plain = _layout(size, segment_size)
        aead = _file_key(data_key, salt, aad)
        out = bytearray(plain)
        view = memoryview(out)
        # the ciphertext is mapped, not copied: GCM reads it from the page cache and writes
        # the plaintext once, into `out`
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            source = memoryview(mapped)
            try:
                at, pos = 0, HEADER_SIZE
                for i in range(n):
                    want = min(segment_size + TAG_SIZE, size - pos)
                    ct = source[pos:pos + want]
                    try:
                        aead.decrypt_into(_nonce(prefix, i, i == n - 1), ct, None,
                                          view[at:at + want - TAG_SIZE])
                    except InvalidTag:
                        raise StreamError(_diagnose(aead, prefix, ct, i, n)) from None
                    finally:
                        ct.release()
                    at += want - TAG_SIZE
                    pos += want
            finally:
                source.release()
        return out
