"""Several gateway processes on one port: `persea serve --workers N`.

One Python process is one event loop on one core. Here N worker processes each run the
whole gateway (uvicorn + the app a factory builds) and each binds its *own* listening socket
to the same address with SO_REUSEPORT, so the kernel spreads new connections over the
workers by their address hash. (One socket shared by every worker, as uvicorn's own
`--workers` does, lets whichever worker wakes first accept a whole burst of connections:
kept-alive clients then all land on one worker, which is the one-core ceiling again.)

This supervisor only starts, watches and stops them:

- a worker that exits with status 3 (it could not start: bad options, port taken) stops the
  supervisor, which returns 3, instead of restarting it forever;
- a worker that dies otherwise (killed, crashed) is replaced, at most once a second;
- SIGINT or SIGTERM: every worker gets SIGTERM and shuts down gracefully (its settles are
  written, as for one process), and the supervisor waits up to `grace` seconds for them.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import sys
import threading
import time

log = logging.getLogger("persea.serve")
STARTUP_FAILURE = 3  # as uvicorn's


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _worker(factory: str, host: str, port: int, log_level: str) -> None:
    import uvicorn

    try:
        sock = _listen(host, port)
    except OSError as err:
        log.error("gateway worker cannot listen on %s:%d: %s", host, port, err.strerror)
        sys.exit(STARTUP_FAILURE)
    config = uvicorn.Config(factory, factory=True, access_log=False, log_level=log_level)
    uvicorn.Server(config).run(sockets=[sock])


def run_workers(n: int, host: str, port: int, factory: str, *, log_level: str = "warning",
                grace: float = 60.0) -> int:
    """Run `n` workers serving `factory` ("module:function", called in each worker) on
    host:port until SIGINT/SIGTERM; returns 0, or 3 when a worker could not start."""
    ctx = multiprocessing.get_context("spawn")  # no fork of threads, pools or connections
    stop = threading.Event()
    failed = False

    def start():
        proc = ctx.Process(target=_worker, args=(factory, host, port, log_level),
                           name="persea-gateway-worker")
        proc.start()
        return proc

    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    procs = [start() for _ in range(n)]
    restarted = 0.0
    try:
        while not stop.wait(0.25):
            for i, proc in enumerate(procs):
                if proc.is_alive():
                    continue
                if proc.exitcode == STARTUP_FAILURE:
                    failed = True
                    stop.set()
                    break
                if time.monotonic() - restarted < 1.0:
                    continue  # a crash loop: at most one restart a second
                log.warning("gateway worker %d ended (%s); starting another", proc.pid,
                            proc.exitcode)
                restarted = time.monotonic()
                procs[i] = start()
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()  # SIGTERM: uvicorn shuts down gracefully
        deadline = time.monotonic() + grace
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return STARTUP_FAILURE if failed else 0
