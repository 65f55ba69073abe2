"""One registry type for every config group that names a choice: a mapping of names to what the name builds
(a class, a builder function, a data source), whose lookup error names the choices in one line and whose
options are read from the builder's signature. Norms, probes, models, data sources, schedules and loggers
each keep theirs in one; ``normexp.config.validate`` loops over them."""

from __future__ import annotations

import inspect

from normexp.errors import check_choice


class Registry(dict):
    """``name -> builder`` for the config key ``key``. ``@REG.register("name")`` adds a builder (and sets its
    ``name_attribute`` when one is given); ``entries`` fills it at once."""

    def __init__(self, key: str, entries: dict | None = None, name_attribute: str | None = None):
        super().__init__(entries or {})
        self.key, self.name_attribute = key, name_attribute

    @property
    def group(self) -> str:
        """The config group (``configs/<group>/``) whose YAML files name this registry's entries."""
        return self.key.split(".")[0]

    def register(self, name: str):
        def add(builder):
            self[name] = builder
            if self.name_attribute:
                setattr(builder, self.name_attribute, name)
            return builder

        return add

    def lookup(self, name: str):
        """What ``name`` builds, or a one-line ConfigError naming ``key`` and the choices."""
        check_choice(self.key, name, self)
        return self[name]

    def options(self, name: str, leading: int = 0) -> dict[str, inspect.Parameter]:
        """The options ``name``'s builder takes, with their defaults: its signature after the ``leading``
        arguments every builder of the registry gets (a norm's channel count; a model's input shape, class
        count and norm)."""
        params = list(inspect.signature(self.lookup(name)).parameters.values())[leading:]
        return {p.name: p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
