"""Augmentation audit (``rn-classifier audit-augment``, rn_classifier.pretrain.augment_audit)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from builders import CROP_NORM
from rn_classifier.cli import main
from rn_classifier.data.cache import write_cache
from rn_classifier.data.split import make_split, save_split
from rn_classifier.pretrain.augment_audit import view_zooms, zoom_and_back
from rn_classifier.pretrain.config import DinoConfig

DINO_DEMO = Path(__file__).resolve().parents[1] / "configs" / "pretrain" / "dino_demo.yaml"


@pytest.fixture(scope="module")
def texture_cohort(tmp_path_factory):
    """40 patients, one lesion each: RN lesions hold a 1-voxel checkerboard, progression lesions
    are flat; both have the same mean, so only fine texture tells them apart."""
    root = tmp_path_factory.mktemp("audit")
    rng = np.random.default_rng(0)
    grid = np.indices((32, 32, 32))
    mask = ((grid - 15.5) ** 2).sum(0) <= 6.5 ** 2
    checker = np.where(grid.sum(0) % 2 == 0, 1.0, -1.0)
    crops, rows = [], []
    for i in range(40):
        label = i % 2
        image = rng.normal(0.0, 0.05, (32, 32, 32)) + mask * (1.0 + rng.normal(0, 0.1) + label * 0.6 * checker)
        crops.append(np.stack([image, mask]).astype(np.float16))
        rows.append({"case_id": f"C{i:02d}", "patient_id": f"P{i:02d}", "center": "SYN", "label": label})
    index = pd.DataFrame(rows)
    write_cache(root / "cache", np.stack(crops), index, {"spacing": [2.0] * 3, "channels": ["t1ce", "mask"],
                                                          "normalisation": CROP_NORM, "synthetic": True})
    save_split(make_split(index, test_fraction=0.2, n_folds=5, seed=0), root / "split.csv")
    return root


def test_blur_erases_a_texture_that_the_statistics_read(texture_cohort, capsys):
    out = texture_cohort / "audit.json"
    code = main(["audit-augment", "--config", str(DINO_DEMO), "--internal-cache", str(texture_cohort / "cache"),
                 "--split", str(texture_cohort / "split.csv"), "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "augmentation audit on 32 internal TRAINING cases" in printed
    rows = {r["augmentation"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["original"]["label_auc"] > 0.95
    blur = next(name for name in rows if name.startswith("blur"))
    assert rows[blur]["label_auc"] < 0.75          # the checkerboard is gone after a 1-voxel blur
    scale = next(name for name in rows if name.startswith("intensity scale"))
    assert rows[scale]["label_auc"] > 0.95         # a global scale keeps it (statistics are standardised)
    assert any("view zoom" in name for name in rows)


def test_view_zoom_is_the_view_size_over_the_largest_crop():
    zooms = view_zooms(DinoConfig(global_crop_size=32, local_crop_size=16, global_crop_scale=[0.7, 1.0],
                                  local_crop_scale=[0.3, 0.5]), pool_crop=48)
    assert zooms == pytest.approx({"global view": 32 / 48, "local view": 16 / 24})
    flat = np.full((12, 12, 12), 3.0)
    np.testing.assert_allclose(zoom_and_back(flat, 0.5), flat)
    assert zoom_and_back(np.random.default_rng(0).normal(size=(12, 12, 12)), 0.5).shape == (12, 12, 12)
