"""MAE pretraining step (He et al. 2022) as a LightningModule.

Per step: random masking (``mae.mask_ratio`` of the patches removed, drawn on the device from the
step's seed), encoder on the visible patches, decoder, mean squared error on the removed patches
(``ssl.MAE3D``); AdamW with this step's learning rate and weight decay; gradient clipping by
Lightning. The exported encoder is the MAE encoder.
"""

from __future__ import annotations

import torch

from ..ssl import MAE3D
from .base_module import PretrainModule, build_backbone, compile_blocks
from .config import PretrainConfig
from .schedules import Schedules


class MAEModule(PretrainModule):
    method = "mae"

    def __init__(self, cfg: PretrainConfig, schedules: Schedules, global_batch_size: int,
                 device_augment=None):
        super().__init__(cfg, schedules, global_batch_size, device_augment)
        m = cfg.mae
        self.model = MAE3D(build_backbone(cfg, m.crop_size), decoder_embed_dim=m.decoder_dim,
                           decoder_depth=m.decoder_depth, decoder_num_heads=m.decoder_heads,
                           mask_ratio=m.mask_ratio, norm_pix_loss=m.norm_pix_loss)
        if cfg.model.compile_blocks:
            compile_blocks(self.model)

    def trained_encoder(self) -> torch.nn.Module:
        return self.model.encoder

    def export_encoder(self) -> torch.nn.Module:
        return self.model.encoder

    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """``batch["views"]``: ``[view (B, 1, S, S, S)]``."""
        loss, _pred, _mask = self.model(batch["views"][0])
        return loss, {}
