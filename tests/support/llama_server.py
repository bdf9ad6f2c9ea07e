"""Run llama-cpp-python's OpenAI-compatible server on a GGUF file, on 127.0.0.1.

Used by the real-peer test of the remote backend and by benchmarks/bench_remote.py.
"""
from __future__ import annotations

import contextlib
import importlib.util
import socket
import subprocess
import sys
import time
from typing import Iterator

import httpx


@contextlib.contextmanager
def llama_cpp_server(gguf: str, *, port: int = 0, n_ctx: int = 2048, n_threads: int | None = None,
                     startup_timeout: float = 300.0, log_path: str | None = None) -> Iterator[str]:
    """Run ``llama_cpp.server`` (llama-cpp-python[server]) on a GGUF file; yields its
    OpenAI base URL (``http://127.0.0.1:PORT/v1``) and stops the server on exit.

    ``logits_all`` is switched on: the server refuses ``logprobs`` without it.

    Raises:
        RuntimeError: the package is missing, or the server did not answer in time.
    """
    if importlib.util.find_spec("llama_cpp") is None:
        raise RuntimeError("llama_cpp_server needs llama-cpp-python[server]: pip install 'llama-cpp-python[server]'")
    host = "127.0.0.1"
    if port == 0:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", host, "--port", str(port),
           "--logits_all", "true", "--n_ctx", str(n_ctx)]
    if n_threads:
        cmd += ["--n_threads", str(n_threads)]
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(log_path, "w")) if log_path else subprocess.DEVNULL
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        stack.callback(_stop, proc)
        base = f"http://{host}:{port}/v1"
        _wait_until_up(proc, base, cmd, startup_timeout)
        yield base


def _wait_until_up(proc: subprocess.Popen, base: str, cmd: list[str], startup_timeout: float) -> None:
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited with code {proc.returncode} ({' '.join(cmd)})")
        try:
            if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"llama_cpp.server did not answer within {startup_timeout} s")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
