"""Self-supervised methods, one registry entry each (timm ``_registry.py`` style).

An :class:`SSLMethod` names everything pretraining needs from a method: its config section (a
dataclass, read from the YAML key of the method's name: ``dino:``, ``mae:``), the checks of
that section, the crop sizes the encoder sees, the per-sample view transform of the data
loader, the batched one for on-device augmentation, the per-step schedule values it adds, and
the LightningModule that trains it. ``cfg.method`` is looked up here; an unknown name is one
error that lists the known ones. Adding a method is a module that builds its spec and calls
:func:`register_method`, and its import in ``pretrain/methods/__init__.py`` (or, outside the
package, importing that module before the config is loaded)::

    @dataclass
    class IbotConfig:
        global_crop_size: int = 32
        ...

    register_method(SSLMethod(
        name="ibot", config=IbotConfig, check=check_ibot,
        crop_sizes=lambda c: {"global_crop_size": c.global_crop_size, "local_crop_size": c.local_crop_size},
        loader_views=lambda c, aug: IbotViews(c, aug), device_views=None,
        module=lambda: IbotModule))

The config schema of a run is :func:`pretrain_schema`: the shared sections of
:class:`~rn_classifier.pretrain.config.PretrainConfig` plus one section per registered method.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...errors import ConfigError
from ..config import PretrainConfig, check_shared_sections


@dataclass(frozen=True)
class SSLMethod:
    """What pretraining needs from one self-supervised method.

    name: the value of ``method:`` and the YAML key of the method's config section.
    config: dataclass of that section (its defaults are the method's defaults).
    check(section, cfg): raise :class:`~rn_classifier.errors.InputError` for a setting that cannot
        train (key names as the user writes them, e.g. ``dino.local_crop_size``).
    crop_sizes(section): ``{key: size}`` of the cubic views the encoder sees, keyed by the
        section's key, the crop the encoder is built and exported for first
        (``{"global_crop_size": 32, "local_crop_size": 16}``).
    loader_views(section, augment): the per-sample transform of the data loader,
        ``volume (1, X, Y, Z), seed → [views]`` (:mod:`rn_classifier.pretrain.augment`).
    device_views(section, augment): the batched transform for ``data.augment_on: device``,
        ``x (B, 1, X, Y, Z), seed → [views]`` (:mod:`rn_classifier.pretrain.batch_augment`);
        None: views are made in the loader only.
    module(): the :class:`~rn_classifier.pretrain.base_module.PretrainModule` subclass, built as
        ``module(cfg, schedules, global_batch_size, device_augment)`` (a function, so that the
        registry is read without importing Lightning).
    schedules(section): keyword arguments of
        :func:`~rn_classifier.pretrain.schedules.build_schedules` the method adds (DINO: teacher
        momentum and temperature).
    bf16_on_cpu: whether ``trainer.precision: auto`` trains it in bf16-mixed on a CPU with AMX
        (bf16 autocast measured faster than fp32 for its step by
        ``benchmarks/pretrain_throughput.py``); on a GPU auto is always bf16-mixed.
    reads_mask: the views are two-channel ``(T1CE, lesion mask)``, as fine-tuning reads them, and
        only sub-volumes centred on a lesion are used (a pool with segmentations, or the internal
        training lesions); the encoder is built and exported with 2 input channels. False: the
        T1CE channel of every sub-volume (DINO, MAE).
    """

    name: str
    config: type
    check: Callable[[Any, PretrainConfig], None]
    crop_sizes: Callable[[Any], dict[str, int]]
    loader_views: Callable[[Any, Any], Callable]
    module: Callable[[], type]
    device_views: Callable[[Any, Any], Callable] | None = None
    schedules: Callable[[Any], dict] = field(default=lambda section: {})
    bf16_on_cpu: bool = False
    reads_mask: bool = False


METHODS: dict[str, SSLMethod] = {}
_SHARED_FIELDS = frozenset(f.name for f in dataclasses.fields(PretrainConfig))


def register_method(method: SSLMethod) -> SSLMethod:
    """Add ``method`` to the registry (a name already taken is replaced)."""
    if method.name in _SHARED_FIELDS:
        raise ValueError(f"SSL method name {method.name!r} is a shared config section of PretrainConfig")
    METHODS[method.name] = method
    return method


def list_methods() -> list[str]:
    return sorted(METHODS)


def get_method(name: str) -> SSLMethod:
    """The registered method ``name``; an unknown name is a ConfigError listing the known ones."""
    if name not in METHODS:
        raise ConfigError(f"method must be one of {list_methods()}, got {name!r}")
    return METHODS[name]


def method_section(cfg: PretrainConfig) -> Any:
    """The config section of the run's method (``cfg.dino`` for ``method: dino``)."""
    return getattr(cfg, get_method(cfg.method).name)


def encoder_crop_size(cfg: PretrainConfig) -> int:
    """The crop size the encoder is built for (and exported with): the method's first view."""
    return next(iter(crop_sizes(cfg).values()))


def crop_sizes(cfg: PretrainConfig) -> dict[str, int]:
    """The view sizes the encoder sees, by config key (DINO: ``global_crop_size``, ``local_crop_size``)."""
    method = get_method(cfg.method)
    return dict(method.crop_sizes(getattr(cfg, method.name)))


_SCHEMAS: dict[tuple, type] = {}


def pretrain_schema() -> type[PretrainConfig]:
    """The config dataclass of a pretraining run: :class:`PretrainConfig`'s shared sections plus
    one section per registered method, named like the method, with its defaults."""
    sections = tuple((m.name, m.config) for m in METHODS.values())
    if sections not in _SCHEMAS:
        schema = dataclasses.make_dataclass(
            "PretrainConfig", [(name, config, field(default_factory=config)) for name, config in sections],
            bases=(PretrainConfig,))
        schema.__module__ = __name__
        _SCHEMAS[sections] = schema
    return _SCHEMAS[sections]


def new_pretrain_config(**values) -> PretrainConfig:
    """A config with every registered method's section at its defaults (for code and tests)."""
    return pretrain_schema()(**values)


def load_pretrain_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> PretrainConfig:
    """The pretraining YAML with dotted overrides, on :func:`pretrain_schema`."""
    from ...config import load_config

    return load_config(pretrain_schema(), path, overrides)


def check_config(cfg: PretrainConfig) -> None:
    """Raise ``InputError`` for any setting that cannot train: the method's name and section,
    the crop sizes against the model's patch size, then the shared sections."""
    from ...errors import InputError
    from ...models import model_defaults  # unknown architecture → InputError naming the choices

    method = get_method(cfg.method)
    section = getattr(cfg, method.name)
    defaults = model_defaults(cfg.model.name)
    patch = defaults.get("patch_size", 16)
    patch = patch if isinstance(patch, int) else max(patch)
    for key, size in method.crop_sizes(section).items():
        if size <= 0 or size % patch:
            raise InputError(f"{method.name}.{key} = {size} is not a positive multiple of the patch size "
                             f"{patch} of model {cfg.model.name!r}; choose e.g. {max(patch, size // patch * patch)}")
    if cfg.data.augment_on == "device" and method.device_views is None:
        raise InputError(f"data.augment_on is 'device' but method {method.name!r} makes its views in "
                         "the data loader only; set data.augment_on to loader or auto")
    method.check(section, cfg)
    check_shared_sections(cfg)

