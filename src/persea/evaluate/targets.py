"""Which models an evaluation runs on, and how each is loaded.

By default: the project's student (`<project>/<distill.out>/student`) and every teacher of
the project. Others are named on the command line: `--model NAME=SOURCE` where SOURCE is a
project teacher's name, a built-in teacher or a model directory, and `--endpoint NAME=URL`
for an OpenAI-compatible server (`--served-model` names the model it serves).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from persea.errors import PerseaError
from persea.models.builtin import builtin_models
from persea.models.remote import EndpointModel

STUDENT = "student"


@dataclass
class Target:
    name: str
    source: str  # for the record: a path, a built-in's name, an endpoint URL
    load: Callable[[], Any]


def student_dir(project) -> Path:
    return project.resolve(project.spec.distill.out) / "student"


def _split(value: str, flag: str, example: str) -> tuple[str, str]:
    name, eq, source = value.partition("=")
    if not eq or not name.strip() or not source.strip():
        raise PerseaError(f"{flag} {value!r}: expected NAME=SOURCE, for example {example}")
    return name.strip(), source.strip()


def dir_target(name: str, directory: Path) -> Target:
    from persea.models.sources import load_hf_dir

    return Target(name, str(directory), lambda: load_hf_dir(name, directory))


def teacher_targets(project) -> list[Target]:
    from persea.models.sources import load_teacher

    return [Target(spec.name, f"{spec.source}:{getattr(spec, spec.source)}",
                   (lambda s=spec: load_teacher(s, project)))
            for spec in project.spec.teachers]


def default_targets(project, note=print) -> list[Target]:
    """The student (when `persea distill` has written one) and every project teacher."""
    targets = []
    sdir = student_dir(project)
    if (sdir / "config.json").is_file():
        targets.append(dir_target(STUDENT, sdir))
    else:
        note(f"no student at {sdir} yet (run `persea distill`); evaluating the teachers only")
    return targets + teacher_targets(project)


def model_target(value: str, project=None) -> Target:
    """`NAME=SOURCE`: a project teacher, a built-in teacher, or a model directory."""
    builtins = builtin_models()
    name, source = _split(value, "--model", "baseline=qwen3-toy or mine=./runs/x/student")
    if project is not None:
        for t in teacher_targets(project):
            if t.name == source:
                return Target(name, t.source, t.load)
    if source in builtins:
        return dir_target(name, builtins[source].path)
    path = project.resolve(source) if project is not None else Path(source).expanduser()
    if not path.is_dir():
        raise PerseaError(f"--model {value}: {source!r} is not a project teacher, a built-in "
                          f"teacher ({', '.join(builtins)}) nor a model directory")
    return dir_target(name, path)


class _Endpoint:
    """An endpoint model whose failures say how long it was given."""

    def __init__(self, inner, timeout: float):
        self.inner = inner
        self.timeout = timeout

    def __getattr__(self, attr):
        return getattr(self.inner, attr)

    def generate(self, prompts, max_new_tokens, top_k=0):
        try:
            return self.inner.generate(prompts, max_new_tokens, top_k)
        except PerseaError as err:
            raise PerseaError(f"{err.message} (no answer within the {self.timeout:g} s "
                              "timeout, or refused; raise it with --timeout)") from None


def endpoint_target(value: str, served_model: str | None, timeout: float,
                    api_key_env: str = "OPENAI_API_KEY") -> Target:
    name, url = _split(value, "--endpoint", "rival=http://127.0.0.1:8001/v1")
    if not url.startswith(("http://", "https://")):
        raise PerseaError(f"--endpoint {value}: expected an http(s):// URL of an "
                          "OpenAI-compatible server, ending in /v1")

    def load():
        return _Endpoint(EndpointModel(name, url, served_model or name, api_key_env,
                                       timeout=timeout, max_retries=0), timeout)

    return Target(name, url, load)
