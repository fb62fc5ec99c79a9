"""Pretraining runs end to end on the CPU: DDP, resume, export, non-finite loss, monitor.

Tiny settings (vit3d_tiny_p8, 16³ global / 8³ local crops, 2-4 steps) keep each run to seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from pretrain_fakes import make_internal_cache, make_pool_cache, tiny_config
from rn_classifier.checkpoints import load_checkpoint
from rn_classifier.config import save_config
from rn_classifier.data.cache import CropCache, write_cache
from rn_classifier.models.export import load_encoder
from rn_classifier.pretrain.base_module import NonFiniteLossError
from rn_classifier.pretrain.monitor import cross_validated_auc
from rn_classifier.pretrain.run import run_pretraining

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return make_pool_cache(tmp_path_factory.mktemp("pool") / "pool", n=8)


def test_ddp_two_cpu_processes_disjoint_samples_identical_weights(pool, tmp_path):
    """2 gloo processes launched by Lightning through pretrain/train.py (as torchrun would)."""
    cfg = tiny_config(pool, "dino")
    cfg.trainer.record_samples = True
    config = save_config(cfg, tmp_path / "dino.yaml")
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "pretrain" / "train.py"), "--config", str(config),
                           "--devices", "2", "--accelerator", "cpu", "--max-steps", "2", "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((out / "audit" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    per_rank = [[s for b in r["batches"] for s in b["samples"]] for r in ranks]
    assert [len(s) for s in per_rank] == [4, 4]               # 2 steps x batch 2 on each rank
    assert not set(per_rank[0]) & set(per_rank[1])            # disjoint shares of the pool
    assert ranks[0]["state_sha256"] == ranks[1]["state_sha256"]  # identical weights after the steps
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_step"] == 2 and summary["global_batch_size"] == 4
    assert (out / "encoder.safetensors").is_file()


class Crash(Callback):
    """Stops the run at the start of step ``at`` (after the checkpoint of step ``at``)."""

    class Stop(RuntimeError):
        pass

    def __init__(self, at: int):
        self.at = at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.at:
            raise Crash.Stop(f"simulated crash at step {self.at}")


def _final_state(run: Path) -> dict:
    return load_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"]


@pytest.mark.parametrize("method, augment_on", [("dino", "loader"), ("mae", "device")])
def test_resumed_run_ends_with_the_same_weights(method, augment_on, pool, tmp_path):
    """4 batches per epoch; crash after step 2 (mid-epoch), resume, finish at step 5 (epoch 2).

    DINO makes its views in the loader (MONAI), MAE on the device (batch_augment)."""
    def config():
        cfg = tiny_config(pool, method)
        cfg.data.augment_on = augment_on
        cfg.trainer.deterministic = True
        cfg.trainer.max_steps = 5
        cfg.model.drop_path_rate = 0.1          # stochastic depth: randomness inside the step
        return cfg

    straight = run_pretraining(config(), out=tmp_path / "straight", accelerator="cpu")
    with pytest.raises(Crash.Stop):
        run_pretraining(config(), out=tmp_path / "crashed", accelerator="cpu", callbacks=[Crash(at=2)])
    assert not (tmp_path / "crashed" / "encoder.safetensors").exists()
    assert load_checkpoint(tmp_path / "crashed" / "checkpoints" / "last.ckpt")["global_step"] == 2
    resumed = run_pretraining(None, resume=tmp_path / "crashed", accelerator="cpu")
    a, b = _final_state(straight), _final_state(resumed)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors differ after resume: {different[:5]}"
    # ... and the run did train: the weights moved away from the first checkpoint's
    start = load_checkpoint(tmp_path / "straight" / "checkpoints" / "step0000002.ckpt")["state_dict"]
    assert any(not torch.equal(a[k], start[k]) for k in a)
    assert json.loads((resumed / "provenance.json").read_text())["resumes"]


def test_export_rebuilds_the_teacher_backbone(pool, tmp_path):
    cfg = tiny_config(pool, "dino")
    cfg.data.augment_on = "device"  # the GPU path (batched views), here on the CPU
    cfg.trainer.max_steps = 2
    run = run_pretraining(cfg, out=tmp_path / "run", accelerator="cpu")
    encoder, meta = load_encoder(run)
    state = _final_state(run)
    teacher = {k.removeprefix("model.teacher_backbone."): v for k, v in state.items()
               if k.startswith("model.teacher_backbone.")}
    for name, tensor in encoder.state_dict().items():
        assert torch.equal(tensor, teacher[name]), name
    cache_meta = CropCache(pool).meta
    assert meta["architecture"] == "vit3d_tiny_p8" and meta["in_chans"] == 1
    assert meta["crop_size"] == [16, 16, 16] and meta["patch_size"] == [8, 8, 8]
    assert meta["spacing"] == cache_meta["spacing"] and meta["normalisation"] == cache_meta["normalisation"]
    assert meta["config"]["method"] == "dino"
    x = torch.randn(2, 1, 16, 16, 16)
    assert encoder.forward_head(encoder.forward_features(x), pre_logits=True).shape == (2, 192)


def test_non_finite_loss_stops_with_where(tmp_path):
    source = CropCache(make_pool_cache(tmp_path / "clean", n=4))
    crops = np.array(source.crops, dtype=np.float32)
    crops[:] = np.nan                                           # every sub-volume is corrupt
    meta = {k: v for k, v in source.meta.items() if k not in ("n", "crop_size", "version")}
    write_cache(tmp_path / "nan", crops, source.index.drop(columns="row"), meta)
    cfg = tiny_config(tmp_path / "nan", "mae")
    with pytest.raises(NonFiniteLossError, match=r"MAE loss is not finite at epoch 0, optimizer step 0 .* rank 0"
                                                 r".*Sub-volumes of this rank's batch: pool/pool00\d"):
        run_pretraining(cfg, out=tmp_path / "run", accelerator="cpu")
    assert not (tmp_path / "run" / "encoder.safetensors").exists()


def test_monitor_logs_cross_validated_auc(pool, tmp_path):
    internal, _, _ = make_internal_cache(tmp_path / "internal", tmp_path / "split.csv", size=24)
    cfg = tiny_config(pool, "dino", internal_cache=str(internal), split=str(tmp_path / "split.csv"))
    cfg.monitor.every_n_epochs, cfg.monitor.k = 1, 3
    cfg.trainer.epochs = 1
    run = run_pretraining(cfg, out=tmp_path / "run", accelerator="cpu")
    metrics = pd.read_csv(run / "logs" / "csv" / "metrics.csv")
    auc = metrics["monitor/knn_auc"].dropna()
    assert len(auc) == 1 and 0.0 <= auc.iloc[0] <= 1.0
    assert json.loads((run / "summary.json").read_text())["monitor"][0]["auc"] == pytest.approx(auc.iloc[0])


def test_cross_validated_auc_separates_separable_embeddings():
    rng = np.random.default_rng(0)
    y = np.tile([0, 1], 20)
    folds = np.repeat(np.arange(4), 10)
    separable = rng.normal(size=(40, 8)) + 3.0 * y[:, None]
    noise = rng.normal(size=(40, 8))
    for method in ("knn", "logistic"):
        assert cross_validated_auc(separable, y, folds, method, k=5) > 0.95
        assert cross_validated_auc(noise, y, folds, method, k=5) < 0.8


def test_bf16_run_clips_gradients_with_the_fused_optimizer(pool, tmp_path):
    """Lightning's mixed-precision plugin refuses to clip for a fused optimizer; bf16 gradients are
    never scaled, so PretrainModule clips them itself: the run trains, and clipping bounds the norm."""
    from rn_classifier.pretrain.dino_module import DINOModule
    from rn_classifier.pretrain.schedules import build_schedules

    cfg = tiny_config(pool, "dino")
    cfg.trainer.precision = "bf16-mixed"
    cfg.trainer.max_steps = 2
    cfg.optim.clip_grad = 1e-3
    run = run_pretraining(cfg, out=tmp_path / "run", accelerator="cpu")
    assert json.loads((run / "summary.json").read_text())["global_step"] == 2

    schedules = build_schedules(total_steps=2, steps_per_epoch=1, peak_lr=1e-4, min_lr=1e-6, warmup_epochs=0,
                                weight_decay=0.04, weight_decay_end=0.4, teacher_momentum=0.996, teacher_temp=0.04)
    module = DINOModule(cfg, schedules, global_batch_size=2)
    optimizer = module.configure_optimizers()
    assert optimizer.defaults["fused"]
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.full_like(p, 1.0)
    module.configure_gradient_clipping(optimizer, gradient_clip_val=0.5)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
    assert norm == pytest.approx(0.5, rel=1e-4)


def test_auto_precision_is_bf16_where_bf16_matmuls_are_native(monkeypatch):
    from rn_classifier.pretrain.run import fastest_precision

    from rn_classifier.pretrain.methods import get_method

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert fastest_precision(on_gpu=False, bf16_on_cpu=get_method("dino").bf16_on_cpu) == "bf16-mixed"
    assert fastest_precision(on_gpu=False, bf16_on_cpu=get_method("mae").bf16_on_cpu) == "32-true"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert fastest_precision(on_gpu=False, bf16_on_cpu=True) == "32-true"
