"""Encoder export (seam 3): ``encoder.safetensors`` + ``encoder.json``, the only thing fine-tuning
needs from pretraining.

``encoder.safetensors`` holds the encoder's tensors (no classification head); ``encoder.json``
holds what rebuilds and feeds it: architecture name and constructor arguments, input channels,
patch size, crop size [voxels], voxel spacing [mm], intensity normalisation, embedding dimension,
git SHA, the pretraining config and a format version. safetensors holds no code, so loading an
exported encoder cannot run anything.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..atomic import atomic_path, write_json
from ..errors import InputError
from ..provenance import git_sha, package_versions
from .registry import create_model
from .vit3d import VisionTransformer3D

FORMAT_VERSION = 1
WEIGHTS_NAME = "encoder.safetensors"
META_NAME = "encoder.json"
_REQUIRED_META = ("format_version", "architecture", "model_kwargs", "in_chans", "patch_size",
                  "crop_size", "spacing", "normalisation", "embed_dim")


def encoder_state_dict(model: VisionTransformer3D) -> dict[str, torch.Tensor]:
    """The encoder's tensors without the classification head, contiguous and on the CPU."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
            if not k.startswith("head.")}


def save_encoder(model: VisionTransformer3D, folder: str | os.PathLike, *, arch: str,
                 crop_size: Sequence[int], spacing: Sequence[float], normalisation: dict,
                 config: dict) -> Path:
    """Write ``folder/encoder.safetensors`` and ``folder/encoder.json``; returns ``folder``.

    ``crop_size``: crop size in voxels per axis; ``spacing``: voxel spacing in mm per axis;
    ``normalisation``: the intensity normalisation of the preprocessing cache (its ``meta.json``);
    ``config``: the resolved pretraining config as a plain dict. Each file is written atomically;
    the JSON is written last, so a folder with a readable ``encoder.json`` is complete.
    """
    folder = Path(folder)
    crop_size = [int(c) for c in crop_size]
    spacing = [float(s) for s in spacing]
    if len(crop_size) != model.spatial_dims or len(spacing) != model.spatial_dims:
        raise InputError(f"crop_size {crop_size} and spacing {spacing} must each have "
                         f"{model.spatial_dims} values for a {model.spatial_dims}D encoder")
    model.grid_for(crop_size)  # the crop size must be a multiple of the patch size
    tensors = encoder_state_dict(model)
    # in_chans read from the projection itself: fine-tuning may have inflated it since construction
    model_kwargs = dict(model.init_kwargs, num_classes=0, in_chans=model.in_chans)
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "architecture": arch,
        "model_kwargs": model_kwargs,
        "in_chans": model.in_chans,
        "spatial_dims": model.spatial_dims,
        "patch_size": list(model.patch_size),
        "img_size": list(model.img_size),
        "crop_size": crop_size,
        "spacing": spacing,
        "normalisation": dict(normalisation),
        "embed_dim": model.embed_dim,
        "git_sha": git_sha(),
        "versions": package_versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": config,
        "tensors": {k: list(v.shape) for k, v in tensors.items()},
    }
    json.dumps(meta, default=str)  # fail before writing anything if the metadata cannot be saved
    with atomic_path(folder / WEIGHTS_NAME, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format_version": str(FORMAT_VERSION), "architecture": arch})
    write_json(folder / META_NAME, meta)
    return folder


def read_encoder_meta(folder: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``folder/encoder.json`` (InputError naming the file and the problem)."""
    meta_path = Path(folder) / META_NAME
    if not meta_path.is_file():
        raise InputError(f"{meta_path} does not exist; an encoder export folder holds "
                         f"{WEIGHTS_NAME} and {META_NAME} (written by `rn-classifier pretrain`)")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{meta_path} is not valid JSON: {exc}") from None
    missing = [k for k in _REQUIRED_META if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise InputError(f"{meta_path} lacks the key(s) {missing}")
    if meta["format_version"] != FORMAT_VERSION:
        raise InputError(f"{meta_path} has format_version {meta['format_version']!r}; this "
                         f"rn-classifier reads version {FORMAT_VERSION}")
    return meta


def load_encoder(folder: str | os.PathLike, map_location: str | torch.device = "cpu"
                 ) -> tuple[VisionTransformer3D, dict[str, Any]]:
    """Rebuild the exported encoder from ``encoder.json`` and ``encoder.safetensors`` alone.

    Returns ``(model, meta)``; the model has no head (``num_classes=0``). Every missing, unexpected
    or wrong-shaped tensor is listed in one ``InputError`` naming the file, the tensor, and the
    expected vs found shape.
    """
    folder = Path(folder)
    meta = read_encoder_meta(folder)
    weights_path = folder / WEIGHTS_NAME
    if not weights_path.is_file():
        raise InputError(f"{weights_path} does not exist (the weights beside {folder / META_NAME})")
    model = create_model(meta["architecture"], **meta["model_kwargs"])
    try:
        tensors = load_file(str(weights_path), device=str(map_location))
    except (SafetensorError, OSError) as exc:
        raise InputError(f"{weights_path} is not a readable safetensors file: {exc}") from None
    expected = encoder_state_dict(model)
    problems = []
    for name, ref in expected.items():
        if name not in tensors:
            problems.append(f"tensor {name!r} is missing (expected shape {list(ref.shape)})")
        elif tensors[name].shape != ref.shape:
            problems.append(f"tensor {name!r} has shape {list(tensors[name].shape)}, "
                            f"expected {list(ref.shape)}")
    problems += [f"tensor {name!r} is not part of {meta['architecture']} (shape "
                 f"{list(tensors[name].shape)})" for name in tensors if name not in expected]
    if problems:
        raise InputError(f"{weights_path} does not match the architecture in {folder / META_NAME}: "
                         + "; ".join(problems))
    model.load_state_dict(tensors, strict=False)  # strict on the encoder keys, checked above
    return model.to(map_location), meta
