"""ApiKey: the shared secret every route but health asks for, as `Authorization: Bearer <key>` or `X-API-Key: <key>`."""

from __future__ import annotations

import hmac
from pathlib import Path

from loragen.errors import ConfigError


class ApiKey:
    """A key read from a file (surrounding whitespace ignored); `check` compares in constant time."""

    MIN_CHARS = 16  # shorter keys are guessable

    def __init__(self, key: str):
        if len(key) < self.MIN_CHARS:
            raise ConfigError(f"an API key needs at least {self.MIN_CHARS} characters; found {len(key)}")
        self._key = key.encode()

    @classmethod
    def from_file(cls, path: str | Path) -> "ApiKey":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"expected an API key file at {path}; found {'a folder' if path.exists() else 'nothing'}")
        return cls(path.read_text().strip())

    @staticmethod
    def presented(headers) -> str | None:
        """The key a request carries, from either header; None when it carries none."""
        auth = headers.get("authorization")
        if auth and auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return headers.get("x-api-key")

    def problem(self, headers) -> str | None:
        """None when the request carries the key, else what is wrong (for a 401 body)."""
        given = self.presented(headers)
        if given is None:
            return "expected an API key in 'Authorization: Bearer <key>' or 'X-API-Key: <key>'; found none"
        if not hmac.compare_digest(given.encode(), self._key):
            return "expected the server's API key; found a different key"
        return None
