"""Whether the Hugging Face hub can be reached, asked once per process.

On a machine without network, transformers and datasets retry each request with back-off
for ~23 s (printing a warning per retry) before they look in their local cache or fail.
`unreachable` asks once, with a TCP connection to the hub's endpoint (or to the proxy the
environment names for it) that gives up after `TIMEOUT` seconds; where it fails, loads run
in the libraries' offline mode: a model or dataset in the local hub cache still loads, any
other fails at once, saying why.
"""
from __future__ import annotations

import contextlib
import functools
import threading

TIMEOUT = 3.0
_lock = threading.Lock()


def unreachable() -> str | None:
    """None where the hub may be reached; otherwise why not, as a phrase for an error message.

    ``HF_HUB_OFFLINE=1`` counts as unreachable without a probe. The probe's answer is kept
    for the process (`reset` forgets it).
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    return _probe(constants.ENDPOINT)


def reset() -> None:
    """Forget the probe's answer (the next `unreachable` asks again)."""
    _probe.cache_clear()


@functools.lru_cache(maxsize=None)
def _probe(endpoint: str) -> str | None:
    import socket  # here, not at import: zyn's start does not pay for them
    import urllib.parse
    import urllib.request

    url = urllib.parse.urlsplit(endpoint)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    via = ""
    proxy = None if urllib.request.proxy_bypass(host) else _proxy(url.scheme)
    if proxy:  # the connection goes to the proxy (named without any credentials in its URL)
        p = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = p.hostname or "", p.port or (443 if p.scheme == "https" else 80)
        via = f" through the proxy {host}:{port}"
    outcome: list[str | None] = []

    def connect() -> None:  # in a thread: name resolution has no timeout of its own
        try:
            socket.create_connection((host, port), timeout=TIMEOUT).close()
            outcome.append(None)
        except OSError as e:
            outcome.append(e.strerror or str(e) or type(e).__name__)

    t = threading.Thread(target=connect, daemon=True, name="zyn-hub-probe")
    t.start()
    t.join(TIMEOUT + 0.5)
    failure = outcome[0] if outcome else f"no answer within {TIMEOUT:g} s"
    return None if failure is None else f"the model hub {endpoint} cannot be reached{via} ({failure})"


def _proxy(scheme: str) -> str | None:
    import urllib.parse
    import urllib.request

    proxies = urllib.request.getproxies()
    return proxies.get(scheme) or proxies.get("all")


@contextlib.contextmanager
def datasets_offline_if_unreachable():
    """Run a ``datasets.load_dataset`` call in datasets' offline mode when the hub is unreachable
    (datasets has no per-call switch for it; its module setting is set and restored under a lock)."""
    if not unreachable():
        yield
        return
    import datasets.config

    with _lock:
        before = datasets.config.HF_HUB_OFFLINE
        datasets.config.HF_HUB_OFFLINE = True
        try:
            yield
        finally:
            datasets.config.HF_HUB_OFFLINE = before
