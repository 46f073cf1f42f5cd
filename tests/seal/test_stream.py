"""The streaming AEAD on its own: round trips at segment boundaries, and every way of
tampering with segments is refused with what happened, never decrypted."""

from __future__ import annotations

import io
import os

import pytest

from persea.seal.stream import HEADER_SIZE, TAG_SIZE, StreamError, decrypt_file, \
    encrypt_bytes

SEG = 64
KEY = bytes(range(32))
AAD = b"persea-sealed/1\x00test\x00weights-0.enc"


def _seal(tmp_path, data: bytes, name="s.enc"):
    path = tmp_path / name
    with open(path, "wb") as f:
        info = encrypt_bytes(data, f, KEY, AAD, SEG)
    return path, info


def _segments(path) -> tuple[bytes, list[bytes]]:
    raw = path.read_bytes()
    body = raw[HEADER_SIZE:]
    step = SEG + TAG_SIZE
    return raw[:HEADER_SIZE], [body[i:i + step] for i in range(0, len(body), step)]


@pytest.mark.parametrize("size", [0, 1, SEG - 1, SEG, SEG + 1, 3 * SEG, 5 * SEG + 7])
def test_round_trip_at_every_boundary(tmp_path, size):
    data = os.urandom(size)
    path, info = _seal(tmp_path, data)
    assert info.plain_bytes == size and info.segments == max(1, -(-size // SEG))
    assert path.stat().st_size == HEADER_SIZE + size + TAG_SIZE * info.segments
    assert bytes(decrypt_file(path, KEY, AAD, SEG)) == data
    assert len(data) < 16 or data not in path.read_bytes()  # a byte may recur by chance


def test_two_seals_of_the_same_bytes_differ(tmp_path):
    a, _ = _seal(tmp_path, b"x" * 300, "a.enc")
    b, _ = _seal(tmp_path, b"x" * 300, "b.enc")
    assert a.read_bytes() != b.read_bytes()  # fresh salt and nonce prefix each time


def _tampered(tmp_path, change, size=5 * SEG + 10) -> str:
    path, _ = _seal(tmp_path, os.urandom(size))
    header, segs = _segments(path)
    path.write_bytes(change(header, segs))
    with pytest.raises(StreamError) as err:
        decrypt_file(path, KEY, AAD, SEG)
    return err.value.reason


def test_a_flipped_byte(tmp_path):
    def flip(header, segs):
        s = bytearray(segs[2])
        s[5] ^= 1
        return header + b"".join(segs[:2] + [bytes(s)] + segs[3:])

    assert _tampered(tmp_path, flip) == \
        "segment 2 of 6 fails authentication: its bytes were altered (or the header " \
        "was, or the file was cut or appended to inside it)"


def test_a_missing_segment(tmp_path):
    reason = _tampered(tmp_path, lambda h, s: h + b"".join(s[:1] + s[2:]))
    assert reason.startswith("segment 1 of 5 is segment 2 of the sealed stream")


def test_reordered_segments(tmp_path):
    reason = _tampered(tmp_path, lambda h, s: h + b"".join([s[0], s[3], s[2], s[1]] + s[4:]))
    assert reason.startswith("segment 1 of 6 is segment 3 of the sealed stream: segments "
                             "reordered")


def test_truncated_at_a_segment_boundary(tmp_path):
    reason = _tampered(tmp_path, lambda h, s: h + b"".join(s[:4]))
    assert reason == "truncated: segment 3 is the last one in the file but was not the " \
                     "last one sealed"


def test_truncated_inside_a_segment(tmp_path):
    reason = _tampered(tmp_path, lambda h, s: h + b"".join(s[:3]) + s[3][:40])
    assert reason.startswith("segment 3 of 4 fails authentication")


def test_appended_segment(tmp_path):
    reason = _tampered(tmp_path, lambda h, s: h + b"".join(s) + s[1], size=5 * SEG)
    assert reason == "data appended: segment 4 was the last one sealed, and 1 more " \
                     "segment(s) follow it"


def test_appended_bytes_after_a_short_last_segment(tmp_path):
    reason = _tampered(tmp_path, lambda h, s: h + b"".join(s) + b"more")
    assert reason.startswith("segment 5 of 6 fails authentication")


def test_the_sealed_size_says_how_many_bytes_came_or_went(tmp_path):
    path, _ = _seal(tmp_path, os.urandom(3 * SEG + 5))
    sealed = path.stat().st_size
    path.write_bytes(path.read_bytes() + b"tail")
    with pytest.raises(StreamError, match=r"segment 3 of 4 fails authentication.*\(the file "
                                          r"is 4 byte\(s\) longer than sealed\)"):
        decrypt_file(path, KEY, AAD, SEG, sealed_size=sealed)
    header, segs = _segments(path)
    path.write_bytes(header + b"".join(segs[:1] + segs[2:3]))
    with pytest.raises(StreamError, match=r"segment 1 of 2 is segment 2 of the sealed stream"
                                          r".*\(the file is 101 byte\(s\) shorter"):
        decrypt_file(path, KEY, AAD, SEG, sealed_size=sealed)


def test_a_changed_header(tmp_path):
    def salt(header, segs):
        return header[:3] + bytes([header[3] ^ 1]) + header[4:] + b"".join(segs)

    assert "segment 0 of 6 fails authentication" in _tampered(tmp_path, salt)


def test_the_wrong_key_or_another_stream_name(tmp_path):
    path, _ = _seal(tmp_path, b"weights" * 40)
    with pytest.raises(StreamError, match="segment 0 of 5 fails authentication"):
        decrypt_file(path, bytes(32), AAD, SEG)
    with pytest.raises(StreamError, match="fails authentication"):  # moved to another name
        decrypt_file(path, KEY, AAD.replace(b"weights-0", b"weights-1"), SEG)


def test_shorter_than_a_tag(tmp_path):
    path, _ = _seal(tmp_path, b"abc")
    path.write_bytes(path.read_bytes()[:HEADER_SIZE + 5])
    with pytest.raises(StreamError, match="truncated"):
        decrypt_file(path, KEY, AAD, SEG)


def test_encrypts_while_reading(tmp_path):
    class Source(io.RawIOBase):  # hands out at most a segment at a time
        def __init__(self, data):
            self.data, self.reads = io.BytesIO(data), 0

        def read(self, n=-1):
            self.reads += 1
            return self.data.read(n)

    data = os.urandom(10 * SEG)
    src = Source(data)
    from persea.seal.stream import encrypt_stream

    with open(tmp_path / "x.enc", "wb") as dst:
        assert encrypt_stream(src, dst, KEY, AAD, SEG).segments == 10
    assert src.reads == 11
    assert bytes(decrypt_file(tmp_path / "x.enc", KEY, AAD, SEG)) == data
