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
from . import errors
from .errors import ConfigError

T = TypeVar("T")


def _describe(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None) or getattr(exc, "key", None)
    msg = str(exc).splitlines()[0]
    owner = getattr(exc, "object_type", None)
    if isinstance(exc, ConfigKeyError) and dataclasses.is_dataclass(owner):  # a misspelt key
        msg += f"; expected one of {[f.name for f in dataclasses.fields(owner)]}"
    return f"key '{key}': {msg}" if key else msg


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
            source = str(path)
            p = Path(path)
            if not p.is_file():
                raise ConfigError(f"config file {p} does not exist")
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
        raise ConfigError(f"{source}: {_describe(exc)}") from exc
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


def check_choice(value, key: str, choices: Sequence):
    """Refuse a config value outside its allowed set, naming the dotted key and the choices."""
    return errors.check_choice(value, key, choices, ConfigError)
