"""ApiKey: the shared secret every route but health asks for, as `Authorization: Bearer <key>`, `X-API-Key: <key>`,
or HTTP Basic credentials whose password is the key (any user name): what a browser sends for the page and the
docs once it has asked for them, since a navigation cannot carry a custom header."""

from __future__ import annotations

import base64
import binascii
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
        """The key a request carries, from any of the three forms; None when it carries none."""
        auth = headers.get("authorization") or ""
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        if auth.lower().startswith("basic "):
            try:
                return base64.b64decode(auth[6:].strip(), validate=True).decode().partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                return ""  # malformed credentials: a wrong key
        return headers.get("x-api-key")

    def problem(self, headers) -> str | None:
        """None when the request carries the key, else what is wrong (for a 401 body)."""
        given = self.presented(headers)
        if given is None:
            return ("expected an API key in 'Authorization: Bearer <key>', 'X-API-Key: <key>' or as the password of "
                    "HTTP Basic credentials; found none")
        if not hmac.compare_digest(given.encode(), self._key):
            return "expected the server's API key; found a different key"
        return None
