"""Frozen-encoder probe (``rn-classifier probe-encoder``, rn_classifier.pretrain.probe)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from builders import CROP_NORM, tiny_encoder_export, write_crop_cohort
from rn_classifier.cli import main
from rn_classifier.data.cache import CropCache, write_cache
from rn_classifier.data.split import make_split, save_split
from rn_classifier.data.synth.lesions import TRAITS
from rn_classifier.errors import InputError
from rn_classifier.pretrain.probe import RANDOM_REFERENCE, STATISTICS_REFERENCE, probe_encoders

CROP = 32


@pytest.fixture(scope="module")
def crop_cohort(tmp_path_factory):
    """20 patients x 2 lesions (bright = RN, dark = progression), a split, and the split's
    internal-test crops overwritten with NaN: a probe that read them would fail."""
    root = write_crop_cohort(tmp_path_factory.mktemp("probe") / "cohort", n_internal=20, crop=CROP)
    split = make_split(pd.read_csv(root / "internal.csv"), test_fraction=0.2, n_folds=5, seed=0)
    save_split(split, root / "split.csv")
    cache = CropCache(root / "cache" / "internal")
    crops = np.asarray(cache.crops, np.float32).copy()
    test_ids = set(split.loc[split["part"] == "internal_test", "case_id"])
    crops[cache.index["case_id"].isin(test_ids).to_numpy()] = np.nan
    write_cache(root / "cache" / "poisoned", crops, cache.index.drop(columns=["row"]), {
        "spacing": [2.0] * 3, "channels": ["t1ce", "mask"], "normalisation": CROP_NORM, "synthetic": True})
    encoder = tiny_encoder_export(root / "encoder", crop=CROP)
    return {"root": root, "cache": root / "cache" / "poisoned", "split": root / "split.csv",
            "encoder": encoder, "n_train": int((split["part"] == "train").sum())}


def test_probe_reads_training_cases_only_and_ranks_a_planted_signal(crop_cohort):
    import torch

    torch.manual_seed(5)
    expected_draw = torch.rand(3)
    torch.manual_seed(5)
    report = probe_encoders([crop_cohort["encoder"]], crop_cohort["cache"], crop_cohort["split"], repeats=2)
    assert torch.equal(torch.rand(3), expected_draw)   # the random twin leaves the caller's RNG alone
    assert report["cases"]["n"] == crop_cohort["n_train"]
    rows = {row["name"]: row for row in report["rows"]}
    assert list(rows) == [str(crop_cohort["encoder"]), RANDOM_REFERENCE, STATISTICS_REFERENCE]
    assert set(rows[RANDOM_REFERENCE]["label_auc"]) == {"cls", "avg", "mask"}
    for row in rows.values():           # NaN test crops, had they been read, would make these NaN
        assert all(np.isfinite(v) and 0 <= v <= 1 for v in row["label_auc"].values())
    # the label is the lesion's brightness: the mean intensity in the mask separates it exactly
    assert rows[STATISTICS_REFERENCE]["label_auc"]["statistics"] > 0.95
    assert "trait_r2" not in rows[STATISTICS_REFERENCE]     # no cohort.json: no latent traits


def _trait_cohort(root):
    """A SYNTHETIC-style cohort whose crops render two latent traits: the lesion's radius (cube
    half-size) and its enhancement (brightness); the other traits are drawn but not rendered."""
    rng = np.random.default_rng(1)
    patients, rows, crops = [], [], []
    for p in range(40):
        pid = f"SYN-INT-{p:03d}"
        label = p % 2
        phenotype = {t.name: float(rng.uniform(t.lo, t.hi)) for t in TRAITS}
        half = int(rng.integers(2, 8))                       # cube half-size in 2 mm voxels
        phenotype.update(label=label, radius_mm=2.0 * half, growth=1.0)
        patients.append({"patient_id": pid, "timepoints": ["t1"],
                         "lesions": [{"lesion": 1, "label": label, "phenotype": phenotype}]})
        image = rng.normal(0, 0.3, (CROP,) * 3).astype(np.float32)
        mask = np.zeros((CROP,) * 3, np.float32)
        c = CROP // 2
        mask[c - half:c + half, c - half:c + half, c - half:c + half] = 1
        image += mask * phenotype["enhancement"]
        crops.append(np.stack([image, mask]))
        rows.append({"case_id": f"{pid}_t1_L1", "patient_id": pid, "center": "SYN-A", "label": label,
                     "synthetic": 1})
    index = pd.DataFrame(rows)
    write_cache(root / "cache", np.stack(crops), index, {"spacing": [2.0] * 3, "channels": ["t1ce", "mask"],
                                                         "normalisation": CROP_NORM, "synthetic": True})
    save_split(make_split(index, test_fraction=0.2, n_folds=5, seed=0), root / "split.csv")
    (root / "cohort.json").write_text(json.dumps({"synthetic": True, "patients": patients}))
    return root


def test_trait_readout_recovers_rendered_traits_not_unrendered_ones(tmp_path, crop_cohort):
    root = _trait_cohort(tmp_path)
    report = probe_encoders([crop_cohort["encoder"]], root / "cache", root / "split.csv",
                            cohort_json=root / "cohort.json", repeats=1)
    assert report["synthetic_traits"]
    rows = {row["name"]: row for row in report["rows"]}
    stats = rows[STATISTICS_REFERENCE]["trait_r2"]
    assert stats["log_radius_mm"] > 0.8 and stats["enhancement"] > 0.8
    assert stats["nodularity"] < 0.3 and stats["lobulation"] < 0.3        # never rendered
    assert set(rows[RANDOM_REFERENCE]["trait_r2"]) == set(stats)
    assert rows[RANDOM_REFERENCE]["trait_features"] == "mask"


def test_probe_refuses_a_cohort_json_that_is_not_synthetic(tmp_path, crop_cohort):
    fake = tmp_path / "cohort.json"
    fake.write_text(json.dumps({"patients": []}))
    with pytest.raises(InputError, match="cohort.json.*SYNTHETIC"):
        probe_encoders([crop_cohort["encoder"]], crop_cohort["cache"], crop_cohort["split"],
                       cohort_json=fake, repeats=1)


def test_an_empty_mask_is_refused_naming_the_case(tmp_path, crop_cohort):
    cache = CropCache(crop_cohort["cache"])
    crops = np.asarray(cache.crops, np.float32).copy()
    split = pd.read_csv(crop_cohort["split"])
    victim = split.loc[split["part"] == "train", "case_id"].iloc[3]
    crops[cache.index["case_id"].to_numpy() == victim, 1] = 0
    write_cache(tmp_path / "empty_mask", crops, cache.index.drop(columns=["row"]),
                {"spacing": [2.0] * 3, "channels": ["t1ce", "mask"], "normalisation": CROP_NORM, "synthetic": True})
    with pytest.raises(InputError, match=f"case {victim}: the lesion mask is empty"):
        probe_encoders([crop_cohort["encoder"]], tmp_path / "empty_mask", crop_cohort["split"], repeats=1)


def test_probe_refuses_a_cache_without_the_mask_channel(tmp_path, crop_cohort):
    cache = CropCache(crop_cohort["cache"])
    write_cache(tmp_path / "t1ce_only", np.asarray(cache.crops)[:, :1], cache.index.drop(columns=["row"]),
                {"spacing": [2.0] * 3, "channels": ["t1ce"], "normalisation": CROP_NORM, "synthetic": True})
    with pytest.raises(InputError, match="t1ce_only.*mask"):
        probe_encoders([crop_cohort["encoder"]], tmp_path / "t1ce_only", crop_cohort["split"], repeats=1)


def test_command_prints_the_table_and_writes_the_report(tmp_path, crop_cohort, capsys):
    out = tmp_path / "probe.json"
    rc = main(["probe-encoder", "--encoder", str(crop_cohort["encoder"]), "--internal-cache",
               str(crop_cohort["cache"]), "--split", str(crop_cohort["split"]), "--repeats", "1",
               "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert f"{crop_cohort['n_train']} internal TRAINING cases" in printed
    assert RANDOM_REFERENCE in printed and STATISTICS_REFERENCE in printed
    report = json.loads(out.read_text())
    assert [row["name"] for row in report["rows"]][-1] == STATISTICS_REFERENCE


def test_monitor_pools_like_the_probe_and_cls_is_the_class_token(crop_cohort):
    import torch

    from rn_classifier.models.export import load_encoder
    from rn_classifier.pretrain.datamodule import LabelledCases
    from rn_classifier.pretrain.monitor import embed_cases
    from rn_classifier.pretrain.probe import centre_crops, embed

    cache = CropCache(crop_cohort["root"] / "cache" / "internal")
    rows = cache.index["row"].to_numpy()[:6]
    cases = LabelledCases(cache=cache, rows=rows, labels=np.zeros(6, int), patients=np.zeros(6, str),
                          folds=np.zeros(6, int))
    encoder, _ = load_encoder(crop_cohort["encoder"])
    expected = embed(encoder, centre_crops(np.stack([cache[int(r)] for r in rows]), [CROP] * 3))
    for pool in ("mask", "avg", "cls"):
        got = embed_cases(encoder, cases, CROP, 4, torch.device("cpu"), pool)
        np.testing.assert_allclose(got, expected[pool], rtol=1e-5, atol=1e-5)
    with torch.no_grad():   # the monitor's former embedding: the encoder's own pre-logits (class token)
        x = torch.stack([torch.as_tensor(cache[int(r)][:1]) for r in rows])
        pre_logits = encoder.forward_head(encoder.forward_features(x), pre_logits=True).numpy()
    np.testing.assert_allclose(expected["cls"], pre_logits, rtol=1e-5, atol=1e-5)
    assert not np.allclose(expected["mask"], expected["cls"], atol=1e-3)


def test_monitor_mask_pooling_needs_the_mask_channel(tmp_path, crop_cohort):
    from rn_classifier.pretrain.datamodule import LabelledCases
    from rn_classifier.pretrain.monitor import LabelEfficiencyMonitor

    cache = CropCache(crop_cohort["cache"])
    write_cache(tmp_path / "t1ce_only", np.asarray(cache.crops)[:, :1], cache.index.drop(columns=["row"]),
                {"spacing": [2.0] * 3, "channels": ["t1ce"], "normalisation": CROP_NORM, "synthetic": True})
    one_channel = CropCache(tmp_path / "t1ce_only")
    cases = LabelledCases(cache=one_channel, rows=np.arange(4), labels=np.array([0, 1, 0, 1]),
                          patients=np.array(["a", "b", "c", "d"]), folds=np.array([0, 0, 1, 1]))
    with pytest.raises(InputError, match="t1ce_only.*monitor.pool: avg"):
        LabelEfficiencyMonitor(cases, CROP, every_n_epochs=1, pool="mask")
    assert LabelEfficiencyMonitor(cases, CROP, every_n_epochs=1, pool="avg").pool == "avg"
