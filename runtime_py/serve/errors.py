"""The one error type of the HTTP layer: a status, a one-line message and optional headers."""
from __future__ import annotations


class ApiError(Exception):
    """Answered as `{"error": message}` with `status` (and `headers`, e.g. Retry-After)."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = " ".join(str(message).split())  # one line, whatever the cause said
        self.headers = headers or {}
