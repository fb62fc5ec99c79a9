"""The fine-tuning LightningModule, which trains the classifiers of
:mod:`rn_classifier.models.classifiers`.

* :class:`FinetuneModule`: binary cross-entropy (optionally class-weighted, ``pos_weight``),
  AdamW with layer-wise learning-rate decay (BEiT, Bao et al. 2022; timm
  ``param_groups_layer_decay``), linear warm-up then cosine decay per step (lightly
  ``CosineWarmupScheduler``), and the validation AUC of the fold (``val_auc``), on which the
  checkpoint is selected and training stops early.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from lightly.utils.scheduler import CosineWarmupScheduler
from sklearn.metrics import roc_auc_score
from timm.optim import param_groups_layer_decay
from torch import nn

from ..errors import InputError
from .config import OptimConfig
from ..models.classifiers import ImageClassifier  # noqa: F401  (re-exported: the module trains it)

def lr_schedule_steps(epochs: int, steps_per_epoch: int, warmup_epochs: float) -> tuple[int, int]:
    """(warm-up steps, total steps) for a per-step schedule."""
    total = max(1, epochs * steps_per_epoch)
    return min(total, int(round(warmup_epochs * steps_per_epoch))), total


class FinetuneModule(pl.LightningModule):
    """Train a classifier network on one fold; ``val_auc`` is logged after every validation.

    network: ``forward(x, clinical) → logits (B,)``; exposes ``group_matcher`` and ``no_weight_decay``.
    pos_weight: weight of the positive class in the loss (``balance: loss``), or None.
    """

    def __init__(self, network: nn.Module, optim: OptimConfig, epochs: int, steps_per_epoch: int,
                 pos_weight: float | None = None):
        super().__init__()
        self.network = network
        self.optim = optim
        self.warmup_steps, self.total_steps = lr_schedule_steps(epochs, steps_per_epoch,
                                                                optim.warmup_epochs)
        self.register_buffer("pos_weight", torch.tensor(float(pos_weight)) if pos_weight else None,
                             persistent=False)
        # Grouped now, while every parameter the network learns is still trainable: a linear
        # probe (finetune.linear_probe) freezes the encoder before configure_optimizers runs, and
        # timm leaves frozen parameters out of its groups. Grouped here, the encoder is in the
        # optimizer and its lr schedule from step 0, and starts moving when the probe ends.
        self._layer_groups = self._named_layer_groups()
        self._val_logits: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []

    def forward(self, batch: dict) -> torch.Tensor:
        return self.network(batch["input"], batch.get("clinical"))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self(batch)
        loss = F.binary_cross_entropy_with_logits(logits, batch["label"].float(),
                                                  pos_weight=self.pos_weight)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite training loss ({loss.item()}) at epoch {self.current_epoch}, step "
                f"{self.global_step}; lower optim.lr or check the cached crops for NaN")
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=logits.shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._val_logits.append(self(batch).detach().float().cpu())
        self._val_labels.append(batch["label"].detach().cpu())

    def on_validation_epoch_end(self) -> None:
        logits = torch.cat(self._val_logits).numpy()
        labels = torch.cat(self._val_labels).numpy().astype(int)
        self._val_logits.clear()
        self._val_labels.clear()
        if len(np.unique(labels)) < 2:
            raise InputError(f"the validation fold holds one class only ({int(labels.sum())} "
                             f"radiation necrosis, {int((labels == 0).sum())} progression); AUC is "
                             "undefined. Use fewer folds.")
        auc = float(roc_auc_score(labels, logits))
        loss = float(F.binary_cross_entropy_with_logits(torch.as_tensor(logits),
                                                        torch.as_tensor(labels, dtype=torch.float32)))
        self.log("val_auc", auc, prog_bar=True)
        self.log("val_loss", loss)

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        return self(batch).float()

    def _named_layer_groups(self) -> list[dict]:
        """timm's layer-decay groups of the network's trainable parameters, by parameter name
        (names, not tensors: they are looked up again when the optimizer is made)."""
        groups = param_groups_layer_decay(self.network, weight_decay=self.optim.weight_decay,
                                          no_weight_decay_list=self.network.no_weight_decay(),
                                          layer_decay=self.optim.layer_decay)
        name_of = {p: n for n, p in self.network.named_parameters()}
        return [{**g, "params": [name_of[p] for p in g["params"]]} for g in groups]

    def configure_optimizers(self):
        named = dict(self.network.named_parameters())
        grouped = {n for g in self._layer_groups for n in g["params"]}
        late = sorted(n for n, p in named.items() if p.requires_grad and n not in grouped)
        if late:   # a programming error, not user input: they would silently never train
            raise RuntimeError(f"parameters added to the network after FinetuneModule was made are "
                               f"not in the optimizer: {late[:5]}; change the network before it")
        # each layer's peak lr; the schedule below scales all of them alike
        groups = [{**g, "params": [named[n] for n in g["params"]], "lr": self.optim.lr * g["lr_scale"]}
                  for g in self._layer_groups]
        optimizer = torch.optim.AdamW(groups, lr=self.optim.lr)
        scheduler = CosineWarmupScheduler(optimizer, warmup_epochs=self.warmup_steps,
                                          max_epochs=self.total_steps, start_value=1.0,
                                          end_value=self.optim.min_lr_ratio)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}


def steps_per_epoch(n_cases: int, batch_size: int) -> int:
    return max(1, math.ceil(n_cases / batch_size))
