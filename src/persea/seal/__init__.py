"""Sealing: a released student's weights encrypted, signed and described, and opened again
only in the memory of the server that serves them. See docs/seal.md.

- `persea.seal.stream`: streaming AES-256-GCM after Tink's AES-GCM-HKDF design
- `persea.seal.keyring`: the key-encryption key interface, key files, the environment
- `persea.seal.signature`: the OpenSSF Model Signing bundle over a sealed directory
- `persea.seal.bom`: the CycloneDX 1.6 ML-BOM (teachers, licences, data, evaluation, gate)
- `persea.seal.seal`: `persea seal` (only a released student)
- `persea.seal.unseal`: a sealed directory decrypted into memory
"""
