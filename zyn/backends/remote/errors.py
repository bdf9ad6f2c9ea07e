"""What the remote backend raises when a server fails, refuses, or answers nonsense."""
from __future__ import annotations

from ...errors import ZynError


class RemoteError(RuntimeError):
    """The remote server failed, or answered something that cannot be read. Its message
    never shows a URL's user and password or a key in its query (it reaches logs and
    the reward server's answers)."""

    def __init__(self, message: str = "", *args):
        from ...model import public_name

        super().__init__(public_name(str(message)), *args)


class RemoteStatusError(RemoteError):
    """The server answered an HTTP error that retrying will not fix.

    Attributes:
        status: the HTTP status code.
        body: the answer's JSON body (None if it was not JSON).
        url: the URL requested.
    """

    def __init__(self, message: str, status: int, body, url: str):
        from ...model import public_name

        super().__init__(message)
        self.status, self.body, self.url = status, body, public_name(url)


class RemoteModelError(RemoteError, ZynError):
    """The server does not serve the model name zyn sent."""
