"""The registry of self-supervised methods (rn_classifier.pretrain.methods).

A method registered from this file alone (no edit of the package) gets its own config section,
its checks, views and LightningModule, and pretrains for 2 steps through the same
``run_pretraining`` as DINO and MAE; an unknown method name is one error listing the known ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from pretrain_fakes import make_pool_cache, tiny_config
from rn_classifier.config import save_config
from rn_classifier.errors import ConfigError, InputError
from rn_classifier.models.export import load_encoder
from rn_classifier.pretrain import methods
from rn_classifier.pretrain.base_module import PretrainModule, build_backbone
from rn_classifier.pretrain.methods import SSLMethod, check_config, load_pretrain_config
from rn_classifier.pretrain.run import run_pretraining


@dataclass
class InvarianceConfig:
    """A toy method: two noisy centre crops of a sub-volume should embed alike."""

    crop_size: int = 16
    noise_std: float = 0.1


class TwoNoisyCrops:
    """``volume (1, X, Y, Z), seed → [view, view]``, each the centre crop plus Gaussian noise."""

    def __init__(self, section: InvarianceConfig):
        self.size, self.std = section.crop_size, section.noise_std

    def __call__(self, volume, seed):
        g = torch.Generator().manual_seed(int(np.random.SeedSequence(seed).generate_state(1)[0]))
        x = torch.as_tensor(np.asarray(volume, dtype=np.float32))
        lo = [(s - self.size) // 2 for s in x.shape[1:]]
        crop = x[:, lo[0]:lo[0] + self.size, lo[1]:lo[1] + self.size, lo[2]:lo[2] + self.size]
        return [crop + self.std * torch.randn(crop.shape, generator=g) for _ in range(2)]


class InvarianceModule(PretrainModule):
    method = "invariance"

    def __init__(self, cfg, schedules, global_batch_size, device_augment=None):
        super().__init__(cfg, schedules, global_batch_size, device_augment)
        self.encoder = build_backbone(cfg, cfg.invariance.crop_size)

    def trained_encoder(self):
        return self.encoder

    def export_encoder(self):
        return self.encoder

    def compute_loss(self, batch):
        a, b = (self.encoder.forward_head(self.encoder.forward_features(v), pre_logits=True)
                for v in batch["views"])
        return (a - b).pow(2).mean(), {}


def check_invariance(section: InvarianceConfig, cfg) -> None:
    if section.noise_std < 0:
        raise InputError(f"invariance.noise_std must be >= 0, got {section.noise_std}")


INVARIANCE = SSLMethod(name="invariance", config=InvarianceConfig, check=check_invariance,
                       crop_sizes=lambda s: {"crop_size": s.crop_size},
                       loader_views=lambda s, augment: TwoNoisyCrops(s), module=lambda: InvarianceModule)


@pytest.fixture()
def invariance(monkeypatch):
    """The toy method registered for one test (the registry is a plain dict)."""
    monkeypatch.setitem(methods.METHODS, "invariance", INVARIANCE)
    return INVARIANCE


class KeepEncoderStates(Callback):
    def on_train_start(self, trainer, module):
        self.before = {k: v.detach().clone() for k, v in module.export_encoder().state_dict().items()}

    def on_train_end(self, trainer, module):
        self.after = {k: v.detach().clone() for k, v in module.export_encoder().state_dict().items()}


def test_a_method_registered_from_a_test_file_pretrains(invariance, tmp_path):
    pool = make_pool_cache(tmp_path / "pool", n=8)
    cfg = tiny_config(pool, "invariance")
    assert cfg.invariance == InvarianceConfig()              # its section, at its defaults
    config = save_config(cfg, tmp_path / "invariance.yaml")
    loaded = load_pretrain_config(config, ["invariance.noise_std=0.2"])   # YAML key + override
    assert loaded.method == "invariance" and loaded.invariance.noise_std == 0.2
    states = KeepEncoderStates()
    run = run_pretraining(loaded, out=tmp_path / "run", accelerator="cpu", max_steps=2, callbacks=[states])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["method"] == "invariance" and summary["global_step"] == 2
    encoder, meta = load_encoder(run)
    assert meta["crop_size"] == [16, 16, 16] and meta["config"]["invariance"]["noise_std"] == 0.2
    changed = [k for k in states.before if not torch.equal(states.before[k], states.after[k])]
    assert changed, "two optimizer steps left the encoder unchanged"
    for name, value in encoder.state_dict().items():
        torch.testing.assert_close(value, states.after[name])
    with pytest.raises(InputError, match=r"invariance.noise_std must be >= 0, got -1.0"):
        check_config(load_pretrain_config(config, ["invariance.noise_std=-1"]))
    with pytest.raises(InputError, match=r"invariance.crop_size = 12 is not a positive multiple of the "
                                         r"patch size 8"):
        check_config(load_pretrain_config(config, ["invariance.crop_size=12"]))
    with pytest.raises(InputError, match=r"augment_on is 'device' but method 'invariance' makes its views "
                                         r"in the data loader only"):
        check_config(load_pretrain_config(config, ["data.augment_on=device"]))


def test_an_unknown_method_lists_the_known_ones(tmp_path):
    cfg = tiny_config(tmp_path / "pool", "dino")
    cfg.method = "ibot"
    with pytest.raises(ConfigError, match=r"method must be one of \['dino', 'mae', 'statistics'\], got 'ibot'"):
        check_config(cfg)
    assert "invariance" not in methods.METHODS              # the fixture's entry is gone again
