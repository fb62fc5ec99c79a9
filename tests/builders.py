"""Small images, masks and MOLAB-like trees built inside tests (no data files in the repo)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd


def sphere(shape, center, radius) -> np.ndarray:
    grid = np.indices(shape).astype(float)
    d2 = sum((g - c) ** 2 for g, c in zip(grid, center))
    return d2 <= radius**2


def head_volume(shape=(40, 44, 36), seed=0) -> np.ndarray:
    """A crude head: a bright ellipsoid on a dark background, with noise (int16)."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(float)
    c = (np.asarray(shape) - 1) / 2
    r = np.asarray(shape) * 0.42
    inside = sum(((g - ci) / ri) ** 2 for g, ci, ri in zip(grid, c, r)) <= 1
    vol = np.where(inside, 600.0, 5.0) + rng.normal(0, 10, shape)
    return np.clip(vol, 0, None).astype(np.int16)


def save_nifti(array, path, affine=None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine
    nib.save(nib.Nifti1Image(np.asarray(array), affine), str(path))
    return path


def write_case(folder, patient, timepoint, lesions, shape=(40, 44, 36), seed=0, affine=None):
    """One MOLAB study: image with bright lesions + mask coded lesion*10 + segment."""
    nifti = Path(folder) / patient / patient / "NIFTI"
    img = head_volume(shape, seed).astype(np.int16)
    msk = np.zeros(shape, np.int16)
    for number, center, radius in lesions:
        rim = sphere(shape, center, radius)
        core = sphere(shape, center, radius * 0.5)
        img[rim] = 1200
        img[core] = 300
        msk[rim] = number * 10 + 1
        msk[core] = number * 10 + 2
    save_nifti(img, nifti / f"{patient}_{timepoint}_img.nii.gz", affine)
    save_nifti(msk, nifti / f"{patient}_{timepoint}_msk.nii.gz", affine)
    return nifti


def write_tiny_molab(root, n_patients=6, seed=0) -> dict:
    """A small MOLAB tree + labels CSV + two-header-row clinical spreadsheet."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    labels, clinical = [], []
    for p in range(n_patients):
        patient = f"P{p:03d}"
        n_lesions = 1 + p % 2
        lesions = [(k + 1, (12 + 14 * k, 22, 18), 4 + k) for k in range(n_lesions)]
        for t, timepoint in enumerate(("t1", "t2")[: 1 + (p % 3 == 0)]):
            write_case(root / "tree", patient, timepoint, lesions, seed=seed + 10 * p + t)
        for number, _, _ in lesions:
            label = int((p + number) % 2)
            labels.append({"patient": patient, "timepoint": "", "lesion": number, "label": label})
            clinical.append([patient, int(rng.integers(40, 80)), 1 + p % 2, 2.5, number, 1 + p % 4,
                             20.0, 1, 6.0, p % 2])
    pd.DataFrame(labels).to_csv(root / "labels.csv", index=False)
    header = pd.DataFrame([["Demographics", "", "", "", "Lesion", "", "Treatment", "", "", ""],
                           ["ID", "Age", "Sex", "GPA", "Lesion", "Primary", "Dose", "Fx", "Months", "Steroids"]])
    sheet = pd.concat([header, pd.DataFrame(clinical)], ignore_index=True)
    sheet.to_excel(root / "clinical.xlsx", header=False, index=False)
    return {"tree": root / "tree", "labels": root / "labels.csv", "clinical": root / "clinical.xlsx"}
