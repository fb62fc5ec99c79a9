"""``build-pool`` on a generated BraTS-METS-layout tree and a second collection in another layout:
a patient both collections hold and a patient of the labelled cohort are excluded and listed;
lesion-centred sub-volumes per lesion component above the size, random ones at the set share."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from builders import head_volume, save_nifti, sphere

from rn_classifier.cli import main
from rn_classifier.data.readers import read_image

SHAPE = (40, 44, 36)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def _scan(seed: int, lesions=((20, 22, 18, 4),)):
    """Head + BraTS labels: 3 enhancing rim, 1 necrotic core, 2 oedema around; plus one voxel of
    3 far away (a component below any sensible size)."""
    image = head_volume(SHAPE, seed)
    seg = np.zeros(SHAPE, np.int16)
    for x, y, z, r in lesions:
        oedema, rim, core = sphere(SHAPE, (x, y, z), r + 3), sphere(SHAPE, (x, y, z), r), sphere(SHAPE, (x, y, z), r / 2)
        seg[oedema], seg[rim], seg[core] = 2, 3, 1
        image[rim] = 1300
    seg[8, 10, 10] = 3
    return image, seg


@pytest.fixture()
def collections(tmp_path):
    brats, nyu = tmp_path / "BraTS-METS", tmp_path / "NYUMets"
    scans = {}
    for i, sid in enumerate(["BraTS-MET-00001-000", "BraTS-MET-00001-001", "BraTS-MET-00002-000",
                             "BraTS-MET-00003-000"]):
        lesions = ((20, 22, 18, 4), (10, 30, 12, 3)) if i == 0 else ((20, 22, 18, 4),)
        image, seg = _scan(i, lesions)
        scans[sid] = image
        save_nifti(image, brats / sid / f"{sid}-t1c.nii.gz", AFFINE)
        save_nifti(seg, brats / sid / f"{sid}-seg.nii.gz", AFFINE)
    # NYU-1 is BraTS-MET-00002-000 redistributed (float32, another name); NYU-3 is declared to be the
    # labelled cohort's patient MOLAB-7; NYU-4 has no segmentation
    save_nifti(scans["BraTS-MET-00002-000"].astype(np.float32), nyu / "NYU-1" / "T1post.nii.gz", AFFINE)
    for sid, seed in (("NYU-2", 11), ("NYU-3", 12), ("NYU-4", 13)):
        image, seg = _scan(seed)
        save_nifti(image, nyu / sid / "T1post.nii.gz", AFFINE)
        if sid != "NYU-4":
            save_nifti(seg, nyu / sid / "seg.nii.gz", AFFINE)
    save_nifti(_scan(1)[1], nyu / "NYU-1" / "seg.nii.gz", AFFINE)
    # the labelled cohort: MOLAB-8's scan is BraTS-MET-00003-000
    labelled = tmp_path / "labelled"
    save_nifti(scans["BraTS-MET-00003-000"], labelled / "m8.nii.gz", AFFINE)
    save_nifti(_scan(3)[1], labelled / "m8_msk.nii.gz", AFFINE)
    pd.DataFrame([{"case_id": "MOLAB-8_t1_L1", "patient_id": "MOLAB-8", "center": "MOLAB", "image": "m8.nii.gz",
                   "mask": "m8_msk.nii.gz", "mask_labels": "3", "label": 1}]).to_csv(labelled / "internal.csv", index=False)
    pd.DataFrame([{"source": "NYUMets", "source_id": "NYU-3", "patient": "MOLAB-7"}]).to_csv(tmp_path / "ids.csv", index=False)
    config = {"sources": [{"name": "BraTS-METS", "root": str(brats), "layout": "brats-mets"},
                          {"name": "NYUMets", "root": str(nyu), "layout": "pattern", "image": "{id}/T1post.nii.gz",
                           "mask": "{id}/seg.nii.gz", "lesion_labels": [1, 3]}],
              "min_lesion_ml": 0.05, "random_share": 0.25, "random_depth_mm": 6.0,
              "exclude_manifests": [str(labelled / "internal.csv")], "id_map": str(tmp_path / "ids.csv")}
    # MOLAB-7 is a labelled patient too (its scan in the labelled cohort is another one)
    save_nifti(_scan(21)[0], labelled / "m7.nii.gz", AFFINE)
    labelled_7 = pd.read_csv(labelled / "internal.csv").assign(case_id="MOLAB-7_t1_L1", patient_id="MOLAB-7",
                                                               image="m7.nii.gz")
    pd.concat([pd.read_csv(labelled / "internal.csv"), labelled_7]).to_csv(labelled / "internal.csv", index=False)
    (tmp_path / "pool.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def test_build_pool_excludes_duplicates_and_labelled_patients(collections, capsys):
    out = collections / "pool"
    assert main(["build-pool", "--config", str(collections / "pool.yaml"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    exclusions = pd.read_csv(out / "exclusions.csv")
    listed = {(r.source_id, r.reason, r.by) for r in exclusions.itertuples()}
    assert listed == {("NYU-1", "duplicate", "image hash"), ("NYU-3", "labelled cohort", "patient id"),
                      ("BraTS-MET-00003-000", "labelled cohort", "image hash")}
    assert exclusions.set_index("source_id").loc["NYU-1", "matches"] == "BraTS-METS:BraTS-MET-00002-000"
    assert exclusions.set_index("source_id").loc["BraTS-MET-00003-000", "matches"] == "internal.csv:MOLAB-8_t1_L1"
    counts = pd.read_csv(out / "counts.csv").set_index("source")
    assert counts.loc["BraTS-METS", "scans"] == 4 and counts.loc["BraTS-METS", "scans_used"] == 3
    assert counts.loc["BraTS-METS", "patients"] == 2                    # 00001 at two time points, 00002
    assert counts.loc["NYUMets", "scans_used"] == 2 and counts.loc["NYUMets", "excluded_duplicate"] == 1
    # one lesion sub-volume per component above the size: 2 + 1 + 1 (BraTS) + 1 (NYU-2; NYU-4 has no mask)
    assert counts.loc["total", "lesion_subvolumes"] == 5
    assert counts.loc["total", "random_subvolumes"] == round(5 * 0.25 / 0.75)
    for source in ("BraTS-METS", "NYUMets", "total"):
        assert source in printed
    assert "3 scan(s) excluded" in printed


def test_pool_rows_carry_the_mask_and_a_centre_in_the_lesion(collections):
    out = collections / "pool"
    assert main(["build-pool", "--config", str(collections / "pool.yaml"), "--out", str(out),
                 "--set", "random_share=0.5"]) == 0
    pool = pd.read_csv(out / "unlabeled.csv", dtype={"mask_labels": str})
    assert pool["label"].isna().all() and set(pool["kind"]) == {"lesion", "random"}
    assert (pool["kind"] == "random").sum() == (pool["kind"] == "lesion").sum()
    segmented = pool[pool["mask"].notna()]
    assert set(segmented["mask_labels"]) == {"1;3"}                     # oedema (2) is not lesion
    assert pool.loc[pool["mask"].isna(), "source_id"].eq("NYU-4").all()
    for _, row in pool[pool["kind"] == "lesion"].iterrows():
        mask = read_image(out / row["mask"])
        voxel = np.rint(mask.world_to_voxel([row["centre_x"], row["centre_y"], row["centre_z"]])).astype(int)
        assert mask.array[tuple(voxel)] in (1, 3) and row["lesion_ml"] >= 0.05
    assert not pool["case_id"].duplicated().any()


def test_shipped_pool_config_loads_onto_the_schema():
    from pathlib import Path

    from rn_classifier.config import load_config
    from rn_classifier.data.pool import PoolConfig, check_config

    cfg = load_config(PoolConfig, Path(__file__).resolve().parents[1] / "configs" / "pool" / "public_mets.yaml")
    check_config(cfg)
    assert [s.layout for s in cfg.sources] == ["brats-mets", "pattern", "pattern"]
