"""The exceptions zyn raises. All are ValueError subclasses: bad input, never a crash."""


class ZynError(ValueError):
    """Base class of zyn's input errors."""


class PromptError(ZynError):
    """A prompt set (YAML file or object) is invalid, or cannot render a record."""


class AnswerError(ZynError):
    """Answer words cannot be read as single tokens of the model's tokenizer."""


class InputError(ZynError):
    """A text or record passed for scoring is malformed."""


class MissingFieldError(InputError):
    """A record lacks a field that the prompt set's templates use: the data and the
    prompt set do not match. Trainer hooks raise it rather than give the item a failure
    reward, since it would fail every item alike."""


class ModelError(ZynError):
    """A model name cannot be resolved, prepared or loaded."""


class ModelNotFoundError(ModelError, LookupError):
    """The name is not a known preset, file, folder or hub id, or a preset's packages are missing."""


class ModelIntegrityError(ModelError):
    """Weight files do not match their pinned sha256; nothing was loaded."""


class ModelDependencyError(ModelError):
    """An optional package needed to load this kind of model is not installed."""


class TruncationWarning(UserWarning):
    """Inputs longer than the model's context were cut inside their text (never the
    question or the answer cue). Python's default filter shows a warning once per
    calling line and message; ``warnings.simplefilter("always", TruncationWarning)``
    shows every call's, and `Scores.truncated` counts them per call."""
