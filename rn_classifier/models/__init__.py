"""Encoders: the N-D Vision Transformer, its named variants and the encoder export (seam 3)."""

from .registry import create_model, list_models, model_defaults, register
from .vit3d import VisionTransformer3D

__all__ = ["VisionTransformer3D", "create_model", "list_models", "model_defaults", "register"]
