"""Exceptions mirroring attnkit's status codes (numbered like absl::StatusCode).

Every failed call raises a subclass of :class:`Error` carrying ``code`` (the numeric status code) and
``message`` (the library's text, which names the argument or config field). Argument errors are also
``ValueError`` and missing resources ``LookupError``/``MemoryError`` so generic handlers still work.
"""

from __future__ import annotations

from typing import Optional

__all__ = [
    "Error", "Cancelled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
    "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted",
    "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated",
    "from_status",
]


class Error(Exception):
    """An attnkit status other than OK. ``code`` is the numeric status code."""

    code: int = 2  # UNKNOWN, for codes without their own class

    def __init__(self, message: str, code: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class Cancelled(Error):
    code = 1


class Unknown(Error):
    code = 2


class InvalidArgument(Error, ValueError):
    code = 3


class DeadlineExceeded(Error):
    code = 4


class NotFound(Error, LookupError):
    code = 5


class AlreadyExists(Error):
    code = 6


class PermissionDenied(Error):
    code = 7


class ResourceExhausted(Error, MemoryError):
    code = 8


class FailedPrecondition(Error):
    code = 9


class Aborted(Error):
    code = 10


class OutOfRange(Error, IndexError):
    code = 11


class Unimplemented(Error, NotImplementedError):
    code = 12


class Internal(Error):
    code = 13


class Unavailable(Error):
    code = 14


class DataLoss(Error):
    code = 15


class Unauthenticated(Error):
    code = 16


_BY_CODE = {cls.code: cls for cls in Error.__subclasses__()}


def from_status(code: int, message: str) -> Error:
    """The exception for a status ``code`` and ``message`` (the extension raises what this returns)."""
    return _BY_CODE.get(code, Error)(message, code)
