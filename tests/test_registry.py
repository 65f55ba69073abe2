"""The one registry type (normexp/registry.py): the decorator adds and (when asked) names the builder, the
lookup's error names the key, the bad name and every choice in one line, the options are the builder's
signature after its leading arguments; every config group that names a choice is a registry of it."""

import pytest

from normexp.config import NAMED
from normexp.errors import ConfigError
from normexp.norms import NORMS, norm_class
from normexp.probes import PROBES
from normexp.registry import Registry


def test_register_and_look_up_with_a_one_line_error():
    reg = Registry("thing.name", name_attribute="registry_name")

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


def test_entries_at_once_and_options_from_the_signature():
    def build(in_shape, num_classes, width: int = 4, *extra, depth=(1, 2), **more):
        return width

    reg = Registry("model.name", {"m": build})
    assert reg.group == "model" and not hasattr(build, "registry_name")
    options = reg.options("m", leading=2)
    assert list(options) == ["width", "depth"]  # *args and **kwargs are no options
    assert options["width"].default == 4 and options["depth"].default == (1, 2)
    with pytest.raises(ConfigError, match=r"^model.name='n' is not valid: choose one of: m$"):
        reg.options("n")


def test_norms_probes_and_every_named_config_group_are_registries():
    assert all(isinstance(r, Registry) for r in (NORMS, PROBES, *NAMED))
    assert [r.key for r in NAMED] == ["model.name", "norm.name", "data.name", "schedule.name", "logger.name"]
    assert norm_class("group").registry_name == "group" and PROBES["hessian"].name == "hessian"
    with pytest.raises(ConfigError, match=r"^norm.name='gorup' is not valid: choose one of: .*group"):
        norm_class("gorup")
