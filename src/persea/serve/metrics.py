"""Prometheus metrics of one gateway: requests, tokens, latency and refusals.

Each app gets its own registry (several gateways in one test process must not share
counters). Labels are bounded sets: the route template (never the raw path), the status code,
the served model name, a fixed list of refusal reasons — never a key, an org or a prompt.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
                   30, 60)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("persea_requests_total", "HTTP requests answered",
                                ["route", "status"], registry=r)
        self.latency = Histogram("persea_request_seconds",
                                 "Time to the full answer (streams: to the last chunk)",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.tokens_in = Counter("persea_prompt_tokens_total", "Prompt tokens charged",
                                 ["model"], registry=r)
        self.tokens_out = Counter("persea_completion_tokens_total",
                                  "Completion tokens charged", ["model"], registry=r)
        self.rejections = Counter("persea_rejections_total", "Requests refused, by reason",
                                  ["reason"], registry=r)
        self.backend_errors = Counter("persea_backend_errors_total",
                                      "Backend failures (reservation released)", ["model"],
                                      registry=r)
        self.route_attempts = Counter("persea_route_attempts_total",
                                      "Attempts of routed requests, by route, model and outcome",
                                      ["route", "model", "outcome"], registry=r)
        self.in_flight = Gauge("persea_requests_in_flight", "Requests being generated",
                               ["model"], registry=r)

        self._children: dict = {}

    def child(self, metric, *labels: str):
        """`metric.labels(*labels)`, kept: prometheus_client checks and joins the labels on
        every call, six times a request; the label sets are bounded, so is this."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.child(self.requests, route, str(status)).inc()
        self.child(self.latency, route).observe(seconds)

    def charged(self, model: str, prompt_tokens: int, completion_tokens: int) -> None:
        self.child(self.tokens_in, model).inc(prompt_tokens)
        self.child(self.tokens_out, model).inc(completion_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
