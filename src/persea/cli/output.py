"""Where the command line writes: consoles that keep tables whole when output is piped."""

from __future__ import annotations

from rich.console import Console

PIPED_WIDTH = 240  # wide enough for every table the commands print


def wide_console(stderr: bool = False) -> Console:
    """A console for stdout (or stderr) that, when it is not a terminal (piped, a log file),
    is `PIPED_WIDTH` columns wide: Rich would otherwise cut tables at 80 columns."""
    console = Console(stderr=stderr)
    return console if console.is_terminal else Console(stderr=stderr, width=PIPED_WIDTH)
