"""Self-supervised pretraining models: MAE and DINO around the ViT encoder (the Lightning engine
that trains them is ``rn_classifier.pretrain``). ``patchify`` / ``unpatchify`` live with the patch
embedding in ``rn_classifier.models.patch_embed`` and are re-exported here for the MAE targets."""

from ..models.patch_embed import patchify, unpatchify
from .dino import DINO3D
from .mae import MAE3D, MAEDecoder, random_masking

__all__ = ["DINO3D", "MAE3D", "MAEDecoder", "patchify", "random_masking", "unpatchify"]
