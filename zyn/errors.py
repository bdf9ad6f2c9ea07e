"""The exceptions zyn raises. All are ValueError subclasses: bad input, never a crash."""


class ZynError(ValueError):
    """Base class of zyn's input errors."""


class PromptError(ZynError):
    """A prompt set (YAML file or object) is invalid, or cannot render a record."""


class AnswerError(ZynError):
    """Answer words cannot be read as single tokens of the model's tokenizer."""


class InputError(ZynError):
    """A text or record passed for scoring is malformed."""
