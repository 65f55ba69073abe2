"""The one exception type for bad input: it names the config key, the bad value and what is allowed."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value that cannot work. ``str()`` is a single line meant for the user."""

    def __init__(self, key: str, value, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is not valid: {allowed}")


def choices(names) -> str:
    return "choose one of: " + ", ".join(sorted(str(n) for n in names))
