"""Crop-statistics pretraining (``method: statistics``): lesion-centred two-channel views, label-free
targets that the views leave unchanged, a two-channel export that fine-tuning loads as it is."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pretrain_fakes import make_internal_cache, make_lesion_pool_cache, make_pool_cache, tiny_config
from rn_classifier.data.cache import CropCache
from rn_classifier.data.crop import centre_crop
from rn_classifier.errors import InputError
from rn_classifier.finetune.config import FinetuneConfig
from rn_classifier.finetune.run import encoder_builder
from rn_classifier.models.export import load_encoder
from rn_classifier.pretrain.augment import LesionViewTransform
from rn_classifier.pretrain.config import AugmentConfig
from rn_classifier.pretrain.datamodule import PretrainDataModule, SubVolumeDataset, select_subvolumes
from rn_classifier.pretrain.methods import check_config
from rn_classifier.pretrain.probe import crop_statistics
from rn_classifier.pretrain.run import run_pretraining
from rn_classifier.pretrain.statistics_module import statistics_targets


@pytest.fixture(scope="module")
def lesion_pool(tmp_path_factory):
    return make_lesion_pool_cache(tmp_path_factory.mktemp("pool") / "pool", n_lesion=8, n_random=4)


def test_only_lesion_centred_sub_volumes_are_selected(lesion_pool):
    cfg = tiny_config(lesion_pool, "statistics")
    sources, table = select_subvolumes(cfg.data, reads_mask=True)
    assert sorted(table["case_id"]) == [f"sub{i:03d}" for i in range(8)]   # the 4 random ones left out
    everything, _ = select_subvolumes(cfg.data)                              # DINO / MAE: every sub-volume
    assert len(everything[0].rows) == 12


def test_internal_training_lesions_join_and_the_test_part_stays_out(lesion_pool, tmp_path):
    cache, index, split = make_internal_cache(tmp_path / "internal", tmp_path / "split.csv", size=24)
    cfg = tiny_config(lesion_pool, "statistics", internal_cache=str(cache), split=str(tmp_path / "split.csv"),
                      include_internal_train=True, exclude_centers=["EXT"])
    _, table = select_subvolumes(cfg.data, reads_mask=True)
    internal = set(table.loc[table["source"] == "internal_train", "case_id"])
    assert internal == set(split.loc[split["part"] == "train", "case_id"])


def test_a_pool_without_a_mask_channel_is_refused_by_name(tmp_path):
    pool = make_pool_cache(tmp_path / "t1ce_only", n=4)
    cfg = tiny_config(pool, "statistics")
    with pytest.raises(InputError, match=r"t1ce_only.*\['t1ce', 'mask'\]"):
        select_subvolumes(cfg.data, reads_mask=True)


def test_views_are_the_native_scale_centre_crop_turned_and_flipped(lesion_pool):
    volume = np.asarray(CropCache(lesion_pool)[0], np.float32)
    crop = np.asarray(centre_crop(volume, (16, 16, 16)))
    transform = LesionViewTransform(16, AugmentConfig(flip_prob=0.5, rotate90_prob=0.5))
    views = [transform(volume, (0, 0, seed))[0].numpy() for seed in range(6)]
    assert all(v.shape == (2, 16, 16, 16) for v in views)
    for view in views:   # the same voxels rearranged: no resizing, no intensity change
        np.testing.assert_array_equal(np.sort(view.ravel()), np.sort(crop.ravel()))
    assert any(not np.array_equal(v, crop) for v in views)
    assert np.array_equal(transform(volume, (0, 0, 3))[0].numpy(), views[3])   # seeded


def test_every_view_has_the_statistics_of_its_crop(lesion_pool):
    """The targets are computed once per sub-volume: the views must not change them."""
    volume = np.asarray(CropCache(lesion_pool)[1], np.float32)
    crop = torch.as_tensor(np.asarray(centre_crop(volume, (16, 16, 16))))[None]
    transform = LesionViewTransform(16, AugmentConfig(flip_prob=0.5, rotate90_prob=0.9))
    views = torch.stack([transform(volume, (1, 0, seed))[0] for seed in range(5)])
    np.testing.assert_allclose(crop_statistics(views), np.repeat(crop_statistics(crop), 5, axis=0),
                               rtol=1e-4, atol=1e-5)


def test_targets_are_the_standardised_statistics_in_item_order(lesion_pool):
    cfg = tiny_config(lesion_pool, "statistics")
    sources, _ = select_subvolumes(cfg.data, reads_mask=True)
    dataset = SubVolumeDataset(sources, transform=None, channels=2)
    targets = statistics_targets(dataset, 16)
    cache = CropCache(lesion_pool)
    raw = crop_statistics(torch.stack([torch.as_tensor(np.asarray(centre_crop(
        np.asarray(cache[int(r)], np.float32), (16, 16, 16)))) for _, r in dataset.items]))
    varying = raw.std(axis=0) > 0
    np.testing.assert_allclose(targets.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(targets.std(axis=0)[varying], 1.0, rtol=1e-4)
    # a per-column affine map of the raw statistics, with the same order of items
    for column in np.flatnonzero(varying):
        assert abs(np.corrcoef(targets[:, column], raw[:, column])[0, 1] - 1.0) < 1e-5


def test_the_device_augmentation_is_refused_for_loader_only_views(lesion_pool):
    cfg = tiny_config(lesion_pool, "statistics")
    cfg.data.augment_on = "device"
    with pytest.raises(InputError, match="statistics"):
        check_config(cfg)


def test_pretraining_learns_the_statistics_and_exports_a_two_channel_encoder(lesion_pool, tmp_path):
    cfg = tiny_config(lesion_pool, "statistics")
    cfg.data.batch_size = 4
    cfg.optim.lr = 0.02          # x batch 4 / 256: a peak lr of 3e-4
    cfg.optim.warmup_epochs = 0.5
    cfg.trainer.epochs = 40      # 2 steps an epoch: 80 steps
    cfg.trainer.checkpoint_every_n_steps = 1000
    run = run_pretraining(cfg, out=tmp_path / "run", accelerator="cpu")
    losses = pd.read_csv(run / "logs" / "csv" / "metrics.csv")["train/loss"].dropna().to_numpy()
    assert len(losses) == 80
    assert losses[-10:].mean() < 0.7 * losses[:10].mean()   # the targets are learnable, not noise
    encoder, meta = load_encoder(run)
    assert meta["in_chans"] == 2 and meta["crop_size"] == [16, 16, 16]
    # fine-tuning builds it as exported: no new, zero-weighted mask channel
    ft = FinetuneConfig()
    ft.model.arch, ft.model.pretrained, ft.model.crop_size = "vit3d_tiny_p8", str(run), [16, 16, 16]
    cache, _, _ = make_internal_cache(tmp_path / "internal", tmp_path / "split.csv", size=24)
    build, origin = encoder_builder(ft, CropCache(cache))
    network = build()
    assert origin["pretrained_in_chans"] == 2
    for name, tensor in encoder.state_dict().items():
        torch.testing.assert_close(network.state_dict()[name], tensor)


def test_the_datamodule_delivers_two_channel_views(lesion_pool):
    cfg = tiny_config(lesion_pool, "statistics")
    data = PretrainDataModule(cfg.data, LesionViewTransform(16, cfg.augment), reads_mask=True)
    batch = next(iter(data.loader()))
    assert batch["views"][0].shape == (2, 2, 16, 16, 16)
    assert set(torch.unique(batch["views"][0][:, 1]).tolist()) <= {0.0, 1.0}


def test_the_demo_config_is_a_valid_statistics_run(lesion_pool):
    from rn_classifier.pretrain.methods import encoder_crop_size, load_pretrain_config

    cfg = load_pretrain_config("configs/pretrain/statistics_demo.yaml",
                               [f"data.pool_cache={lesion_pool}"])
    check_config(cfg)
    assert cfg.method == "statistics" and encoder_crop_size(cfg) == 40
