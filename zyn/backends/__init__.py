"""Backends read answer log-odds from a model: transformers in-process (`hf`), or a
remote engine (`remote`). Their contract is `zyn.api.Backend`."""
from ..api import Backend, LogOdds, Query

__all__ = ["Backend", "LogOdds", "Query"]
