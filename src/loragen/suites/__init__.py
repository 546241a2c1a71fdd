"""Built-in offline benchmark suites, by name."""

from __future__ import annotations

import inspect

from loragen.errors import ConfigError, UnknownTaskError

SUITES = ["digits-domains", "text-topics", "digits-gen", "llm-tasks", "digits-control"]


def get_suite(name: str, **kwargs):
    """Build a suite by name; raises with the known names (or the arguments the suite takes) otherwise."""
    if name == "digits-domains":
        from loragen.suites.digits_domains import DigitsDomains as cls
    elif name == "text-topics":
        from loragen.suites.text_topics import TextTopics as cls
    elif name == "digits-gen":
        from loragen.suites.digits_gen import DigitsGen as cls
    elif name == "llm-tasks":
        from loragen.suites.llm_tasks import LlmTasks as cls
    elif name == "digits-control":
        from loragen.suites.digits_control import DigitsControl as cls
    else:
        raise UnknownTaskError(f"unknown suite {name!r}; expected one of {SUITES}")
    accepted = set(inspect.signature(cls).parameters)
    if set(kwargs) - accepted:
        raise ConfigError(f"suite {name!r} does not take {sorted(set(kwargs) - accepted)}; it takes {sorted(accepted)}")
    return cls(**kwargs)
