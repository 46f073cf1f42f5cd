"""Is a shard on disk the one the cache recorded? (its format: persea.cache.format)

`manifest.json` records every shard's SHA-256 when a harvest finishes. Before a shard is
used (by the distiller, or kept by a harvest that resumes or re-runs), its bytes are checked
against that record, so a shard that was truncated, had bytes flipped, or was rewritten
with other content is never trained on. Before the manifest exists, a shard is checked
against the plan: its Parquet footer must read and hold the rows its index covers. A
`shard-*.parquet` that the cache does not list (a stray file) is reported and ignored.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from persea.cache import format as fmt
from persea.models.fingerprint import sha256_file


def listed_shards(cache: Path, manifest: dict) -> dict[Path, str]:
    """Every shard `manifest` lists (responses and cross scores), with its SHA-256."""
    out = {cache / name / s["file"]: s["sha256"]
           for name, info in manifest.get("teachers", {}).items() for s in info["shards"]}
    for scorer, authors in manifest.get("scores", {}).items():
        for author, info in authors.items():
            folder = fmt.score_dir(cache, scorer, author)
            out.update({folder / s["file"]: s["sha256"] for s in info["shards"]})
    return out


def against_manifest(path: Path, sha256: str) -> str | None:
    """What is wrong with the shard at `path` given its recorded hash, or None."""
    if not path.is_file():
        return f"{path} is missing"
    if sha256_file(path) != sha256:
        return (f"{path} is damaged or was changed since the harvest (its SHA-256 differs "
                "from manifest.json)")
    return None


def against_plan(path: Path, rows: int) -> str | None:
    """What is wrong with an existing shard that should hold `rows` rows, or None."""
    try:
        found = pq.read_metadata(path).num_rows
    except (OSError, ValueError) as err:  # pyarrow raises ArrowInvalid (a ValueError)
        return f"{path} is damaged (not readable as Parquet: {err})"
    if found != rows:
        return f"{path} is damaged (it holds {found} rows, the plan {rows})"
    return None


def strays(cache: Path, listed) -> list[Path]:
    """Shard files under `cache` that are not in `listed`."""
    known = set(listed)
    found = [*cache.glob(f"*/{fmt.SHARD_GLOB}"),
             *cache.glob(f"{fmt.SCORES_DIR}/*/*/{fmt.SHARD_GLOB}")]
    return sorted(p for p in found if p not in known)
