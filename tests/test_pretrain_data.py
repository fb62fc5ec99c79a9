"""Pretraining data: which cases are used, how ranks share them, how views are made."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pretrain_fakes import make_internal_cache, make_pool_cache, tiny_config
from rn_classifier.data.cache import write_cache
from rn_classifier.errors import InputError
from rn_classifier.pretrain.augment import MAETransform, MultiCropTransform
from rn_classifier.pretrain.datamodule import (
    EpochSampler,
    PretrainDataModule,
    ResumableLoader,
    labelled_training_cases,
    select_subvolumes,
)


def first_channel_mean(volume, seed):
    """A cheap stand-in transform: the data-selection tests only need to know which crop came."""
    return [torch.as_tensor(volume).mean().reshape(1)]


@pytest.fixture()
def cohort(tmp_path):
    # The pool also holds, by mistake, a patient of the internal test and a case of the external centre.
    pool = make_pool_cache(tmp_path / "pool", n=10)
    bad = make_pool_cache(tmp_path / "bad", n=2, case_prefix="x")
    from rn_classifier.data.cache import CropCache

    good, bad = CropCache(pool), CropCache(bad)
    index = pd.concat([good.index.drop(columns="row"), bad.index.drop(columns="row")], ignore_index=True)
    index.loc[10, ["case_id", "patient_id"]] = ["test_p0_again", "test_p0"]
    index.loc[11, ["case_id", "patient_id", "center"]] = ["ext_in_pool", "ext_in_pool", "EXT"]
    crops = np.concatenate([good.crops, bad.crops])
    write_cache(tmp_path / "pool_mixed", crops, index, {k: v for k, v in good.meta.items()
                                                          if k not in ("n", "crop_size", "version")})
    internal, internal_index, split = make_internal_cache(tmp_path / "internal", tmp_path / "split.csv")
    return {"pool": tmp_path / "pool_mixed", "internal": internal, "split": tmp_path / "split.csv",
            "internal_index": internal_index, "split_df": split}


def test_datamodule_never_yields_internal_test_or_external_cases(cohort):
    cfg = tiny_config(cohort["pool"], internal_cache=str(cohort["internal"]), split=str(cohort["split"]),
                      include_internal_train=True, exclude_centers=["EXT"], batch_size=1)
    dm = PretrainDataModule(cfg.data, first_channel_mean)
    seen = set()
    for epoch in range(2):
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            seen.update(dm.table.iloc[batch["sample"].tolist()]["case_id"])
    split = cohort["split_df"]
    train = set(split.loc[split["part"] == "train", "case_id"])
    test = set(split.loc[split["part"] == "internal_test", "case_id"])
    external = set(cohort["internal_index"].loc[cohort["internal_index"]["center"] == "EXT", "case_id"])
    pool = {f"pool{i:03d}" for i in range(10)}
    assert test and external                                      # they were planted ...
    assert not seen & (test | external | {"test_p0_again", "ext_in_pool"})  # ... and never came
    assert seen == pool | train                                   # everything allowed did come


def test_internal_training_cases_only_when_asked(cohort):
    cfg = tiny_config(cohort["pool"], internal_cache=str(cohort["internal"]), split=str(cohort["split"]),
                      exclude_centers=["EXT"])
    _, table = select_subvolumes(cfg.data)
    assert set(table["source"]) == {"pool"} and len(table) == 10


def test_monitor_cases_are_labelled_training_cases_with_their_folds(cohort):
    cfg = tiny_config(cohort["pool"], internal_cache=str(cohort["internal"]), split=str(cohort["split"]))
    cases = labelled_training_cases(cfg.data)
    ids = cases.cache.index.set_index("row").loc[cases.rows, "case_id"]
    split = cohort["split_df"].set_index("case_id")
    assert (split.loc[ids, "part"] == "train").all()
    assert len(ids) == (cohort["split_df"]["part"] == "train").sum()
    assert np.array_equal(cases.folds, split.loc[ids, "fold"].to_numpy())
    assert set(cases.labels) == {0, 1}


def test_empty_pool_is_an_input_error(tmp_path):
    pool = make_pool_cache(tmp_path / "pool", n=3, centre="EXT")
    cfg = tiny_config(pool, exclude_centers=["EXT"])
    with pytest.raises(InputError, match="no sub-volumes to pretrain on"):
        select_subvolumes(cfg.data)


def test_cache_with_other_spacing_is_an_input_error(tmp_path):
    pool = make_pool_cache(tmp_path / "pool", n=3, spacing=(1.0, 1.0, 1.0))
    cfg = tiny_config(pool)  # asks for 2 mm
    with pytest.raises(InputError, match=r"spacing \[1.0, 1.0, 1.0\] mm .* asks for \[2.0, 2.0, 2.0\]"):
        select_subvolumes(cfg.data)


def test_sampler_ranks_disjoint_and_resume_position():
    n, bs, world = 23, 2, 3
    shares = [list(EpochSampler(n, bs, r, world, seed=5)) for r in range(world)]
    samples = [[i for _, i in s] for s in shares]
    assert all(len(s) == 3 * bs for s in samples)                 # 23 // (2·3) = 3 batches each
    assert not set(samples[0]) & set(samples[1]) and not set(samples[1]) & set(samples[2])
    full = EpochSampler(n, bs, 1, world, seed=5)
    full.set_epoch(4)
    resumed = EpochSampler(n, bs, 1, world, seed=5, start_step=4 * 3 + 2)  # 2 batches into epoch 4
    resumed.set_epoch(4)
    assert list(resumed) == list(full)[2 * bs:]
    other_epoch = EpochSampler(n, bs, 1, world, seed=5)
    other_epoch.set_epoch(5)
    assert list(other_epoch) != list(full)


def test_loader_refuses_resume_with_another_layout(tmp_path):
    cfg = tiny_config(make_pool_cache(tmp_path / "pool", n=8))
    loader = PretrainDataModule(cfg.data, first_channel_mean).train_dataloader()
    assert isinstance(loader, ResumableLoader)
    state = loader.state_dict()
    loader.load_state_dict(state)                                   # same layout: fine
    with pytest.raises(InputError, match="world_size: 2 in the checkpoint, 1 now"):
        loader.load_state_dict({**state, "world_size": 2})


def test_multicrop_views_shapes_and_seeding():
    cfg = tiny_config("unused")
    cfg.dino.n_local_crops = 3
    transform = MultiCropTransform(cfg.dino, cfg.augment)
    volume = np.random.default_rng(0).normal(size=(1, 24, 20, 28)).astype(np.float32)
    views = transform(volume, (0, 1, 2))
    assert [tuple(v.shape) for v in views] == [(1, 16, 16, 16)] * 2 + [(1, 8, 8, 8)] * 3
    assert all(v.dtype == torch.float32 and type(v) is torch.Tensor for v in views)
    again = transform(volume, (0, 1, 2))
    assert all(torch.equal(a, b) for a, b in zip(views, again))      # same seed: same views
    other = transform(volume, (0, 1, 3))
    assert not torch.equal(views[0], other[0])                      # another seed: other views
    assert not torch.equal(views[0], views[1])                      # the two global views differ


def test_mae_view_shape():
    cfg = tiny_config("unused", "mae")
    (view,) = MAETransform(cfg.mae, cfg.augment)(np.zeros((1, 24, 24, 24), np.float32), 0)
    assert view.shape == (1, 16, 16, 16)
