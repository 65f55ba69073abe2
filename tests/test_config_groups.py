"""Every config group and its registry name the same things: each ``configs/<group>/*.yaml`` names (``name:``)
an entry of the group's registry, and every registry entry has a YAML that names it; every probe of the
registry has its section in ``configs/probes/all.yaml``; every optimizer YAML's ``_target_`` imports a
torch.optim.Optimizer. A class without its YAML, or a YAML naming nothing, fails here rather than at a user's
command line."""

import importlib
from pathlib import Path

import pytest
import torch
import yaml

from normexp.compose import CONFIG_DIR, config_groups
from normexp.config import NAMED
from normexp.errors import ConfigError
from normexp.models import BUILDER_ARGUMENTS
from normexp.probes import PROBES

REGISTRIES = {registry.group: registry for registry in NAMED}  # the registries validate() loops over


def named(group: str) -> dict[str, str]:
    """file stem -> the ``name`` it gives, for every YAML of the group."""
    files = sorted(Path(CONFIG_DIR, group).glob("*.yaml"))
    return {p.stem: yaml.safe_load(p.read_text())["name"] for p in files}


@pytest.mark.parametrize("group", sorted(REGISTRIES))
def test_a_config_group_and_its_registry_name_the_same_things(group):
    names = named(group)
    unknown = {stem: name for stem, name in names.items() if name not in REGISTRIES[group]}
    assert unknown == {}, f"configs/{group}/ names what the registry lacks"
    missing = set(REGISTRIES[group]) - set(names.values())
    assert missing == set(), f"registered without a configs/{group}/ YAML"


def test_every_probe_has_its_section_in_the_all_probes_config():
    sections = yaml.safe_load(Path(CONFIG_DIR, "probes", "all.yaml").read_text())
    assert set(PROBES) <= set(sections)
    for name in PROBES:
        assert set(PROBES[name].defaults) <= set(sections[name]) | {"every"}, name


def test_every_config_group_is_a_registry_the_probes_or_the_optimizers():
    assert set(config_groups()) == set(REGISTRIES) | {"probes", "optim", "launcher", "profile"}


@pytest.mark.parametrize("path", sorted(Path(CONFIG_DIR, "optim").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_optimizer_config_targets_a_torch_optimizer(path):
    module, _, name = yaml.safe_load(path.read_text())["_target_"].rpartition(".")
    assert issubclass(getattr(importlib.import_module(module), name), torch.optim.Optimizer)


@pytest.mark.parametrize("registry", NAMED, ids=lambda r: r.key)
def test_a_registry_refuses_an_unknown_name_in_one_line_naming_the_key_and_every_choice(registry):
    with pytest.raises(ConfigError) as error:
        registry.lookup("no_such_thing")
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{registry.key}='no_such_thing'")
    assert all(name in message for name in registry)


def test_every_probe_has_its_row_in_docs_probes_records_table_with_its_options():
    """docs/probes.md's table (| `name` | `option` (default), ... | keys |) is checked against the registry:
    a probe added without its row, or an option renamed in the class only, fails here."""
    rows = {}
    for line in Path(CONFIG_DIR.parent, "docs", "probes.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`") and cells[0].strip("`") in PROBES:
            rows[cells[0].strip("`")] = cells[1]
    assert set(rows) == set(PROBES)
    for name, options in rows.items():
        documented = [part.split("`")[1] for part in options.split("), ") if "`" in part]
        assert documented == list(PROBES[name].defaults), name


LEADING = {"norm": 1, "model": BUILDER_ARGUMENTS, "schedule": 1}  # arguments before a builder's options


def restates_defaults(node: dict, options: dict) -> bool:
    plain = {k: list(p.default) if isinstance(p.default, tuple) else p.default for k, p in options.items()}
    return all(value == plain[key] for key, value in node.items() if key in plain)


@pytest.mark.parametrize("group", sorted(LEADING))
def test_each_entry_has_a_yaml_that_restates_its_builders_defaults_exactly(group):
    """The defaults live in the builder's signature. Of the YAMLs naming an entry, one restates them exactly
    (configs/model/vgg_small.yaml for vgg, resnet50.yaml for tv_resnet); the others are presets (vgg11,
    resnet18). A default changed in one place only fails here."""
    registry, restating = REGISTRIES[group], set()
    for path in sorted(Path(CONFIG_DIR, group).glob("*.yaml")):
        node = yaml.safe_load(path.read_text())
        if restates_defaults(node, registry.options(node["name"], leading=LEADING[group])):
            restating.add(node["name"])
    assert set(registry) - restating == set()
