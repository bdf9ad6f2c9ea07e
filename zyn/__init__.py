"""zyn: zero-shot reward models from yes/no questions to instruction-tuned LMs."""
from .errors import AnswerError, InputError, PromptError, ZynError
from .api import Scores
from .model import ZeroShotRewardModel
from .integrations.trl import AsyncTRLReward, TRLReward
from .prompts import PromptSet, Question, available_prompt_sets, load_prompt_set

__version__ = "0.1.0"

__all__ = [
    "ZeroShotRewardModel", "Scores", "TRLReward", "AsyncTRLReward", "PromptSet", "Question", "load_prompt_set",
    "available_prompt_sets", "ZynError", "PromptError", "AnswerError", "InputError", "__version__",
]
