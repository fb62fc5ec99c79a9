"""Linear probing, then fine-tuning (LP-FT; Kumar et al. 2022, "Fine-Tuning can Distort
Pretrained Features and Underperform Out-of-Distribution").

With ``train.linear_probe_epochs = N > 0`` a fold first trains only what sits above the encoder,
for N epochs, on the encoder's fixed features; then the whole network fine-tunes. On a few dozen
labelled lesions a head trained on frozen features starts fine-tuning from a sensible decision
rule instead of a random one, whose large early gradients would otherwise rewrite the
pretrained features to fit the training folds. N = ``train.epochs`` is a pure linear probe.

What is frozen: ``network.encoder``, all of it (patch embedding, class token, position
embedding, blocks, final norm), including what fine-tuning adds to it: the input channels
inflated into its first convolution (:mod:`.inflate`: the mask channel, or the region channels,
whose weights start at zero). So while the probe lasts the mask reaches the model only through
the pooling (``model.pool: mask``); with ``cls`` or ``avg`` pooling a probe reads features of
the T1CE alone. What trains: the classifier head, and for intermediate fusion the clinical MLP,
the cross-attention and the fusion head (:mod:`rn_classifier.models.classifiers`).

The supervised twin (``model.pretrained: null``) gets the same option through the same code:
its probe epochs train a head on the features of a randomly initialised encoder.

How (Lightning's :class:`~lightning.pytorch.callbacks.BaseFinetuning`):

* Every parameter is in the optimizer from step 0, in its layer-decay group
  (:class:`~.module.FinetuneModule` groups them before the freeze). Freezing only switches
  ``requires_grad`` off; a frozen parameter gets no ``.grad``, and torch's AdamW skips a
  parameter without one entirely: no step and no weight decay (the decoupled decay is part of
  the same per-parameter update). Its Adam moments start when it is unfrozen. Adding the encoder
  to the optimizer only at epoch N (``unfreeze_and_add_param_group``) would lose its layer-wise
  lr decay and leave it outside the lr schedule, which scales the groups it was built with.
* The frozen encoder is in eval mode during the probe (no drop path), set at the start of each
  probe epoch; Lightning puts every submodule back in the mode it had after each validation.
* Parameters the encoder never trains (the fixed sin-cos position embedding) stay frozen when
  the probe ends.

The lr schedule is the one warm-up + cosine over all ``train.epochs``, for both phases: the
head warms up in the probe, and the encoder joins at epoch N at the lr the cosine has reached
(times its layer's decay), without a second warm-up. The budget (``train.epochs``) is the same
with and without a probe: the fairness rule of the comparison between the arms.

Early stopping (:class:`EarlyStoppingAfterProbe`) counts only the epochs after the probe: a
probe's plateau must not end a fold before its encoder has trained. Checkpoint selection is not
changed: with ``train.checkpoint: best`` the kept epoch may be a probe epoch (the head on the
unchanged encoder), when fine-tuning never beat it on the validation fold; fold.json records
``linear_probe_epochs`` next to ``kept_epoch``.
"""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BaseFinetuning, EarlyStopping


class LinearProbe(BaseFinetuning):
    """Freeze ``pl_module.network.encoder`` for the first ``epochs`` epochs of a fit, then unfreeze it."""

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = int(epochs)
        self._fixed: list[str] = []   # encoder parameters that are frozen by design

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # BaseFinetuning freezes at every stage's setup; the fold's trainer.predict after the fit
        # must find the network as the fit left it
        if stage == "fit":
            super().setup(trainer, pl_module, stage)

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        encoder = pl_module.network.encoder
        self._fixed = [n for n, p in encoder.named_parameters() if not p.requires_grad]
        self.freeze(encoder, train_bn=False)

    def finetune_function(self, pl_module: pl.LightningModule, epoch: int, optimizer) -> None:
        if epoch != self.epochs:
            return
        encoder = pl_module.network.encoder
        self.make_trainable(encoder)
        params = dict(encoder.named_parameters())
        for name in self._fixed:
            params[name].requires_grad_(False)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)   # calls finetune_function
        # drop path off while frozen; back in train mode from the first fine-tuning epoch on
        pl_module.network.encoder.train(trainer.current_epoch >= self.epochs)


class EarlyStoppingAfterProbe(EarlyStopping):
    """Lightning's EarlyStopping, blind to the first ``probe_epochs`` epochs: its patience and its
    best score start with the first fine-tuning epoch."""

    def __init__(self, probe_epochs: int, **kwargs):
        super().__init__(**kwargs)
        self.probe_epochs = int(probe_epochs)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch >= self.probe_epochs:
            super().on_train_epoch_end(trainer, pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch >= self.probe_epochs:
            super().on_validation_end(trainer, pl_module)
