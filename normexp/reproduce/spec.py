"""Experiment specs: a YAML file per reproduced figure or table, layered over its folder's defaults and the
suite's defaults, and the Python hooks it names.

Three layers, each with the same keys (``base``, ``profiles``, ``params``): ``experiments/defaults.yaml``
(the profiles themselves, in report order, with the seeds every experiment gets), the folder's
``defaults.yaml`` (a paper's defaults) and the spec. A profile entry holds ``seeds``, ``grid`` (replacement
values of a cell grid's axes) and config keys; a later layer replaces the keys it names and keeps the rest.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from normexp.claims import format_value
from normexp.compose import CONFIG_DIR, group_options
from normexp.errors import ConfigError, choices

ROOT = CONFIG_DIR.parent
EXPERIMENTS_DIR = ROOT / "experiments"
SUITE_DEFAULTS = EXPERIMENTS_DIR / "defaults.yaml"
FOLDER_DEFAULTS = "defaults.yaml"
LAYER_KEYS = {"base", "profiles", "params"}
SPEC_KEYS = LAYER_KEYS | {"title", "paper", "figure", "cells", "claims", "plots", "tables", "stages"}
PROFILE_KEYS = {"seeds", "grid", "evidence"}  # the rest of a profile entry are config keys


def _read_yaml(path: Path, what: str) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(what, str(path), f"not a readable YAML file ({type(error).__name__})") from None
    if not isinstance(data, dict):
        raise ConfigError(what, str(path), "must be a YAML mapping")
    return data


def _check_keys(data: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{where}: {unknown[0]}", data[unknown[0]], "not a key here; " + choices(allowed))


def folder_layers(folder: Path) -> list[dict]:
    """A folder's ``defaults.yaml`` as layers: the folder it names under ``inherit`` (a sibling paper
    folder whose cells this one shares: the same base and params), then its own keys."""
    path = folder / FOLDER_DEFAULTS
    layer = _read_yaml(path, str(path)) if path.exists() else {}
    _check_keys(layer, LAYER_KEYS | {"inherit"}, str(path))
    parent = layer.pop("inherit", None)
    if parent is None:
        return [layer]
    if not (folder.parent / str(parent) / FOLDER_DEFAULTS).exists():
        raise ConfigError(f"{path}: inherit", parent, "the name of a sibling folder with a defaults.yaml")
    return [*folder_layers(folder.parent / str(parent)), layer]


def merge_layers(*layers: dict) -> dict:
    """``base`` lists concatenate, ``params`` and each profile's entry merge key by key (later wins); a param
    given per profile (a mapping) merges profile by profile, so a later layer names only what it changes."""
    merged: dict = {"base": [], "profiles": {}, "params": {}}
    for layer in layers:
        merged["base"] += list(layer.get("base") or [])
        for key, value in (layer.get("params") or {}).items():
            earlier = merged["params"].get(key)
            both = isinstance(earlier, dict) and isinstance(value, dict)
            merged["params"][key] = {**earlier, **value} if both else value
        for name, entry in (layer.get("profiles") or {}).items():
            merged["profiles"].setdefault(name, {}).update(entry or {})
    return merged


def suite_profiles() -> dict[str, dict]:
    """The profiles in report order (``experiments/defaults.yaml``); each is a ``configs/profile`` choice."""
    profiles = _read_yaml(SUITE_DEFAULTS, "experiments/defaults.yaml").get("profiles") or {}
    missing = [p for p in profiles if p not in group_options("profile")]
    if missing:
        raise ConfigError("experiments/defaults.yaml: profiles", missing[0],
                          "no such configs/profile file; " + choices(group_options("profile")))
    return profiles


# ---------------------------------------------------------------- overrides and cells

def override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def merge_overrides(*groups: list[str]) -> list[str]:
    """Later overrides of the same key replace earlier ones (keeping the first one's position)."""
    merged: dict[str, str] = {}
    for group in groups:
        for o in group:
            key = override_key(o)
            if key in merged and not o.startswith("+") and merged[key].startswith("+"):
                o = "+" + o  # the key is still new to the base config
            merged[key] = o
    return list(merged.values())


def override_value(v) -> str:
    """A YAML value as Hydra's override grammar reads it back."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, list):
        return "[" + ",".join(override_value(x) for x in v) + "]"
    return "null" if v is None else format_value(v)


@dataclass(frozen=True)
class CellSpec:
    name: str
    overrides: tuple[str, ...]
    pinned: tuple[str, ...] = ()  # applied after the profile's keys: no profile replaces them


def expand_cells(entries: list[dict], grid_overrides: dict | None = None) -> list[CellSpec]:
    """Cells of a spec: ``{name, overrides, grid, pinned}``; a grid expands to one cell per value combination
    and ``{key}`` in the name is replaced by the value. A profile's ``grid`` (``grid_overrides``) replaces
    axes; ``pinned`` overrides come after the profile's keys, so no profile replaces them."""
    cells = []
    for entry in entries:
        grid = {k: (grid_overrides or {}).get(k, v) for k, v in (entry.get("grid") or {}).items()}
        combos: list[dict] = [{}]
        for key, values in grid.items():
            combos = [c | {key: v} for c in combos for v in values]
        for combo in combos:
            name = entry["name"]
            for key, v in combo.items():
                name = name.replace("{" + key + "}", format_value(v))
            grid_values = (f"{k}={format_value(v)}" for k, v in combo.items())
            cells.append(CellSpec(name, (*entry.get("overrides", []), *grid_values),
                                  tuple(entry.get("pinned", []))))
    return cells


# ---------------------------------------------------------------- one experiment

@dataclass
class Experiment:
    id: str  # <folder>/<name>
    path: Path
    spec: dict  # the spec with its layers merged into base, profiles and params

    @classmethod
    def load(cls, path: Path) -> Experiment:
        path = Path(path).resolve()
        exp_id = f"{path.parent.name}/{path.stem}"
        spec = _read_yaml(path, "--spec")
        _check_keys(spec, SPEC_KEYS, exp_id)
        for key in ("title", "cells", "claims"):
            if key not in spec:
                raise ConfigError(f"{exp_id}: {key}", None, "every experiment spec needs it")
        if not isinstance(spec["claims"], dict):
            raise ConfigError(f"{exp_id}: claims", spec["claims"],
                              "a mapping of claim ids ({} for an experiment of figures and tables only)")
        suite = _read_yaml(SUITE_DEFAULTS, "experiments/defaults.yaml")
        layers = merge_layers(suite, *folder_layers(path.parent), spec)
        known = suite.get("profiles") or {}
        for name, entry in layers["profiles"].items():
            if name not in known:
                raise ConfigError(f"{exp_id}: profiles", name, "not a profile; " + choices(known))
            if "seeds" not in entry:
                raise ConfigError(f"{exp_id}: profiles.{name}.seeds", None, "every profile needs seeds")
        return cls(exp_id, path, spec | layers)

    @property
    def claim_ids(self) -> list[str]:
        return list(self.spec["claims"])

    @property
    def params(self) -> dict:
        return self.spec["params"]

    def profile(self, name: str) -> dict:
        profiles = self.spec["profiles"]
        if name not in profiles:
            raise ConfigError("--profile", name, f"{self.id} has no such profile; " + choices(profiles))
        return profiles[name]

    def profile_overrides(self, name: str) -> list[str]:
        """``profile=<name>``, then the profile entry's config keys as overrides."""
        entry = self.profile(name)
        return [f"profile={name}", *(f"{k}={override_value(v)}" for k, v in entry.items()
                                     if k not in PROFILE_KEYS)]

    def seeds(self, profile: str) -> list[int]:
        return [int(s) for s in self.profile(profile)["seeds"]]

    def evidence(self, profile: str) -> bool:
        return bool(self.profile(profile).get("evidence", True))

    def cells(self, profile: str) -> list[CellSpec]:
        return expand_cells(self.spec["cells"], self.profile(profile).get("grid"))

    def matches(self, token: str) -> bool:
        t = token.lower()
        names = (self.id.lower(), self.path.stem.lower(), self.path.parent.name.lower())
        return t in names or any(c.lower() == t or c.lower().startswith(t + "-") for c in self.claim_ids)

    def hook(self, ref: str):
        """A function of the spec's folder: ``name`` (in ``<spec name>.py``) or ``module.name``."""
        module, _, func = ref.rpartition(".")
        hooks = import_folder_module(self.path.parent, module or self.path.stem)
        if not hasattr(hooks, func):
            raise ConfigError(f"{self.id}: hook", ref, f"{hooks.__file__} has no function {func}")
        return getattr(hooks, func)


def import_folder_module(folder: Path, module: str):
    """``folder/<module>.py`` imported as a submodule of a package made of ``folder`` (so hooks may import
    their neighbours relatively), wherever the folder is on disk."""
    folder = folder.resolve()
    package = "normexp_experiments_" + folder.name.replace("-", "_") + "_" + hashlib.sha1(
        str(folder).encode()).hexdigest()[:8]
    if package not in sys.modules:
        init = folder / "__init__.py"
        if init.exists():
            spec = importlib.util.spec_from_file_location(package, init,
                                                          submodule_search_locations=[str(folder)])
        else:
            spec = importlib.machinery.ModuleSpec(package, None, is_package=True)
            spec.submodule_search_locations = [str(folder)]
        pkg = importlib.util.module_from_spec(spec)
        sys.modules[package] = pkg
        if spec.loader:
            spec.loader.exec_module(pkg)
    if not (folder / f"{module}.py").exists():
        raise ConfigError("hook", f"{module}.py", f"no such file in {folder}")
    return importlib.import_module(f"{package}.{module}")


def discover(root: Path = EXPERIMENTS_DIR) -> list[Experiment]:
    """Every spec under ``root``: ``<paper>/<name>.yaml`` (a folder's ``defaults.yaml`` is not a spec)."""
    return [Experiment.load(p) for p in sorted(Path(root).glob("*/*.yaml")) if p.name != FOLDER_DEFAULTS]


def load_specs(path: Path) -> list[Experiment]:
    """``--spec``: one spec file, or every spec of a folder."""
    path = Path(path)
    if path.is_dir():
        specs = sorted(p for p in path.glob("*.yaml") if p.name != FOLDER_DEFAULTS)
        if not specs:
            raise ConfigError("--spec", str(path), "a spec file or a folder holding spec files (*.yaml)")
        return [Experiment.load(p) for p in specs]
    if not path.exists():
        raise ConfigError("--spec", str(path), "no such file or folder")
    return [Experiment.load(path)]


def select(experiments: list[Experiment], only: str | None) -> list[Experiment]:
    if not only:
        return experiments
    tokens = [t.strip() for t in only.split(",") if t.strip()]
    for t in tokens:
        if not any(e.matches(t) for e in experiments):
            valid = sorted({c for e in experiments for c in e.claim_ids} | {e.id for e in experiments})
            raise ConfigError("--only", t, "no experiment or claim id matches; " + choices(valid))
    return [e for e in experiments if any(e.matches(t) for t in tokens)]
