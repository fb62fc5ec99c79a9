"""Handcrafted radiomics features of one lesion (pyradiomics, van Griethuysen et al. 2017).

:func:`extract_case` reads the image and its mask with the case reader every stage uses
(:mod:`rn_classifier.data.readers`: NIfTI, NRRD, MHA, DICOM series, and any registered mask
format), merges the mask values that make up the lesion into one region, and hands both to
pyradiomics' ``RadiomicsFeatureExtractor`` as SimpleITK images with their spacing, origin and
direction: no resampling or intensity change happens here; pyradiomics does it according to its
settings. The image and mask keep the voxel order the image file stores (see
:func:`lesion_images`).

Bad input raises :class:`rn_classifier.errors.InputError` naming the case and the file: an
unreadable file, a mask without the lesion's values, a region smaller than ``minimumROISize``,
or a mask not on the image's voxel grid.
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


def lesion_images(image_path, mask_path, mask_labels: Sequence[int], case: str):
    """(image, binary lesion mask) as SimpleITK images on the image's grid, read by the case
    reader every stage uses (:func:`rn_classifier.data.crop.read_case`: any registered image and
    mask format; the grids checked to agree). The lesion is the union of ``mask_labels`` (empty:
    every non-zero label), as for the ViT's crops.

    The images keep the voxel order the image file stores (a DICOM series: RAS, it stores none):
    pyradiomics' resampling aligns its grid to the voxel order, so a resampled feature of one scan
    differs with the order it is given in (brain1, 1 mm resampling: first-order up to 1.8 %
    between its NRRD order and RAS)."""
    from ..data.crop import read_case
    from ..data.readers import to_sitk

    try:
        read = read_case(image_path, mask_path, mask_labels)
    except InputError as exc:
        raise InputError(f"case {case}: {exc}") from None
    if not read.mask.lesion.any():
        raise InputError(f"case {case}: mask {mask_path} has no lesion voxel (labels "
                         f"{list(mask_labels) or 'any non-zero'}); the lesion is empty")
    lesion = read.mask.lesion.astype(np.uint8) * LESION_LABEL
    return to_sitk(read.image, as_stored=True), to_sitk(read.image, lesion, as_stored=True)


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
        names / a DICOM-SEG's segments; ``None`` or empty: every non-zero value (as the ViT's
        crops take it).
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
    image, mask = lesion_images(image_path, mask_path, mask_labels or (), case)
    try:
        result = extractor.execute(image, mask, label=LESION_LABEL)
    except (ValueError, RuntimeError) as exc:
        raise InputError(f"case {case}: pyradiomics could not extract features from image "
                         f"{image_path} with mask {mask_path}: {exc}") from exc
    features = {}
    for name, value in result.items():
        if name.startswith("diagnostics_"):
            continue
        features[name] = float(np.asarray(value))
    return features
