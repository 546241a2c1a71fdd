"""Built-in offline benchmark suites, by name."""

from __future__ import annotations

from loragen.errors import UnknownTaskError


def get_suite(name: str, **kwargs):
    """Build a suite by name; raises with the known names otherwise."""
    if name == "digits-domains":
        from loragen.suites.digits_domains import DigitsDomains

        return DigitsDomains(**kwargs)
    raise UnknownTaskError(f"unknown suite {name!r}; expected one of {SUITES}")


SUITES = ["digits-domains"]
