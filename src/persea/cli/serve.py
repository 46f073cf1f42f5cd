"""`persea serve`: open the database, load the models, start the gateway under uvicorn.

What is served comes from the project's `serve:` section (persea.yaml; by default the
project's student, once released by `persea gate`), with the routes over those models; the
flags override it (`--model`/`--upstream` replace the models). Without a project and without
those flags there is nothing to serve, and it says so in one line.

On the first start with an empty database it creates a default plan that prices every served
model (at its configured price, else DEFAULT_PRICE), a default organisation and a first API
key, and prints that key once, so that a new user can run `persea serve`, copy the key, and
call the API with curl or the openai client.

`--workers N` (default: one per core) runs N gateway processes on one port, each with its
own SO_REUSEPORT socket (persea.serve.workers: the kernel spreads connections). This process
checks everything first (the database migrated, the models loadable, the routes sound, the
first key) and then only supervises; each worker builds its own backends and app
(`worker_app`). They share the database (every reserve is one conditional UPDATE there, so
budgets hold across them) and the rate limits: in Redis with `--redis`, else in a small
shared file (`persea.serve.limits.SharedLimiter`) that this process creates and removes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

from persea.accounts import Accounts
from persea.accounts.money import Price, format_money
from persea.db import resolve_url, upgrade
from persea.errors import PerseaError
from persea.evaluate.release import require_release
from persea.evaluate.targets import student_dir
from persea.models.builtin import builtin_models
from persea.project import PROJECT_FILE, LoadedProject, ServedModel, database_url, \
    load_project
from persea.route.breaker import BreakerSettings, make_breaker
from persea.route.policy import Router, build_routes
from persea.seal import generations
from persea.seal.keyring import Keyring
from persea.seal.unseal import is_sealed, read_record
from persea.serve.limits import SharedLimiter, make_limiter
from persea.serve.workers import run_workers

DEFAULT_PRICE = ("0.50", "1.50")       # money per million input / output tokens
log = logging.getLogger("persea.serve")
WORKER_ENV = "PERSEA_SERVE_WORKER"  # a worker's options, as JSON (set by the supervisor)


def default_workers() -> int:
    """One worker per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class ServeOptions:
    host: str | None = None  # None: the project's serve.host, else 127.0.0.1
    port: int | None = None  # None: the project's serve.port, else 8000
    project: Path | None = None  # None: ./persea.yaml when there is one
    db: str | None = None
    models: list[str] = field(default_factory=list)     # NAME=BUILTIN_OR_DIR
    upstreams: list[str] = field(default_factory=list)  # NAME=URL
    redis: str | None = None
    admin_token: str | None = None
    body_limit: int = 1 << 20
    batch_window_ms: float = 5.0
    torch_threads: int = 1  # the built-in models are small; more threads wait on each other
    force_release: bool = False  # serve an ungated model directory anyway (recorded)
    release_reason: str | None = None
    forced_by: str | None = None
    keyring: str | None = None  # for sealed directories (persea.seal.keyring)
    workers: int | None = None  # gateway processes on one port; None: one per core
    budget_leases: int = 64  # requests per budget lease (persea.accounts.leases); 0: off
    # set by the supervisor for its workers:
    limiter_file: str | None = None  # SharedLimiter table (no Redis, several workers)
    releases_checked: bool = False  # the supervisor has checked (and recorded) releases


def _pairs(values: list[str], flag: str, example: str) -> list[tuple[str, str]]:
    out = []
    for v in values:
        name, eq, source = v.partition("=")
        if not eq or not name.strip() or not source.strip():
            raise PerseaError(f"{flag} {v!r}: expected NAME=VALUE, for example {example}")
        out.append((name.strip(), source.strip()))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise PerseaError(f"{flag}: a model name is given twice ({', '.join(names)})")
    return out


def _require_release_of_directory(source: str, options: ServeOptions) -> None:
    """A model directory (a checkpoint, not a built-in) is served only once released."""
    if source not in builtin_models() and Path(source).expanduser().is_dir():
        require_release(None, Path(source).expanduser(), options.force_release,
                        options.release_reason, options.forced_by, db=options.db)


def find_project(options: ServeOptions) -> LoadedProject | None:
    """The project whose `serve:` section applies: `--project`, else ./persea.yaml if any.
    Without one, a model flag is needed: there is nothing else to serve."""
    if options.project is not None:
        return load_project(options.project)
    if Path(PROJECT_FILE).is_file():
        return load_project(".")
    if not (options.models or options.upstreams):
        raise PerseaError(f"no {PROJECT_FILE} here: serve a project's released student with "
                          "`persea serve --project DIR`, or a built-in teacher with "
                          "`persea serve --model NAME=qwen3-toy`")
    return None


def _sealed_backend(name: str, source: str, options: ServeOptions):
    """A sealed directory (`persea seal`): its signature checked with the keyring's public
    key and its weights decrypted into memory only. It was released when it was sealed,
    so no gate is looked up; any failure is one line, and nothing is served."""
    from persea.seal.memory import load_sealed_model  # heavy: torch
    from persea.serve.backends.builtin import BuiltinBackend  # heavy: torch

    try:
        model = load_sealed_model(name, Path(source), Keyring.of(options.keyring))
    except PerseaError as err:
        raise PerseaError(f"--model {name}={source}: {err.message}; nothing served") from None
    return BuiltinBackend(name, model, torch_threads=options.torch_threads)


def _flag_backends(options: ServeOptions) -> dict:
    from persea.serve.backends.upstream import UpstreamBackend  # heavy: aiohttp

    backends: dict = {}
    for name, source in _pairs(options.models, "--model", "persea-small=qwen3-toy"):
        from persea.serve.backends.builtin import load_builtin  # heavy: torch, only if used

        if is_sealed(Path(source).expanduser()):
            backend = _sealed_backend(name, source, options)
        else:
            if not options.releases_checked:
                _require_release_of_directory(source, options)
            backend = load_builtin(name, source, torch_threads=options.torch_threads)
        backend.window = options.batch_window_ms / 1000
        backends[name] = backend
    for name, url in _pairs(options.upstreams, "--upstream",
                            "big=http://127.0.0.1:8001/v1"):
        if name in backends:
            raise PerseaError(f"--upstream {name}: already served by --model")
        if not url.startswith(("http://", "https://")):
            raise PerseaError(f"--upstream {name}={url}: expected an http(s):// URL of an "
                              "OpenAI-compatible server, ending in /v1")
        backends[name] = UpstreamBackend(name, url, api_key=os.environ.get(
            f"PERSEA_UPSTREAM_KEY_{name.upper().replace('-', '_')}"))
    return backends


def _model_dir(project: LoadedProject, spec: ServedModel, i: int) -> Path:
    where = f"{project.file}: serve.models[{i}] ({spec.name})"
    if spec.student:
        d = student_dir(project)
        if not (d / "config.json").is_file():
            raise PerseaError(f"{where}: no student at {d} yet; run `persea distill "
                              f"--project {project.root}` first, or serve other models")
        return d
    d = project.resolve(spec.path)
    if not d.is_dir():
        raise PerseaError(f"{where}: path {spec.path!r} is not a model directory")
    return d


def _project_backends(project: LoadedProject, options: ServeOptions) -> dict:
    from persea.serve.backends.builtin import load_builtin  # heavy: torch
    from persea.serve.backends.upstream import UpstreamBackend  # heavy: aiohttp

    backends: dict = {}
    for i, spec in enumerate(project.spec.serve.models):
        if spec.endpoint is not None:
            key = None
            if spec.api_key_env is not None:
                key = os.environ.get(spec.api_key_env)
                if not key:
                    raise PerseaError(f"{project.file}: serve.models[{i}] ({spec.name}): "
                                      f"${spec.api_key_env} is not set; it should hold the "
                                      "key of that endpoint")
            backends[spec.name] = UpstreamBackend(spec.name, spec.endpoint,
                                                  upstream_model=spec.model or spec.name,
                                                  api_key=key, timeout=spec.timeout_s)
            continue
        if spec.builtin is not None:
            if spec.builtin not in builtin_models():
                raise PerseaError(f"{project.file}: serve.models[{i}] ({spec.name}): no "
                                  f"built-in model {spec.builtin!r}; there are "
                                  f"{', '.join(builtin_models())}")
            source = spec.builtin
        else:  # the student or a model directory: served only once released
            d = _model_dir(project, spec, i)
            if not options.releases_checked:
                require_release(project, d, options.force_release, options.release_reason,
                                options.forced_by, db=options.db)
            source = str(d)
        backend = load_builtin(spec.name, source, torch_threads=options.torch_threads)
        backend.window = options.batch_window_ms / 1000
        backends[spec.name] = backend
    return backends


def served_names(options: ServeOptions, project: LoadedProject | None) -> list[str]:
    """The names of the models that will be served (before any is loaded)."""
    if options.models or options.upstreams or project is None:
        return [n for n, _ in _pairs(options.models, "--model", "persea-small=qwen3-toy")] + \
            [n for n, _ in _pairs(options.upstreams, "--upstream", "big=http://h:8001/v1")]
    return [m.name for m in project.spec.serve.models]


def build_backends(options: ServeOptions, project: LoadedProject | None = None) -> dict:
    """The served models: the flags' when given, else the project's `serve.models`."""
    if options.models or options.upstreams or project is None:
        return _flag_backends(options)
    return _project_backends(project, options)


def build_router(project: LoadedProject | None, served, redis_url: str | None) -> Router:
    """The project's routes over the `served` models, with a breaker per model (in Redis
    when `redis_url` is given); PerseaError in one line for a route that cannot work."""
    if project is None:
        return Router({}, make_breaker(BreakerSettings(), redis_url))
    spec = project.spec.serve
    try:
        routes, latency = build_routes(spec.routes, list(served), root=project.root)
    except PerseaError as err:
        raise PerseaError(f"{project.file}: {err.message}") from None
    settings = BreakerSettings(spec.breaker.failures, spec.breaker.open_s,
                               spec.breaker.probe_s)
    return Router(routes, make_breaker(settings, redis_url), latency)


def served_fingerprints(backends: dict) -> dict[str, str | None]:
    """The weights fingerprint of each loaded model (the one its evaluation records carry:
    persea.models.fingerprint); None for an endpoint, whose weights are not known here."""
    return {name: getattr(getattr(b, "hf", None), "fingerprint", None)
            for name, b in backends.items()}


def check_router_weights(router: Router, backends: dict,
                         project: LoadedProject | None) -> None:
    """Refuse, in one line, a learned route whose router learned about other weights than
    the loaded ones (a retrained student, a replaced model directory)."""
    try:
        router.check_weights(served_fingerprints(backends))
    except PerseaError as err:
        where = f"{project.file}: " if project is not None else ""
        raise PerseaError(f"{where}{err.message}; nothing served") from None


def prices_of(project: LoadedProject | None) -> dict[str, Price]:
    """The configured price of each model (per million tokens, as plans keep them)."""
    if project is None:
        return {}
    return {m.name: Price(*m.price.per_mtok()) for m in project.spec.serve.models
            if m.price is not None}


def bootstrap(accounts, models: list[str], prices: dict[str, Price] | None = None
              ) -> str | None:
    """On an empty database: a default plan pricing `models` (at `prices`, else
    DEFAULT_PRICE), org `default`, a first key. Returns the raw key (to print once), or None
    when the database already has orgs."""
    if accounts.admin.orgs():
        return None
    default = Price(Decimal(DEFAULT_PRICE[0]), Decimal(DEFAULT_PRICE[1]))
    prices = prices or {}
    accounts.admin.create_plan("default", {m: prices.get(m, default) for m in models},
                               actor="persea serve")
    accounts.admin.create_org("default", "default", actor="persea serve")
    return accounts.admin.create_key("default", name="first key", actor="persea serve").raw_key


def _priced(models: list[str], prices: dict[str, Price]) -> str:
    default = f"{DEFAULT_PRICE[0]}/{DEFAULT_PRICE[1]}"
    return ", ".join(f"{m} at " + (f"{format_money(prices[m].input_per_mtok)}/"
                                   f"{format_money(prices[m].output_per_mtok)}"
                                   if m in prices else default) for m in models)


def safe_url(url: str) -> str:
    return sa.make_url(url).render_as_string(hide_password=True)


def _where(options: ServeOptions, project: LoadedProject | None):
    spec = project.spec.serve if project is not None else None
    host = options.host or (spec.host if spec else "127.0.0.1")
    port = options.port or (spec.port if spec else 8000)
    redis = options.redis or (spec.redis if spec else None)
    return host, port, redis


def _app(options: ServeOptions, project: LoadedProject | None, backends: dict, router,
         accounts: Accounts, redis: str | None):
    from persea.serve.app import create_app  # heavy: fastapi

    admin_token = options.admin_token or os.environ.get("PERSEA_ADMIN_TOKEN")
    return create_app(accounts, backends, limiter=make_limiter(redis, options.limiter_file),
                      admin_token=admin_token, body_limit=options.body_limit, router=router,
                      lease_requests=options.budget_leases)


def worker_app():
    """One worker of `persea serve --workers N` (uvicorn calls this in each worker process):
    the app over its own backends, with the options the supervisor checked. A failure here
    is one line and exit status 3, which stops the supervisor instead of a restart loop."""
    try:
        options = ServeOptions(**json.loads(os.environ[WORKER_ENV]))
        options.project = Path(options.project) if options.project else None
        project = find_project(options)
        _, _, redis = _where(options, project)
        router = build_router(project, served_names(options, project), redis)
        backends = build_backends(options, project)
        return _app(options, project, backends, router,
                    Accounts(options.db, actor="persea serve"), redis)
    except Exception as err:  # noqa: BLE001 - one line; the supervisor stops
        message = err.message if isinstance(err, PerseaError) else type(err).__name__
        log.error("gateway worker %d could not start: %s", os.getpid(), message)
        sys.exit(3)  # uvicorn's STARTUP_FAILURE


def run_serve(options: ServeOptions, echo=print) -> None:
    import uvicorn  # heavy: uvicorn

    workers = options.workers if options.workers is not None else default_workers()
    if workers < 1:
        raise PerseaError(f"--workers {workers}: expected 1 or more")
    project = find_project(options)
    host, port, redis = _where(options, project)
    url = database_url(options.db, project) if project is not None else resolve_url(options.db)
    try:
        upgrade(url)
    except Exception as err:  # noqa: BLE001 - say which database, never its password
        raise PerseaError(f"cannot open the database {safe_url(url)} "
                          f"({type(err).__name__})") from None
    options.db = url  # release records go to the database being served from
    router = build_router(project, served_names(options, project), redis)  # checked first
    backends = build_backends(options, project)  # with several workers: a check, then dropped
    check_router_weights(router, backends, project)
    accounts = Accounts(url, actor="persea serve")
    prices = prices_of(project)
    first_key = bootstrap(accounts, list(backends), prices)
    if first_key:
        echo(f"created org 'default' on plan 'default' ({_priced(list(backends), prices)} "
             "per million tokens)")
        echo(f"first API key (shown once, store it now): {first_key}")
    unpriced = sorted(set(backends) - {m for p in accounts.admin.plans() for m in p.prices})
    if unpriced:
        echo(f"note: no plan sells {', '.join(unpriced)} yet; price it with the admin API "
             "or CLI before anyone can call it")
    admin_token = options.admin_token or os.environ.get("PERSEA_ADMIN_TOKEN")
    offered = [*backends, *router.routes]
    if first_key:
        base = f"http://{host}:{port}/v1"
        echo(f"try it: export PERSEA_KEY=<the key above>; curl {base}/chat/completions "
             f"-H \"Authorization: Bearer $PERSEA_KEY\" -H \"Content-Type: application/json\" "
             f"-d '{{\"model\": \"{(list(router.routes) or list(backends))[0]}\", "
             f"\"messages\": [{{\"role\": \"user\", \"content\": \"What is 12 plus "
             "30?\"}]}'")
    shared = "in Redis" if redis else ("in this process" if workers == 1 else
                                       "shared by the workers")
    echo(f"serving {', '.join(offered)} on http://{host}:{port}/v1 "
         f"({workers} worker process{'es' if workers > 1 else ''}; database {safe_url(url)}; "
         f"rate limits {shared}; breakers {'in Redis' if redis else 'per process'}; admin "
         f"API {'on' if admin_token else 'off'})")
    _record_served(project, options, f"http://{host}:{port}/v1")
    if workers == 1:
        app = _app(options, project, backends, router, accounts, redis)
        uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning")
        return
    del backends  # each worker loads its own
    accounts.close()
    tmp = tempfile.mkdtemp(prefix="persea-serve-")
    try:
        spec = asdict(options)
        spec.update(project=str(project.root) if project is not None else None,
                    releases_checked=True, workers=1,
                    limiter_file=None if redis else SharedLimiter.create(
                        Path(tmp) / "rate-limits"))
        os.environ[WORKER_ENV] = json.dumps(spec)
        if run_workers(workers, host, port, "persea.cli.serve:worker_app"):
            raise PerseaError(f"a gateway worker could not start on {host}:{port} (its line "
                              "above says why); nothing is served")
    finally:
        os.environ.pop(WORKER_ENV, None)
        shutil.rmtree(tmp, ignore_errors=True)


def _record_served(project: LoadedProject | None, options: ServeOptions, address: str) -> None:
    """A sealed directory of this project, served: a `served` entry in the project's
    register of generations (persea.seal.generations)."""
    if project is None:
        return
    for name, source in _pairs(options.models, "--model", "persea-small=qwen3-toy"):
        d = Path(source).expanduser()
        if is_sealed(d):
            record = read_record(d)
            if record.get("model", {}).get("project") == project.spec.name:
                generations.append(project, generations.SERVED,
                                   record["model"]["fingerprint"], name=name,
                                   sealed_id=record["id"], address=address,
                                   paths={"sealed": str(d.resolve())})
