"""API keys: `Authorization: Bearer KEY`, compared in constant time against every configured key."""
from __future__ import annotations

import hmac

from .errors import ApiError


class KeyChecker:
    """No keys configured = open server (loopback only unless --allow-no-key); else 401 without a key, 403 with a wrong one."""

    def __init__(self, keys: list[str]):
        self._keys = [k.encode("utf-8") for k in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def check(self, authorization: str | None) -> None:
        if not self._keys:
            return
        if not authorization:
            raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'", {"WWW-Authenticate": "Bearer"})
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise ApiError(401, "malformed Authorization header: expected 'Bearer <key>'", {"WWW-Authenticate": "Bearer"})
        given_b = given.strip().encode("utf-8")
        ok = False
        for key in self._keys:  # no early exit: the time taken does not say which key came close
            ok |= hmac.compare_digest(key, given_b)
        if not ok:
            raise ApiError(403, "invalid API key")
