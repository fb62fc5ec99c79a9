"""Named encoder variants (timm ``_registry.py`` / ``_factory.py`` style).

``create_model("vit3d_small_p16", img_size=64)`` builds a registered variant with its defaults,
overridden by the keyword arguments that are not ``None`` (so an unset config field never
clobbers a model default). ``register(name, **defaults)`` adds a variant.
"""

from __future__ import annotations

import fnmatch
import inspect
from typing import Any

from ..errors import InputError
from .vit3d import VisionTransformer3D

_REGISTRY: dict[str, dict[str, Any]] = {}


def register(name: str, **defaults: Any) -> None:
    """Register a ``VisionTransformer3D`` variant called ``name`` with constructor defaults."""
    if name in _REGISTRY:
        raise InputError(f"model {name!r} is already registered")
    _REGISTRY[name] = dict(defaults)


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of registered variants matching a shell-style ``pattern``."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def model_defaults(name: str) -> dict[str, Any]:
    """Constructor defaults of a registered variant (a copy)."""
    if name not in _REGISTRY:
        raise InputError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    return dict(_REGISTRY[name])


def model_setting(name: str, key: str, override: Any = None) -> Any:
    """The value of constructor argument ``key`` that ``create_model(name, key=override)`` builds
    with: the override, else the variant's default, else ``VisionTransformer3D``'s own."""
    if override is not None:
        return override
    defaults = model_defaults(name)
    if key in defaults:
        return defaults[key]
    return inspect.signature(VisionTransformer3D).parameters[key].default


def create_model(name: str, **overrides: Any) -> VisionTransformer3D:
    """Build the variant ``name``; ``overrides`` whose value is ``None`` are dropped."""
    kwargs = model_defaults(name)
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    try:
        model = VisionTransformer3D(**kwargs)
    except TypeError as exc:  # an unknown keyword from a config
        raise InputError(f"cannot build model {name!r}: {exc}") from exc
    model.arch_name = name
    return model


# Sizes of timm's ViT-Ti/S/B. The tiny variant (patch 8 on 32³ crops = 64 tokens, 4 blocks) is for
# tests and the CPU demo; small/base on 96³ crops (216 tokens) follow the paper's setting.
register("vit3d_tiny_p8", img_size=32, patch_size=8, embed_dim=192, depth=4, num_heads=3)
register("vit3d_small_p16", img_size=96, patch_size=16, embed_dim=384, depth=12, num_heads=6)
register("vit3d_base_p16", img_size=96, patch_size=16, embed_dim=768, depth=12, num_heads=12)
# The tiny encoder with a convolutional stem (issue 14): at patch 8 its tokens read the 1–2-voxel
# lesion details a linear patchify flattens away; 40³ crops put the lesion centre inside one token.
register("vit3d_tiny_conv_p8", img_size=40, patch_size=8, embed_dim=192, depth=4, num_heads=3,
         stem="conv")
# The same with the lesion's regions as input channels (models.mask_regions): on the synthetic
# diagnostic it reads the per-region intensity distributions the crop statistics are made of.
register("vit3d_tiny_conv_regions_p8", img_size=40, patch_size=8, embed_dim=192, depth=4, num_heads=3,
         stem="conv", mask_encoding="regions", in_chans=2)
