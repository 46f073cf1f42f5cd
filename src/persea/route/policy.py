"""Routes: a name a client asks for (`auto`, say) that is answered by one of several models,
chosen per request by a policy, with the others as fallbacks.

Each policy turns a request's messages into the route's entries in preference order:

- `Fallback`: as configured; an entry may be another route, whose own order is used there;
- `Weighted`: a weighted random order (each request draws its first model by weight, then
  the next from what is left, ...), so traffic splits by weight and a failure still falls
  over to the others;
- `LeastLatency`: by each model's recent latency in this gateway (`LatencyBoard`), an
  untried model first;
- `Learned`: a router trained on which model answers which prompts well enough. The
  interface between the gateway and that router is only this:

      from persea.route.learned import load_router
      router = load_router(path, served_models)  # then router.choose(messages, threshold)
      choose(messages) -> list of model names, most preferred first

  where `served_models` are the route's models (the only names `choose` may return),
  `threshold` is the route's (0 to 1) and `messages` are `{"role", "content"}` dicts (a
  plain completion's prompt comes as one user message). Names it leaves out follow in the
  configured order, so they still serve as fallbacks; if `choose` raises, the configured
  order is used and the error is logged.

  The router file names the weights it learned about (a fingerprint per model). The routes
  are built before the models load, from names only (`served_models` maps each to None);
  once the models are loaded, `Router.check_weights` hands the router the fingerprint of
  every served model (None for an endpoint, whose weights are unknown) through
  `router.check_served`, which refuses a router trained on other weights.

`build_routes` checks a configuration against the models actually served, in one place, and
says what is wrong in one line: a route naming a model that is not served, a cycle of routes,
a learned route whose router file or module is missing.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection, Mapping, Protocol, Sequence

from persea.errors import PerseaError
from persea.project import RouteSpec
from persea.route import learned

log = logging.getLogger("persea.route")

Messages = Sequence[Mapping[str, str]]
Choose = Callable[[Messages], Sequence[str]]  # what load_router returns


class Policy(Protocol):
    entries: Sequence[str]

    def order(self, messages: Messages) -> list[str]:
        """This route's entries (model or route names), most preferred first."""


class LatencyBoard:
    """Each model's recent latency in this gateway: an exponentially weighted mean of the
    seconds its successful routed attempts took (a whole answer; a stream: to its first
    token)."""

    def __init__(self, weight: float = 0.2):
        self.weight = weight
        self._mean: dict[str, float] = {}

    def observe(self, model: str, seconds: float) -> None:
        old = self._mean.get(model)
        self._mean[model] = seconds if old is None else old + self.weight * (seconds - old)

    def latency(self, model: str) -> float | None:
        return self._mean.get(model)


@dataclass
class Fallback:
    entries: list[str]

    def order(self, messages: Messages) -> list[str]:
        return list(self.entries)


@dataclass
class Weighted:
    weights: dict[str, float]
    rng: random.Random = field(default_factory=random.Random)

    @property
    def entries(self) -> list[str]:
        return list(self.weights)

    def order(self, messages: Messages) -> list[str]:
        # Efraimidis-Spirakis: sorting by u^(1/w) draws a weighted order without replacement
        keys = {m: math.log(1.0 - self.rng.random()) / w for m, w in self.weights.items()}
        return sorted(self.weights, key=lambda m: -keys[m])


@dataclass
class LeastLatency:
    entries: list[str]
    board: LatencyBoard

    def order(self, messages: Messages) -> list[str]:
        def key(item):
            i, m = item
            seen = self.board.latency(m)
            return (seen is not None, seen or 0.0, i)

        return [m for _, m in sorted(enumerate(self.entries), key=key)]


@dataclass
class Learned:
    entries: list[str]
    choose: Choose
    threshold: float
    route: str = ""
    # the loaded router's check of the served weights ({model: fingerprint or None})
    check: Callable[[Mapping[str, str | None]], None] | None = None

    def order(self, messages: Messages) -> list[str]:
        try:
            chosen = [m for m in self.choose(messages) if m in self.entries]
        except Exception as err:  # noqa: BLE001 - a router bug must not fail the request
            log.error("learned router of route %s failed (%s); using the configured order",
                      self.route, type(err).__name__)
            chosen = []
        seen = list(dict.fromkeys(chosen))
        return seen + [m for m in self.entries if m not in seen]


@dataclass
class Route:
    name: str
    policy: Policy
    max_attempts: int = 3
    deadline_s: float = 60.0
    attempt_timeout_s: float | None = None


class Router:
    """The routes of one gateway and what they share: each model's breaker (persea.route.
    breaker) and latency."""

    def __init__(self, routes: Mapping[str, Route], breaker, latency: LatencyBoard | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.routes = dict(routes)
        self.breaker = breaker
        self.latency = latency or LatencyBoard()
        self.clock = clock  # for deadlines (monotonic); the breaker has its own

    def get(self, name: str) -> Route | None:
        return self.routes.get(name)

    def order(self, name: str, messages: Messages) -> list[str]:
        """The models that may answer route `name` for these messages, most preferred
        first, each once (nested routes expanded in place)."""
        out: list[str] = []

        def expand(route: Route) -> None:
            for entry in route.policy.order(messages):
                inner = self.routes.get(entry)
                if inner is not None:
                    expand(inner)
                elif entry not in out:
                    out.append(entry)

        expand(self.routes[name])
        return out

    def models(self, name: str) -> list[str]:
        """Every model route `name` can reach, whatever the policy draws."""
        out: list[str] = []

        def walk(route: Route) -> None:
            for entry in route.policy.entries:
                inner = self.routes.get(entry)
                if inner is not None:
                    walk(inner)
                elif entry not in out:
                    out.append(entry)

        walk(self.routes[name])
        return out

    def check_weights(self, fingerprints: Mapping[str, str | None]) -> None:
        """Refuse (PerseaError, one line) a learned route whose router was trained on other
        weights than the served ones; `fingerprints` holds each served model's (None: not
        known, as for an endpoint, and not checked)."""
        for name, route in self.routes.items():
            check = getattr(route.policy, "check", None)
            if check is None:
                continue
            try:
                check({m: fingerprints.get(m) for m in route.policy.entries})
            except PerseaError as err:
                raise PerseaError(f"serve.routes.{name}.router: {err.message}") from None

    async def aclose(self) -> None:
        await self.breaker.aclose()


def _check_graph(specs: Mapping[str, RouteSpec], served: Collection[str]) -> None:
    shown = ", ".join(sorted(served)) or "none"
    for name, spec in specs.items():
        for entry in spec.names:
            if entry in specs:
                if spec.policy != "fallback":
                    raise PerseaError(f"serve.routes.{name}: `{entry}` is a route; a "
                                      f"{spec.policy} route chooses between served models "
                                      "only (a fallback route may name routes)")
            elif entry not in served:
                raise PerseaError(f"serve.routes.{name}: `{entry}` is neither a served "
                                  f"model ({shown}) nor a route")
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def walk(name: str, path: list[str]) -> None:
        state[name] = 1
        for entry in specs[name].names:
            if entry not in specs:
                continue
            if state.get(entry) == 1:
                cycle = path[path.index(entry):] + [name, entry] if entry in path \
                    else [name, entry]
                raise PerseaError("serve.routes: a cycle of fallbacks: "
                                  + " -> ".join(cycle) + "; a route may not reach itself")
            if entry not in state:
                walk(entry, path + [name])
        state[name] = 2

    for name in specs:
        if name not in state:
            walk(name, [])


def load_learned(route: str, router_file: Path, models: Sequence[str],
                 threshold: float) -> Learned:
    """The learned route `route`, its router loaded and checked against the served model
    names, or PerseaError in one line."""
    if not 0 <= threshold <= 1:
        raise PerseaError(f"serve.routes.{route}.threshold: {threshold} is out of range "
                          "(0 to 1)")
    if not router_file.is_file():
        raise PerseaError(f"serve.routes.{route}.router: no router file at {router_file}; "
                          "train one with `persea route train`")
    try:
        # names only: the weights are checked once the models are loaded (check_weights)
        router = learned.load_router(router_file, {m: None for m in models})
    except PerseaError as err:
        raise PerseaError(f"serve.routes.{route}.router: {err.message}") from None
    except Exception as err:  # noqa: BLE001 - a damaged file: one line, not a traceback
        raise PerseaError(f"serve.routes.{route}.router: cannot load {router_file} "
                          f"({type(err).__name__}: {err})") from None
    check = getattr(router, "check_served", None)
    where = f"router {router_file}"
    return Learned(list(models), lambda messages: router.choose(messages, threshold),
                   threshold, route,
                   None if check is None else lambda served: check(served, where))


def build_routes(specs: Mapping[str, RouteSpec], served: Collection[str], *,
                 root: Path = Path("."), latency: LatencyBoard | None = None,
                 rng: random.Random | None = None) -> tuple[dict[str, Route], LatencyBoard]:
    """Routes from their configuration, checked against the `served` model names; a
    relative router path counts from `root` (the project directory)."""
    _check_graph(specs, served)
    latency = latency or LatencyBoard()
    rng = rng or random.Random()
    routes: dict[str, Route] = {}
    for name, spec in specs.items():
        if spec.policy == "fallback":
            policy: Policy = Fallback(spec.names)
        elif spec.policy == "weighted":
            policy = Weighted(dict(spec.models), rng)
        elif spec.policy == "least_latency":
            policy = LeastLatency(spec.names, latency)
        elif spec.policy == "learned":
            path = Path(spec.router).expanduser()
            policy = load_learned(name, path if path.is_absolute() else root / path,
                                  spec.names, spec.threshold)
        else:  # the project schema admits only the four above
            raise PerseaError(f"serve.routes.{name}.policy: unknown policy {spec.policy!r}")
        routes[name] = Route(name, policy, spec.max_attempts, spec.deadline_s,
                             spec.attempt_timeout_s)
    return routes, latency
