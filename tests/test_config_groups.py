"""Every config group and its registry name the same things: each ``configs/<group>/*.yaml`` names (``name:``)
an entry of the group's registry, and every registry entry has a YAML that names it; every probe of the
registry has its section in ``configs/probes/all.yaml``. A class without its YAML, or a YAML naming nothing,
fails here rather than at a user's command line."""

from pathlib import Path

import pytest
import yaml

from normexp.config import CONFIG_DIR
from normexp.data import SOURCES
from normexp.loggers import LOGGERS
from normexp.models import MODELS
from normexp.norms import NORMS
from normexp.optim import SCHEDULES
from normexp.probes import PROBES

REGISTRIES = {"norm": NORMS, "model": MODELS, "data": SOURCES, "schedule": SCHEDULES, "logger": LOGGERS}


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
