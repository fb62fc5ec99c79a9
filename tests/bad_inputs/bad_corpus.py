"""The bad-input corpus: every kind of bad input, generated inside the test's temporary folder.

Nothing binary is committed: each kind is a function that writes its files (small NIfTI / NRRD
volumes, manifests, spreadsheets, predictions, encoder exports, configs) into a folder and
returns a :class:`Case`: the command line to run through ``rn_classifier.cli.main``, a regular
expression the one error message must match (it names the file / case / key and says what was
expected), the exit code, and the outputs that must not exist afterwards.

A good case sits beside each bad one where the stage reads several cases, so the message is
also checked to name the bad case only.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from builders import head_volume, save_nifti, sphere, write_tiny_molab

REPO = Path(__file__).resolve().parents[2]
SHAPE = (40, 44, 36)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


@dataclass
class Case:
    argv: list[str]
    expect: str                      # regex the error output must match
    outputs: list[Path]              # must not exist after the failed command
    exit_code: int = 2               # 2 = InputError (cli.main); 1 = check-data found problems
    not_in_message: list[str] = field(default_factory=list)  # e.g. the good case's id
    # run in a child process whose files may not grow beyond this many bytes (a disk filling up)
    file_size_limit: int | None = None
    in_child: bool = False           # run as its own process (Lightning's loggers hold stderr)
    # (monkeypatch) -> None: simulates what the test machine cannot produce (e.g. a read-only
    # folder when the tests run as root, who may write anywhere)
    setup: Callable | None = None


@dataclass(frozen=True)
class Kind:
    name: str
    stage: str
    build: Callable[[Path], Case]


KINDS: list[Kind] = []


def kind(stage: str):
    def register(fn: Callable[[Path], Case]) -> Callable[[Path], Case]:
        KINDS.append(Kind(fn.__name__, stage, fn))
        return fn
    return register


class WritesMarker:
    """A pickle payload: unpickling it runs ``Path.write_text(marker, ...)``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "payload ran"))


# -- images and masks ---------------------------------------------------------------------------

def lesion_image_and_mask(shape=SHAPE, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """A head with one lesion: enhancing rim (mask code 11) around a necrotic core (12)."""
    img = head_volume(shape, seed)
    centre = (shape[0] // 2, shape[1] // 2, shape[2] // 2)
    rim, core = sphere(shape, centre, 6), sphere(shape, centre, 3)
    img[rim], img[core] = 1200, 300
    mask = np.zeros(shape, np.int16)
    mask[rim], mask[core] = 11, 12
    return img, mask


def image_cohort(root: Path, bad_image: Callable[[Path], Path] | None = None,
                 bad_mask: Callable[[Path], Path] | None = None,
                 mask_labels: str = "11;12") -> Path:
    """Manifest with one good case (GOOD-01) and one bad case (BAD-01); returns the manifest.

    ``bad_image(folder)`` / ``bad_mask(folder)`` write BAD-01's image / mask and return its path;
    by default BAD-01 gets a good image / mask like GOOD-01's.
    """
    root.mkdir(parents=True, exist_ok=True)
    img, mask = lesion_image_and_mask()
    good_img = save_nifti(img, root / "images" / "GOOD-01.nii.gz", AFFINE)
    good_msk = save_nifti(mask, root / "masks" / "GOOD-01.nii.gz", AFFINE)
    bad_img = bad_image(root / "images") if bad_image else save_nifti(img, root / "images" / "BAD-01.nii.gz", AFFINE)
    bad_msk = bad_mask(root / "masks") if bad_mask else save_nifti(mask, root / "masks" / "BAD-01.nii.gz", AFFINE)
    rows = [("GOOD-01", "PGOOD", good_img, good_msk, "11;12", 1),
            ("BAD-01", "PBAD", bad_img, bad_msk, mask_labels, 0)]
    manifest = root / "manifest.csv"
    pd.DataFrame([{"case_id": c, "patient_id": p, "center": "TEST",
                   "image": str(i.relative_to(root)), "mask": str(m.relative_to(root)),
                   "mask_labels": labels, "label": y, "synthetic": 1}
                  for c, p, i, m, labels, y in rows]).to_csv(manifest, index=False)
    return manifest


def preprocess_case(root: Path, expect: str, **cohort) -> Case:
    """``preprocess`` of a two-case manifest: the cache must not appear at all."""
    manifest = image_cohort(root, **cohort)
    out = root / "cache"
    return Case(["preprocess", str(manifest), "--out", str(out), "--set", "workers=1"],
                rf"case BAD-01: .*{expect}", [out], not_in_message=["GOOD-01"])


def _good_image(folder: Path, name="BAD-01.nii.gz") -> Path:
    return save_nifti(lesion_image_and_mask()[0], folder / name, AFFINE)


def _good_mask(folder: Path, name="BAD-01.nii.gz", affine=AFFINE, shape=SHAPE) -> Path:
    return save_nifti(lesion_image_and_mask(shape)[1], folder / name, affine)


def _truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _write_nrrd(array: np.ndarray, path: Path) -> Path:
    import SimpleITK as sitk

    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(np.transpose(array, (2, 1, 0)))
    image.SetSpacing((2.0, 2.0, 2.0))
    writer = sitk.ImageFileWriter()
    writer.SetFileName(str(path))
    writer.SetUseCompression(False)
    writer.Execute(image)
    return path


@kind("preprocess")
def truncated_nifti(root: Path) -> Case:
    """An uncompressed .nii cut in half (an interrupted copy)."""
    return preprocess_case(root, r"BAD-01\.nii: NIfTI data could not be read, the file may be truncated",
                           bad_image=lambda d: _truncate(_good_image(d, "BAD-01.nii")))


@kind("preprocess")
def truncated_nifti_gz(root: Path) -> Case:
    return preprocess_case(root, r"BAD-01\.nii\.gz: NIfTI data could not be read, the file may be truncated",
                           bad_image=lambda d: _truncate(_good_image(d)))


@kind("preprocess")
def corrupt_nifti(root: Path) -> Case:
    """Random bytes under a .nii.gz name."""
    def write(d: Path) -> Path:
        d.mkdir(parents=True, exist_ok=True)
        (d / "BAD-01.nii.gz").write_bytes(gzip.compress(np.random.default_rng(0).bytes(4096)))
        return d / "BAD-01.nii.gz"
    return preprocess_case(root, r"BAD-01\.nii\.gz: not a readable NIfTI file", bad_image=write)


@kind("preprocess")
def truncated_nrrd(root: Path) -> Case:
    return preprocess_case(root, r"BAD-01\.nrrd: not a readable image",
                           bad_image=lambda d: _truncate(_write_nrrd(lesion_image_and_mask()[0], d / "BAD-01.nrrd")))


@kind("preprocess")
def corrupt_nrrd(root: Path) -> Case:
    """An NRRD header whose fields make no sense."""
    def write(d: Path) -> Path:
        d.mkdir(parents=True, exist_ok=True)
        (d / "BAD-01.nrrd").write_bytes(b"NRRD0004\ntype: banana\ndimension: three\nsizes: a b c\n"
                                        b"encoding: raw\n\n" + bytes(64))
        return d / "BAD-01.nrrd"
    return preprocess_case(root, r"BAD-01\.nrrd: not a readable image", bad_image=write)


@kind("preprocess")
def unsupported_image_format(root: Path) -> Case:
    def write(d: Path) -> Path:
        d.mkdir(parents=True, exist_ok=True)
        (d / "BAD-01.png").write_bytes(b"\x89PNG\r\n\x1a\n")
        return d / "BAD-01.png"
    return preprocess_case(root, r"BAD-01\.png: unsupported image format; expected one of", bad_image=write)


@kind("preprocess")
def image_file_missing(root: Path) -> Case:
    return preprocess_case(root, r"BAD-01\.nii\.gz: file does not exist",
                           bad_image=lambda d: d / "BAD-01.nii.gz")


@kind("preprocess")
def dicom_folder_without_series(root: Path) -> Case:
    """The manifest points to a folder (read as a DICOM series) that holds no DICOM files."""
    def write(d: Path) -> Path:
        (d / "BAD-01").mkdir(parents=True)
        (d / "BAD-01" / "README.txt").write_text("export failed\n")
        return d / "BAD-01"
    return preprocess_case(root, r"images/BAD-01: folder holds no DICOM series", bad_image=write)


@kind("preprocess")
def image_4d(root: Path) -> Case:
    """A 4D series (3 time points) where one 3D T1CE volume is expected."""
    def write(d: Path) -> Path:
        vol = lesion_image_and_mask()[0]
        return save_nifti(np.stack([vol] * 3, axis=-1), d / "BAD-01.nii.gz", AFFINE)
    return preprocess_case(root, r"BAD-01\.nii\.gz: expected a 3D volume, found 4D with shape \(40, 44, 36, 3\)",
                           bad_image=write)


@kind("preprocess")
def image_2d(root: Path) -> Case:
    """One slice exported as the whole image."""
    def write(d: Path) -> Path:
        return save_nifti(lesion_image_and_mask()[0][:, :, 18], d / "BAD-01.nii.gz", AFFINE)
    return preprocess_case(root, r"BAD-01\.nii\.gz: expected a 3D volume, found 2D with shape \(40, 44\)",
                           bad_image=write)


@kind("preprocess")
def mask_shape_mismatch(root: Path) -> Case:
    return preprocess_case(root, r"mask shape \(40, 44, 30\) differs from image shape \(40, 44, 36\)",
                           bad_mask=lambda d: _good_mask(d, shape=(40, 44, 30)))


@kind("preprocess")
def mask_spacing_mismatch(root: Path) -> Case:
    return preprocess_case(root, r"mask geometry differs from the image .*image spacing \[2\.0, 2\.0, 2\.0\], "
                                 r"mask spacing \[2\.0, 2\.0, 2\.5\]",
                           bad_mask=lambda d: _good_mask(d, affine=np.diag([2.0, 2.0, 2.5, 1.0])))


@kind("preprocess")
def mask_affine_mismatch(root: Path) -> Case:
    """Same grid size and spacing, origin moved by 6 mm (a mask from another registration)."""
    shifted = AFFINE.copy()
    shifted[:3, 3] = [6.0, 0.0, 0.0]
    return preprocess_case(root, r"mask geometry differs from the image \(largest affine difference 6 mm",
                           bad_mask=lambda d: _good_mask(d, affine=shifted))


@kind("preprocess")
def empty_mask(root: Path) -> Case:
    def write(d: Path) -> Path:
        return save_nifti(np.zeros(SHAPE, np.int16), d / "BAD-01.nii.gz", AFFINE)
    return preprocess_case(root, r"mask .*BAD-01\.nii\.gz lacks lesion code\(s\) \[11, 12\]; expected "
                                 r"\[11, 12\], found \[\]", bad_mask=write)


@kind("preprocess")
def mask_missing_listed_codes(root: Path) -> Case:
    """The manifest lists lesion 2 (21;22) but the mask holds lesion 1 only."""
    return preprocess_case(root, r"mask .*BAD-01\.nii\.gz lacks lesion code\(s\) \[21, 22\]; expected "
                                 r"\[21, 22\], found \[11, 12\]", mask_labels="21;22")


def _image_with(value: float) -> Callable[[Path], Path]:
    def write(d: Path) -> Path:
        vol = lesion_image_and_mask()[0].astype(np.float32)
        vol[5:7, 5:7, 5:7] = value
        return save_nifti(vol, d / "BAD-01.nii.gz", AFFINE)
    return write


@kind("preprocess")
def nan_voxels(root: Path) -> Case:
    return preprocess_case(root, r"BAD-01\.nii\.gz holds NaN or infinite voxels \(expected finite intensities\)", bad_image=_image_with(np.nan))


@kind("preprocess")
def inf_voxels(root: Path) -> Case:
    return preprocess_case(root, r"BAD-01\.nii\.gz holds NaN or infinite voxels", bad_image=_image_with(np.inf))


@kind("preprocess")
def all_zero_image(root: Path) -> Case:
    def write(d: Path) -> Path:
        return save_nifti(np.zeros(SHAPE, np.int16), d / "BAD-01.nii.gz", AFFINE)
    return preprocess_case(root, r"image .*BAD-01\.nii\.gz: image has no foreground \(it is constant or all zeros\); expected a T1CE scan", bad_image=write)


@kind("preprocess")
def complex_voxels(root: Path) -> Case:
    def write(d: Path) -> Path:
        return save_nifti(lesion_image_and_mask()[0].astype(np.complex64), d / "BAD-01.nii.gz", AFFINE)
    return preprocess_case(root, r"BAD-01\.nii\.gz: voxels are of type complex64; expected one real number "
                                 r"per voxel", bad_image=write)


@kind("preprocess")
def rgb_voxels(root: Path) -> Case:
    def write(d: Path) -> Path:
        d.mkdir(parents=True, exist_ok=True)
        grey = lesion_image_and_mask()[0].astype(np.uint8)
        rgb = np.stack([grey] * 3, axis=-1).view([("R", "u1"), ("G", "u1"), ("B", "u1")]).reshape(SHAPE)
        nib.save(nib.Nifti1Image(rgb, AFFINE), str(d / "BAD-01.nii.gz"))
        return d / "BAD-01.nii.gz"
    return preprocess_case(root, r"BAD-01\.nii\.gz: voxels are of type \[\('R', 'u1'\).*expected one real "
                                 r"number per voxel", bad_image=write)


@kind("preprocess")
def affine_not_finite(root: Path) -> Case:
    nan_origin = AFFINE.copy()
    nan_origin[0, 3] = np.nan
    return preprocess_case(root, r"BAD-01\.nii\.gz: the voxel-to-world matrix \(affine\) holds NaN or "
                                 r"infinite values",
                           bad_image=lambda d: save_nifti(lesion_image_and_mask()[0], d / "BAD-01.nii.gz", nan_origin))


@kind("preprocess")
def mask_values_not_integers(root: Path) -> Case:
    """A mask resampled with linear interpolation: fractional codes at the lesion's border."""
    def write(d: Path) -> Path:
        mask = lesion_image_and_mask()[1].astype(np.float32)
        mask[mask == 11] = 10.5
        return save_nifti(mask, d / "BAD-01.nii.gz", AFFINE)
    return preprocess_case(root, r"mask .*BAD-01\.nii\.gz holds non-integer values \(e\.g\. 10\.5\); "
                                 r"expected integer lesion codes", bad_mask=write)


@kind("preprocess")
def huge_nifti_header(root: Path) -> Case:
    """A 352-byte NIfTI whose header declares 5000³ voxels: refused from the header, before any
    voxel is read (reading would fail as truncated, with another message)."""
    def write(d: Path) -> Path:
        d.mkdir(parents=True, exist_ok=True)
        header = nib.Nifti1Header()
        header.set_data_shape((5000, 5000, 5000))
        header.set_data_dtype(np.int16)
        header.set_qform(AFFINE, code=1)
        path = d / "BAD-01.nii"
        path.write_bytes(header.binaryblock + b"\x00" * 4)
        return path
    return preprocess_case(root, r"BAD-01\.nii: header declares \(5000, 5000, 5000\) = 125,000,000,000 "
                                 r"voxels, more than the 1,073,741,824 accepted; refusing to read it",
                           bad_image=write)


@kind("preprocess")
def huge_nrrd_header(root: Path) -> Case:
    def write(d: Path) -> Path:
        d.mkdir(parents=True, exist_ok=True)
        (d / "BAD-01.nrrd").write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 5000 5000 5000\n"
                                        b"spacings: 1 1 1\nencoding: raw\nendian: little\n\n")
        return d / "BAD-01.nrrd"
    return preprocess_case(root, r"BAD-01\.nrrd: header declares \(5000, 5000, 5000\) .* refusing to read it",
                           bad_image=write)


@kind("check-data")
def check_data_lists_every_bad_case(root: Path) -> Case:
    """check-data reads the same corpus and lists every problem (here NaN voxels + missing codes)."""
    manifest = image_cohort(root, bad_image=_image_with(np.nan), mask_labels="11;12;13")
    return Case(["check-data", str(manifest), "--workers", "1"],
                r"2 problem\(s\) in 2 cases.*case BAD-01: image .*BAD-01\.nii\.gz holds 8 NaN/infinite "
                r"voxels.*case BAD-01: mask .* lacks lesion code\(s\) \[13\]", [], exit_code=1,
                not_in_message=["case GOOD-01"])


# -- radiotherapy DICOM: MR series + RTSTRUCT / DICOM-SEG ----------------------------------------

def _dicom_series(folder: Path, key: str = "BAD-01"):
    """BAD-01's image as an MR series (the package's writer); returns (folder, volume, series)."""
    from rn_classifier.data.dicom_write import write_mr_series
    from rn_classifier.data.ingest import Volume

    volume = Volume(lesion_image_and_mask()[0], AFFINE.copy())
    return folder, volume, write_mr_series(volume, folder, key=key, patient_id="PBAD")


def _rtstruct(root: Path, edit=None, rois=None) -> Callable[[Path], Path]:
    """A mask writer for image_cohort: an RTSTRUCT with ROI GTV_1 (the lesion) on BAD-01's series,
    written at ``root/images/BAD-01``; ``edit(volume, series)`` -> (volume, series) changes what the
    contours are drawn on."""
    def write(folder: Path) -> Path:
        from rn_classifier.data.dicom_write import write_rtstruct

        _, volume, series = _dicom_series(root / "images" / "BAD-01")
        mask = lesion_image_and_mask()[1] > 0
        drawn_on, references = edit(volume, series) if edit else (volume, series)
        return write_rtstruct(folder / "BAD-01.RS.dcm", rois or {"GTV_1": mask}, drawn_on, references,
                              key="BAD-01")
    return write


def rtstruct_case(root: Path, expect: str, mask_labels: str = "GTV_1", **rtstruct) -> Case:
    def image(folder: Path) -> Path:
        return folder / "BAD-01"          # written with the RTSTRUCT, which references it
    return preprocess_case(root, expect, bad_image=image, bad_mask=_rtstruct(root, **rtstruct),
                           mask_labels=mask_labels)


@kind("preprocess")
def rtstruct_without_the_roi(root: Path) -> Case:
    """The manifest asks for GTV_2; the structure set holds GTV_1 only."""
    return rtstruct_case(root, r"BAD-01\.RS\.dcm: no ROI named 'GTV_2'; the RTSTRUCT holds the ROIs "
                               r"\['GTV_1'\]", mask_labels="GTV_2")


@kind("preprocess")
def rtstruct_of_another_series(root: Path) -> Case:
    """Contours drawn on another series of the same patient position (same frame of reference)."""
    import dataclasses

    def other(volume, series):
        return volume, dataclasses.replace(series, series="1.2.826.0.1.3680043.8.498.1")
    return rtstruct_case(root, r"BAD-01\.RS\.dcm: the RTSTRUCT references series 1\.2\.826\.0\.1\.3680043\.8\.498\.1, "
                               r"the image .*BAD-01 is series [0-9.]+; expected the RTSTRUCT drawn on this image",
                         edit=other)


@kind("preprocess")
def rtstruct_empty_contour(root: Path) -> Case:
    """The ROI exists but holds no contour (a structure created and never drawn)."""
    empty = np.zeros(SHAPE, bool)
    return rtstruct_case(root, r"BAD-01\.RS\.dcm, ROI 'GTV_1': the ROI has no contour; expected closed planar",
                         rois={"GTV_1": empty})


@kind("preprocess")
def rtstruct_contour_outside_the_image(root: Path) -> Case:
    """Contours 60 mm beyond the image's field of view (a structure set of another scan)."""
    from rn_classifier.data.ingest import Volume

    def shifted(volume, series):
        affine = volume.affine.copy()
        affine[0, 3] += 60.0
        return Volume(volume.array, affine), series
    return rtstruct_case(root, r"BAD-01\.RS\.dcm, ROI 'GTV_1': contour 1 lies outside the image: point .* mm "
                               r"\(LPS\) falls at voxel .* of an image of \[40, 44, 36\] voxels", edit=shifted)


@kind("preprocess")
def seg_of_another_frame_of_reference(root: Path) -> Case:
    """A DICOM-SEG whose Frame of Reference is not the image's (registered to another scan)."""
    from dicom_builders import write_seg

    def mask(folder: Path) -> Path:
        series_folder = root / "images" / "BAD-01"
        lesion = np.transpose(lesion_image_and_mask()[1] > 0, (2, 1, 0))      # (Z, Y, X) slices
        return write_seg(folder / "BAD-01.SEG.dcm", series_folder, {"lesion": lesion},
                         frame_of_reference="1.2.826.0.1.3680043.8.498.2")
    return preprocess_case(root, r"BAD-01\.SEG\.dcm: the SEG is drawn in Frame of Reference "
                                 r"1\.2\.826\.0\.1\.3680043\.8\.498\.2, the image series .*BAD-01 is in "
                                 r"Frame of Reference [0-9.]+; expected the SEG of this image",
                           bad_image=lambda d: _dicom_series(d / "BAD-01")[0], bad_mask=mask,
                           mask_labels="lesion")


@kind("preprocess")
def dicom_folder_with_two_series(root: Path) -> Case:
    """A planning export that put the T1CE and a second series into one folder."""
    def image(folder: Path) -> Path:
        _dicom_series(folder / "BAD-01", key="BAD-01")
        from rn_classifier.data.dicom_write import write_mr_series
        from rn_classifier.data.ingest import Volume

        write_mr_series(Volume(lesion_image_and_mask(seed=1)[0], AFFINE.copy()), folder / "BAD-01" / "second",
                        key="BAD-01-FLAIR", patient_id="PBAD", description="FLAIR")
        for f in (folder / "BAD-01" / "second").iterdir():
            f.rename(folder / "BAD-01" / f"FLAIR.{f.name}")
        (folder / "BAD-01" / "second").rmdir()
        return folder / "BAD-01"
    return preprocess_case(root, r"images/BAD-01: folder holds 2 image series \([0-9.]+ \(.*, 36 files\); "
                                 r"[0-9.]+ \(.*, 36 files\)\); expected exactly one: put each series in its own folder",
                           bad_image=image)


@kind("check-data")
def rtstruct_with_a_nifti_image(root: Path) -> Case:
    """An RTSTRUCT listed with a NIfTI export of the scan: its UIDs cannot be checked against it."""
    manifest = image_cohort(root, bad_mask=_rtstruct(root), mask_labels="GTV_1")
    return Case(["check-data", str(manifest), "--workers", "1"],
                r"1 problem\(s\) in 2 cases.*case BAD-01: mask: .*BAD-01\.RS\.dcm: an RTSTRUCT mask needs as image "
                r"the DICOM series folder it was drawn on; got .*BAD-01\.nii\.gz", [], exit_code=1,
                not_in_message=["case GOOD-01"])


@kind("import-dicom")
def dicom_label_matches_no_lesion(root: Path) -> Case:
    """The labels name an ROI the structure set does not hold (a typo: GTV1 for GTV_1)."""
    root.mkdir(parents=True, exist_ok=True)
    _rtstruct(root)(root / "images")
    pd.DataFrame([{"patient": "PBAD", "roi": "GTV1", "label": 1}]).to_csv(root / "labels.csv", index=False)
    out = root / "cohort" / "site2.csv"
    return Case(["import-dicom", str(root / "images"), "--labels", str(root / "labels.csv"), "--out", str(out)],
                r"labels file: patient PBAD, ROI GTV1 matches no lesion ROI of a structure set", [out])


@kind("build-pool")
def pool_source_root_missing(root: Path) -> Case:
    """A pool source whose folder is not there (a path from another machine)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pool.yaml").write_text(f"sources:\n  - name: BraTS-METS\n    root: {root / 'nowhere'}\n"
                                    "    layout: brats-mets\n")
    out = root / "pool"
    return Case(["build-pool", "--config", str(root / "pool.yaml"), "--out", str(out)],
                r"pool source BraTS-METS: root .*nowhere is not a folder", [out])


# -- cohort tables ------------------------------------------------------------------------------

def cohort_table(n_patients: int, prefix: str, seed: int = 0) -> pd.DataFrame:
    """Manifest rows (no image files needed by the table-level stages) with age and sex."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        cid = f"{prefix}-{p:03d}"
        rows.append({"case_id": cid, "patient_id": f"P{prefix}{p:03d}", "center": prefix,
                     "image": f"images/{cid}.nii.gz", "mask": f"masks/{cid}.nii.gz",
                     "mask_labels": "11;12", "label": p % 2, "synthetic": 1,
                     "age": float(rng.integers(40, 80)), "sex": "FM"[p % 2 if p < 2 else rng.integers(2)]})
    return pd.DataFrame(rows)


def split_case(root: Path, df: pd.DataFrame, expect: str) -> Case:
    root.mkdir(parents=True, exist_ok=True)
    df.to_csv(root / "internal.csv", index=False)
    out = root / "split.csv"
    return Case(["split", str(root / "internal.csv"), "--out", str(out), "--folds", "2"], expect, [out])


@kind("split")
def label_outside_0_1(root: Path) -> Case:
    df = cohort_table(12, "INT")
    df["label"] = df["label"].astype(object)
    df.loc[3, "label"] = 2
    return split_case(root, df, r"case INT-003: label must be 1 \(radiation necrosis\), 0 \(progression\) "
                                r"or empty, got '?2")


@kind("split")
def single_class(root: Path) -> Case:
    df = cohort_table(12, "INT").assign(label=1)
    return split_case(root, df, r"the internal cohort needs both classes to be split, found 12 radiation "
                                r"necrosis \(1\), 0 progression \(0\)")


@kind("split")
def duplicate_case_id(root: Path) -> Case:
    df = cohort_table(12, "INT")
    df.loc[5, "case_id"] = "INT-004"
    return split_case(root, df, r"case INT-004: case_id appears more than once \(expected unique ids\)")


@kind("split")
def manifest_missing_column(root: Path) -> Case:
    return split_case(root, cohort_table(12, "INT").drop(columns="mask_labels"),
                      r"internal\.csv: missing column\(s\) \['mask_labels'\]; expected at least")


@kind("split")
def mask_labels_not_integers(root: Path) -> Case:
    df = cohort_table(12, "INT")
    df.loc[2, "mask_labels"] = "enhancing;necrotic"
    return split_case(root, df, r"case INT-002: mask_labels must be integers separated by ';', "
                                r"got 'enhancing;necrotic'")


CLINICAL_YAML = """\
name: clinical
data:
  internal_manifest: {internal}
  external_manifest: {external}
cv:
  n_folds: 2
clinical:
  age: numeric
  sex: categorical
model:
  kind: clinical
"""


def finetune_clinical_case(root: Path, expect: str, edit_internal=None, edit_external=None) -> Case:
    """The clinical-only model (no images needed) on a 12 + 4 patient cohort."""
    root.mkdir(parents=True, exist_ok=True)
    internal, external = cohort_table(12, "INT"), cohort_table(4, "EXT", seed=1)
    internal = edit_internal(internal) if edit_internal else internal
    external = edit_external(external) if edit_external else external
    internal.to_csv(root / "internal.csv", index=False)
    external.to_csv(root / "external.csv", index=False)
    config = root / "clinical.yaml"
    config.write_text(CLINICAL_YAML.format(internal=root / "internal.csv", external=root / "external.csv"))
    out = root / "run"
    return Case(["finetune", "--config", str(config), "--out", str(out)], expect,
                [out / "predictions.csv", out / "config.yaml", out / "split.csv", out / "folds"])


def _set(row: int, column: str, value):
    def edit(df: pd.DataFrame) -> pd.DataFrame:
        df = df.copy()
        df[column] = df[column].astype(object)
        df.loc[row, column] = value
        return df
    return edit


@kind("finetune")
def duplicate_case_id_internal_external(root: Path) -> Case:
    return finetune_clinical_case(root, r"case_ids present in both internal and external cohorts: \['INT-001'\]",
                                  edit_external=_set(0, "case_id", "INT-001"))


@kind("finetune")
def duplicate_patient_id_internal_external(root: Path) -> Case:
    return finetune_clinical_case(root, r"patient_ids present in both internal and external cohorts: "
                                        r"\['PINT007'\]", edit_external=_set(2, "patient_id", "PINT007"))


@kind("finetune")
def clinical_column_missing(root: Path) -> Case:
    return finetune_clinical_case(root, r"internal\.csv: clinical column\(s\) \['age'\] named in the config are "
                                        r"missing", edit_internal=lambda df: df.drop(columns="age"))


@kind("finetune")
def clinical_value_mistyped(root: Path) -> Case:
    return finetune_clinical_case(root, r"case INT-004: clinical column 'age' is numeric but holds 'sixty-two'",
                                  edit_internal=_set(4, "age", "sixty-two"))


@kind("finetune")
def unknown_categorical_level(root: Path) -> Case:
    """A level in the external cohort that the model never saw ('Female' where training has F/M),
    under the strict policy (the default treats it as missing and lists it)."""
    case = finetune_clinical_case(root, r"external\.csv: categorical clinical column 'sex' holds level "
                                        r"'Female', never seen in the internal cohort \(case\(s\) EXT-001\); "
                                        r"known levels \['F', 'M'\]\. Recode it",
                                  edit_external=_set(1, "sex", "Female"))
    case.argv += ["--set", "unseen_levels=error"]
    return case


@kind("finetune")
def external_label_missing(root: Path) -> Case:
    return finetune_clinical_case(root, r"case EXT-002: label is empty \(a labelled cohort is required here\)",
                                  edit_external=_set(2, "label", None))


# -- MOLAB import: the clinical spreadsheet -------------------------------------------------------

def molab_case(root: Path, edit_sheet, expect: str) -> Case:
    paths = write_tiny_molab(root / "molab", n_patients=3)
    sheet = pd.read_excel(paths["clinical"], header=None, dtype=object)
    edit_sheet(sheet).to_excel(paths["clinical"], header=False, index=False)
    out = root / "manifest.csv"
    return Case(["import-molab", str(paths["tree"]), "--labels", str(paths["labels"]),
                 "--clinical", str(paths["clinical"]), "--out", str(out)], expect, [out])


@kind("import-molab")
def spreadsheet_header_shifted_down(root: Path) -> Case:
    """A third header row (e.g. units) the column map does not expect."""
    def edit(sheet):
        units = pd.DataFrame([["(pseudonym)", "years", "", "", "#", "", "Gy", "", "months", ""]])
        return pd.concat([sheet.iloc[:2], units, sheet.iloc[2:]], ignore_index=True)
    return molab_case(root, edit, r"clinical spreadsheet .*clinical\.xlsx does not match the column map "
                                  r"\(header_rows=2.*it has 3 header row\(s\) .*1 header row\(s\) would be read "
                                  r"as data; set `header_rows: 3`")


@kind("import-molab")
def spreadsheet_columns_shifted_right(root: Path) -> Case:
    """An extra leading column (a row number) moves every column one to the right."""
    def edit(sheet):
        out = sheet.copy()
        out.insert(0, "n", ["", "#"] + list(range(1, len(sheet) - 1)))
        out.columns = range(out.shape[1])
        return out
    return molab_case(root, edit, r"clinical\.xlsx does not match the column map .*no row holds a patient ID in "
                                  r"column 0 and a whole lesion number in column 4 \(first rows: \['1', 'P000'.*"
                                  r"check the column map's positions")


@kind("import-molab")
def spreadsheet_lacks_mapped_column(root: Path) -> Case:
    return molab_case(root, lambda sheet: sheet.iloc[:, :4],
                      r"clinical\.xlsx has 4 columns, but the column map asks for positions \{'lesion': 4, "
                      r"'primary': 5\}; check the column map")


# -- predictions --------------------------------------------------------------------------------

def predictions_frame(model: str, n: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(len(model))
    y = np.arange(n) % 2
    return pd.DataFrame({"model": model, "case_id": [f"C{i:03d}" for i in range(n)],
                         "patient_id": [f"P{i:03d}" for i in range(n)], "cohort": "internal_test",
                         "fold": -1, "y_true": y, "y_prob": np.clip(0.3 * y + rng.uniform(0, 0.7, n), 0, 1)})


def compare_case(root: Path, other: pd.DataFrame, expect: str) -> Case:
    root.mkdir(parents=True, exist_ok=True)
    predictions_frame("ssl_vit").to_csv(root / "ssl_vit.csv", index=False)
    other.to_csv(root / "radiomics.csv", index=False)
    out = root / "stats.json"
    return Case(["compare", str(root / "ssl_vit.csv"), str(root / "radiomics.csv"), "--reference", "ssl_vit",
                 "--out", str(out), "--n-boot", "50"], expect, [out])


@kind("compare")
def predictions_missing_a_case(root: Path) -> Case:
    other = predictions_frame("radiomics").drop(index=3)
    return compare_case(root, other, r"model radiomics has no internal_test prediction for case\(s\) C003 "
                                     r"that other models have")


@kind("compare")
def predictions_probability_out_of_range(root: Path) -> Case:
    other = predictions_frame("radiomics")
    other.loc[5, "y_prob"] = 1.7
    return compare_case(root, other, r"radiomics\.csv: y_prob must be a probability in \[0, 1\]: C005 \(line 7\)")


# -- encoder export -----------------------------------------------------------------------------

SSL_YAML = """\
name: ssl_vit
data:
  internal_manifest: {root}/internal.csv
  internal_cache: {root}/cache_internal
cv:
  n_folds: 2
model:
  kind: vit
  arch: vit3d_tiny_p8
  pretrained: {root}/encoder
  crop_size: [16, 16, 16]
train:
  epochs: 1
  accelerator: cpu
  num_workers: 0
"""


def encoder_case(root: Path, damage: Callable[[Path], None], expect: str) -> Case:
    """The SSL fine-tuning config on a 12-case cache, with a damaged encoder export."""
    import torch
    from safetensors.torch import load_file, save_file  # noqa: F401 (used by the damage functions)

    from rn_classifier.data.cache import write_cache
    from rn_classifier.models import create_model
    from rn_classifier.models.export import save_encoder

    root.mkdir(parents=True, exist_ok=True)
    df = cohort_table(12, "INT")
    df.to_csv(root / "internal.csv", index=False)
    crops = np.random.default_rng(0).normal(size=(len(df), 2, 24, 24, 24)).astype(np.float32)
    norm = {"method": "zscore_foreground", "clip_percentiles": [0.5, 99.5]}
    write_cache(root / "cache_internal", crops, df[["case_id", "patient_id", "center", "label", "synthetic"]],
                {"spacing": [2.0, 2.0, 2.0], "channels": ["t1ce", "mask"], "normalisation": norm, "synthetic": True})
    torch.manual_seed(0)
    model = create_model("vit3d_tiny_p8", img_size=16, in_chans=1)
    save_encoder(model, root / "encoder", arch="vit3d_tiny_p8", crop_size=[16] * 3, spacing=[2.0] * 3,
                 normalisation=norm, config={"note": "bad-input corpus"})
    damage(root / "encoder")
    (root / "ssl.yaml").write_text(SSL_YAML.format(root=root))
    out = root / "run"
    return Case(["finetune", "--config", str(root / "ssl.yaml"), "--out", str(out)], expect,
                [out / "predictions.csv", out / "config.yaml", out / "folds"])


@kind("finetune")
def encoder_tensor_wrong_shape(root: Path) -> Case:
    def damage(folder: Path) -> None:
        from safetensors.torch import load_file, save_file

        tensors = load_file(str(folder / "encoder.safetensors"))
        tensors["pos_embed"] = tensors["pos_embed"][:, :5].contiguous()
        save_file(tensors, str(folder / "encoder.safetensors"))
    return encoder_case(root, damage, r"encoder\.safetensors does not match the architecture in .*encoder\.json: "
                                      r"tensor 'pos_embed' has shape \[1, 5, 192\], expected \[1, 9, 192\]")


@kind("finetune")
def encoder_meta_missing_key(root: Path) -> Case:
    def damage(folder: Path) -> None:
        meta = json.loads((folder / "encoder.json").read_text())
        del meta["spacing"]
        (folder / "encoder.json").write_text(json.dumps(meta))
    return encoder_case(root, damage, r"encoder\.json lacks the key\(s\) \['spacing'\]")


# -- configs ------------------------------------------------------------------------------------

def pretrain_config_case(root: Path, text: str, expect: str, *extra: str) -> Case:
    root.mkdir(parents=True, exist_ok=True)
    config = root / "dino.yaml"
    config.write_text((REPO / "configs" / "pretrain" / "dino_demo.yaml").read_text() + text)
    out = root / "run"
    return Case(["pretrain", "--config", str(config), "--out", str(out), "--accelerator", "cpu", *extra],
                expect, [out])


@kind("config")
def config_unknown_key(root: Path) -> Case:
    """A misspelt key (``lrr``) is refused, never ignored."""
    return pretrain_config_case(root, "extra:\n  lrr: 0.1\n", r"dino\.yaml: key 'extra': Key 'extra' not in 'PretrainConfig'; expected one of \['name', 'method', 'data', ")


@kind("config")
def config_wrong_type(root: Path) -> Case:
    return pretrain_config_case(root, "", r"key 'trainer\.epochs': Value 'ten' of type 'str' could not be "
                                          r"converted to Integer", "--set", "trainer.epochs=ten")


@kind("config")
def config_not_yaml(root: Path) -> Case:
    return pretrain_config_case(root, "data: [unclosed\n", r"dino\.yaml: not valid YAML")


@kind("config")
def config_override_without_value(root: Path) -> Case:
    return pretrain_config_case(root, "", r"--set expects key=value, got 'trainer\.epochs'; write "
                                          r"--set trainer\.epochs=VALUE", "--set", "trainer.epochs")


# -- outputs ------------------------------------------------------------------------------------

def _read_only(folder: Path) -> Callable:
    """Make ``folder`` read-only; as root (permission bits do not stop root) make os.access say so."""
    import os

    folder.chmod(0o555)

    def setup(monkeypatch) -> None:
        if os.geteuid() == 0:
            real = os.access
            monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if (
                Path(p) == folder and mode & os.W_OK) else real(p, mode, *a, **k))
    return setup


@kind("output")
def output_folder_not_writable(root: Path) -> Case:
    case = split_case(root, cohort_table(12, "INT"), r"output folder .*read_only is not writable")
    out = root / "read_only" / "split.csv"
    out.parent.mkdir()
    case.argv[case.argv.index("--out") + 1] = str(out)
    case.outputs, case.setup = [out], _read_only(out.parent)
    return case


def _out_inside_a_file(case: Case, root: Path, rest: str) -> Case:
    """Point the case's --out below an existing regular file."""
    (root / "results.txt").write_text("an existing file where an output folder should be\n")
    out = root / "results.txt" / rest
    case.argv[case.argv.index("--out") + 1] = str(out)
    case.outputs = [out]
    return case


@kind("output")
def output_folder_is_a_file(root: Path) -> Case:
    case = split_case(root, cohort_table(12, "INT"), r"cannot create output folder .*results\.txt: .*results\.txt is a file, not a folder")
    return _out_inside_a_file(case, root, "split.csv")


@kind("output")
def disk_full_while_writing_cache(root: Path) -> Case:
    """The preprocess cache outgrows what the disk can take (simulated with a file-size limit:
    the kernel refuses the write part-way, as on a full disk)."""
    case = preprocess_case(root, "")
    case.expect = r"cannot write .*cache: the file size limit was reached .*nothing was written under that name"
    case.not_in_message, case.file_size_limit = [], 64 * 1024
    return case


@kind("output")
def run_folder_is_a_file(root: Path) -> Case:
    case = finetune_clinical_case(root, r"cannot create output folder .*results\.txt/run: .*results\.txt is a file, not a folder")
    return _out_inside_a_file(case, root, "run")


@kind("output")
def disk_full_reserving_cache(root: Path) -> Case:
    """The disk has no room for the crop cache: refused when its blocks are reserved, before any
    crop is computed (a memory map on a full disk would otherwise die with SIGBUS)."""
    import errno
    import os

    case = preprocess_case(root, "")
    case.expect = r"cannot write .*cache: the disk is full \(\[Errno 28\]"
    case.not_in_message = []

    def setup(monkeypatch) -> None:
        def no_space(fd, offset, length):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        monkeypatch.setattr(os, "posix_fallocate", no_space)
    case.setup = setup
    return case


@kind("output")
def disk_full_while_writing_json(root: Path) -> Case:
    """``compare`` has computed everything and cannot write stats.json."""
    case = compare_case(root, predictions_frame("radiomics"), r"cannot write .*stats\.json: the file size limit "
                                                              r"was reached")
    case.file_size_limit = 1024
    return case


# -- preprocess caches (read by pretraining and fine-tuning) --------------------------------------

def pretrain_cache_case(root: Path, damage: Callable[[Path], None], expect: str) -> Case:
    from pretrain_fakes import make_pool_cache

    pool = make_pool_cache(root / "pool", n=4)
    damage(pool)
    case = pretrain_config_case(root, "", expect, "--set", f"data.pool_cache={pool}")
    return case


@kind("pretrain")
def cache_crops_truncated(root: Path) -> Case:
    return pretrain_cache_case(root, lambda c: _truncate(c / "crops.npy", 0.3),
                               r"pool/crops\.npy is not a readable crop array \(.*the file may be truncated\); "
                               r"rebuild the cache")


@kind("pretrain")
def cache_crops_pickled(root: Path) -> Case:
    """A crops.npy holding pickled objects (one of them a payload) is refused, never unpickled."""
    def damage(cache: Path) -> None:
        payload = np.empty(2, dtype=object)
        payload[0] = WritesMarker(cache.parent / "marker")
        np.save(cache / "crops.npy", payload, allow_pickle=True)
    case = pretrain_cache_case(root, damage, r"pool/crops\.npy is not a readable crop array \(it holds pickled "
                                             r"objects, which are never loaded")
    case.outputs.append(root / "marker")
    return case


@kind("pretrain")
def cache_meta_not_json(root: Path) -> Case:
    return pretrain_cache_case(root, lambda c: (c / "meta.json").write_text("{spacing: [2, 2, 2]"),
                               r"pool/meta\.json is not valid JSON")


def statistics_pool_case(root: Path, make_pool: Callable[[Path], Path], expect: str) -> Case:
    """``pretrain`` of ``method: statistics`` (statistics_demo.yaml) on the pool ``make_pool`` writes."""
    root.mkdir(parents=True, exist_ok=True)
    pool = make_pool(root / "pool")
    out = root / "run"
    return Case(["pretrain", "--config", str(REPO / "configs" / "pretrain" / "statistics_demo.yaml"), "--out",
                 str(out), "--accelerator", "cpu", "--set", f"data.pool_cache={pool}", "--set",
                 "model.name=vit3d_tiny_p8", "--set", "statistics.crop_size=16", "--set", "data.num_workers=0"],
                expect, [out])


@kind("pretrain")
def statistics_pool_without_masks(root: Path) -> Case:
    """Crop-statistics pretraining on a one-channel (T1CE only) pool: the targets need the lesion mask."""
    from pretrain_fakes import make_pool_cache

    return statistics_pool_case(root, lambda f: make_pool_cache(f, n=4),
                                r"pool: this method reads the lesion mask, so the pool cache must hold channels "
                                r"\['t1ce', 'mask'\], got \['t1ce'\]")


@kind("pretrain")
def statistics_pool_without_lesions(root: Path) -> Case:
    """A two-channel pool of random sub-volumes only: nothing is centred on a lesion."""
    from pretrain_fakes import make_lesion_pool_cache

    return statistics_pool_case(root, lambda f: make_lesion_pool_cache(f, n_lesion=0, n_random=4),
                                r"no sub-volumes to pretrain on: .* keeping lesion-centred sub-volumes \(kind "
                                r"'lesion', lesion voxels in the crop\)")


# -- checkpoints --------------------------------------------------------------------------------

def resume_case(root: Path, checkpoint: dict, expect: str, damage=None) -> Case:
    """``pretrain --resume`` of a tiny run folder whose last.ckpt is ``checkpoint`` (then damaged)."""
    import torch

    from pretrain_fakes import make_pool_cache, tiny_config
    from rn_classifier.config import save_config

    run = root / "run"
    save_config(tiny_config(make_pool_cache(root / "pool", n=4), "dino"), run / "config.yaml")
    (run / "checkpoints").mkdir(parents=True)
    torch.save(checkpoint, run / "checkpoints" / "last.ckpt")
    if damage is not None:
        damage(run / "checkpoints" / "last.ckpt")
    return Case(["pretrain", "--resume", str(run), "--accelerator", "cpu"], expect,
                [run / "encoder.safetensors", run / "summary.json"], in_child=True)


@kind("pretrain")
def resume_checkpoint_with_pickle_payload(root: Path) -> Case:
    """``pretrain --resume`` of a run whose last.ckpt was replaced by one carrying a payload."""
    case = resume_case(root, {"state_dict": {}, "global_step": 2, "loops": WritesMarker(root / "marker")},
                       r"last\.ckpt was refused: it contains a pickled Python object \([\w.]+\)")
    case.outputs.append(root / "marker")
    return case


@kind("pretrain")
def resume_checkpoint_truncated(root: Path) -> Case:
    """``pretrain --resume`` of a run whose last.ckpt was cut short (an incomplete copy)."""
    import torch

    return resume_case(root, {"state_dict": {"w": torch.zeros(50_000)}, "global_step": 2},
                       r"checkpoint .*last\.ckpt is not a (readable )?PyTorch checkpoint",
                       damage=lambda path: _truncate(path, 0.5))


@kind("pretrain")
def resume_folder_without_run(root: Path) -> Case:
    (root / "empty").mkdir(parents=True)
    return Case(["pretrain", "--resume", str(root / "empty"), "--accelerator", "cpu"],
                r"--resume .*empty: this folder holds no pretraining run to resume \(expected config\.yaml "
                r"and checkpoints/last\.ckpt", [root / "empty" / "config.yaml"])
