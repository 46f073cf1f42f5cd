"""Deciding, before any download starts, whether the Hugging Face hub can be reached.

A hub id offline must fail at once with a message, never hang on retries: the environment
flags are honoured first, then a short TCP connect to the hub's host settles it.
"""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlparse

_TRUE = {"1", "true", "yes", "on"}


def offline_by_env() -> str | None:
    """The name of the environment variable that says we are offline, if one does."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "PERSEA_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return var
    return None


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def reachable(url: str, timeout: float = 3.0) -> bool:
    """True if a TCP connection to the URL's host and port opens within `timeout` seconds
    (name resolution included, which is done in a thread so that it cannot hang us)."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    result: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return bool(result and result[0])
