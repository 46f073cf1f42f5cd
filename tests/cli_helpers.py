"""Running `persea ...` in this process, as a person would from a shell."""

from __future__ import annotations

import sys


def run_cli(capsys, monkeypatch, *args: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `persea ARGS`."""
    from persea.cli import main

    monkeypatch.setattr(sys, "argv", ["persea", *args])
    capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
