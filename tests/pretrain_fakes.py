"""Small fake preprocess caches and configs for the pretraining tests (no data files needed).

Volumes are simple structured images (a bright ball of random size and place in noise), so the
augmentations and the encoder see something image-like; they carry no clinical meaning.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rn_classifier.data.cache import write_cache
from rn_classifier.pretrain.config import PretrainConfig
from rn_classifier.pretrain.methods import new_pretrain_config

NORMALISATION = {"method": "zscore_foreground", "clip_percentiles": [0.5, 99.5]}


def ball_volumes(n: int, size: int, channels: int = 1, seed: int = 0, labels=None) -> np.ndarray:
    """``(n, channels, size, size, size)`` float32; with ``labels``, class 1 balls are hollow."""
    rng = np.random.default_rng(seed)
    grid = np.indices((size,) * 3).astype(np.float32)
    out = rng.normal(0, 0.3, (n, channels, size, size, size)).astype(np.float32)
    for i in range(n):
        centre = rng.uniform(size * 0.3, size * 0.7, 3)
        radius = rng.uniform(size * 0.15, size * 0.3)
        d = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre)))
        ball = d <= radius
        if labels is not None and labels[i] == 1:
            ball &= d >= radius * 0.6
        out[i, 0][ball] += 2.0
        if channels > 1:
            out[i, 1] = (d <= radius).astype(np.float32)  # the lesion mask channel
    return out


def make_pool_cache(folder, n: int = 12, size: int = 24, spacing=(2.0, 2.0, 2.0), seed: int = 0,
                    centre: str = "PUBLIC", case_prefix: str = "pool") -> Path:
    index = pd.DataFrame({"case_id": [f"{case_prefix}{i:03d}" for i in range(n)],
                          "patient_id": [f"{case_prefix}_pt{i:03d}" for i in range(n)],
                          "center": centre, "label": pd.NA, "synthetic": True,
                          "origin_x": 0.0, "origin_y": 0.0, "origin_z": 0.0})
    meta = {"spacing": list(spacing), "channels": ["t1ce"], "normalisation": NORMALISATION,
            "synthetic": True}
    return write_cache(folder, ball_volumes(n, size, 1, seed), index, meta)


def make_lesion_pool_cache(folder, n_lesion: int = 8, n_random: int = 4, size: int = 24,
                           seed: int = 0, centre: str = "PUBLIC") -> Path:
    """A two-channel pool of sub-volumes as ``preprocess`` writes one for a pool with
    segmentations: ``n_lesion`` crops centred on a lesion (``kind == "lesion"``, mask in channel
    1) and ``n_random`` random sub-volumes without a lesion (empty mask)."""
    n = n_lesion + n_random
    crops = ball_volumes(n, size, 2, seed)
    crops[n_lesion:, 1] = 0.0
    index = pd.DataFrame({"case_id": [f"sub{i:03d}" for i in range(n)],
                          "patient_id": [f"scan{i // 2:03d}" for i in range(n)],
                          "center": centre, "label": pd.NA, "synthetic": True,
                          "kind": ["lesion"] * n_lesion + ["random"] * n_random,
                          "lesion_voxels": [int(c[1].sum()) for c in crops],
                          "origin_x": 0.0, "origin_y": 0.0, "origin_z": 0.0})
    meta = {"spacing": [2.0, 2.0, 2.0], "channels": ["t1ce", "mask"], "normalisation": NORMALISATION,
            "synthetic": True}
    return write_cache(folder, crops, index, meta)


def make_internal_cache(folder, split_path, n_train_patients: int = 8, n_test_patients: int = 3,
                        n_external: int = 3, size: int = 24, n_folds: int = 2, seed: int = 1):
    """A 2-channel internal cache holding TRAINING cases (two lesions for some patients), planted
    internal-TEST cases and planted EXTERNAL cases (centre "EXT"), plus the split file.

    Returns ``(cache folder, index DataFrame, split DataFrame)``.
    """
    rows, split_rows = [], []
    for p in range(n_train_patients):
        for lesion in range(1 + p % 2):
            case = f"train_p{p}_l{lesion}"
            rows.append((case, f"train_p{p}", "MOLAB", (p // 2 + lesion) % 2))
            split_rows.append((case, f"train_p{p}", "train", p % n_folds))
    for p in range(n_test_patients):
        case = f"test_p{p}"
        rows.append((case, case, "MOLAB", p % 2))
        split_rows.append((case, case, "internal_test", -1))
    for p in range(n_external):
        rows.append((f"ext_p{p}", f"ext_p{p}", "EXT", p % 2))
    index = pd.DataFrame(rows, columns=["case_id", "patient_id", "center", "label"])
    index["synthetic"] = True
    for axis in "xyz":
        index[f"origin_{axis}"] = 0.0
    meta = {"spacing": [2.0, 2.0, 2.0], "channels": ["t1ce", "mask"], "normalisation": NORMALISATION,
            "synthetic": True}
    crops = ball_volumes(len(index), size, 2, seed, labels=index["label"].to_numpy())
    write_cache(folder, crops, index, meta)
    split = pd.DataFrame(split_rows, columns=["case_id", "patient_id", "part", "fold"])
    split.to_csv(split_path, index=False)
    return Path(folder), index, split


def tiny_config(pool_cache, method: str = "dino", **data) -> PretrainConfig:
    """A CPU-sized config: vit3d_tiny_p8 (1-token-per-8³-patch), 16³ global / 8³ local crops."""
    cfg = new_pretrain_config(name=f"test_{method}", method=method)
    cfg.model.name = "vit3d_tiny_p8"
    cfg.data.pool_cache = str(pool_cache)
    cfg.data.batch_size = 2
    cfg.data.num_workers = 0
    for key, value in data.items():
        setattr(cfg.data, key, value)
    cfg.dino.global_crop_size, cfg.dino.local_crop_size, cfg.dino.n_local_crops = 16, 8, 2
    cfg.dino.out_dim, cfg.dino.hidden_dim, cfg.dino.bottleneck_dim = 64, 32, 16
    cfg.dino.warmup_teacher_temp_epochs = 1
    cfg.mae.crop_size, cfg.mae.decoder_dim, cfg.mae.decoder_depth, cfg.mae.decoder_heads = 16, 48, 1, 2
    cfg.statistics.crop_size = 16
    cfg.optim.warmup_epochs = 1
    cfg.trainer.epochs = 2
    cfg.trainer.checkpoint_every_n_steps = 2
    cfg.trainer.log_every_n_steps = 1
    return cfg
