"""The `persea` command: one Typer app, each subcommand a thin wrapper over a package."""

from __future__ import annotations

import errno
import os
import re
import sys
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperOption
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from persea.cli.admin import register as register_admin_commands
from persea.cli.distill import print_transfer
from persea.cli.evaluate import EvalOptions, run_eval
from persea.cli.export import register as register_export_commands
from persea.cli.gate import run_gate
from persea.cli.harvest import routing_table, summary_table
from persea.cli.licences import register as register_licence_commands
from persea.cli.output import wide_console
from persea.cli.route import register as register_route_commands
from persea.cli.seal import register as register_seal_commands
from persea.cli.serve import ServeOptions, run_serve
from persea.errors import PerseaError
from persea.evaluate.scorecard import scorecard_for_project, to_markdown, to_png, to_rich
from persea.init_template import EXAMPLE_PROJECT
from persea.project import PROJECT_FILE, load_project
from persea.skills import get_world, skill_accuracy
from persea.toyworld.builtin import BUILTIN_TEACHERS

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="persea: distil a closed model from several open teachers.")
console = wide_console(stderr=True)
out = wide_console()

ProjectOpt = typer.Option(None, "--project", "-p",
                          help="Project directory or persea.yaml (default: current directory).")


@app.command()
def init(directory: Path = typer.Argument(..., help="Directory for the new project."),
         exist_ok: bool = typer.Option(False, "--exist-ok",
                                       help="Keep an existing persea.yaml instead of failing.")):
    """Write a commented example project that uses the built-in teachers."""
    target = directory / PROJECT_FILE
    if target.exists():
        if exist_ok:
            out.print(f"keeping existing {target}")
            return
        raise PerseaError(f"{target} already exists; choose another directory or pass "
                          "--exist-ok to keep it")
    directory.mkdir(parents=True, exist_ok=True)
    name = directory.resolve().name or "project"
    name = "".join(c if c.isalnum() or c in "._-" else "-" for c in name).lstrip("._-")
    target.write_text(EXAMPLE_PROJECT.format(name=name or "project"), encoding="utf-8")
    out.print(f"wrote {target}; next: persea harvest --project {directory}")


def _parse_worker(value: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in value.split("/"))
    except ValueError:
        raise PerseaError(f"--worker {value!r}: expected I/N, for example 0/4") from None
    return i, n


@app.command()
def harvest(project: Optional[Path] = ProjectOpt,
            teacher: Optional[list[str]] = typer.Option(
                None, "--teacher", "-t", help="Only this teacher (repeatable)."),
            worker: str = typer.Option("0/1", help="I/N: only shards whose index is I mod N, "
                                       "to split a harvest across processes or machines.")):
    """Run every teacher over the prompts into the cache (resumes where it stopped)."""
    from persea.harvest import HarvestJob, run_harvest  # heavy: pyarrow

    proj = load_project(project)

    def show_routing(routing, answered: dict[str, int], prompts: int) -> None:
        out.print(routing_table(routing, answered, prompts))

    result = run_harvest(HarvestJob.of(proj), console=console, teachers=teacher or None,
                         worker=_parse_worker(worker), on_route=show_routing)
    if result is None:
        out.print("this worker's shards are done; the run that finds all shards present "
                  "writes manifest.json (run `persea harvest` once more when all are done)")
        return
    out.print(summary_table(result))
    k = proj.spec.harvest.top_k
    out.print("B/token: cache bytes per token; max|Δlp|, KL: what one-byte log-probs lost; "
              "exact: answers the skill's checker accepts"
              + ("; answers: the prompts routed to the teacher" if result.routing else ""),
              style="dim")
    out.print(f"cache: {result.out}  ({result.bytes / 1e6:.2f} MB for {result.tokens} tokens: "
              f"{result.bytes_per_token:.1f} bytes per token at top-{k})")


@app.command()
def distill(project: Optional[Path] = ProjectOpt,
            eval_per_skill: Optional[int] = typer.Option(
                None, min=0, help="Test items per skill for the closing quality table (0: skip; "
                "default: the project's eval.per_skill).")):
    """Train the student from the harvest cache (resumes from its last checkpoint)."""
    from accelerate import PartialState  # heavy: torch

    from persea.distill.run import run_distill  # heavy: pyarrow

    proj = load_project(project)
    main_process = PartialState().is_main_process
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total} steps"), TextColumn("ETA"),
                  TimeRemainingColumn(), console=console,
                  disable=not main_process) as progress:
        result = run_distill(proj, progress)
    if not main_process:
        return
    s = result.summary
    out.print(f"student: {result.student_dir}  ({result.params:,} parameters; "
              f"{result.used}/{result.examples} examples weighted in; "
              f"{s['tokens_per_s']:,.0f} tokens/s; resumed from step {s['resumed_from']})")
    if proj.spec.distill.time_budget is not None:
        out.print(f"time budget: {s['seconds']:.0f} of {proj.spec.distill.time_budget:.0f} s "
                  f"spent; {s['steps']} of {proj.spec.distill.steps} steps trained")
    out.print(f"loss curve: {result.run_dir / 'loss.csv'} and {result.run_dir / 'loss.png'}")
    print_transfer(out, console, result, proj.spec.distill.loss.uses_logit_kd)
    per_skill = proj.spec.eval.per_skill if eval_per_skill is None else eval_per_skill
    if per_skill > 0:
        _quality_table(proj, result.student_dir, per_skill)


def _quality_table(proj, student_dir: Path, per_skill: int) -> None:
    from persea.models.sources import load_hf_dir, load_teacher  # heavy: torch

    rows = [("student", skill_accuracy(load_hf_dir("student", student_dir),
                                       per_skill=per_skill))]
    for spec in proj.spec.teachers:
        rows.append((spec.name, skill_accuracy(load_teacher(spec, proj), per_skill=per_skill)))
    table = Table(title=f"exact match on the toy-world test split ({per_skill} items per skill)")
    table.add_column("model")
    for col in [*get_world().skills, "overall"]:
        table.add_column(col, justify="right")
    for name, scores in rows:
        table.add_row(name, *[f"{scores[c]:.2f}" for c in [*get_world().skills, "overall"]])
    out.print(table)
    best = max(rows[1:], key=lambda r: r[1]["overall"])
    verdict = "yes" if rows[0][1]["overall"] > best[1]["overall"] else "no"
    out.print(f"student beats every teacher: {verdict} (overall {rows[0][1]['overall']:.2f} vs "
              f"best teacher {best[0]} {best[1]['overall']:.2f})")


def _positive(value: float) -> float:
    if value <= 0:
        raise typer.BadParameter(f"{value} is not a positive number of seconds")
    return value


@app.command("eval")
def eval_(project: Optional[Path] = ProjectOpt,
          model: Optional[list[str]] = typer.Option(
              None, "--model", "-m", help="NAME=SOURCE: also evaluate a project teacher, a "
              "built-in teacher or a model directory under NAME (repeatable)."),
          endpoint: Optional[list[str]] = typer.Option(
              None, "--endpoint", help="NAME=URL: also evaluate an OpenAI-compatible server "
              "(repeatable)."),
          served_model: Optional[str] = typer.Option(
              None, help="The model name to ask the endpoint for (default: its NAME)."),
          timeout: float = typer.Option(30.0, callback=_positive,
                                        help="Seconds an endpoint may take per answer."),
          only: bool = typer.Option(False, "--only", help="Only the models named with --model "
                                    "or --endpoint, not the student and the teachers."),
          suite: Optional[list[str]] = typer.Option(
              None, "--suite", "-s", help="toyworld (default) or lmeval:TASK (repeatable)."),
          include_path: Optional[Path] = typer.Option(
              None, help="A directory of lm-eval task YAML files (and their data)."),
          per_skill: Optional[int] = typer.Option(None, min=1, help="Toy-world items per "
                                                  "skill (default: the project's "
                                                  "eval.per_skill)."),
          split: Optional[str] = typer.Option(
              None, help="Toy world: train, dev or test items (default: the project's "
              "eval.split). Runs on another split are kept for `persea route train` and "
              "left out of the scorecard and the gate."),
          limit: Optional[int] = typer.Option(None, min=1,
                                              help="lm-eval: at most this many items."),
          batch_size: Optional[int] = typer.Option(None, min=1, help="Prompts per batch."),
          rerun: bool = typer.Option(False, help="Run again even where a complete run exists.")):
    """Evaluate the student, every teacher and any rival; each run is stored as a record."""
    records = run_eval(EvalOptions(
        project=project, models=list(model or []), endpoints=list(endpoint or []),
        served_model=served_model, timeout=timeout, suites=list(suite or ["toyworld"]),
        include_path=include_path, per_skill=per_skill, split=split, limit=limit,
        batch_size=batch_size, rerun=rerun, only_named=only), console=console,
        note=lambda line: console.print(f"[yellow]note:[/yellow] {line}", highlight=False))
    table = Table(title="evaluation runs")
    for col in ("model", "suite", "items", "mean", "seconds", "run"):
        table.add_column(col, justify="right" if col in ("items", "mean", "seconds") else "left")
    for r in records:
        main = f"{r.suite.split(':')[0]}/overall"
        mean = r.scores.get(main) or next(iter(r.scores.values()), {"mean": float("nan")})
        table.add_row(r.model, r.suite, str(r.n_items), f"{mean['mean']:.3f}",
                      f"{r.duration_s:.1f}", r.run_id)
    out.print(table)
    proj = load_project(project)
    out.print(f"records: {proj.resolve(proj.spec.eval.out)} (one folder per run: its items "
              "and scores), also in the project database", highlight=False, soft_wrap=True)
    out.print(f"next: persea scorecard --project {project or '.'} (side by side, with "
              "confidence intervals), then persea gate", highlight=False)


@app.command()
def scorecard(project: Optional[Path] = ProjectOpt):
    """The candidate side by side with every teacher and rival, with bootstrap intervals;
    also writes scorecard.md and scorecard.png in the project directory."""
    proj = load_project(project)
    card = scorecard_for_project(proj)
    if not card.models:
        raise PerseaError(f"no complete evaluation runs under {proj.resolve(proj.spec.eval.out)}"
                          f"; run `persea eval --project {project or '.'}` first")
    out.print(to_rich(card))
    for run in card.unfinished:
        console.print(f"[yellow]note:[/yellow] left out unfinished run {run.run_id} "
                      f"({run.status}, {run.items_done}/{run.n_items} items); `persea eval` "
                      "resumes it", highlight=False)
    md = proj.root / "scorecard.md"
    md.write_text(to_markdown(card), encoding="utf-8")
    png = to_png(card, proj.root / "scorecard.png")
    out.print(f"wrote {md} and {png}")


@app.command()
def gate(project: Optional[Path] = ProjectOpt):
    """Check the candidate against the project's release policy: each rule passed or failed
    with its numbers; exit status 1 when the gate fails (2 for bad input)."""
    if not run_gate(project, out):
        sys.exit(1)


@app.command()
def teachers():
    """List the built-in teachers."""
    table = Table(title="built-in teachers")
    for col in ("name", "architecture", "tokenizer", "strong on", "weak on"):
        table.add_column(col)
    for t in BUILTIN_TEACHERS.values():
        table.add_row(t.name, t.architecture, t.tokenizer_kind, ", ".join(t.strong_skills),
                      ", ".join(t.weak_skills))
    out.print(table)


@app.command()
def serve(project: Optional[Path] = ProjectOpt,
          host: Optional[str] = typer.Option(
              None, help="Address to listen on (default: serve.host, else 127.0.0.1)."),
          port: Optional[int] = typer.Option(
              None, min=1, max=65535, help="Port to listen on (default: serve.port, else "
              "8000)."),
          db: Optional[str] = typer.Option(
              None, help="Database URL (default: $PERSEA_DB, else ./persea.db; "
              "postgresql+psycopg://... for PostgreSQL)."),
          model: Optional[list[str]] = typer.Option(
              None, "--model", help="NAME=BUILTIN_OR_DIR: serve a built-in teacher or a model "
              "directory under NAME (repeatable; replaces the project's serve.models)."),
          upstream: Optional[list[str]] = typer.Option(
              None, "--upstream", help="NAME=URL: serve NAME from an OpenAI-compatible server "
              "(vLLM, ...), e.g. big=http://127.0.0.1:8001/v1 (repeatable)."),
          redis: Optional[str] = typer.Option(
              None, help="Redis URL for rate limits and circuit breakers shared by several "
              "gateways (default: serve.redis)."),
          admin_token: Optional[str] = typer.Option(
              None, help="Credential for /admin/... (default: $PERSEA_ADMIN_TOKEN; none: the "
              "admin API is off)."),
          force_release: bool = typer.Option(
              False, "--force-release", help="Serve a model directory that has no passing "
              "release gate (`persea gate`); needs --reason, and is recorded."),
          reason: Optional[str] = typer.Option(None, help="Why the release is forced."),
          forced_by: Optional[str] = typer.Option(
              None, help="Who forces it (default: the OS user)."),
          keyring: Optional[str] = typer.Option(
              None, help="For a sealed directory given to --model: the keyring with kek.key "
              "and signing.pub (default: $PERSEA_KEYRING; $PERSEA_SEAL_KEY overrides "
              "kek.key)."),
          workers: Optional[int] = typer.Option(
              None, min=1, max=512, help="Gateway processes on the one port, sharing the "
              "database and the rate limits (default: one per core)."),
          budget_leases: int = typer.Option(
              64, min=0, max=100_000, help="Reserve requests in memory out of durable budget "
              "leases of N requests each, so no commit waits before an answer (0: off, every "
              "request commits its own reserve before its answer; docs/billing.md).")):
    """Serve the project's models and routes (persea.yaml `serve:`; by default its released
    student) through the OpenAI-compatible API, with keys, limits and metering. A model
    directory is served only once released (a passing `persea gate`); a sealed directory
    (`persea seal`) is checked and decrypted into memory only."""
    run_serve(ServeOptions(host=host, port=port, project=project, db=db,
                           models=list(model or []),
                           upstreams=list(upstream or []), redis=redis,
                           admin_token=admin_token, force_release=force_release,
                           release_reason=reason, forced_by=forced_by, keyring=keyring,
                           workers=workers, budget_leases=budget_leases),
              echo=lambda line: out.print(line, soft_wrap=True, highlight=False))


# orgs, keys, plans, usage, billing, audit: the gateway's admin (persea.cli.admin).
register_admin_commands(app)
# route train, route eval: the learned router (persea.cli.route).
register_route_commands(app)
# seal, keygen (persea.cli.seal).
register_seal_commands(app)
# export --open: open weights, when the export policy allows (persea.cli.export).
register_export_commands(app)
# licences: the teachers' licences and what they ask (persea.cli.licences).
register_licence_commands(app)


def _no_flag_placeholders() -> None:
    """--help shows no `<bool>` type for a flag (it takes no value; the placeholder reads as
    if it did). Typer builds every option, --help included, as a TyperOption, and has no
    setting for this, so its type column is wrapped once for flags."""
    shown = TyperOption.display_type_rich
    if getattr(shown, "persea_flags", False):
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag else shown(self, ctx)

    display_type_rich.persea_flags = True
    TyperOption.display_type_rich = display_type_rich


def _quiet_libraries() -> None:
    """Our own progress bars only: no per-file bars from transformers or the hub."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers  # heavy: torch

    transformers.utils.logging.disable_progress_bar()
    transformers.logging.set_verbosity_error()


INTERRUPTED = "interrupted; run the same command again to resume"

# what to do about an operating-system error, by errno; the exit status says whose it is
_OS_ADVICE = {
    errno.ENOSPC: ("no space left on the device; free some space and run the same command "
                   "again (it resumes where it stopped)", 1),
    errno.EDQUOT: ("disk quota exceeded; free some space and run the same command again "
                   "(it resumes where it stopped)", 1),
    errno.EACCES: ("permission denied; make it writable for this user or choose another "
                   "directory", 2),
    errno.EPERM: ("operation not permitted; make it writable for this user or choose "
                  "another directory", 2),
    errno.EROFS: ("read-only file system; choose a directory on a writable one", 2),
}


def os_error_line(err: OSError) -> tuple[str, int]:
    """One line for an operating-system error reaching the command line (a full disk, a
    read-only directory): the path, the problem, what to do; and the exit status."""
    where = f"{err.filename}: " if err.filename else ""
    number = err.errno  # pyarrow's I/O errors carry it only in their text
    if number is None and (m := re.search(r"errno (\d+)", str(err), re.IGNORECASE)):
        number = int(m.group(1))
    advice, code = _OS_ADVICE.get(number, (None, 1))
    if advice is None:
        problem = err.strerror or " ".join(str(err).split())
        advice = f"{problem}; fix that and run the same command again"
    return f"{where}{advice}", code


def main() -> None:
    """Entry point: every `PerseaError` becomes one red line and exit status 2; Ctrl-C
    becomes one line and exit status 130."""
    try:
        _quiet_libraries()
        _no_flag_placeholders()
        # Without standalone mode, Typer turns Ctrl-C into Exit(130) and returns its code
        # (as it does for an explicit typer.Exit); no command returns anything else.
        code = app(standalone_mode=False, prog_name="persea")
    except PerseaError as err:
        console.print(f"[red]error:[/red] {err.message}", highlight=False, soft_wrap=True)
        sys.exit(err.exit_code)
    except typer.Exit as e:
        code = e.exit_code
    except KeyboardInterrupt:
        code = 130
    except typer.TyperException as err:  # usage errors, in non-standalone mode
        console.print(f"[red]error:[/red] {err.format_message()}", highlight=False,
                      soft_wrap=True)
        ctx = getattr(err, "ctx", None)
        console.print(f"see `{ctx.command_path if ctx is not None else 'persea'} --help`",
                      highlight=False, soft_wrap=True)
        sys.exit(err.exit_code)
    except typer.Abort:
        sys.exit(1)
    except OSError as err:  # a full disk, a read-only directory: the stage left no half-file
        line, status = os_error_line(err)
        console.print(f"[red]error:[/red] {line}", highlight=False, soft_wrap=True)
        sys.exit(status)
    if code == 130:
        console.print(f"[yellow]{INTERRUPTED}[/yellow]", highlight=False, soft_wrap=True)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
