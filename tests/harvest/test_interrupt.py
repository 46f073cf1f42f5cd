"""Ctrl-C during `persea harvest`: one line, exit status 130, and the same command resumes to
the cache an undisturbed run writes."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

from persea.harvest import HarvestJob, run_harvest
from persea.project import load_project
from tests.harvest.test_harvest import run_cli, tree, write_project

# A real harvest whose first shard write is followed by a pause, so that the signal lands
# while the command is mid-way (after a shard is written, before the next one).
# A process started in the background by a non-interactive shell inherits SIGINT ignored
# (and Python then leaves it ignored), so the child restores the handler a terminal gives.
_SLOW = textwrap.dedent("""
    import signal, sys, time
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from pathlib import Path
    from persea.cache import writer
    real, marker = writer.write_shard, Path(sys.argv[2])
    def write_then_pause(path, table, stats):
        real(path, table, stats)
        marker.touch()
        time.sleep(120)
    writer.write_shard = write_then_pause
    sys.argv = ["persea", "harvest", "--project", sys.argv[1]]
    from persea.cli import main
    main()
""")


def start_paused_harvest(project, marker) -> subprocess.Popen:
    """`persea harvest` on `project` in a subprocess, returned once it has written its first
    shard and paused (`marker` is touched then); the caller ends it."""
    proc = subprocess.Popen([sys.executable, "-c", _SLOW, str(project), str(marker)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if not marker.exists():
        if proc.poll() is None:
            proc.kill()
        raise AssertionError(proc.communicate()[1][-2000:])
    return proc


def test_sigint_exits_130_with_one_line_and_rerun_matches(tmp_path, tiny_model_dir):
    reference = run_harvest(HarvestJob.of(load_project(
        write_project(tmp_path / "ref", tiny_model_dir))))
    victim = write_project(tmp_path / "victim", tiny_model_dir)
    proc = start_paused_harvest(victim, tmp_path / "wrote-a-shard")
    try:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == \
        "interrupted; run the same command again to resume", err[-2000:]
    out = victim / "cache" / "harvest"
    assert not (out / "manifest.json").exists()

    again = run_cli("harvest", "--project", str(victim))
    assert again.returncode == 0, again.stderr[-2000:]
    assert tree(out) == tree(reference.out)
