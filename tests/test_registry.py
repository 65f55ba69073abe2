"""The one registry type (normexp/registry.py): the decorator names the class, the lookup's error names the
key, the bad name and every choice in one line; norms and probes are registries of it."""

import pytest

from normexp.errors import ConfigError
from normexp.norms import NORMS, norm_class
from normexp.probes import PROBES
from normexp.registry import Registry


def test_register_and_look_up_with_a_one_line_error():
    reg = Registry("thing.name")

    @reg.register("b")
    class B:
        pass

    @reg.register("a")
    class A:
        pass

    assert reg.lookup("a") is A and A.registry_name == "a" and list(reg) == ["b", "a"]
    with pytest.raises(ConfigError) as bad:
        reg.lookup("c")
    assert str(bad.value) == "thing.name='c' is not valid: choose one of: a, b"


def test_norms_and_probes_are_registries():
    assert isinstance(NORMS, Registry) and isinstance(PROBES, Registry)
    assert norm_class("group").registry_name == "group" and PROBES["hessian"].name == "hessian"
    with pytest.raises(ConfigError, match=r"^norm.name='gorup' is not valid: choose one of: .*group"):
        norm_class("gorup")
