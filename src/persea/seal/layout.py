"""A sealed directory, defined once (docs/seal.md says the same for people).

    <sealed>/seal.json        public: format, id, fingerprint of the sealed weights, the
                              release it comes from, the wrapped data key, the streams
    <sealed>/files.enc        encrypted: config, tokenizer and the other small files, and
                              the list of weight files with their SHA-256
    <sealed>/weights-N.enc    encrypted: one safetensors file each (its header, with the
                              tensor names, shapes and dtypes, is inside)
    <sealed>/bom.cdx.json     CycloneDX 1.6 ML-BOM: teachers, licences, data, evaluation
    <sealed>/NOTICE           the notices the teachers' licences require of the model
    <sealed>/MODEL_CARD.md    the teachers' licences, decisions and obligations, for people
    <sealed>/model.sig        OpenSSF Model Signing bundle over every other file

Every `.enc` file is a stream of persea.seal.stream whose associated data names the sealed
model and the stream, so a stream moved to another name or another sealed model fails.
"""

from __future__ import annotations

FORMAT = "persea-sealed/1"
SEAL_JSON = "seal.json"
FILES_STREAM = "files.enc"
WEIGHTS_STREAM = "weights-{}.enc"
BOM = "bom.cdx.json"
NOTICE = "NOTICE"
CARD = "MODEL_CARD.md"
SIGNATURE = "model.sig"
SCHEME = "AES256-GCM-HKDF-SHA256 streaming AEAD (Tink's AES-GCM-HKDF streaming design)"

# files of a model directory that are records about it, not part of it
NOT_SEALED = ("release-gate.json", "release-log.jsonl")


def stream_aad(sealed_id: str, stream: str) -> bytes:
    """The associated data of one stream: the format, the sealed model and the stream."""
    return f"{FORMAT}\x00{sealed_id}\x00{stream}".encode()
