"""Two `persea harvest` on one project: the second says who holds the cache (one line, exit
status 2) instead of redoing the work; a holder killed outright releases it."""

from __future__ import annotations

import signal
import socket

from persea.harvest import HarvestJob, run_harvest
from persea.project import load_project
from tests.harvest.test_harvest import run_cli, tree, write_project
from tests.harvest.test_interrupt import start_paused_harvest


def test_second_harvest_is_refused_and_names_the_holder(tmp_path, tiny_model_dir):
    reference = run_harvest(HarvestJob.of(load_project(
        write_project(tmp_path / "ref", tiny_model_dir))))
    project = write_project(tmp_path / "p", tiny_model_dir)
    first = start_paused_harvest(project, tmp_path / "wrote-a-shard")
    try:
        out = project / "cache" / "harvest"
        before = tree(out)

        second = run_cli("harvest", "--project", str(project))
        assert second.returncode == 2, second.stderr[-2000:]
        assert "Traceback" not in second.stderr
        (line,) = [ln for ln in second.stderr.splitlines() if ln.strip()]
        assert line.startswith("error: ") and str(out) in line
        assert f"in use by another `persea harvest` (pid {first.pid} on " \
            f"{socket.gethostname()})" in line, line
        assert tree(out) == before  # the second wrote nothing

        first.send_signal(signal.SIGKILL)  # a dead holder releases the lock
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
        first.communicate()
    again = run_cli("harvest", "--project", str(project))
    assert again.returncode == 0, again.stderr[-2000:]
    assert tree(out) == tree(reference.out)
