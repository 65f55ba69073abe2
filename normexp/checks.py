"""Value checks for config keys and options: ``check(key, value)`` raises :class:`ConfigError` (one line:
the key, the bad value, what is allowed) or returns None. The config schema and the probes' option checks
share them."""

from __future__ import annotations

import math

from normexp.errors import ConfigError, check_choice


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def _bounds(low, high, strict) -> str:
    text = "" if low is None else f" {'>' if strict else '>='} {low}"
    return text + ("" if high is None else f"{' and' if text else ''} {'<' if strict else '<='} {high}")


def _in_range(v, low, high, strict) -> bool:
    """``strict``: the bounds themselves are out of range."""
    above = low is None or (v > low if strict else v >= low)
    return above and (high is None or (v < high if strict else v <= high))


def integer(low=None, high=None, optional=False, exact=False):
    """An integer (``exact=False`` also takes 1e4 and 2.0: Hydra reads those as floats; the code casts)."""
    def check(key, v):
        if v is None and optional:
            return
        whole = is_int(v) or (not exact and is_number(v) and math.isfinite(v) and float(v).is_integer())
        if not (whole and _in_range(v, low, high, False)):
            or_null = " or null" if optional else ""
            raise ConfigError(key, v, f"must be an integer{_bounds(low, high, False)}{or_null}")
    return check


def number(low=None, high=None, strict=False, optional=False, finite=True):
    def check(key, v):
        if v is None and optional:
            return
        if not (is_number(v) and (math.isfinite(v) or not finite) and _in_range(v, low, high, strict)):
            or_null = " or null" if optional else ""
            raise ConfigError(key, v, f"must be a number{_bounds(low, high, strict)}{or_null}")
    return check


def flag(optional=False):
    def check(key, v):
        if not (isinstance(v, bool) or (v is None and optional)):
            raise ConfigError(key, v, "choose one of: true, false" + (", null" if optional else ""))
    return check


def one_of(*allowed):
    def check(key, v):
        check_choice(key, v, allowed)
    return check


def text(optional=False):
    def check(key, v):
        if not (isinstance(v, str) and v or (v is None and optional)):
            raise ConfigError(key, v, "must be a non-empty string" + (" or null" if optional else ""))
    return check


def steps_or_fraction(key, v):
    """A number of steps (an integer >= 0) or a fraction of the run's steps in (0, 1)."""
    if is_number(v) and 0 < v < 1:
        return
    whole = is_int(v) or (is_number(v) and math.isfinite(v) and float(v).is_integer())
    if not (whole and v >= 0):
        raise ConfigError(key, v, "must be an integer >= 0 (steps) or a fraction of the run in (0, 1)")


def list_of(item_check, what: str):
    def check(key, v):
        if not isinstance(v, (list, tuple)):
            raise ConfigError(key, v, f"must be a list of {what}")
        for i, item in enumerate(v):
            item_check(f"{key}[{i}]", item)
    return check
