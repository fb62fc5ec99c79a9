"""Self-supervised pretraining: MAE and DINO models, N-D patchify (the engine lives beside them)."""

from .dino import DINO3D
from .mae import MAE3D, MAEDecoder, random_masking
from .patchify import patchify, unpatchify

__all__ = ["DINO3D", "MAE3D", "MAEDecoder", "patchify", "random_masking", "unpatchify"]
