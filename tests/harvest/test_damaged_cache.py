"""A shard that is not what the harvest wrote (truncated, a flipped byte, rewritten as valid
Parquet with other text) is named in one line and never used: the distiller refuses it and
`persea harvest` writes it again. A stray shard file is reported and ignored."""

from __future__ import annotations

import io
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from persea.cache.reader import corpus, open_harvest
from persea.errors import PerseaError
from persea.harvest import HarvestJob, run_harvest
from persea.project import load_project
from tests.harvest.test_harvest import tree, write_project

SHARD = "alpha/shard-00001.parquet"


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model_dir):
    d = write_project(tmp_path_factory.mktemp("finished") / "p", tiny_model_dir,
                      teachers=[{"name": "alpha", "path": str(tiny_model_dir)}])
    run_harvest(HarvestJob.of(load_project(d)))
    return d


def truncate(path):
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def rewrite_text(path):
    table = pq.read_table(path)
    texts = pa.array(["the answer is 42"] * table.num_rows, pa.string())
    table = table.set_column(table.schema.get_field_index("text"), "text", texts)
    pq.write_table(table, path, compression="zstd")


def harvest_again(project):
    buf = io.StringIO()
    run_harvest(HarvestJob.of(load_project(project)),
                console=Console(file=buf, width=10_000, no_color=True))
    return [ln for ln in buf.getvalue().splitlines() if ln.startswith("note:")]


@pytest.mark.parametrize("damage", [truncate, flip_a_byte, rewrite_text])
def test_damaged_shard_is_refused_by_distill_and_rewritten_by_harvest(finished, tmp_path,
                                                                       damage):
    project = tmp_path / "p"
    shutil.copytree(finished, project)
    cache = project / "cache" / "harvest"
    reference = tree(cache)
    damage(cache / SHARD)
    with pytest.raises(PerseaError, match=r"shard-00001.parquet is damaged or was changed "
                       r"since the harvest .*run `persea harvest` again"):
        open_harvest(cache, "t", ["alpha"])

    notes = harvest_again(project)
    assert len(notes) == 1 and SHARD in notes[0] and "writing it again" in notes[0], notes
    assert tree(cache) == reference  # the same shard, and the manifest with its old hash
    open_harvest(cache, "t", ["alpha"])


def test_truncated_shard_before_the_manifest_is_written_again(finished, tmp_path):
    project = tmp_path / "p"
    shutil.copytree(finished, project)
    cache = project / "cache" / "harvest"
    reference = tree(cache)
    (cache / "manifest.json").unlink()
    truncate(cache / SHARD)
    notes = harvest_again(project)
    assert len(notes) == 1 and SHARD in notes[0] and "not readable as Parquet" in notes[0]
    assert tree(cache) == reference


def test_stray_shard_is_ignored_with_one_line(finished, tmp_path):
    project = tmp_path / "p"
    shutil.copytree(finished, project)
    cache = project / "cache" / "harvest"
    before = corpus(open_harvest(cache, "t", ["alpha"]))
    stray = cache / "alpha" / "shard-00009.parquet"
    rewrite_text(shutil.copy(cache / "alpha" / "shard-00000.parquet", stray))
    reference = tree(cache)

    harvest = open_harvest(cache, "t", ["alpha"])
    assert harvest.strays == [stray]
    assert corpus(harvest) == before  # the student's tokenizer never sees its text
    notes = harvest_again(project)
    assert len(notes) == 1 and "shard-00009.parquet is not a shard of this harvest" in notes[0]
    assert tree(cache) == reference
