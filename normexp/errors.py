"""The one exception type for bad input: it names the config key, the bad value and what is allowed."""

from __future__ import annotations

import argparse
import sys


def printable(text) -> str:
    """``text`` on one line: line breaks and other control characters are shown escaped."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(text))


class ConfigError(ValueError):
    """A config value that cannot work. ``str()`` is a single line meant for the user, whatever the input."""

    def __init__(self, key: str, value, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{printable(key)}={printable(repr(value))} is not valid: {printable(allowed)}")


def first_line(error: Exception) -> str:
    """An exception's first non-empty line (torch's and Hydra's messages run over several)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def choices(names) -> str:
    return "choose one of: " + ", ".join(sorted(str(n) for n in names))


def check_choice(key: str, value, allowed) -> None:
    """Refuse ``value`` unless it is one of ``allowed`` (a registry's names or a tuple of values)."""
    if not isinstance(value, (str, int, float, type(None))) or value not in allowed:
        raise ConfigError(key, value, choices(allowed))


class OneLineParser(argparse.ArgumentParser):
    """A command line parser whose usage errors are one line (``PROG: error: ...``) and exit 2."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)
