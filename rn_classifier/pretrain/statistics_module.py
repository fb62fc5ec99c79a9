"""Crop-statistics regression as a LightningModule (``method: statistics``).

The targets are measurements anyone can take from a T1CE and its lesion mask without a label:
the crop statistics of :func:`rn_classifier.pretrain.probe.crop_statistics` (the lesion's size and
rim share; the intensity distribution inside it, in its eroded core and in two shells around it;
gradients at its edge; texture). On the synthetic cohort a logistic model on them is the yardstick
the ViT has to beat, and a frozen encoder pretrained to predict them from its mask-pooled patch
tokens beat that yardstick with 100 labels (benchmarks/RESULTS.md, 2026-12-04). It is the idea of
MaskFeat (Wei et al. 2022), which regresses hand-made features (HOG) instead of pixels: the
encoder learns what the measurements describe, in the tokens fine-tuning pools.

* Targets: computed once per run, in :meth:`StatisticsModule.setup`, on the unaugmented centre crop
  of every sub-volume the run trains on; each column standardised over those sub-volumes (a
  constant column stays 0). No label is read. The views are flips and 90° turns of that crop
  (:class:`~rn_classifier.pretrain.augment.LesionViewTransform`), which leave every statistic
  unchanged, so one row serves every view of a sub-volume.
* Model: the encoder (two input channels, T1CE and mask, built as fine-tuning builds it), the
  ``statistics.pool`` embedding and one linear layer to the targets; loss: mean squared error.
* Export: the encoder, with its two input channels: fine-tuning loads it without inflating.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.preprocessing import StandardScaler
from torch import nn

from ..data.crop import centre_crop
from ..models.classifiers import pool_tokens
from .base_module import PretrainModule, build_backbone, compile_blocks
from .config import PretrainConfig
from .probe import crop_statistics
from .schedules import Schedules


def statistics_targets(dataset, crop_size: int) -> np.ndarray:
    """``(len(dataset), n_statistics)`` float32: the standardised crop statistics of each item of
    a :class:`~rn_classifier.pretrain.datamodule.SubVolumeDataset` that reads the mask, in item
    order (the ``sample`` numbers of its batches)."""
    size = (int(crop_size),) * 3
    case_ids = [dict(zip(s.cache.index["row"].astype(int), s.cache.index["case_id"].astype(str)))
                for s in dataset.sources]
    crops, names = [], []
    for source, row in dataset.items:
        cache = dataset.sources[int(source)].cache
        crops.append(np.asarray(centre_crop(np.asarray(cache[int(row)][:2], np.float32), size)))
        names.append(case_ids[int(source)][int(row)])
    table = crop_statistics(torch.as_tensor(np.stack(crops)), np.asarray(names))
    # each column at mean 0, SD 1 over the run's sub-volumes; a constant column becomes 0
    return StandardScaler().fit_transform(table).astype(np.float32)


def n_statistics() -> int:
    """How many statistics :func:`crop_statistics` returns per crop (the head's width)."""
    crop = torch.zeros(1, 2, 8, 8, 8)
    crop[0, 1, 2:6, 2:6, 2:6] = 1.0
    return int(crop_statistics(crop).shape[1])


class StatisticsModule(PretrainModule):
    method = "statistics"

    def __init__(self, cfg: PretrainConfig, schedules: Schedules, global_batch_size: int,
                 device_augment=None):
        super().__init__(cfg, schedules, global_batch_size, device_augment)
        self.crop_size = int(cfg.statistics.crop_size)
        self.pool = cfg.statistics.pool
        self.encoder = build_backbone(cfg, self.crop_size, in_chans=2)
        self.head = nn.Linear(self.encoder.embed_dim, n_statistics())
        self.register_buffer("targets", torch.zeros(0, self.head.out_features), persistent=False)
        if cfg.model.compile_blocks:
            compile_blocks(self.encoder)

    def setup(self, stage: str) -> None:
        if len(self.targets) == 0:
            table = statistics_targets(self.trainer.datamodule.dataset, self.crop_size)
            self.targets = torch.as_tensor(table, device=self.device)

    def trained_encoder(self) -> torch.nn.Module:
        return self.encoder

    def export_encoder(self) -> torch.nn.Module:
        return self.encoder

    def predict_statistics(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, 2, S, S, S)`` → the predicted standardised statistics ``(B, n_statistics)``."""
        tokens = self.encoder.forward_features(x)
        pooled = pool_tokens(tokens, x, self.pool, tuple(self.encoder.patch_size),
                             int(getattr(self.encoder, "num_prefix_tokens", 1)))
        return self.head(pooled)

    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """``batch["views"]``: ``[view (B, 2, S, S, S)]``; ``batch["sample"]``: the items' numbers."""
        target = self.targets[batch["sample"].to(self.targets.device)]
        return F.mse_loss(self.predict_statistics(batch["views"][0]).float(), target), {}
