"""Profiles: a profile file holds only the params.yaml keys it changes (null removes one); applying it
writes them into params.yaml, leaving every other key, and the file's comments and layout, as they were. So
`dvc params diff` after `tumorbench profile paper` shows exactly the profile's changes.
"""

from __future__ import annotations

import io
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from tumorbench.core.fileio import atomic_write_text
from tumorbench.core.params import ParamsError, load_params

PROFILES = Path("profiles")


def _yaml() -> YAML:
    yaml = YAML()  # round-trip: keeps comments, key order and flow style
    yaml.preserve_quotes = True
    yaml.width = 4096  # long lists stay on one line instead of wrapping with trailing spaces
    return yaml


def merge(base, overrides, profile: Path, prefix: str = "") -> list[str]:
    """Write `overrides` into `base` as a JSON merge patch (RFC 7386) does: mappings merged key by key,
    null removes a key, anything else replaces it whole. Returns the dotted keys that changed. A key
    params.yaml lacks is an error (a typo would otherwise pass silently)."""
    changed = []
    for key, value in overrides.items():
        dotted = f"{prefix}{key}"
        if value is None and key not in base:
            continue  # removed already
        if key not in base:
            raise ParamsError(f"{profile}: {dotted} is not a key of params.yaml; check its spelling")
        if value is None:
            del base[key]
            changed.append(dotted)
        elif isinstance(value, dict) and isinstance(base[key], dict):
            changed += merge(base[key], value, profile, f"{dotted}.")
            if not base[key]:  # ruamel writes an emptied block mapping that had comments as invalid YAML
                base[key] = CommentedMap()
                base[key].fa.set_flow_style()
        elif base[key] != value:
            base[key] = value
            changed.append(dotted)
    return changed


def profile_path(name: str) -> Path:
    """profiles/<name>.yaml, or `name` itself when it is a path to a file."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    path = PROFILES / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PROFILES.glob("*.yaml")) if PROFILES.is_dir() else []
        raise ParamsError(f"no profile {name!r}: {path} does not exist (known: {known}); run from the project root")
    return path


def apply_profile(profile: Path, params_path: Path = Path("params.yaml")) -> list[str]:
    """Write the profile's keys into params.yaml (atomically, checked before it is written)."""
    yaml = _yaml()
    params = yaml.load(params_path.read_text())
    overrides = yaml.load(profile.read_text()) or {}
    changed = merge(params, overrides, profile)
    out = io.StringIO()
    yaml.dump(params, out)
    candidate = params_path.with_name(f".{params_path.name}.profile")
    candidate.write_text(out.getvalue())
    try:
        load_params(candidate)  # an invalid result fails here, before params.yaml changes
    finally:
        candidate.unlink(missing_ok=True)
    atomic_write_text(params_path, out.getvalue())
    return changed
