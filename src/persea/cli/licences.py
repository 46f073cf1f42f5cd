"""`persea licences`: what each teacher's licence asks of the distilled model, before any
harvest runs (persea.licences.policy; docs/licences.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from persea.cli.output import wide_console
from persea.licences.policy import OBLIGATIONS, UNDECLARED, assess_project, undeclared_line
from persea.errors import PerseaError
from persea.project import load_project

out = wide_console()

_STYLE = {"allow": "green", OBLIGATIONS: "yellow", "refuse": "red", "refuse at seal": "red",
          "allow (override)": "magenta"}


def verdict_table(verdicts) -> Table:
    table = Table(title="teachers' licences: what a model distilled from them and served as "
                        "a paid API must do", title_justify="left")
    for col in ("teacher", "licence", "declared in", "decision", "obligations"):
        table.add_column(col, overflow="fold", no_wrap=col in ("teacher", "decision"))
    for v in verdicts:
        said = [f"- {o.text}" + (f': "{o.notice}"' if o.notice else "") for o in v.obligations]
        if v.refusal:
            said.insert(0, f"refused: {v.refusal}")
        if v.override is not None and v.refusal:
            said.insert(1, f"override recorded: {v.override}")
        said += [f"note: {n}" for n in v.notes]
        style = _STYLE.get(v.shown, "")
        table.add_row(v.teacher, v.license or "-", v.where,
                      f"[{style}]{v.shown}[/{style}]" if style else v.shown,
                      "\n".join(said) or "none")
    return table


def licences(project: Optional[Path] = typer.Option(
        None, "--project", "-p",
        help="Project directory or persea.yaml (default: current directory).")):
    """Each teacher's licence, where it was declared, the policy's decision and the
    obligations it puts on the distilled model; exit status 1 when one is refused, 2 when a
    teacher declares no licence."""
    proj = load_project(project)
    verdicts = assess_project(proj)
    missing = [v for v in verdicts if v.decision == UNDECLARED]
    if missing:
        raise PerseaError(undeclared_line(missing))
    out.print(verdict_table(verdicts))
    rules = {v.rule.key: v.rule for v in verdicts if v.rule is not None}
    for rule in rules.values():
        out.print(f"source: {rule.source} <{rule.url}>", style="dim", highlight=False,
                  soft_wrap=True)
    refused = [v for v in verdicts if v.refused]
    if refused:
        out.print(f"[red]refused:[/red] {', '.join(v.teacher for v in refused)}; `persea "
                  "harvest` and `persea seal` stop on it (a naming refusal at seal only) "
                  "unless the teacher records `license_override: {reason: ...}`",
                  highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add `persea licences` to the `persea` app."""
    app.command("licences")(licences)
