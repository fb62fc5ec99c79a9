"""DINO student / teacher around a ViT backbone (DINO, Caron et al. 2021).

Parts from lightly: ``DINOProjectionHead`` (3-layer MLP, l2-normalised bottleneck, weight-normalised
last layer), ``update_momentum`` (teacher EMA) and, in the training engine, ``lightly.loss.DINOLoss``.
The schedules (teacher momentum, teacher temperature) are passed per call, as facebookresearch
``main_dino.py`` precomputes them per iteration.

The teacher is a copy of the student that never receives gradients: the backbone is deep-copied;
the head is a *new* ``DINOProjectionHead`` loaded with the student head's state dict, because
lightly's head uses ``nn.utils.weight_norm``, whose tensors cannot be deep-copied.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence

import torch
from lightly.models.modules import DINOProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from torch import nn

from ..errors import InputError
from ..models.vit3d import VisionTransformer3D


def _embed(backbone: VisionTransformer3D, x: torch.Tensor) -> torch.Tensor:
    """``x: (B, C, *spatial)`` → pooled embedding ``(B, D)`` (class token by default)."""
    return backbone.forward_head(backbone.forward_features(x), pre_logits=True)


class DINO3D(nn.Module):
    """Student and teacher (backbone + DINO head) for multi-crop self-distillation.

    Args:
        backbone: the student ViT (``num_classes=0``); the teacher backbone is a copy.
        out_dim: number of DINO prototypes (K); 65536 in the paper.
        hidden_dim, bottleneck_dim: head MLP sizes (2048, 256 in the paper).
        freeze_last_layer: epochs during which the engine drops the last head layer's gradients
            (``student_head.cancel_last_layer_gradients(epoch)``).
        norm_last_layer: fix the weight-norm gain of the last layer to 1 (paper default).
    """

    def __init__(self, backbone: VisionTransformer3D, out_dim: int = 65536, hidden_dim: int = 2048,
                 bottleneck_dim: int = 256, freeze_last_layer: int = 1, norm_last_layer: bool = True):
        super().__init__()
        if min(out_dim, hidden_dim, bottleneck_dim) < 1:
            raise InputError(f"DINO head sizes must be positive, got out_dim={out_dim}, "
                             f"hidden_dim={hidden_dim}, bottleneck_dim={bottleneck_dim}")
        head_kwargs = dict(input_dim=backbone.num_features, hidden_dim=hidden_dim,
                           bottleneck_dim=bottleneck_dim, output_dim=out_dim, batch_norm=False,
                           freeze_last_layer=freeze_last_layer, norm_last_layer=norm_last_layer)
        self.out_dim = out_dim
        self.student_backbone = backbone
        with warnings.catch_warnings():  # lightly's head uses the deprecated nn.utils.weight_norm
            warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
            self.student_head = DINOProjectionHead(**head_kwargs)
            self.teacher_head = DINOProjectionHead(**head_kwargs)
        self.teacher_backbone = copy.deepcopy(backbone)
        self.teacher_head.load_state_dict(self.student_head.state_dict())
        deactivate_requires_grad(self.teacher_backbone)
        deactivate_requires_grad(self.teacher_head)

    def train(self, mode: bool = True) -> DINO3D:
        """The student follows ``mode``; the teacher always stays in eval mode (no drop path)."""
        super().train(mode)
        self.teacher_backbone.eval()
        self.teacher_head.eval()
        return self

    def forward_student(self, crops: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Student projections, one ``(B, out_dim)`` per crop, in the order of ``crops``.

        ``crops``: list of ``(B, C, *spatial)``; consecutive crops of the same size are batched
        through the backbone together (as DINO's ``MultiCropWrapper``), so the global crops and
        the local crops each cost one backbone call.
        """
        return self._project(self.student_backbone, self.student_head, crops)

    @torch.no_grad()
    def forward_teacher(self, global_crops: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Teacher projections of the global crops, one ``(B, out_dim)`` each, without gradients."""
        return self._project(self.teacher_backbone, self.teacher_head, global_crops)

    def forward(self, crops: Sequence[torch.Tensor], n_global: int = 2
                ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``crops``: the global crops first, then the local ones.

        Returns ``(teacher_out, student_out)`` as ``lightly.loss.DINOLoss(teacher_out, student_out)``
        expects: the teacher sees the ``n_global`` global crops; the student sees every crop, with
        the global ones at the same list positions, so the loss skips each same-view pair.
        """
        if not 1 <= n_global <= len(crops):
            raise InputError(f"n_global must be between 1 and the number of crops ({len(crops)}), "
                             f"got {n_global}")
        return self.forward_teacher(crops[:n_global]), self.forward_student(crops)

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """Teacher ← momentum · teacher + (1 − momentum) · student (lightly ``update_momentum``)."""
        if not 0.0 <= momentum <= 1.0:
            raise InputError(f"teacher momentum must be in [0, 1], got {momentum}")
        update_momentum(self.student_backbone, self.teacher_backbone, m=momentum)
        update_momentum(self.student_head, self.teacher_head, m=momentum)

    @staticmethod
    def _project(backbone: VisionTransformer3D, head: nn.Module,
                 crops: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(crops) == 0:
            raise InputError("DINO needs at least one crop, got an empty list")
        groups: list[list[torch.Tensor]] = []
        for crop in crops:  # group consecutive crops of identical shape
            if groups and groups[-1][0].shape == crop.shape:
                groups[-1].append(crop)
            else:
                groups.append([crop])
        embeddings = torch.cat([_embed(backbone, torch.cat(group)) for group in groups])
        return list(head(embeddings).chunk(len(crops)))
