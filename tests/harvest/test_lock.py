"""Two `persea harvest` on one project: the second says who holds the cache (one line, exit
status 2) instead of redoing the work; a holder killed outright releases it."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

from persea.harvest import HarvestJob, run_harvest
from persea.project import load_project
from tests.harvest.test_harvest import run_cli, tree, write_project
from tests.harvest.test_interrupt import _SLOW


def test_second_harvest_is_refused_and_names_the_holder(tmp_path, tiny_model_dir):
    reference = run_harvest(HarvestJob.of(load_project(
        write_project(tmp_path / "ref", tiny_model_dir))))
    project = write_project(tmp_path / "p", tiny_model_dir)
    marker = tmp_path / "wrote-a-shard"
    first = subprocess.Popen([sys.executable, "-c", _SLOW, str(project), str(marker)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists(), first.communicate()[1][-2000:]
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
