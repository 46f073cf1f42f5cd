"""Teachers' licences: what each teacher declares (persea.yaml, or the model's own
metadata), recorded in the sealed model's BOM. See docs/seal.md."""
