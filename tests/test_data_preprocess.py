"""Preprocess cache: shapes, spacing, both channels, idempotence, no partial output."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from rn_classifier.cli import main
from rn_classifier.data.cache import CropCache
from rn_classifier.data.molab import import_molab
from rn_classifier.data.crop import crop_with_padding
from rn_classifier.data.preprocess import NormalisationConfig, PreprocessConfig, preprocess
from rn_classifier.errors import DataIntegrityError, InputError
from builders import save_nifti, write_tiny_molab


@pytest.fixture()
def manifest(tmp_path):
    tiny = write_tiny_molab(tmp_path, n_patients=4)
    out = tmp_path / "internal.csv"
    import_molab(tiny["tree"], tiny["labels"], out=out)
    return out


def test_labelled_cache_shapes_spacing_channels(manifest, tmp_path):
    cfg = PreprocessConfig(spacing=[3.0, 3.0, 3.0], labelled_crop=[16, 16, 16], workers=1)
    meta = preprocess(manifest, tmp_path / "cache", cfg)
    cache = CropCache(tmp_path / "cache")
    n = len(pd.read_csv(manifest))
    assert len(cache) == n == meta["n"]
    assert cache.crops.shape == (n, 2, 16, 16, 16) and cache.crops.dtype == np.float16
    assert cache.spacing == (3.0, 3.0, 3.0) and cache.channels == ["t1ce", "mask"]
    x = cache[0]
    assert x.dtype == np.float32
    assert set(np.unique(x[1])) <= {0.0, 1.0} and x[1].sum() > 0
    # the lesion sits at the centre of the crop: its centroid is within a voxel of the middle
    centroid = np.argwhere(x[1] > 0).mean(axis=0)
    np.testing.assert_allclose(centroid, np.full(3, 7.5), atol=1.0)
    # the lesion's rim is bright in the T1CE channel (the test lesions have an enhancing rim)
    assert x[0][x[1] > 0].mean() > x[0][x[1] == 0].mean()
    assert cache.index["lesion_inside_crop"].all()
    cache.check_spacing([3, 3, 3])
    with pytest.raises(InputError, match=r"spacing \[3.0, 3.0, 3.0\] mm but the config asks for \[2.0"):
        cache.check_spacing([2, 2, 2])


def test_rerun_is_skipped_and_changed_config_rebuilds(manifest, tmp_path):
    cfg = PreprocessConfig(spacing=[3.0, 3.0, 3.0], labelled_crop=[16, 16, 16], workers=1)
    first = preprocess(manifest, tmp_path / "cache", cfg)
    mtime = (tmp_path / "cache" / "crops.npy").stat().st_mtime_ns
    again = preprocess(manifest, tmp_path / "cache", cfg)
    assert again["skipped"] and not first["skipped"]
    assert (tmp_path / "cache" / "crops.npy").stat().st_mtime_ns == mtime
    cfg.labelled_crop = [12, 12, 12]
    third = preprocess(manifest, tmp_path / "cache", cfg)
    assert not third["skipped"] and CropCache(tmp_path / "cache").crop_size == (12, 12, 12)


def test_parallel_workers_give_the_same_cache(manifest, tmp_path):
    one = PreprocessConfig(spacing=[3.0, 3.0, 3.0], labelled_crop=[16, 16, 16], workers=1)
    two = PreprocessConfig(spacing=[3.0, 3.0, 3.0], labelled_crop=[16, 16, 16], workers=2)
    preprocess(manifest, tmp_path / "c1", one)
    preprocess(manifest, tmp_path / "c2", two)
    np.testing.assert_array_equal(CropCache(tmp_path / "c1").crops, CropCache(tmp_path / "c2").crops)


def test_pool_manifest_gives_one_channel_crops(tmp_path):
    from builders import head_volume

    rows = []
    for i in range(3):
        save_nifti(head_volume(seed=i), tmp_path / f"pool{i}_img.nii.gz")
        rows.append({"case_id": f"u{i}", "patient_id": f"u{i}", "center": "POOL",
                     "image": f"pool{i}_img.nii.gz", "mask": "", "mask_labels": "", "label": "",
                     "synthetic": 1})
    pd.DataFrame(rows).to_csv(tmp_path / "pool.csv", index=False)
    rc = main(["preprocess", str(tmp_path / "pool.csv"), "--out", str(tmp_path / "pc"),
               "--set", "pool_crop=[20,20,20]", "--set", "workers=1"])
    assert rc == 0
    cache = CropCache(tmp_path / "pc")
    assert cache.crops.shape == (3, 1, 20, 20, 20) and cache.channels == ["t1ce"]
    assert json.loads((tmp_path / "pc" / "meta.json").read_text())["synthetic"] is True


def test_bad_case_leaves_no_cache_and_names_the_case(manifest, tmp_path):
    df = pd.read_csv(manifest, dtype=str)
    bad = tmp_path / "nan_img.nii.gz"
    arr = np.ones((40, 44, 36), np.float32)
    arr[1, 1, 1] = np.nan
    save_nifti(arr, bad)
    df.loc[2, "image"] = bad.name
    df.to_csv(manifest, index=False)
    cfg = PreprocessConfig(spacing=[3.0, 3.0, 3.0], labelled_crop=[16, 16, 16], workers=1)
    with pytest.raises(DataIntegrityError, match=rf"case {df.loc[2, 'case_id']}: .*NaN"):
        preprocess(manifest, tmp_path / "cache", cfg)
    assert not (tmp_path / "cache").exists()
    assert not any(p.name.startswith(".cache") for p in tmp_path.iterdir()), "no temp folder left"


def test_crop_with_padding_pads_outside():
    a = np.arange(27, dtype=np.float32).reshape(3, 3, 3)
    out = crop_with_padding(a, (-1, 0, 1), (3, 3, 3), pad_value=-5)
    assert out[0].min() == -5 and (out[0] == -5).all()
    np.testing.assert_array_equal(out[1:, :, :2], a[:2, :, 1:])
    assert (out[:, :, 2] == -5).all()


def test_pool_crop_stays_inside_an_off_centre_head(tmp_path):
    """A pool sub-volume whose foreground sits in one corner: the crop shifts to stay inside
    the image instead of padding flat edges (it only pads where the image is smaller)."""
    from rn_classifier.data.preprocess import HEAD, process_case

    vol = np.full((24, 24, 12), 5.0, np.float32)
    vol[14:, 14:, :] = 600.0  # foreground in the +x +y corner
    save_nifti(vol, tmp_path / "corner_img.nii.gz", affine=np.diag([2.0, 2.0, 2.0, 1.0]))
    row = {"case_id": "u0", "patient_id": "u0", "center": "POOL", "label": np.nan,
           "image_path": str(tmp_path / "corner_img.nii.gz")}
    cfg = PreprocessConfig(spacing=[2.0, 2.0, 2.0], pool_crop=[16, 16, 16],
                           normalisation=NormalisationConfig(method="none"))
    crop, index_row = process_case(row, cfg, HEAD)
    # x and y: the image (24) is longer than the crop (16), so the crop ends at the image edge
    # and holds no padding; z: the image (12) is shorter, so it stays centred, 2 slices padded
    # on each side.
    assert (index_row["origin_x"], index_row["origin_y"], index_row["origin_z"]) == (16.0, 16.0, -4.0)
    assert (crop[0, :, :, [0, 1, 14, 15]] == 5.0).all()
    assert crop[0, -1, -1, 2:14].min() > 100, "the bright corner is inside the crop, not padding"


def test_source_hash_sees_an_edited_slice_of_a_dicom_series_folder(tmp_path):
    from rn_classifier.data.preprocess import source_hash
    series = tmp_path / "series"
    (series / "sub").mkdir(parents=True)
    for i in range(3):
        (series / "sub" / f"slice{i}.dcm").write_bytes(b"x" * 10)
    manifest_path = tmp_path / "manifest.csv"
    manifest_path.write_text("case_id\n")
    manifest = pd.DataFrame({"image_path": [str(series)], "mask_path": [""]})
    before = source_hash(manifest, manifest_path, PreprocessConfig())
    assert source_hash(manifest, manifest_path, PreprocessConfig()) == before
    (series / "sub" / "slice1.dcm").write_bytes(b"y" * 11)
    assert source_hash(manifest, manifest_path, PreprocessConfig()) != before


@pytest.fixture(scope="module")
def synthetic_pool(tmp_path_factory):
    from rn_classifier.data.synth import make_synthetic_cohort

    out = tmp_path_factory.mktemp("pool") / "cohort"
    make_synthetic_cohort(out, preset="tiny", seed=5, pool_size=6, workers=1)
    return out / "manifests" / "unlabeled.csv"


def test_pool_sub_volumes_are_cut_on_their_centres_with_the_lesion_mask(synthetic_pool, tmp_path):
    cfg = PreprocessConfig(spacing=[3.0, 3.0, 3.0], pool_crop=[16, 16, 16], workers=1)
    meta = preprocess(synthetic_pool, tmp_path / "cache", cfg)
    assert meta["channels"] == ["t1ce", "mask"] and meta["crop_size"] == [16, 16, 16]
    cache = CropCache(tmp_path / "cache")
    manifest = pd.read_csv(synthetic_pool, keep_default_na=False)
    assert set(manifest["kind"]) == {"lesion", "random"}  # this seed holds both kinds
    for _, row in cache.index.iterrows():
        mask = np.asarray(cache[int(row["row"])][1], np.float32)
        if row["kind"] == "random":
            assert mask.sum() == 0 and row["lesion_voxels"] == 0
        else:  # lesion-centred: the mask's centroid within a voxel of the crop's centre
            assert mask.sum() == row["lesion_voxels"] > 0
            np.testing.assert_allclose(np.argwhere(mask > 0.5).mean(0), [7.5] * 3, atol=1.0)


def test_pool_row_without_a_centre_or_outside_the_image_names_the_case(synthetic_pool, tmp_path):
    manifest = pd.read_csv(synthetic_pool, keep_default_na=False)
    cfg = PreprocessConfig(spacing=[3.0, 3.0, 3.0], pool_crop=[16, 16, 16], workers=1)
    no_centre = manifest.assign(centre_x=[""] + list(manifest["centre_x"][1:]))
    no_centre.to_csv(synthetic_pool.with_name("no_centre.csv"), index=False)
    with pytest.raises(InputError, match=f"{manifest['case_id'][0]}.*lack a sub-volume centre"):
        preprocess(synthetic_pool.with_name("no_centre.csv"), tmp_path / "a", cfg)
    outside = manifest.assign(centre_x=[1000.0] + list(manifest["centre_x"][1:]))
    outside.to_csv(synthetic_pool.with_name("outside.csv"), index=False)
    with pytest.raises(DataIntegrityError, match=f"case {manifest['case_id'][0]}: .*centre .* lies outside the image"):
        preprocess(synthetic_pool.with_name("outside.csv"), tmp_path / "b", cfg)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
