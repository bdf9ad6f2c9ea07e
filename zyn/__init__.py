"""zyn: zero-shot reward models from yes/no questions to instruction-tuned LMs.

The public names are imported on first use (PEP 562), so ``import zyn`` (and the
command line's start, and a process that only reads prompt sets) does not pay for
torch and the model code until something needs them.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import AnswerError, InputError, PromptError, TruncationWarning, ZynError

__version__ = "0.1.0"

# public name -> the module that defines it
_LAZY = {
    "Scores": ".api",
    "ZeroShotRewardModel": ".model",
    "AsyncTRLReward": ".integrations.trl",
    "TRLReward": ".integrations.trl",
    "PromptSet": ".prompts",
    "Question": ".prompts",
    "available_prompt_sets": ".prompts",
    "load_prompt_set": ".prompts",
}

__all__ = [
    "ZeroShotRewardModel", "Scores", "TRLReward", "AsyncTRLReward", "PromptSet", "Question", "load_prompt_set",
    "available_prompt_sets", "ZynError", "PromptError", "AnswerError", "InputError", "TruncationWarning",
    "__version__",
]

if TYPE_CHECKING:
    from .api import Scores
    from .integrations.trl import AsyncTRLReward, TRLReward
    from .model import ZeroShotRewardModel
    from .prompts import PromptSet, Question, available_prompt_sets, load_prompt_set


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'zyn' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value  # once imported, an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
