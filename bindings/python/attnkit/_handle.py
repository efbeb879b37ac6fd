"""What every attnkit object shares: close(), the closed flag and the context-manager protocol."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Optional, Type, TypeVar

_H = TypeVar("_H", bound="Handle")


class Handle:
    """Owns one C object (``self._native``). close() frees it now (idempotent); otherwise it is freed
    when the Python object is collected. Calls after close() raise attnkit.FailedPrecondition."""

    __slots__ = ("_native", "__weakref__")
    _native: Any  # the extension object (attnkit._attnkit.Session, ...)

    def close(self) -> None:
        """Frees the C object. Safe to call twice; a call running in another thread finishes first."""
        self._native.close()

    @property
    def closed(self) -> bool:
        """True after close()."""
        return bool(self._native.closed)

    def __enter__(self: _H) -> _H:
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 traceback: Optional[TracebackType]) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<attnkit.{type(self).__name__} {state}>"
