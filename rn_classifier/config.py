"""YAML configs validated against typed dataclass schemas (OmegaConf structured configs).

Each stage declares its schema as a dataclass next to the code that uses it; this module loads
a YAML file onto the schema, applies dotted ``key=value`` overrides and returns the dataclass
instance. An unknown key or a value of the wrong type is one :class:`ConfigError` that names
the file and the key. YAML is read by OmegaConf, which uses PyYAML's safe loader (no Python
objects can be constructed from a config file); no config string is ever evaluated.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from . import atomic
from .errors import ConfigError

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS_DIR = REPO_ROOT / "configs"
# schema -> the folder of configs/ its shipped YAML files live in (a config found by name)
CONFIG_FOLDERS = {"PreprocessConfig": "preprocess", "PretrainConfig": "pretrain", "FinetuneConfig": "finetune",
                  "RadiomicsConfig": "radiomics", "PoolConfig": "pool", "StudyConfig": "study",
                  "ColumnMap": "data"}


def find_config(path: str | os.PathLike, folder: str | None = None) -> Path:
    """A config named on the command line, from any working directory: a file as given, a path
    inside the checkout (``configs/pretrain/dino_demo.yaml``), or a shipped config's name
    (``dino_demo`` or ``dino_demo.yaml`` in ``configs/<folder>/``). Raises ConfigError listing
    the shipped names when none is found."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if not p.is_absolute() and (REPO_ROOT / p).is_file():
        return REPO_ROOT / p
    if p.is_dir():
        raise ConfigError(f"config {p} is a folder; pass a YAML file")
    shipped = sorted(CONFIGS_DIR.glob(f"{folder}/*.yaml" if folder else "*/*.yaml"))
    if len(p.parts) == 1:
        name = p.name if p.suffix in (".yaml", ".yml") else f"{p.name}.yaml"
        found = [c for c in shipped if c.name == name]
        if len(found) == 1:
            return found[0]
        if found:
            raise ConfigError(f"config name {str(path)!r} is shipped several times ({[str(f.relative_to(REPO_ROOT)) for f in found]}); "
                              "pass the path")
    names = sorted({c.stem for c in shipped})
    raise ConfigError(f"config file {p} does not exist (looked in the current directory and in {REPO_ROOT}); "
                      f"shipped {folder or ''} configs by name: {names}".replace("  ", " "))


def _describe(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None) or getattr(exc, "key", None)
    msg = str(exc).splitlines()[0]
    owner = getattr(exc, "object_type", None)
    if isinstance(exc, ConfigKeyError) and dataclasses.is_dataclass(owner):  # a misspelt key
        msg += f"; expected one of {[f.name for f in dataclasses.fields(owner)]}"
    return f"key '{key}': {msg}" if key else msg


def _list_message(exc: OmegaConfBaseException, overrides: Sequence[str]) -> str | None:
    """For a scalar given to a list key (``spacing=2``): say so and how to write the list."""
    key = getattr(exc, "full_key", None)
    if not key or "is not a ListConfig" not in str(exc):
        return None
    given = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == key), None)
    if given is None:
        return f"key '{key}' is a list; write it as [a, b, c]"
    return (f"key '{key}' is a list, got {given!r}; write {key}=[{given},{given},{given}] for one value "
            "per axis (or the list it needs)")


def load_config(schema: type[T], path: str | os.PathLike | None = None,
                overrides: Sequence[str] = ()) -> T:
    """Load ``path`` (YAML) onto the dataclass ``schema``, then apply ``overrides``.

    overrides: dotted ``key=value`` strings, e.g. ``["optim.lr=1e-4", "model.name=vit3d_tiny_p8"]``.
    Returns an instance of ``schema`` (nested dataclasses are instantiated too).
    """
    if not dataclasses.is_dataclass(schema):
        raise TypeError(f"schema must be a dataclass, got {schema!r}")
    base = OmegaConf.structured(schema)
    source = "defaults"
    try:
        if path is not None:
            p = find_config(path, CONFIG_FOLDERS.get(schema.__name__))
            source = str(p)
            try:
                loaded = OmegaConf.load(p)
            except Exception as exc:  # YAML syntax error
                raise ConfigError(f"{p}: not valid YAML ({exc})") from exc
            if not isinstance(loaded, DictConfig):
                raise ConfigError(f"{p}: expected a mapping at the top level, got a list")
            base = OmegaConf.merge(base, loaded)
        if overrides:
            source = f"{source} + overrides {list(overrides)}"
            for item in overrides:
                if "=" not in item:
                    raise ConfigError(f"override '{item}' must look like key=value")
            base = OmegaConf.merge(base, OmegaConf.from_dotlist(list(overrides)))
        obj = OmegaConf.to_object(base)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{source}: {_list_message(exc, overrides) or _describe(exc)}") from exc
    return obj  # type: ignore[return-value]


def to_dict(cfg: Any) -> dict:
    """A plain dict of a config dataclass (for JSON, hashing and checkpoints)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]


def save_config(cfg: Any, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML (atomically)."""
    return atomic.write_text(path, OmegaConf.to_yaml(OmegaConf.structured(cfg)))


def json_hash(obj: Any) -> str:
    """A stable short hash of a JSON-able object (keys sorted; other values as ``str``)."""
    import hashlib
    import json

    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def config_hash(cfg: Any) -> str:
    """A stable short hash of a config, for caches and stage skipping."""
    return json_hash(to_dict(cfg))
