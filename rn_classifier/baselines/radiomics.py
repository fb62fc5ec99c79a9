"""Handcrafted radiomics features of one lesion (pyradiomics, van Griethuysen et al. 2017).

:func:`extract_case` reads the image and its mask with SimpleITK, merges the mask values that
make up the lesion into one region, and hands both to pyradiomics' ``RadiomicsFeatureExtractor``
with their spacing, origin and direction as stored: no resampling, reorientation or intensity
change happens here; pyradiomics does all of it according to its settings.

Bad input raises :class:`rn_classifier.errors.InputError` naming the case and the file: an
unreadable file, a mask without the lesion's values, a region smaller than ``minimumROISize``,
or image and mask geometry that disagree beyond pyradiomics' tolerance.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import InputError

LESION_LABEL = 1  # value of the merged lesion region handed to pyradiomics


def default_params() -> dict[str, Any]:
    """The pyradiomics parameter block of the default config (MOLAB settings)."""
    from .radiomics_config import molab_pyradiomics_params

    return molab_pyradiomics_params()


def build_extractor(params: Mapping[str, Any]):
    """A ``RadiomicsFeatureExtractor`` for a parameter block (``setting``/``imageType``/``featureClass``).

    Diagnostics (``additionalInfo``) are switched off: they are not features and cost time.
    """
    import radiomics

    from .radiomics_config import check_pyradiomics_params

    # pyradiomics prints warnings per case (e.g. on GLCM symmetry); failures reach the user
    # as InputError instead
    radiomics.setVerbosity(logging.ERROR)
    extractor = check_pyradiomics_params(params)
    extractor.settings["additionalInfo"] = False
    return extractor


def _read(path: str | os.PathLike, what: str, case: str):
    import SimpleITK as sitk

    if not os.path.isfile(path):
        raise InputError(f"case {case}: {what} file {path} does not exist")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise InputError(f"case {case}: cannot read {what} file {path} ({first})") from exc


def _read_case(image_path, mask_path, mask_labels, case: str):
    """(image, mask, lesion codes) as SimpleITK images.

    Files are handed over as stored. A DICOM series has no stored voxel order of its own (GDCM
    stacks the slices along their normal), so a series folder, and an RTSTRUCT or DICOM-SEG
    drawn on it, go through the project's reader (RAS voxel order,
    :func:`rn_classifier.data.ingest.load_mask`). pyradiomics' resampling aligns its grid to the
    voxel order, so a resampled feature of one scan can differ with the order it is stored in
    (on brain1 with 1 mm resampling: first-order up to 1.8 % between its NRRD order and RAS).
    """
    from ..data.dicom_rt import dicom_mask_kind
    from ..data.ingest import load_mask, load_volume, volume_to_sitk

    if not os.path.isdir(image_path) and dicom_mask_kind(mask_path) is None:
        return _read(image_path, "image", case), _read(mask_path, "mask", case), mask_labels
    try:
        image = load_volume(image_path)
        mask, codes = load_mask(mask_path, list(mask_labels or []), image)
    except InputError as exc:
        raise InputError(f"case {case}: {exc}") from None
    return volume_to_sitk(image), volume_to_sitk(mask), codes or mask_labels


def lesion_mask(mask, mask_labels: Sequence[int], case: str, mask_path: str | os.PathLike):
    """Binary mask (value :data:`LESION_LABEL`) of the union of ``mask_labels``; geometry kept.

    mask: SimpleITK image of integer labels. Raises InputError when no voxel holds any of them.
    """
    import SimpleITK as sitk

    values = sitk.GetArrayViewFromImage(mask)
    inside = np.isin(values, np.asarray(list(mask_labels)))
    if not inside.any():
        present = np.unique(values)
        raise InputError(f"case {case}: mask {mask_path} has no voxel with label(s) "
                         f"{list(mask_labels)} (values present: {present[present != 0].tolist()}); "
                         "the lesion is empty")
    merged = sitk.GetImageFromArray(inside.astype(np.uint8) * LESION_LABEL)
    merged.CopyInformation(mask)
    return merged


def _check_geometry(extractor, image, mask, label: int, case: str, image_path, mask_path):
    """pyradiomics' own image/mask geometry check (``checkMask``) on the files as stored.

    pyradiomics runs it after resampling, and its resampling maps the image onto the mask's
    grid whatever the image's geometry, so without this call an image and mask that disagree
    would pass silently whenever resampling is on. The ROI size and dimension checks are left
    to pyradiomics, which applies them on the grid the features are computed on. Returns the
    mask to use (resampled onto the image grid when the ``correctMask`` setting asks for that).
    """
    from radiomics import imageoperations

    geometry_only = {**extractor.settings, "label": label, "minimumROISize": None,
                     "minimumROIDimensions": 1}
    try:
        _, corrected = imageoperations.checkMask(image, mask, **geometry_only)
    except (ValueError, RuntimeError) as exc:
        raise InputError(f"case {case}: image {image_path} and mask {mask_path} rejected by "
                         f"pyradiomics: {exc}") from exc
    return mask if corrected is None else corrected


def extract_case(image_path: str | os.PathLike, mask_path: str | os.PathLike,
                 settings: Mapping[str, Any] | None = None,
                 image_types: Mapping[str, Any] | None = None,
                 mask_labels: Sequence[int] | None = None,
                 feature_classes: Mapping[str, Any] | None = None,
                 case_id: str | None = None, extractor=None) -> dict[str, float]:
    """Radiomics features of one lesion.

    settings, image_types, feature_classes: pyradiomics' ``setting``, ``imageType`` and
        ``featureClass`` blocks; each one left ``None`` comes from the default config (MOLAB).
    mask_labels: mask values whose union is the lesion (MOLAB ``11;12``), or an RTSTRUCT's ROI
        names / a DICOM-SEG's segments; ``None`` hands a label mask over as stored and
        pyradiomics' ``label`` setting picks the region.
    extractor: a prepared extractor (:func:`build_extractor`) replaces the three blocks; the
        batch extraction builds it once per process.
    Returns ``{"<imageType>_<class>_<feature>": value}``, e.g. ``original_shape_MeshVolume``;
    pyradiomics' diagnostics are left out.
    """
    case = case_id or os.path.basename(str(image_path))
    if extractor is None:
        defaults = default_params()
        params = {"setting": dict(defaults["setting"] if settings is None else settings),
                  "imageType": dict(defaults["imageType"] if image_types is None else image_types),
                  "featureClass": dict(defaults["featureClass"] if feature_classes is None
                                       else feature_classes)}
        extractor = build_extractor(params)
    image, mask, mask_labels = _read_case(image_path, mask_path, mask_labels, case)
    label = extractor.settings.get("label", 1)
    if mask_labels:
        mask = lesion_mask(mask, mask_labels, case, mask_path)
        label = LESION_LABEL
    mask = _check_geometry(extractor, image, mask, label, case, image_path, mask_path)
    try:
        result = extractor.execute(image, mask, label=label)
    except (ValueError, RuntimeError) as exc:
        raise InputError(f"case {case}: pyradiomics could not extract features from image "
                         f"{image_path} with mask {mask_path}: {exc}") from exc
    features = {}
    for name, value in result.items():
        if name.startswith("diagnostics_"):
            continue
        features[name] = float(np.asarray(value))
    return features
