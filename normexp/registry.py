"""One registry type: a mapping of names to classes, filled by a decorator, whose lookup error names the
choices in one line. Norms (``norm.name``) and probes (``probes.<name>``) keep theirs in one."""

from __future__ import annotations

from normexp.errors import check_choice


class Registry(dict):
    """``name -> class``; ``@REG.register("name")`` adds a class and sets its ``name_attribute``."""

    def __init__(self, key: str, name_attribute: str = "registry_name"):
        super().__init__()
        self.key, self.name_attribute = key, name_attribute

    def register(self, name: str):
        def add(cls):
            self[name] = cls
            setattr(cls, self.name_attribute, name)
            return cls

        return add

    def lookup(self, name: str):
        """The class registered as ``name``, or a one-line ConfigError naming ``key`` and the choices."""
        check_choice(self.key, name, self)
        return self[name]
