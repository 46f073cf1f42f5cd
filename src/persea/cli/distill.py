"""`persea distill`'s report of what each teacher transferred: a table, then a warning line
for each teacher that contributes nothing."""

from __future__ import annotations

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from persea.distill.transfer import TeacherTransfer, dropped_text


def transfer_table(rows: list[TeacherTransfer], uses_kd: bool) -> Table:
    table = Table(title="what each teacher transferred", title_justify="left")
    table.add_column("teacher", no_wrap=True)
    for col in ("in", "dropped (why)", "positions with target", "carried", "unmatched"):
        table.add_column(col, no_wrap=True,
                         justify="left" if col == "dropped (why)" else "right")
    for t in rows:
        kd = t.target_positions and uses_kd
        table.add_row(
            t.teacher, f"{t.weighted_in}/{t.examples}", dropped_text(t),
            f"{t.target_positions}/{t.response_positions} ({t.target_share:.0%})",
            f"{t.carried_mass:.3f}" if kd else "-", f"{t.unmatched_mass:.3f}" if kd else "-")
    return table


def print_transfer(out: Console, err: Console, result, uses_kd: bool) -> None:
    """The table at its full width (piped output is not cut at 80 columns), the legend, then
    one warning line per teacher that contributes nothing and one per note."""
    table = transfer_table(result.transfer, uses_kd)
    width = Measurement.get(out, out.options.update(width=10_000), table).maximum
    # Rich never prints wider than its console (80 columns when piped), so the table gets
    # a console of its own on the same stream, as wide as the table needs
    Console(file=out.file, width=max(out.width, width), no_color=out.no_color).print(table)
    out.print("in: examples weighted in / all; positions: response positions of those "
              "examples with a logit-KD target; carried: mean top-k mass put on student ids "
              "there; unmatched: mean mass left to the unmatched term (candidates with no "
              "student id + tail)", style="dim", soft_wrap=True)
    for line in result.warnings:
        err.print(f"[yellow]warning:[/yellow] {line}", highlight=False, soft_wrap=True)
    for line in result.notes:
        err.print(f"[yellow]note:[/yellow] {line}", highlight=False, soft_wrap=True)
