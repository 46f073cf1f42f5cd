"""Routing: one API name answered by one of several models (the project's own, built-in
teachers, upstream rivals), with fallbacks, a circuit breaker per model and balancing.

`persea.route.policy` holds the routes and their policies (and the interface a learned
router implements); `persea.route.breaker` the breakers, in memory or shared through Redis.
The gateway (`persea.serve.gateway`) asks a `Router` for a request's models in order and
tries them; this package knows nothing of HTTP or money.
"""
