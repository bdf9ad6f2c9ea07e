"""The transformers engine (see `backend` for the layout of the package)."""
from .backend import HFBackend
from .runner import cache_keyword

__all__ = ["HFBackend", "cache_keyword"]
