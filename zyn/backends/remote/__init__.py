"""The remote backend: score through an OpenAI-compatible or vLLM server.

    protocols   request bodies and answer parsing, checked numbers (pure)
    http        JSON over HTTP with retries and a total deadline per request
    encoding    queries as token ids (chat template, /tokenize), cut to the context
    backend     OpenAIBackend: mode choice, batching, regrouping into LogOdds
"""
from .backend import OpenAIBackend, RemoteLogOdds
from .errors import RemoteError, RemoteModelError, RemoteStatusError
from .protocols import FLAGS

__all__ = ["FLAGS", "OpenAIBackend", "RemoteError", "RemoteLogOdds", "RemoteModelError", "RemoteStatusError"]
