"""Linear probing, then fine-tuning (train.linear_probe_epochs, rn_classifier.finetune.linear_probe).

Tiny ViTs (16³ inputs, 8 patches) on a 16-case toy set, trained by the fold's own Lightning
Trainer (cv._lightning_trainer), so the tests see the callbacks a fold gets from its config.
"""

from __future__ import annotations

import copy
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from torch.utils.data import DataLoader, Dataset

from rn_classifier.config import load_config, to_dict
from rn_classifier.errors import ConfigError
from rn_classifier.finetune.config import FinetuneConfig, result_settings, validate_config
from rn_classifier.finetune.cv import _lightning_trainer
from rn_classifier.finetune.inflate import use_mask_encoding
from rn_classifier.finetune.linear_probe import EarlyStoppingAfterProbe, LinearProbe
from rn_classifier.finetune.module import FinetuneModule, steps_per_epoch
from rn_classifier.models import create_model
from rn_classifier.models.classifiers import ImageClassifier, IntermediateFusionClassifier

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "finetune"
SIZE, N_CASES, BATCH, N_CLINICAL = 16, 16, 8, 3


class ToyCases(Dataset):
    """Noise crops with a central lesion, bright for label 1; a clinical vector per case."""

    def __init__(self, n=N_CASES, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % 2
        image = torch.randn(n, SIZE, SIZE, SIZE, generator=g)
        mask = torch.zeros(n, SIZE, SIZE, SIZE)
        mask[:, 5:11, 5:11, 5:11] = 1.0
        image += mask * (2.0 * self.labels.float() - 1.0).view(-1, 1, 1, 1)
        self.inputs = torch.stack([image, mask], dim=1)
        self.clinical = torch.randn(n, N_CLINICAL, generator=g) + self.labels.float().view(-1, 1)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input": self.inputs[i], "label": self.labels[i], "clinical": self.clinical[i]}


def _config(epochs, probe, **train) -> FinetuneConfig:
    cfg = FinetuneConfig()
    cfg.optim.lr, cfg.optim.weight_decay = 1e-3, 0.05   # weight decay on: frozen weights must not decay
    t = cfg.train
    t.epochs, t.linear_probe_epochs, t.batch_size = epochs, probe, BATCH
    t.accelerator, t.deterministic, t.checkpoint, t.early_stopping_patience = "cpu", True, "last", None
    for k, v in train.items():
        setattr(t, k, v)
    return cfg


def _encoder(kind: str):
    """random: the supervised twin's encoder; pretrained: a 1-channel encoder inflated to the mask
    channel (zero weights) as fine-tuning does; conv: a conv stem with BatchNorm."""
    if kind == "pretrained":
        return use_mask_encoding(create_model("vit3d_tiny_p8", img_size=SIZE, in_chans=1,
                                              drop_path_rate=0.1), "binary", 2)
    arch = "vit3d_tiny_conv_p8" if kind == "conv" else "vit3d_tiny_p8"
    return create_model(arch, img_size=SIZE, in_chans=2, drop_path_rate=0.1,
                        pos_embed_type="sincos" if kind == "sincos" else None)


def _network(kind: str = "random", fusion: bool = False):
    encoder = _encoder(kind)
    if fusion:
        return IntermediateFusionClassifier(encoder, N_CLINICAL, 8, cross_attention=True, heads=4,
                                            dropout=0.1, pool="mask")
    return ImageClassifier(encoder, head_dropout=0.1, pool="mask")


class Watch(Callback):
    """What the encoder looks like in each epoch: state at the epoch's end, and, during the
    epoch's first batch, whether it is in train mode and has any trainable parameter."""

    def __init__(self):
        self.states, self.training, self.trainable = [], [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            encoder = pl_module.network.encoder
            self.training.append(encoder.training)
            self.trainable.append(any(p.requires_grad for p in encoder.parameters()))

    def on_train_epoch_end(self, trainer, pl_module):
        self.states.append(_state(pl_module.network))


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers (BatchNorm running statistics too), copied."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _encoder_part(state):
    return {k: v for k, v in state.items() if k.startswith("encoder.")}


def _other_part(state):
    return {k: v for k, v in state.items() if not k.startswith("encoder.")}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _changed(a: dict, b: dict) -> list[str]:
    return [k for k in a if a[k].is_floating_point() and not torch.equal(a[k], b[k])]


def _fit(cfg, network, folder, module_class=FinetuneModule, watch=None):
    """Train ``network`` as a fold does: FinetuneModule + the fold's Trainer built from ``cfg``."""
    data = ToyCases()
    train = DataLoader(data, batch_size=BATCH, shuffle=False)
    val = DataLoader(data, batch_size=BATCH, shuffle=False)
    module = module_class(network, cfg.optim, cfg.train.epochs, steps_per_epoch(len(data), BATCH))
    trainer, _ = _lightning_trainer(cfg, folder)
    if watch is not None:
        trainer.callbacks.append(watch)
    trainer.fit(module, train_dataloaders=train, val_dataloaders=val)
    return trainer


@pytest.mark.parametrize("kind,fusion", [("random", False), ("pretrained", False), ("conv", False),
                                         ("random", True)])
def test_a_pure_linear_probe_trains_the_head_and_leaves_the_encoder_bit_identical(tmp_path, kind, fusion):
    """linear_probe_epochs = epochs: every encoder parameter and buffer is unchanged (despite
    weight decay 0.05; an inflated mask channel stays zero; BatchNorm statistics stay), while
    the head (and the clinical branch of intermediate fusion) trained."""
    pl.seed_everything(0, verbose=False)
    network = _network(kind, fusion)
    before = _state(network)
    _fit(_config(epochs=2, probe=2), network, tmp_path)
    after = _state(network)
    assert _same(_encoder_part(before), _encoder_part(after))
    changed = _changed(_other_part(before), _other_part(after))
    assert any(k.startswith("head.") for k in changed)
    if fusion:
        assert any(k.startswith("clinical_mlp.") for k in changed)
        assert any(k.startswith("attention.") for k in changed)
    if kind == "pretrained":
        mask_weights = network.encoder.patch_embed.input_conv.weight[:, 1]   # inflated at zero
        assert mask_weights.abs().sum() == 0


def test_b_the_encoder_is_frozen_in_eval_mode_for_n_epochs_then_fine_tunes(tmp_path):
    """0 < N < epochs: the encoder is unchanged and in eval mode (no drop path) through epoch
    N - 1 while the head trains; from epoch N on it is trainable, in train mode, and moves. The
    fixed sin-cos position embedding is never unfrozen."""
    pl.seed_everything(0, verbose=False)
    network = _network("sincos")
    before = _state(network)
    watch = Watch()
    _fit(_config(epochs=4, probe=2), network, tmp_path, watch=watch)
    assert watch.training == [False, False, True, True]
    assert watch.trainable == [False, False, True, True]
    assert _same(_encoder_part(before), _encoder_part(watch.states[1]))        # after epoch N - 1
    assert _changed(_other_part(before), _other_part(watch.states[1]))         # the head trained
    moved = _changed(_encoder_part(watch.states[1]), _encoder_part(watch.states[2]))
    assert any(".blocks.0." in k for k in moved) and any("patch_embed" in k for k in moved)
    assert _changed(_encoder_part(before), _encoder_part(_state(network)))     # after the full run
    assert not network.encoder.pos_embed.requires_grad
    assert torch.equal(network.encoder.pos_embed, before["encoder.pos_embed"])


def test_b_stopping_after_the_probe_epochs_leaves_the_encoder_unchanged(tmp_path):
    """A fold whose budget ends with the probe (epochs = N, the same schedule) has not touched
    its encoder; with more epochs the same start fine-tunes it."""
    states = {}
    for epochs in (2, 3):
        pl.seed_everything(0, verbose=False)
        network = _network("random")
        before = _state(network)
        _fit(_config(epochs=epochs, probe=2), network, tmp_path / str(epochs))
        states[epochs] = (before, _state(network))
    assert _same(*(_encoder_part(s) for s in states[2]))
    assert _changed(*(_encoder_part(s) for s in states[3]))


class PreChangeModule(FinetuneModule):
    """FinetuneModule with the optimizer exactly as it was built before linear probing existed
    (timm's groups made inside configure_optimizers)."""

    def configure_optimizers(self):
        from lightly.utils.scheduler import CosineWarmupScheduler
        from timm.optim import param_groups_layer_decay

        groups = param_groups_layer_decay(self.network, weight_decay=self.optim.weight_decay,
                                          no_weight_decay_list=self.network.no_weight_decay(),
                                          layer_decay=self.optim.layer_decay)
        for g in groups:
            g["lr"] = self.optim.lr * g["lr_scale"]
        optimizer = torch.optim.AdamW(groups, lr=self.optim.lr)
        scheduler = CosineWarmupScheduler(optimizer, warmup_epochs=self.warmup_steps,
                                          max_epochs=self.total_steps, start_value=1.0,
                                          end_value=self.optim.min_lr_ratio)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}


def test_c_linear_probe_off_adds_no_callback_and_trains_bit_identically(tmp_path):
    """linear_probe_epochs = 0: the fold's Trainer gets today's callbacks only, and training
    gives exactly the weights of the pre-change optimizer (same seed, deterministic)."""
    cfg = _config(epochs=2, probe=0, early_stopping_patience=5, checkpoint="best")
    trainer, _ = _lightning_trainer(cfg, tmp_path / "callbacks")
    kinds = [type(c) for c in trainer.callbacks if isinstance(c, (ModelCheckpoint, EarlyStopping, LinearProbe))]
    assert kinds == [EarlyStopping, ModelCheckpoint]   # Lightning puts checkpointing last

    cfg = _config(epochs=2, probe=0)
    weights = {}
    for name, module_class in (("now", FinetuneModule), ("before", PreChangeModule)):
        pl.seed_everything(0, verbose=False)
        network = _network("random")
        start = _state(network)
        _fit(cfg, network, tmp_path / name, module_class=module_class)
        weights[name] = _state(network)
    assert _changed(_encoder_part(start), _encoder_part(weights["now"]))   # the encoder trained
    assert _same(weights["now"], weights["before"])


def test_the_optimizer_holds_the_frozen_encoder_and_refuses_parameters_added_later():
    """FinetuneModule groups the parameters when it is made, so a freeze before
    configure_optimizers leaves the encoder in its layer-decay groups; a parameter added to the
    network afterwards would never train, and is an error instead."""
    network = _network("random")
    module = FinetuneModule(network, _config(2, 1).optim, epochs=2, steps_per_epoch=2)
    LinearProbe(1).freeze_before_training(module)
    optimizer = module.configure_optimizers()["optimizer"]
    in_optimizer = {p for g in optimizer.param_groups for p in g["params"]}
    assert network.encoder.blocks[0].attn.qkv.weight in in_optimizer
    assert not network.encoder.blocks[0].attn.qkv.weight.requires_grad
    network.extra = torch.nn.Linear(2, 1)
    with pytest.raises(RuntimeError, match=r"not in the optimizer: \['extra\.bias', 'extra\.weight'\]"):
        module.configure_optimizers()


def test_early_stopping_waits_for_the_end_of_the_probe(tmp_path):
    """A validation AUC that never improves stops a fold after `patience` epochs; with a probe
    of 3 epochs the count starts at epoch 3 (the probe's plateau does not stop the fold)."""

    class FlatAUC(FinetuneModule):
        def on_validation_epoch_end(self):
            self._val_logits.clear()
            self._val_labels.clear()
            self.log("val_auc", 0.5)

    epochs_run = {}
    for probe in (0, 3):
        cfg = _config(epochs=8, probe=probe, early_stopping_patience=1, checkpoint="best")
        pl.seed_everything(0, verbose=False)
        trainer = _fit(cfg, _network("random"), tmp_path / str(probe), module_class=FlatAUC)
        stoppers = [c for c in trainer.callbacks if isinstance(c, EarlyStopping)]
        assert len(stoppers) == 1 and isinstance(stoppers[0], EarlyStoppingAfterProbe) == bool(probe)
        epochs_run[probe] = trainer.current_epoch
    assert epochs_run == {0: 2, 3: 5}


def test_a_fold_of_the_ssl_model_keeps_its_inflated_pretrained_encoder_under_a_pure_probe(tmp_path):
    """Through run_finetune: the fold model's encoder is the export as fine-tuning builds it (the
    mask channel inflated at zero), after training and the fold's predictions; fold.json says
    the kept epoch was a probe epoch."""
    import json

    from builders import tiny_encoder_export, write_crop_cohort
    from safetensors.torch import load_file

    from rn_classifier.data.cache import CropCache
    from rn_classifier.finetune.run import encoder_builder, run_finetune

    root = write_crop_cohort(tmp_path / "cohort", n_internal=12, n_external=2, crop=24)
    export = tiny_encoder_export(tmp_path / "encoder", crop=SIZE)
    cfg = load_config(FinetuneConfig, CONFIGS / "ssl_demo.yaml", [
        f"data.internal_manifest={root / 'internal.csv'}", f"data.external_manifest={root / 'external.csv'}",
        f"data.internal_cache={root / 'cache' / 'internal'}", f"data.external_cache={root / 'cache' / 'external'}",
        f"model.pretrained={export}", f"model.crop_size=[{SIZE},{SIZE},{SIZE}]",
        "train.epochs=2", "train.linear_probe_epochs=2"])
    run_finetune(cfg, tmp_path / "run", folds=[0], echo=lambda s: None)
    fold = tmp_path / "run" / "folds" / "fold_0"
    info = json.loads((fold / "fold.json").read_text())
    assert info["linear_probe_epochs"] == 2 and info["kept_epoch"] == 1
    saved = load_file(str(fold / "model.safetensors"))
    build, _ = encoder_builder(cfg, CropCache(cfg.data.internal_cache))
    expected = build()
    expected.reset_classifier(0)
    expected = expected.state_dict()
    assert torch.count_nonzero(expected["patch_embed.proj.weight"][:, 1]) == 0   # the inflated mask channel
    assert {k for k in saved if k.startswith("encoder.")} == {"encoder." + k for k in expected}
    assert all(torch.equal(saved["encoder." + k], v) for k, v in expected.items())


def _demo(tmp_path, *overrides):
    return load_config(FinetuneConfig, CONFIGS / "ssl_demo.yaml",
                       [f"data.internal_manifest={tmp_path / 'internal.csv'}",
                        f"data.internal_cache={tmp_path / 'cache'}", "data.external_manifest=null",
                        "data.external_cache=null", *overrides])


@pytest.mark.parametrize("value", [9, -1])
def test_d_linear_probe_epochs_outside_0_to_epochs_is_refused_naming_the_key(tmp_path, value):
    assert validate_config(_demo(tmp_path, "train.linear_probe_epochs=8")).train.linear_probe_epochs == 8
    with pytest.raises(ConfigError, match=rf"train\.linear_probe_epochs must be between 0 .* got "
                                          rf"{value} with train\.epochs=8"):
        validate_config(_demo(tmp_path, f"train.linear_probe_epochs={value}"))


def test_e_the_result_settings_carry_the_key_only_when_it_is_on():
    """Runs from before the key keep their resume hash and stage key."""
    default = FinetuneConfig()
    assert "linear_probe_epochs" in to_dict(default)["train"]
    assert "linear_probe_epochs" not in result_settings(default)["train"]
    probe = copy.deepcopy(default)
    probe.train.linear_probe_epochs = 3
    assert result_settings(probe)["train"]["linear_probe_epochs"] == 3
    assert result_settings(probe) != result_settings(default)


def test_the_demo_configs_keep_the_probe_off():
    for name in ("ssl_demo", "supervised_demo"):
        assert load_config(FinetuneConfig, CONFIGS / f"{name}.yaml").train.linear_probe_epochs == 0
