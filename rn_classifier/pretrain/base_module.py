"""What the pretraining methods (DINO, MAE, statistics) share: optimiser, per-step schedules,
seeding, non-finite guard.

* AdamW with two parameter groups as DINO / MAE: weights are decayed; biases, norm parameters and
  the encoder's ``no_weight_decay()`` tensors (positional embedding, class token) are not. The
  learning rate and the weight decay of the first group are set from the precomputed
  :class:`~rn_classifier.pretrain.schedules.Schedules` before every optimizer step.
* Each step re-seeds PyTorch from ``(seed, global_step, rank)``, so random draws inside the step
  (MAE masks, stochastic depth) are the same in a resumed run as in an uninterrupted one, and
  differ between ranks.
* A non-finite loss stops every rank together with :class:`NonFiniteLossError`, naming the epoch,
  step, rank and samples (the ranks agree through one all-reduce, so none is left waiting).
* With ``data.augment_on: device`` the views are made from the batch of sub-volumes once it is
  on the device (``batch_augment``), seeded by ``(seed, global_step, rank)``.
* The progress bar shows sub-volumes per second over all ranks.
"""

from __future__ import annotations

import dataclasses
import time

import lightning.pytorch as pl
import numpy as np
import torch
import torch.distributed as dist

from ..models import create_model
from .config import PretrainConfig
from .schedules import Schedules


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; ``samples`` are the batch's sample numbers."""

    def __init__(self, message: str, samples: list[int] | None = None):
        super().__init__(message)
        self.samples = list(samples or [])


def step_seed(seed: int, step: int, rank: int) -> int:
    """A 63-bit seed unique to ``(seed, step, rank)``."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(2, dtype=np.uint64)[0] >> 1)


def build_backbone(cfg: PretrainConfig, img_size: int, in_chans: int = 1) -> torch.nn.Module:
    """The encoder to pretrain: ``cfg.model.name`` for ``img_size``³ crops of ``in_chans`` channels
    (1: T1CE; 2: T1CE and lesion mask, as fine-tuning reads them), no head."""
    model = create_model(cfg.model.name, img_size=img_size, in_chans=in_chans, num_classes=0,
                         drop_path_rate=cfg.model.drop_path_rate, pos_embed_type=cfg.model.pos_embed_type)
    if cfg.model.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model


def compile_blocks(module: torch.nn.Module) -> None:
    """``torch.compile`` every timm ``Block`` of ``module`` in place (regional compilation: the
    identical blocks share one compiled graph per input shape, so compiling takes seconds, and
    LayerNorm, GELU and the residual adds are fused). Called after the DINO teacher is copied from
    the student, so each copy compiles its own blocks."""
    import torch._dynamo
    from timm.models.vision_transformer import Block

    # All blocks share one code object, so each (crop size, grad mode, autocast) variant of every
    # block type counts towards dynamo's recompile limit (8 by default).
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    for m in module.modules():
        if isinstance(m, Block):
            m.compile(dynamic=False)  # one graph per crop size


class PretrainModule(pl.LightningModule):
    """Base of :class:`DINOModule` and :class:`MAEModule`; subclasses define ``self.model``,
    :meth:`compute_loss` and :meth:`export_encoder`."""

    method = "base"

    def __init__(self, cfg: PretrainConfig, schedules: Schedules, global_batch_size: int,
                 device_augment=None):
        super().__init__()
        self.cfg = cfg
        # batch_augment.BatchMultiCrop / BatchMAECrop when views are made on the device
        self.device_augment = device_augment
        self.schedules = schedules
        self.global_batch_size = int(global_batch_size)
        # Plain dicts only, so checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters({"config": dataclasses.asdict(cfg), "total_steps": schedules.total_steps,
                                   "global_batch_size": self.global_batch_size})
        self._last_batch_end: float | None = None
        self.session_start_step = 0

    # -- to be defined by the method ------------------------------------------------------
    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def export_encoder(self) -> torch.nn.Module:
        """The encoder that is exported (DINO: teacher backbone; MAE: encoder)."""
        raise NotImplementedError

    def trained_encoder(self) -> torch.nn.Module:
        """The encoder whose parameters are optimised (for weight-decay exclusions)."""
        raise NotImplementedError

    # -- optimiser ------------------------------------------------------------------------
    def configure_optimizers(self):
        encoder = self.trained_encoder()
        skip = {id(p) for n, p in encoder.named_parameters() if n in encoder.no_weight_decay()}
        decay, no_decay = [], []
        for p in self.parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 or id(p) in skip else decay).append(p)
        start = self.schedules.at(0)
        groups = [{"params": decay, "weight_decay": start["weight_decay"], "scheduled_wd": True},
                  {"params": no_decay, "weight_decay": 0.0, "scheduled_wd": False}]
        # Fused AdamW (one pass over each tensor) is ~5x faster than the per-tensor loop on CPU,
        # where it was a third of a DINO step; fp16 (16-mixed) keeps the unfused one, because
        # its gradient scaler must unscale before clipping (see configure_gradient_clipping).
        return torch.optim.AdamW(groups, lr=start["lr"], betas=tuple(self.cfg.optim.betas),
                                 fused=not self._scales_gradients())

    def _scales_gradients(self) -> bool:
        """True under fp16 mixed precision, whose loss scaler multiplies the gradients."""
        trainer = self._trainer  # None outside a Trainer (benchmarks, tests)
        return trainer is not None and str(trainer.precision) == "16-mixed"

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None,
                                    gradient_clip_algorithm=None) -> None:
        """Clip the global gradient norm to ``optim.clip_grad``.

        Lightning's mixed-precision plugin refuses to clip for a fused optimizer (it cannot
        unscale fp16 gradients first); bf16 and fp32 gradients are never scaled, so they are
        clipped here directly, exactly as ``gradient_clip_algorithm="norm"`` would."""
        if self._scales_gradients() or not gradient_clip_val:
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, gradient_clip_val, foreach=True)

    def current(self) -> dict[str, float]:
        """Schedule values at the current optimizer step."""
        return self.schedules.at(self.global_step)

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        values = self.current()
        for group in self.optimizers().optimizer.param_groups:
            group["lr"] = values["lr"]
            if group.get("scheduled_wd"):
                group["weight_decay"] = values["weight_decay"]
        torch.manual_seed(step_seed(self.cfg.trainer.seed, self.global_step, self.global_rank))

    # -- step -----------------------------------------------------------------------------
    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """With on-device augmentation the loader delivers sub-volumes ``(B, 1, X, Y, Z)``; the
        views are made here, seeded by ``(seed, step, rank)``."""
        if self.device_augment is not None:
            seed = (self.cfg.trainer.seed, self.global_step, self.global_rank, 1)
            batch["views"] = self.device_augment(batch["views"][0], seed)
        return batch

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, extra = self.compute_loss(batch)
        self._stop_if_not_finite(loss, batch, batch_idx)
        values = self.current()
        self.log("train/loss", loss.detach(), prog_bar=True, on_step=True, batch_size=self._batch_size(batch))
        self.log_dict({f"schedule/{k}": v for k, v in values.items()}, on_step=True)
        if extra:
            self.log_dict(extra, on_step=True)
        return loss

    @staticmethod
    def _batch_size(batch: dict) -> int:
        return int(batch["views"][0].shape[0])

    def _stop_if_not_finite(self, loss: torch.Tensor, batch: dict, batch_idx: int) -> None:
        finite = torch.isfinite(loss.detach()).to(torch.float32).reshape(1)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)  # every rank stops if any rank diverged
        if finite.item() == 1.0:
            return
        here = torch.isfinite(loss.detach()).item()
        samples = batch["sample"].tolist()
        values = self.current()
        where = (f"epoch {self.current_epoch}, optimizer step {self.global_step} (batch {batch_idx} of "
                 f"the epoch), rank {self.global_rank}")
        raise NonFiniteLossError(
            f"{self.method.upper()} loss is not finite at {where}"
            + ("" if not here else " (this rank's loss was finite; another rank's was not)")
            + f"; lr {values['lr']:.3g}, weight decay {values['weight_decay']:.3g}. Training stopped; the "
            "last good checkpoint is in RUN_DIR/checkpoints. Try a lower optim.lr, a longer "
            "optim.warmup_epochs or a smaller optim.clip_grad, and check these sub-volumes for "
            "NaN/Inf voxels.", samples=samples if not here else [])

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._last_batch_end is not None:
            rate = self.global_batch_size / max(now - self._last_batch_end, 1e-9)
            self.log("subvolumes_per_s", rate, prog_bar=True, on_step=True, rank_zero_only=True)
        self._last_batch_end = now

    def on_train_start(self) -> None:
        self.session_start_step = self.global_step  # > 0 when resumed

    def on_train_epoch_start(self) -> None:
        self._last_batch_end = None  # do not count the loader start-up of an epoch
