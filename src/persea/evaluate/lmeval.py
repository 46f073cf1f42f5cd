"""lm-evaluation-harness tasks as suites, with the harness used as a library.

`lmeval:TASK` runs one harness task on any model of the protocol: a local transformers model
goes through the harness's own `HFLM` (loglikelihood and generation tasks); a black-box
endpoint goes through `_GenerateOnlyLM`, which answers generation tasks with the endpoint's
replies (loglikelihood tasks need log-probabilities of given text, which a chat endpoint does
not return: that is a clear error). The harness's per-sample log becomes the run's per-item
outcomes (`TASK/METRIC` for every numeric metric), so its runs are records like any other.

Tasks defined by local YAML files run offline: `--include-path DIR` looks the task up among
DIR's tasks only (fast), and the harness runs with DIR as its working directory, so
`data_files` paths in the YAML count from there. Without it the task is looked up among the
harness's own thousands of tasks (indexing them takes about 25 s here, and their data
usually comes from a hub, which needs the network).

A harness run is not resumable item by item: stopped midway, its run is marked incomplete
and done again whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from pathlib import Path

from persea.errors import PerseaError
from persea.evaluate.records import RunRecord, RunStore
from persea.evaluate.runner import finish_run, mark_incomplete, open_run


def _digest_dir(path: Path | None) -> str:
    if path is None:
        return "builtin"
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(path)).encode() + b"\x00" + p.read_bytes() + b"\x00")
    return h.hexdigest()[:12]


@contextlib.contextmanager
def _cwd(path: Path | None):
    old = Path.cwd()
    if path is not None:
        os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def task_manager(task: str, include_path: Path | None):
    """The harness's task index holding `task`: only `include_path`'s tasks when it is
    given (fast, offline), else the harness's own tasks."""
    from lm_eval.tasks import TaskManager

    if include_path is not None and not include_path.is_dir():
        raise PerseaError(f"--include-path {include_path}: not a directory of lm-eval "
                          "task YAML files")
    tm = TaskManager(include_path=str(include_path.resolve()) if include_path else None,
                     include_defaults=include_path is None)
    if task not in tm.all_tasks:
        where = (f"among the tasks defined in {include_path}" if include_path else
                 "among the harness's own tasks (define yours in a YAML file and pass "
                 "--include-path DIR)")
        raise PerseaError(f"suite lmeval:{task}: no lm-eval task named {task!r} {where}")
    return tm


def _harness_model(model, batch_size: int):
    """The harness's LM for one of our models."""
    if hasattr(model, "model") and hasattr(model, "tokenizer"):  # a local transformers model
        from lm_eval.models.huggingface import HFLM

        return HFLM(pretrained=model.model, tokenizer=model.tokenizer, batch_size=batch_size,
                    device=str(getattr(model, "device", "cpu")))
    return _generate_only_lm(model)


def _generate_only_lm(model):
    from lm_eval.api.model import LM

    class _GenerateOnlyLM(LM):
        """Generation tasks through the protocol's `generate` (for black-box endpoints)."""

        def generate_until(self, requests, disable_tqdm: bool = False):
            out = []
            for req in requests:
                context, kwargs = req.args
                until = kwargs.get("until") or []
                text = model.generate([context], int(kwargs.get("max_gen_toks", 256)))[0].text
                for stop in until if isinstance(until, list) else [until]:
                    text = text.split(stop)[0] if stop else text
                out.append(text)
            return out

        def _no_logprobs(self, requests, disable_tqdm: bool = False):
            raise PerseaError(f"model {model.name!r}: this lm-eval task needs "
                              "log-probabilities of given text, which an endpoint does not "
                              "return; use a generation task (output_type: generate_until)")

        loglikelihood = loglikelihood_rolling = _no_logprobs

    return _GenerateOnlyLM()


def _items(samples: list[dict], task: str) -> list[dict]:
    rows = []
    for s in samples:
        outcomes = {}
        for metric in s.get("metrics", []):
            try:
                outcomes[f"{task}/{metric}"] = float(s[metric])
            except (KeyError, TypeError, ValueError):
                continue  # a metric aggregated from tuples (bleu, ...) has no item value
        args = s.get("arguments") or []
        prompt = args[0][0] if args and isinstance(args[0], (list, tuple)) and args[0] else ""
        resp = s.get("filtered_resps")
        rows.append({"id": f"{task}:{s['doc_id']}", "group": task, "prompt": str(prompt),
                     "target": str(s.get("target", "")),
                     "output": str(resp[0] if isinstance(resp, list) and resp else resp),
                     "outcomes": outcomes})
    return rows


def run_lmeval_suite(model, task: str, store: RunStore, *, name: str, source: str,
                     include_path: Path | None = None, seed: int = 0, batch_size: int = 16,
                     limit: int | None = None, num_fewshot: int | None = None,
                     rerun: bool = False, progress=None, tasks=None) -> RunRecord:
    """Run one harness task on `model` into a run record (a complete one is reused)."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import lm_eval

    include = include_path.resolve() if include_path is not None else None
    chat = bool(getattr(model, "use_chat_template", False))  # an endpoint templates itself
    config = {"task": task, "include_path": str(include) if include else None, "limit": limit,
              "num_fewshot": num_fewshot, "apply_chat_template": chat}
    version = f"lm-eval-{lm_eval.__version__}+{_digest_dir(include)}"
    suite = f"lmeval:{task}"
    record, _ = open_run(store, model=name, fingerprint=model.fingerprint, source=source,
                         suite=suite, version=version, config=config, seed=seed, n_items=0,
                         rerun=rerun)
    if record.complete:
        return record
    tm = tasks or task_manager(task, include)
    bar = progress.add_task(f"{name} · {suite}", total=None) if progress is not None else None
    start = time.monotonic()
    try:
        with _cwd(include):
            out = lm_eval.simple_evaluate(
                model=_harness_model(model, batch_size), tasks=[task], task_manager=tm,
                log_samples=True, apply_chat_template=chat, limit=limit,
                num_fewshot=num_fewshot, bootstrap_iters=0, random_seed=seed,
                numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed)
    except PerseaError:
        mark_incomplete(store, record)
        raise
    except BaseException as err:
        mark_incomplete(store, record)
        if isinstance(err, Exception):
            raise PerseaError(f"suite {suite} on {name!r}: lm-eval failed: "
                              f"{type(err).__name__}: {str(err).splitlines()[0][:300]}") from None
        raise
    samples = [s for t, rows in out["samples"].items() for s in rows]
    items = _items(samples, task)
    store.rewrite_items(record.run_id, items)
    record.n_items = len(items)
    record.duration_s = time.monotonic() - start
    record.config = {**config, "task_version": str(out.get("versions", {}).get(task))}
    if bar is not None:
        progress.update(bar, total=len(items), completed=len(items))
    return finish_run(store, record, items)
