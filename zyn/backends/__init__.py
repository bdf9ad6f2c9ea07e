"""Backends read answer log-odds from a model: transformers in-process, or a remote engine."""
from .base import Backend, Query

__all__ = ["Backend", "Query"]
