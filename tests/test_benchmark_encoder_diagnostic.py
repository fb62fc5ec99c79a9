"""benchmarks/encoder_diagnostic.py end to end on a small SYNTHETIC cohort (2 training steps)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "encoder_diagnostic.py"


def _load():
    spec = importlib.util.spec_from_file_location("encoder_diagnostic", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_diagnostic_holds_out_patients_and_reports_every_arm(tmp_path, capsys):
    bench = _load()
    result = bench.main(["--work", str(tmp_path), "--preset", "mini", "--seed", "3", "--sizes", "6,all",
                         "--steps", "2", "--min-test", "5", "--encoders", "vit3d_tiny_conv_regions_p8,monai_resnet10_w16",
                         "--threads", "1", "--shift", "2", "--train-seed", "4", "--drop-path", "0.1",
                         "--head-dropout", "0.2"])
    out = capsys.readouterr().out
    assert "DIAGNOSTIC, SYNTHETIC" in out
    table = result["table"]
    assert [row["train_lesions"] for row in table][0] < table[-1]["train_lesions"]
    for row in table:
        for arm in (bench.STATISTICS, "vit3d_tiny_conv_regions_p8", "vit3d_tiny_conv_regions_p8 train",
                    "monai_resnet10_w16", "monai_resnet10_w16 train"):
            assert 0.0 <= row[arm] <= 1.0
    saved = json.loads((tmp_path / "diagnostic.json").read_text())
    assert saved["held_out_lesions"] == result["held_out_lesions"] >= 5
    assert (saved["train_seed"], saved["drop_path"], saved["head_dropout"]) == (4, 0.1, 0.2)
    # Held-out lesions belong to patients the training set never saw.
    from rn_classifier.data.cache import CropCache
    index = CropCache(tmp_path / "cache_shift2").index
    cache, labelled = bench.internal_cohort(tmp_path, 3, "mini", shift=2)
    # Crops 2 x 2 voxels larger than the model's: training draws it at random offsets.
    assert list(cache.crop_size) == [c + 4 for c in bench.CROP] and saved["shift"] == 2
    train, test = bench.held_out_split(labelled, 5, 3)
    assert not set(train["patient_id"]) & set(test["patient_id"])
    assert len(train) + len(test) == index["label"].notna().sum()
    subsets = bench.nested_subsets(train, [6, len(train)], 3)
    assert set(subsets[6]["case_id"]) <= set(subsets[len(train)]["case_id"])
    assert np.isin(subsets[6]["patient_id"].unique(), train["patient_id"].unique()).all()
