"""DINO pretraining step (Caron et al. 2021) as a LightningModule.

Per step, as facebookresearch/dino ``train_one_epoch``:

1. the teacher embeds the 2 global views, the student all views (``ssl.DINO3D``);
2. ``lightly.loss.DINOLoss`` with the teacher temperature of this step (warm-up schedule), which
   also updates the centre of the teacher outputs (all-reduced across ranks by lightly);
3. backward; the gradients of the head's last layer are dropped during the first
   ``dino.freeze_last_layer_epochs`` epoch(s); gradients are clipped (Lightning,
   ``optim.clip_grad``); AdamW step with this step's learning rate and weight decay;
4. the teacher follows the student by EMA with this step's momentum (lightly ``update_momentum``).

The exported encoder is the teacher backbone (DINO evaluates the teacher).
"""

from __future__ import annotations

import torch
from lightly.loss import DINOLoss

from ..ssl import DINO3D
from .base_module import PretrainModule, build_backbone, compile_blocks
from .config import PretrainConfig
from .schedules import Schedules

N_GLOBAL = 2


class DINOModule(PretrainModule):
    method = "dino"

    def __init__(self, cfg: PretrainConfig, schedules: Schedules, global_batch_size: int,
                 device_augment=None):
        super().__init__(cfg, schedules, global_batch_size, device_augment)
        d = cfg.dino
        self.model = DINO3D(build_backbone(cfg, d.global_crop_size), out_dim=d.out_dim,
                            hidden_dim=d.hidden_dim, bottleneck_dim=d.bottleneck_dim,
                            freeze_last_layer=d.freeze_last_layer_epochs,
                            norm_last_layer=d.norm_last_layer)
        # Temperatures come from the per-step schedule (teacher_temp=... on every call).
        self.criterion = DINOLoss(output_dim=d.out_dim, warmup_teacher_temp=d.warmup_teacher_temp,
                                  teacher_temp=d.teacher_temp, warmup_teacher_temp_epochs=1,
                                  student_temp=d.student_temp, center_momentum=d.center_momentum)
        if cfg.model.compile_blocks:
            compile_blocks(self.model)

    def trained_encoder(self) -> torch.nn.Module:
        return self.model.student_backbone

    def export_encoder(self) -> torch.nn.Module:
        return self.model.teacher_backbone

    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """``batch["views"]``: ``[global_1, global_2, local_1, ...]``, each ``(B, 1, S, S, S)``."""
        teacher_out, student_out = self.model(batch["views"], n_global=N_GLOBAL)
        loss = self.criterion(teacher_out, student_out, teacher_temp=self.current()["teacher_temp"])
        return loss, {}

    def on_before_optimizer_step(self, optimizer) -> None:
        # "freeze the last layer during the first epoch" (DINO): drop its gradients.
        self.model.student_head.cancel_last_layer_gradients(self.current_epoch)

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        step = self.global_step  # the index of this step (the counter moves during the step)
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        # Right after the student's step, before any callback (a checkpoint) sees the state.
        self.model.update_teacher(self.schedules.at(step)["teacher_momentum"])
