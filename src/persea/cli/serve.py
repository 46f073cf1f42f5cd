"""`persea serve`: open the database, load the models, start the gateway under uvicorn.

On the first start with an empty database it creates a default plan that prices every served
model, a default organisation and a first API key, and prints that key once, so that a new
user can run `persea serve`, copy the key, and call the API with curl or the openai client.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

from persea.accounts import Accounts
from persea.accounts.money import Price
from persea.db import resolve_url, upgrade
from persea.errors import PerseaError
from persea.evaluate.release import require_release
from persea.models.builtin import builtin_models
from persea.seal.keyring import Keyring
from persea.seal.unseal import is_sealed
from persea.serve.limits import make_limiter

DEFAULT_MODEL = "qwen3-toy=qwen3-toy"  # a built-in teacher, until a student is released
DEFAULT_PRICE = ("0.50", "1.50")       # money per million input / output tokens
log = logging.getLogger("persea.serve")


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
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


def build_backends(options: ServeOptions) -> dict:
    from persea.serve.backends.builtin import load_builtin  # heavy: torch
    from persea.serve.backends.upstream import UpstreamBackend  # heavy: aiohttp

    models = options.models or ([] if options.upstreams else [DEFAULT_MODEL])
    backends: dict = {}
    for name, source in _pairs(models, "--model", "persea-small=qwen3-toy"):
        if is_sealed(Path(source).expanduser()):
            backend = _sealed_backend(name, source, options)
        else:
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


def bootstrap(accounts, models: list[str]) -> str | None:
    """On an empty database: a default plan pricing `models`, org `default`, a first key.
    Returns the raw key (to print once), or None when the database already has orgs."""
    if accounts.admin.orgs():
        return None
    price = Price(Decimal(DEFAULT_PRICE[0]), Decimal(DEFAULT_PRICE[1]))
    accounts.admin.create_plan("default", {m: price for m in models}, actor="persea serve")
    accounts.admin.create_org("default", "default", actor="persea serve")
    return accounts.admin.create_key("default", name="first key", actor="persea serve").raw_key


def safe_url(url: str) -> str:
    return sa.make_url(url).render_as_string(hide_password=True)


def run_serve(options: ServeOptions, echo=print) -> None:
    import uvicorn  # heavy: uvicorn

    from persea.serve.app import create_app  # heavy: fastapi

    url = resolve_url(options.db)
    try:
        upgrade(url)
    except Exception as err:  # noqa: BLE001 - say which database, never its password
        raise PerseaError(f"cannot open the database {safe_url(url)} "
                          f"({type(err).__name__})") from None
    accounts = Accounts(url, actor="persea serve")
    backends = build_backends(options)
    first_key = bootstrap(accounts, list(backends))
    if first_key:
        echo(f"created org 'default' on plan 'default' ({', '.join(backends)} at "
             f"{DEFAULT_PRICE[0]}/{DEFAULT_PRICE[1]} per million tokens)")
        echo(f"first API key (shown once, store it now): {first_key}")
    unpriced = sorted(set(backends) - {m for p in accounts.admin.plans() for m in p.prices})
    if unpriced:
        echo(f"note: no plan sells {', '.join(unpriced)} yet; price it with the admin API "
             "or CLI before anyone can call it")
    admin_token = options.admin_token or os.environ.get("PERSEA_ADMIN_TOKEN")
    app = create_app(accounts, backends, limiter=make_limiter(options.redis),
                     admin_token=admin_token, body_limit=options.body_limit)
    if first_key:
        base = f"http://{options.host}:{options.port}/v1"
        echo(f"try it: export PERSEA_KEY=<the key above>; curl {base}/chat/completions "
             f"-H \"Authorization: Bearer $PERSEA_KEY\" -H \"Content-Type: application/json\" "
             f"-d '{{\"model\": \"{next(iter(backends))}\", \"messages\": [{{\"role\": "
             f"\"user\", \"content\": \"What is 12 plus 30?\"}}]}}'")
    echo(f"serving {', '.join(backends)} on http://{options.host}:{options.port}/v1 "
         f"(database {safe_url(url)}; rate limits "
         f"{'in Redis' if options.redis else 'in this process'}; admin API "
         f"{'on' if admin_token else 'off'})")
    uvicorn.run(app, host=options.host, port=options.port, access_log=False,
                log_level="warning")
