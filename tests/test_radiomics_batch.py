"""Cohort extraction: per-case cache (a rerun extracts nothing), processes agree with one
process, rejected cases are returned with their reason instead of stopping the others."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rn_classifier.baselines import radiomics_batch
from rn_classifier.baselines.radiomics_batch import extract_cohort
from test_radiomics_extract import FAST, ORIGINAL, write_lesion_case

PARAMS = {"setting": FAST, "imageType": ORIGINAL,
          "featureClass": {"shape": [], "firstorder": [], "glcm": []}}


def _cases(folder, n, bad: set[str] = frozenset()) -> pd.DataFrame:
    rows = []
    for i in range(n):
        case_id = f"C{i}"
        image, mask = write_lesion_case(folder, case_id, radius=4.0 + i % 3, texture_sd=40.0 * i, seed=i)
        rows.append({"case_id": case_id, "image_path": str(image), "mask_path": str(mask),
                     "mask_labels": (21,) if case_id in bad else (11, 12)})
    return pd.DataFrame(rows)


def test_rerun_extracts_nothing_and_changes_miss_the_cache(tmp_path, monkeypatch):
    cases = _cases(tmp_path, 3)
    cache = tmp_path / "cache"
    first = extract_cohort(cases, PARAMS, cache, workers=1, progress=False)
    assert (first.n_extracted, first.n_cached) == (3, 0)
    assert list(first.features.index) == ["C0", "C1", "C2"]

    def must_not_run(*args, **kwargs):
        raise AssertionError("extract_case called although every case is cached")

    with monkeypatch.context() as m:
        m.setattr(radiomics_batch, "extract_case", must_not_run)
        second = extract_cohort(cases, PARAMS, cache, workers=1, progress=False)
    assert (second.n_extracted, second.n_cached) == (0, 3)
    pd.testing.assert_frame_equal(first.features, second.features)

    # a rewritten mask misses for its case only; other parameters miss for every case
    write_lesion_case(tmp_path, "C1", radius=3.0, seed=1)
    third = extract_cohort(cases, PARAMS, cache, workers=1, progress=False)
    assert (third.n_extracted, third.n_cached) == (1, 2)
    assert third.features.loc["C1", "original_shape_VoxelVolume"] < first.features.loc["C1", "original_shape_VoxelVolume"]
    other = {**PARAMS, "setting": {**FAST, "binWidth": 10}}
    fourth = extract_cohort(cases, other, cache, workers=1, progress=False)
    assert fourth.n_cached == 0


def test_processes_match_one_process_and_bad_cases_are_reported(tmp_path):
    cases = _cases(tmp_path, 5, bad={"C3"})
    serial = extract_cohort(cases, PARAMS, tmp_path / "c1", workers=1, progress=False)
    parallel = extract_cohort(cases, PARAMS, tmp_path / "c2", workers=2, progress=False)
    assert list(parallel.features.index) == ["C0", "C1", "C2", "C4"]
    pd.testing.assert_frame_equal(serial.features, parallel.features)
    for result in (serial, parallel):
        assert result.failed["case_id"].tolist() == ["C3"]
        assert "case C3" in result.failed["reason"].iloc[0]
        assert "lacks lesion code(s) [21]" in result.failed["reason"].iloc[0]
    assert np.isfinite(parallel.features.to_numpy()).all()


def test_missing_file_is_a_reported_case(tmp_path):
    cases = _cases(tmp_path, 2)
    cases.loc[1, "image_path"] = str(tmp_path / "gone.nii.gz")
    result = extract_cohort(cases, PARAMS, tmp_path / "cache", workers=1, progress=False)
    assert result.failed["case_id"].tolist() == ["C1"]
    assert "gone.nii.gz does not exist" in result.failed["reason"].iloc[0]


def test_thread_limit_applies_and_is_undone():
    import SimpleITK as sitk
    from threadpoolctl import threadpool_info

    before = (sitk.ProcessObject_GetGlobalDefaultNumberOfThreads(),
              [p["num_threads"] for p in threadpool_info()])
    restore = radiomics_batch._limit_threads(1)
    try:
        assert sitk.ProcessObject_GetGlobalDefaultNumberOfThreads() == 1
        assert all(p["num_threads"] == 1 for p in threadpool_info())
    finally:
        restore()
    assert (sitk.ProcessObject_GetGlobalDefaultNumberOfThreads(),
            [p["num_threads"] for p in threadpool_info()]) == before
