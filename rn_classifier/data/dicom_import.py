"""``import-dicom``: a treatment-planning export (DICOM MR series + RTSTRUCT / DICOM-SEG) → manifest.

The tree may be nested any way (``patient/study/series``, one flat folder, ``RS.*.dcm`` beside
the slices). Files are told apart by SOP class, never by name. Each structure set (or SEG) is
paired with the MR series it references (SeriesInstanceUID; the Frame of Reference when it
names no series), and each ROI whose name matches ``roi_pattern`` is one lesion: one case per
lesion per structure set. Labels come from a CSV ``patient, roi, label`` (optional ``study``:
a StudyDate ``YYYYMMDD`` or StudyInstanceUID, for patients with several planning studies; more
columns are copied into the manifest as clinical values).

Nothing is skipped silently: a series in a folder with another series, a structure set whose
series is not in the tree, a series without contours, a lesion ROI without a label — each is a
row of ``<manifest>.report.csv`` (``kind, path, detail``) and counted in the summary; a label
that matches no lesion, or two structure sets naming the same lesion, stops the import with
every such problem listed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .. import atomic
from ..errors import DataIntegrityError, InputError
from .dicom_rt import SEG_SOP_CLASS, rtstruct_summary, seg_summary
from .dicom_series import RTSTRUCT_SOP_CLASS, DicomHeader, image_series_of, scan_folder
from .manifest import MASK_LABEL_SEP, read_csv_table, write_manifest
from .molab import LABEL_WORDS

DEFAULT_ROI_PATTERN = r"(?i)^(gtv|lesion|met|tumou?r)"


@dataclass
class MaskObject:
    """A structure set or SEG found in the tree, with what it references and its ROI names."""

    header: DicomHeader
    kind: str                    # rtstruct | seg
    frames: set[str]
    series: set[str]
    rois: list[str]


def _case_id(patient: str, date: str, roi: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{patient}_{date or 'nodate'}_{roi}")


def find_series(headers: list[DicomHeader], report: list[dict]) -> dict[str, Path]:
    """{SeriesInstanceUID: its folder} for series that are alone in their folder."""
    by_series = image_series_of(headers)
    per_folder: dict[Path, set[str]] = {}
    for uid, files in by_series.items():
        for h in files:
            per_folder.setdefault(h.path.parent, set()).add(uid)
    usable = {}
    for uid, files in by_series.items():
        folders = {h.path.parent for h in files}
        shared = [f for f in folders if len(per_folder[f]) > 1]
        if len(folders) > 1:
            report.append({"kind": "series split over folders", "path": ";".join(map(str, sorted(folders))),
                           "detail": f"series {uid} ({len(files)} files); move its files into one folder"})
        elif shared:
            report.append({"kind": "folder with several series", "path": str(shared[0]),
                           "detail": f"series {uid} shares its folder with {len(per_folder[shared[0]]) - 1} "
                                     "other series; put each series in its own folder"})
        else:
            usable[uid] = next(iter(folders))
    return usable


def find_mask_objects(headers: list[DicomHeader]) -> list[MaskObject]:
    objects = []
    for h in headers:
        if h.sop_class == RTSTRUCT_SOP_CLASS:
            frames, series, rois = rtstruct_summary(h.path)
            objects.append(MaskObject(h, "rtstruct", frames, series, rois))
        elif h.sop_class == SEG_SOP_CLASS:
            frames, series, rois = seg_summary(h.path)
            objects.append(MaskObject(h, "seg", frames, series, rois))
    return objects


def pair(objects: list[MaskObject], series: dict[str, Path], headers: list[DicomHeader],
         report: list[dict]) -> list[tuple[MaskObject, str]]:
    """(mask object, the SeriesInstanceUID of its image) for every object whose series is in the tree."""
    frame_of = {}
    for h in headers:
        if h.is_image and h.series in series:
            frame_of.setdefault(h.frame_of_reference, set()).add(h.series)
    pairs = []
    for obj in objects:
        found = sorted(obj.series & set(series))
        if not found and not obj.series:
            found = sorted(set().union(*(frame_of.get(f, set()) for f in obj.frames)))
        if len(found) == 1:
            pairs.append((obj, found[0]))
            continue
        detail = (f"references series {sorted(obj.series)}, not found under the root (or not usable, "
                  "see the other rows)" if not found else f"matches {len(found)} series {found}; "
                  "expected one")
        report.append({"kind": f"{obj.kind} without its series", "path": str(obj.header.path), "detail": detail})
    paired = {uid for _, uid in pairs}
    for uid, folder in sorted(series.items(), key=lambda kv: str(kv[1])):
        if uid not in paired:
            report.append({"kind": "series without contours", "path": str(folder),
                           "detail": f"series {uid}: no RTSTRUCT or SEG references it"})
    return pairs


def read_labels(path: Path) -> tuple[pd.DataFrame, list[str]]:
    df = read_csv_table(Path(path), "labels file", dtype=str)
    df.columns = [c.strip() for c in df.columns]
    lower = {c.lower(): c for c in df.columns}
    missing = [c for c in ("patient", "roi", "label") if c not in lower]
    if missing:
        raise InputError(f"labels file {path}: missing column(s) {missing}; expected patient, roi, label "
                         "[, study] [, clinical columns]")
    df = df.rename(columns={lower[c]: c for c in ("patient", "roi", "label", "study") if c in lower})
    if "study" not in df.columns:
        df["study"] = ""
    df[["patient", "roi", "study"]] = df[["patient", "roi", "study"]].fillna("").apply(lambda s: s.str.strip())
    problems = []
    values = []
    for i, raw in enumerate(df["label"]):
        value = LABEL_WORDS.get(str(raw).strip().lower().removesuffix(".0"), -1) if pd.notna(raw) else -1
        if value == -1:
            problems.append(f"labels file {path}, row {i + 2} ({df['patient'].iloc[i]}, ROI "
                            f"{df['roi'].iloc[i]}): label must be 1/RN or 0/progression, got {raw!r}")
        values.append(value)
    df["label"] = values
    return df, problems


def _lesion_rows(pairs, series, headers, pattern, report) -> list[dict]:
    """One row per lesion ROI of every paired mask object (no label yet)."""
    by_uid = {h.series: h for h in headers if h.is_image}
    rows = []
    for obj, uid in pairs:
        image = by_uid[uid]
        lesions = [r for r in obj.rois if pattern.search(r)]
        if not lesions:
            report.append({"kind": f"{obj.kind} without lesion ROIs", "path": str(obj.header.path),
                           "detail": f"no ROI matches {pattern.pattern!r}; ROIs: {obj.rois}"})
        for roi in lesions:
            if MASK_LABEL_SEP in roi:
                report.append({"kind": "ROI name with ';'", "path": str(obj.header.path),
                               "detail": f"ROI {roi!r} cannot be a mask label; rename it"})
                continue
            rows.append({"patient": image.patient_id, "study_date": image.study_date, "study_uid": image.study,
                         "roi": roi, "image": series[uid], "mask": obj.header.path})
    return rows


def _label_rows(lesions: list[dict], labels: pd.DataFrame, report: list[dict], problems: list[str]) -> list[dict]:
    """The lesions with their label row; unlabelled lesions reported, unmatched labels problems."""
    used: set[int] = set()
    cases = []
    for lesion in lesions:
        match = labels[(labels["patient"] == lesion["patient"]) & (labels["roi"] == lesion["roi"])
                       & labels["study"].isin(["", lesion["study_date"], lesion["study_uid"]])]
        if match.empty:
            report.append({"kind": "lesion without a label", "path": str(lesion["mask"]),
                           "detail": f"patient {lesion['patient']}, study {lesion['study_date']}, ROI {lesion['roi']}"})
            continue
        used.update(match.index)
        cases.append({**lesion, "labels_row": match.index[0]})
    for i in labels.index.difference(sorted(used)):
        row = labels.loc[i]
        problems.append(f"labels file: patient {row['patient']}, ROI {row['roi']}"
                        f"{', study ' + row['study'] if row['study'] else ''} matches no lesion ROI of a "
                        "structure set paired with its MR series (see the report for what was not paired)")
    return cases


def import_dicom(root: str | os.PathLike, labels_csv: str | os.PathLike, out: str | os.PathLike,
                 center: str = "DICOM", roi_pattern: str = DEFAULT_ROI_PATTERN,
                 synthetic: bool = False) -> pd.DataFrame:
    """Build and write the manifest of a DICOM-RT tree (see the module docstring); returns it.

    ``attrs["report"]`` holds the report rows, also written to ``<out stem>.report.csv``.
    """
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise InputError(f"DICOM root {root} is not a folder")
    try:
        pattern = re.compile(roi_pattern)
    except re.error as exc:
        raise InputError(f"--roi-pattern {roi_pattern!r} is not a regular expression ({exc})") from None
    headers = scan_folder(root, recursive=True)
    if not any(h.is_image for h in headers):
        raise InputError(f"{root}: no DICOM image series found under it (files are recognised by SOP class)")
    report: list[dict] = []
    series = find_series(headers, report)
    pairs = pair(find_mask_objects(headers), series, headers, report)
    labels, problems = read_labels(Path(labels_csv))
    lesions = _lesion_rows(pairs, series, headers, pattern, report)
    cases = _label_rows(lesions, labels, report, problems)
    rows = _manifest_rows(cases, labels, out, center, synthetic)
    ids = pd.Series([r["case_id"] for r in rows])
    for cid in ids[ids.duplicated()].unique():
        masks = sorted(str(c["mask"]) for c, r in zip(cases, rows) if r["case_id"] == cid)
        problems.append(f"case {cid}: the lesion is in {len(masks)} structure sets ({', '.join(masks)}); "
                        "keep one (e.g. the approved plan's) under the root")
    if problems:
        raise DataIntegrityError(f"DICOM import of {root}", problems)
    if not rows:
        raise InputError(f"{root}: no labelled lesion found ({len(lesions)} lesion ROI(s) paired with a series, "
                         f"none in {labels_csv}); see the pairing problems: "
                         + "; ".join(f"{r['kind']}: {r['path']}" for r in report[:5]))
    df = pd.DataFrame(rows)
    write_manifest(df, out)
    atomic.write_csv(out.with_name(out.stem + ".report.csv"), pd.DataFrame(report, columns=["kind", "path", "detail"]))
    df.attrs["report"] = report
    return df


def _manifest_rows(cases: list[dict], labels: pd.DataFrame, out: Path, center: str, synthetic: bool) -> list[dict]:
    base = out.parent.resolve()
    clinical = [c for c in labels.columns if c not in ("patient", "roi", "label", "study", "synthetic")]
    rows = []
    for case in cases:
        lab = labels.loc[case["labels_row"]]
        rows.append({"case_id": _case_id(case["patient"], case["study_date"], case["roi"]),
                     "patient_id": case["patient"], "center": center,
                     "image": os.path.relpath(Path(case["image"]).resolve(), base),
                     "mask": os.path.relpath(Path(case["mask"]).resolve(), base),
                     "mask_labels": case["roi"], "label": int(lab["label"]), "synthetic": int(bool(synthetic)),
                     "timepoint": case["study_date"], "lesion": case["roi"],
                     **{c: lab[c] for c in clinical}})
    return rows
