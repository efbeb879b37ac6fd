"""What every attnkit object shares: close(), the closed flag and the context-manager protocol."""


class Handle:
    """Owns one C object (``self._native``). close() frees it now (idempotent); otherwise it is freed
    when the Python object is collected. Calls after close() raise attnkit.FailedPrecondition."""

    __slots__ = ("_native", "__weakref__")

    def close(self):
        """Frees the C object. Safe to call twice; a call running in another thread finishes first."""
        self._native.close()

    @property
    def closed(self):
        return self._native.closed

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        self.close()
        return False

    def __repr__(self):
        state = "closed" if self.closed else "open"
        return f"<attnkit.{type(self).__name__} {state}>"
