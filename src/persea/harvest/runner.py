"""`persea harvest`: every teacher answers every prompt; the answers go to the cache.

With `harvest.route`, a teacher answers only the prompts of the skills routed to it
(persea.harvest.route), and its shards hold only those rows.

Before anything is written, every teacher's licence goes through the licence policy
(persea.licences.policy): an undeclared licence or a refused one stops the harvest.

The work is cut into shards of `shard_size` prompts per teacher. A shard is generated in
batches and written atomically, so after a crash or `kill -9` the same command skips the
shards that exist and does the rest; the batches of a shard are the same either way, so the
result is byte-identical to an uninterrupted run. A cache made with other settings is never
written into: the command stops and says what differs.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn,
                           TextColumn, TimeRemainingColumn)
from rich.text import Text

from persea.cache import check
from persea.cache import format as fmt
from persea.cache import quant, writer
from persea.cache.reader import read_shard, shard_stats
from persea.errors import PerseaError
from persea.harvest import cross
from persea.harvest import prompts as prompt_io
from persea.harvest import route
from persea.licences import policy
from persea.locks import stage_lock
from persea.models.fingerprint import sha256_file
from persea.models.threads import fixed_threads
from persea.models.vllm_backend import load_vllm, vllm_available
from persea.project import HarvestSpec, LoadedProject, PromptsSpec, TeacherSpec
from persea.skills import get_world

class _RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} prompts/s" if speed else "-- prompts/s", style="cyan")


@dataclass(frozen=True)
class HarvestJob:
    """What a harvest reads from a project, and nothing more: the project's name (recorded in
    plan.json), its teachers, its prompt set, its `harvest:` section, `resolve`, which
    places a relative path (the cache, a prompt file, a teacher's weights) in the project,
    its seed (which dev items the routing probe scores, as distill's dev scores do), and
    whether the project is commercial (which licences the policy refuses)."""

    name: str
    teachers: list[TeacherSpec]
    prompts: PromptsSpec
    settings: HarvestSpec
    resolve: Callable[[str], Path]
    seed: int = 0
    commercial: bool = True

    @classmethod
    def of(cls, project: LoadedProject) -> "HarvestJob":
        s = project.spec
        return cls(s.name, list(s.teachers), s.prompts, s.harvest, project.resolve, s.seed,
                   s.licences.commercial)


@dataclass
class TeacherSummary:
    name: str
    responses: int = 0
    tokens: int = 0
    bytes: int = 0
    correct: int = 0
    checked: int = 0
    shards_written: int = 0
    shards_skipped: int = 0
    stats: dict = field(default_factory=dict)

    @property
    def bytes_per_token(self) -> float:
        return self.bytes / self.tokens if self.tokens else 0.0


@dataclass
class HarvestResult:
    out: Path
    prompts: int
    teachers: list[TeacherSummary]
    scores: dict = field(default_factory=dict)  # manifest["scores"] with cross_score
    routing: route.Routing | None = None  # with harvest.route

    @property
    def tokens(self) -> int:
        return sum(t.tokens for t in self.teachers)

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self.teachers)

    @property
    def bytes_per_token(self) -> float:
        return self.bytes / self.tokens if self.tokens else 0.0


def _plan(job: HarvestJob, records) -> dict:
    h = job.settings
    plan = {"format": fmt.FORMAT, "project": job.name, "prompts": len(records),
            "prompts_sha256": prompt_io.digest(records), "top_k": h.top_k,
            "max_new_tokens": h.max_new_tokens, "shard_size": h.shard_size,
            "threads": h.threads, "teachers": [t.name for t in job.teachers]}
    if h.route is not None:  # absent otherwise: plans made before routing stay as they were
        plan["route"] = h.route.record()
    return plan


def _check_same(path: Path, expected: dict, what: str, optional: tuple[str, ...] = ()
                ) -> None:
    """Refuse to write into a cache made with other settings; name what differs. Keys in
    `optional` that `expected` lacks must be absent from the record too."""
    if not path.exists():
        return
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise PerseaError(f"{path} is unreadable; remove the cache directory to start over") \
            from None
    expected = {**{k: None for k in optional}, **expected}
    diffs = [f"{k}: cache has {found.get(k)!r}, now {v!r}"
             for k, v in expected.items() if found.get(k) != v]
    if diffs:
        raise PerseaError(f"the cache at {path.parent} was made with different {what} "
                          f"({'; '.join(diffs)}); set another `harvest.out` or delete it")


def _dump(obj: dict) -> str:
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def _merge_stats(per_shard: list[dict], tokens: list[int]) -> dict:
    if not per_shard:
        return {}
    total = max(sum(tokens), 1)
    return {"max_abs_logprob": max(s["max_abs_logprob"] for s in per_shard),
            "mean_abs_prob": sum(s["mean_abs_prob"] * n for s, n in zip(per_shard, tokens))
            / total,
            "kl_topk_mean": sum(s["kl_topk_mean"] * n for s, n in zip(per_shard, tokens))
            / total}


def pick_backend(spec, kind: str, paths=None):
    """The model object for a teacher: vLLM when asked for (or, with `auto`, when it is
    installed and a GPU is present) and the teacher is a local or hub checkpoint."""
    from persea.models.sources import load_teacher, weights_fingerprint

    if kind != "transformers" and (spec.path or spec.hub or spec.builtin):
        if kind == "vllm" or vllm_available():
            return load_vllm(spec, paths)
    return load_teacher(spec, paths)


def _prepare_teacher(tdir: Path, spec, model, scoring: bool = False) -> None:
    """Check the model against `<teacher>/teacher.json` (refuse a changed teacher), save its
    tokenizer once, and (re)write the record.

    For scoring, an existing record is only checked on the weights' and tokenizer's
    fingerprints: scoring runs on transformers, which may count the vocabulary (padding
    rows) differently from the vLLM engine that generated."""
    info = {"name": spec.name, "source": spec.source, "fingerprint": model.fingerprint,
            "tokenizer_fingerprint": model.tokenizer_fingerprint,
            "vocab_size": model.vocab_size, "id_dtype": str(fmt.id_type(model.vocab_size))}
    if scoring and (tdir / fmt.TEACHER).exists():
        _check_same(tdir / fmt.TEACHER, {k: info[k] for k in (
            "name", "fingerprint", "tokenizer_fingerprint")}, f"teacher {spec.name!r}")
        return
    _check_same(tdir / fmt.TEACHER, info, f"teacher {spec.name!r}")
    tdir.mkdir(parents=True, exist_ok=True)
    if getattr(model, "tokenizer", None) is not None and not (tdir / fmt.TOKENIZER).exists():
        tmp_tok = tdir / ".tokenizer.tmp"
        model.tokenizer.save_pretrained(str(tmp_tok))
        tmp_tok.rename(tdir / fmt.TOKENIZER)
    writer.write_text_atomic(tdir / fmt.TEACHER, _dump(info))


def _drop_damaged(out: Path, specs, rows: dict[str, list[int]]) -> list[str]:
    """Remove the shards that are not what the cache recorded, so that this run writes them
    again, and say which (persea.cache.check): once manifest.json exists, a shard must
    match its SHA-256 there; before, its footer must read and hold the planned rows
    (`rows[teacher][i]`: the prompts of shard i routed to the teacher; a score shard holds
    its author's). Shard files outside the plan are reported and left alone."""
    lines = []
    folders = [(out / t.name, rows[t.name]) for t in specs] + [
        (fmt.score_dir(out, s, a), rows[a]) for s, a in cross.pairs(specs)]
    planned = {f / fmt.shard_name(i): n for f, counts in folders for i, n in enumerate(counts)}
    manifest = out / fmt.MANIFEST
    if manifest.is_file():
        try:
            listed = check.listed_shards(out, json.loads(manifest.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError):
            raise PerseaError(f"{manifest} is unreadable; delete it and run `persea harvest` "
                              "again (the shards are checked and kept)") from None
        for path, sha256 in listed.items():
            problem = check.against_manifest(path, sha256)
            if problem and path in planned:
                lines.append(f"{problem}; writing it again")
                path.unlink(missing_ok=True)
    else:
        for path, n in planned.items():
            problem = path.is_file() and check.against_plan(path, n)
            if problem:
                lines.append(f"{problem}; writing it again")
                path.unlink(missing_ok=True)
    lines += [f"{p} is not a shard of this harvest's plan; ignored (remove it)"
              for p in check.strays(out, planned)]
    return lines


def run_harvest(job: HarvestJob, console: Console | None = None, load=None,
                teachers: list[str] | None = None, worker: tuple[int, int] = (0, 1),
                on_route: Callable[[route.Routing, dict[str, int], int], None] | None = None
                ) -> HarvestResult | None:
    """Harvest every teacher of `job` (`HarvestJob.of(project)`) into its `harvest.out`.

    `teachers` limits the run to some teachers and `worker=(i, n)` to the shards whose index
    is i modulo n, so that several processes or machines sharing the cache directory can
    split the work; each writes whole shards only. The run that finds every shard of every
    teacher present writes `manifest.json` and returns the result; others return None.

    With `harvest.cross_score`, a second pass (persea.harvest.cross) has every white-box
    teacher score the others' responses; score shards are split among workers the same way.

    With `harvest.route`, the routing (persea.harvest.route) is probed or read back before
    anything is generated, and `on_route(routing, {teacher: prompts it answers}, prompts)`
    is called with it.

    The torch work runs at `harvest.threads` intra-op threads (recorded in plan.json), so
    the shards do not depend on the caller's thread setting, which is restored afterwards.
    """
    with fixed_threads(job.settings.threads), ExitStack() as held:
        return _run(job, console, load, teachers, worker, held, on_route)


def _note(console, line: str) -> None:
    if console is not None:
        console.print(f"[yellow]note:[/yellow] {line}", highlight=False, soft_wrap=True)


def _run(job: HarvestJob, console, load, teachers, worker, held: ExitStack, on_route=None
         ) -> HarvestResult | None:
    h = job.settings
    names = [t.name for t in job.teachers]
    unknown = sorted(set(teachers or []) - set(names))
    if unknown:
        raise PerseaError(f"--teacher {', '.join(unknown)}: no such teacher in the project "
                          f"(it has: {', '.join(names)})")
    part, parts = worker
    if not (parts >= 1 and 0 <= part < parts):
        raise PerseaError(f"--worker {part}/{parts}: expected I/N with 0 <= I < N")
    # the licence policy first: a teacher it refuses, or one with no declared licence,
    # stops the harvest before anything is written (persea.licences.policy)
    verdicts = policy.assess(job.teachers, job.resolve, commercial=job.commercial)
    policy.require(verdicts, policy.HARVEST)
    for v in verdicts:
        if v.obligations:
            _note(console, f"teacher {v.teacher!r} ({v.license}): its licence puts "
                  f"{len(v.obligations)} obligation(s) on the distilled model; `persea "
                  "licences` lists them, the sealed model records them")
    from persea.models.sources import load_teacher, weights_fingerprint

    score_load = load or (lambda spec: load_teacher(spec, job))  # scoring: transformers
    load = load or (lambda spec: pick_backend(spec, h.backend, job))
    out = job.resolve(h.out)
    records = prompt_io.load_prompts(job.prompts, job.resolve)
    plan = _plan(job, records)
    _check_same(out / fmt.PLAN, plan, "settings", optional=("route",))
    route.check(h.route, names, records)
    if parts == 1:  # workers share the cache by design: each writes whole shards only
        held.enter_context(stage_lock(out, "persea harvest"))
    out.mkdir(parents=True, exist_ok=True)
    if parts == 1:
        writer.clean_temporaries(out)
    routing = None
    if h.route is not None:
        specs = {t.name: t for t in job.teachers}
        routing = route.resolve(h.route, out, names, records, h, job.seed,
                                lambda name: load(specs[name]))
        plan["routing"] = routing.table()
        _check_same(out / fmt.PLAN, plan, "routing")
    writer.write_text_atomic(out / fmt.PLAN, _dump(plan))
    writer.write_text_atomic(out / fmt.PROMPTS, prompt_io.to_jsonl(records))

    n_shards = (len(records) + h.shard_size - 1) // h.shard_size
    # per teacher and shard, the prompt indices it answers (all of them without routing)
    mine = {t: [[k for k in range(i * h.shard_size, min((i + 1) * h.shard_size, len(records)))
                 if routing is None or routing.answers_prompt(t, records[k].skill)]
                for i in range(n_shards)] for t in names}
    rows = {t: [len(c) for c in mine[t]] for t in names}
    if routing is not None:
        if on_route is not None:
            on_route(routing, {t: sum(rows[t]) for t in names}, len(records))
        for line in routing.fallback_lines():
            _note(console, line)
    for line in _drop_damaged(out, job.teachers, rows):
        _note(console, line)
    for spec in job.teachers:  # a teacher with nothing left to do is checked all the same
        record = out / spec.name / fmt.TEACHER
        if record.exists() and (not teachers or spec.name in teachers):
            recorded = json.loads(record.read_text(encoding="utf-8")).get("fingerprint")
            if recorded != (weights_fingerprint(spec, job) or load(spec).fingerprint):
                raise PerseaError(f"teacher {spec.name!r} changed since the harvest in {out} "
                                  f"(its weights differ from those {record} records); restore "
                                  "them, or set another `harvest.out` to harvest it afresh")
    summaries: list[TeacherSummary] = []
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                        MofNCompleteColumn(), _RateColumn(), TextColumn("ETA"),
                        TimeRemainingColumn(), console=console, disable=console is None,
                        transient=False)
    with progress:
        for spec in job.teachers:
            if teachers and spec.name not in teachers:
                continue
            tdir = out / spec.name
            if parts == 1:  # with several workers, a temporary may be another one's
                writer.clean_temporaries(tdir)
            todo = [i for i in range(n_shards) if i % parts == part
                    and not (tdir / fmt.shard_name(i)).exists()]
            task = progress.add_task(spec.name, total=sum(rows[spec.name][i] for i in todo))
            summary = TeacherSummary(spec.name, shards_skipped=n_shards - len(todo))
            if todo:
                model = load(spec)
                _prepare_teacher(tdir, spec, model)
                for i in todo:
                    chunk = mine[spec.name][i]  # may be empty: the shard then holds no rows
                    answers = []
                    for b in range(0, len(chunk), h.batch_size):
                        batch = chunk[b:b + h.batch_size]
                        traces = model.generate([records[k].prompt for k in batch],
                                                h.max_new_tokens, h.top_k)
                        answers += [(k, records[k].id, t) for k, t in zip(batch, traces)]
                        progress.advance(task, len(batch))
                    table, exact = writer.traces_to_table(answers, h.top_k, model.vocab_size)
                    writer.write_shard(tdir / fmt.shard_name(i), table,
                                       quant.reconstruction_error(exact))
                    summary.shards_written += 1
            summaries.append(summary)
            model = None  # free it before the next one loads
        if h.cross_score:
            cross.run_cross(job.teachers, h, out, records, score_load,
                            lambda spec, m: _prepare_teacher(out / spec.name, spec, m, True),
                            progress, teachers, worker, rows)
    complete = all((out / t / fmt.shard_name(i)).exists()
                   for t in names for i in range(n_shards))
    if not complete or (h.cross_score and
                        not cross.complete(out, job.teachers, n_shards)):
        return None
    done = {s.name: s for s in summaries}
    summaries = [done.get(t, TeacherSummary(t, shards_skipped=n_shards)) for t in names]
    scores = cross.manifest_section(out, job.teachers, n_shards) \
        if h.cross_score else None
    return _finish(out, plan, records, summaries, n_shards, scores, routing)


def _finish(out: Path, plan: dict, records, summaries, n_shards: int,
            scores: dict | None = None, routing: route.Routing | None = None
            ) -> HarvestResult:
    """Read every shard back, check answers where known, and write manifest.json last
    (with routing, `route`: the routing and how many prompts each teacher answered)."""
    skills = get_world().skills
    manifest = {"plan": plan, "teachers": {}}
    for s in summaries:
        tdir = out / s.name
        info = json.loads((tdir / fmt.TEACHER).read_text(encoding="utf-8"))
        files, stats, tokens = [], [], []
        for i in range(n_shards):
            path = tdir / fmt.shard_name(i)
            table = read_shard(path)
            n_tok = sum(len(x) for x in table.column(fmt.TOKEN_IDS).to_pylist())
            size = path.stat().st_size
            files.append({"file": path.name, "sha256": sha256_file(path),
                          "rows": table.num_rows, "tokens": n_tok, "bytes": size})
            stats.append(shard_stats(path))
            tokens.append(n_tok)
            s.responses += table.num_rows
            s.tokens += n_tok
            s.bytes += size
            for idx, text in zip(table.column(fmt.PROMPT_INDEX).to_pylist(),
                                 table.column(fmt.TEXT).to_pylist()):
                rec = records[idx]
                if rec.answer is not None and rec.skill in skills:
                    s.checked += 1
                    s.correct += skills[rec.skill].check(rec.answer, text)
        s.stats = _merge_stats(stats, tokens)
        manifest["teachers"][s.name] = {
            **info, "shards": files, "responses": s.responses, "tokens": s.tokens,
            "bytes": s.bytes, "bytes_per_token": round(s.bytes_per_token, 2),
            "reconstruction_error": {k: round(v, 6) for k, v in s.stats.items()}}
    result = HarvestResult(out, len(records), summaries, scores or {}, routing)
    if scores is not None:
        manifest["scores"] = scores
    if routing is not None:
        manifest["route"] = {**routing.as_json(),
                             "answered": {s.name: s.responses for s in summaries}}
    manifest["total"] = {"tokens": result.tokens, "bytes": result.bytes,
                         "bytes_per_token": round(result.bytes_per_token, 2)}
    writer.write_text_atomic(out / fmt.MANIFEST, _dump(manifest))
    return result
