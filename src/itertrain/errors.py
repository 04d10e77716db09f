"""The one exception type for problems a user can cause and fix."""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """Bad input or configuration: the message says what, where and how to fix it.

    The CLI prints the message on one line and exits with status 2, without a
    traceback. Library callers catch it like any other exception.
    """
