"""benchmarks/encoder_diagnostic.py end to end on a small SYNTHETIC cohort (2 training steps)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

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
    # the held-out scores are kept, so two runs can be compared lesion by lesion (paired DeLong)
    held_out = saved["held_out"]
    assert len(held_out["case_id"]) == len(held_out["label"]) == saved["held_out_lesions"]
    last = table[-1]["train_lesions"]
    logits = np.asarray(held_out["scores"][f"{last} vit3d_tiny_conv_regions_p8"])
    from rn_classifier.stats.delong import auc_delong
    assert auc_delong(np.asarray(held_out["label"]), logits).auc == pytest.approx(
        table[-1]["vit3d_tiny_conv_regions_p8"], abs=1e-3)
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


def _lesion_crop(seed: int) -> "torch.Tensor":
    import torch

    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in (20, 20, 20)], indexing="ij"))
    radius = np.linalg.norm(grid - np.array([10.0, 9.0, 11.0])[:, None, None, None], axis=0)
    mask = (radius < 5).astype(np.float32)
    image = (0.3 + 0.6 * ((radius > 3) & (radius < 5)) + 0.1 * rng.standard_normal(radius.shape)).astype(np.float32)
    return torch.as_tensor(np.stack([image, mask]))


def test_the_statistics_targets_do_not_change_under_the_diagnostics_flips_and_turns():
    """One statistics row per case serves every augmented view of it: the diagnostic augments by
    flips and 90° turns only, and the crop statistics are the same for each."""
    import torch

    from rn_classifier.pretrain.probe import crop_statistics

    crop = _lesion_crop(0)
    views = [crop, crop.flip(1), crop.flip(2), crop.flip(3), crop.rot90(1, (1, 2)), crop.rot90(3, (1, 2))]
    rows = crop_statistics(torch.stack(views))
    np.testing.assert_allclose(rows, np.repeat(rows[:1], len(views), axis=0), rtol=1e-5, atol=1e-6)


def test_the_statistics_target_adds_its_weighted_mse_to_the_class_loss():
    import torch
    from torch.nn import functional as F

    from rn_classifier.finetune.config import OptimConfig
    from rn_classifier.models import create_model
    from rn_classifier.models.classifiers import ImageClassifier

    bench = _load()
    torch.manual_seed(0)
    network = ImageClassifier(create_model("vit3d_tiny_p8", in_chans=2, img_size=[16, 16, 16]), pool="mask")
    targets = {"a": np.arange(4, dtype=float), "b": -np.ones(4)}
    module = bench.StatisticsTargetModule(network, targets, aux_weight=0.25, optim=OptimConfig(lr=1e-3),
                                          epochs=1, steps_per_epoch=1)
    x = torch.stack([_lesion_crop(1)[:, 2:18, 2:18, 2:18], _lesion_crop(2)[:, 2:18, 2:18, 2:18]])
    batch = {"input": x, "label": torch.tensor([1, 0]), "case_id": ["b", "a"]}
    loss = module.training_step(batch, 0)
    _, pooled = network.embed(x)
    expected = (F.binary_cross_entropy_with_logits(network(x), torch.tensor([1.0, 0.0]))
                + 0.25 * F.mse_loss(network.statistics_head(pooled),
                                    torch.tensor([[-1.0] * 4, [0.0, 1.0, 2.0, 3.0]])))
    torch.testing.assert_close(loss, expected)
    # the head is one of the network's parameters, so the optimiser trains it
    optimizer = module.configure_optimizers()["optimizer"]
    assert any(p is network.statistics_head.weight for g in optimizer.param_groups for p in g["params"])


def test_statistics_pretraining_reads_no_label_and_fine_tuning_starts_from_it(tmp_path):
    import torch

    bench = _load()
    cache, labelled = bench.internal_cohort(tmp_path, 3, "mini")
    lesions = labelled.drop(columns="label").head(8)
    state, _ = bench.statistics_pretrained_encoder(cache, "vit3d_tiny_conv_regions_p8", lesions, steps=3,
                                                   lr=1e-3, batch_size=4, seed=5)
    torch.manual_seed(5)
    untrained = bench.new_network("vit3d_tiny_conv_regions_p8").encoder.state_dict()
    assert state.keys() == untrained.keys()
    assert any(not torch.equal(state[k], untrained[k]) for k in state)   # the steps moved it
    # fine-tuning (0 steps: nothing moves) predicts with exactly the pretrained encoder
    train, test = labelled.head(6), labelled.tail(4)
    logits, _, _ = bench.encoder_scores(cache, "vit3d_tiny_conv_regions_p8", train, test, steps=0, lr=1e-3,
                                        batch_size=4, seed=5, encoder_state=state)
    import lightning.pytorch as pl

    pl.seed_everything(5, verbose=False)   # the head as encoder_scores draws it, the encoder loaded
    network = bench.new_network("vit3d_tiny_conv_regions_p8")
    network.encoder.load_state_dict(state)
    crops = torch.as_tensor(bench.centre_crops([np.asarray(cache[int(r)], np.float32) for r in test["row"]],
                                               bench.CROP))
    # in the precision the benchmark predicts in: bf16 autocast on a CPU with AMX tiles, else fp32
    bf16 = bench.fastest_precision(on_gpu=False) == "bf16-mixed"
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        expected = network.eval()(crops).float().numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)


def test_pool_pretraining_reads_the_pools_lesion_sub_volumes_without_labels(tmp_path):
    bench = _load()
    bench.internal_cohort(tmp_path, 3, "mini", pool_size=12)
    cache, lesions = bench.pool_lesions(tmp_path)
    pool = pd.read_csv(tmp_path / "cohort" / "manifests" / "unlabeled.csv")
    assert set(lesions["case_id"]) == set(pool.loc[pool["kind"] == "lesion", "case_id"])
    assert 0 < len(lesions) < len(pool)   # the lesion-free sub-volumes are left out
    assert lesions["label"].isna().all()  # a pool has no labels to read
    for row in lesions["row"]:
        crop = np.asarray(cache[int(row)], np.float32)
        assert crop.shape == (2, *bench.CROP)
        centre = tuple(s // 2 for s in bench.CROP)
        # centred on the lesion: its mask channel is set within a few voxels of the centre
        assert crop[1][tuple(slice(c - 4, c + 4) for c in centre)].any()
    # end to end: pretrained on the pool, each size reports the frozen features' probe beside fine-tuning
    result = bench.main(["--work", str(tmp_path), "--preset", "mini", "--seed", "3", "--sizes", "all",
                         "--steps", "1", "--min-test", "5", "--encoders", "vit3d_tiny_conv_regions_p8",
                         "--threads", "1", "--pretrain-statistics", "1", "--pretrain-pool", "12"])
    assert result["pretrain_on"] == "pool lesions of 12 sub-volumes"
    for column in ("frozen + logistic", "random twin frozen + logistic"):
        assert 0.0 <= result["table"][0][f"vit3d_tiny_conv_regions_p8 {column}"] <= 1.0
    # the random twin is the very encoder pretraining started from (0 steps: nothing moved)
    import torch
    start, _ = bench.statistics_pretrained_encoder(cache, "vit3d_tiny_conv_regions_p8", lesions, steps=0,
                                                   lr=1e-3, batch_size=4, seed=7)
    twin = bench.initial_encoder("vit3d_tiny_conv_regions_p8", 7)
    assert all(torch.equal(start[k], twin[k]) for k in twin)
    # the same work folder with another pool size is refused, not silently reused
    with pytest.raises(SystemExit, match="pool of 12 sub-volumes, not 30"):
        bench.internal_cohort(tmp_path, 3, "mini", pool_size=30)


def test_frozen_embeddings_are_the_pretrained_encoders_mask_pooled_embedding(tmp_path):
    import torch

    bench = _load()
    cache, labelled = bench.internal_cohort(tmp_path, 3, "mini")
    rows = pd.concat([labelled] * 3, ignore_index=True)   # > one batch of 32
    torch.manual_seed(0)
    state = bench.new_network("vit3d_tiny_conv_regions_p8").encoder.state_dict()
    embeddings = bench.frozen_embeddings(cache, "vit3d_tiny_conv_regions_p8", state, rows)
    network = bench.new_network("vit3d_tiny_conv_regions_p8")
    network.encoder.load_state_dict(state)
    crops = torch.as_tensor(bench.centre_crops([np.asarray(cache[int(r)], np.float32) for r in rows["row"]],
                                               bench.CROP))
    with torch.no_grad():
        expected = network.eval().embed(crops)[1].numpy()
    assert embeddings.shape == (len(rows), network.encoder.embed_dim)
    np.testing.assert_allclose(embeddings, expected, rtol=1e-4, atol=1e-5)
    # a different encoder gives different features (the state is read, not a fresh network's)
    other = bench.new_network("vit3d_tiny_conv_regions_p8").encoder.state_dict()
    assert not np.allclose(bench.frozen_embeddings(cache, "vit3d_tiny_conv_regions_p8", other, rows.head(4)),
                           embeddings[:4])
