"""Preprocessing of the paper preset: a case's time over its floor, and the speed-up of 2 workers.

The floor of a case is what any pipeline must do: read its image and mask with SimpleITK and
resample both to the preset's spacing (image linear, mask nearest) — nothing else. Our case is
``data.preprocess.process_case`` with ``configs/preprocess/paper.yaml`` (1 mm, 112³ lesion
crops): read (RAS), resample, normalise, crop. Both are timed in ONE run, interleaved case by
case, median of ``--repeats``; the goal is ours / floor ≤ 1.5. Then ``preprocess`` with 1 worker and
with 2 (spawned processes, their start-up included), alternating, of a manifest that lists the
same cases until it holds ``--worker-cases`` rows (a cohort's length: a worker's start-up is paid
once per run, and a manifest of six cases would measure little else).

Cases: the lesions of ``--patients`` patients of the SYNTHETIC ``paper`` preset (internal centre:
1.5 mm scans, resampled up to 1 mm), written once (not timed); with ``--brain1`` also the real
pyradiomics brain1 scan (NRRD, 0.78 × 0.78 × 6.5 mm) from ``RN_TEST_DATA``.

Usage: PYTHONPATH=. python benchmarks/preprocess_speed.py [--patients 2] [--repeats 3] [--brain1]
       [--worker-cases 24] [--record]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import SimpleITK as sitk  # noqa: E402


def synthetic_cases(root: Path, n_patients: int) -> list[dict]:
    """Manifest rows of every lesion of the first ``n_patients`` patients of the paper preset."""
    from rn_classifier.data.synth.cohort import plan_center, render_patient
    from rn_classifier.data.synth.presets import get_preset

    spec = get_preset("paper").internal
    rows = []
    for plan in plan_center(spec, seed=0, separation=1.0, missing_rate=0.0)[:n_patients]:
        meta = render_patient(plan, spec, root)
        folder = root / plan.patient_id / plan.patient_id / "NIFTI"
        for scan in meta["scans"]:
            tp = scan["timepoint"]
            for lesion in plan.lesions:
                rows.append({"case_id": f"{plan.patient_id}_{tp}_L{lesion.number}", "patient_id": plan.patient_id,
                             "center": spec.name, "image": str(folder / f"{plan.patient_id}_{tp}_img.nii.gz"),
                             "mask": str(folder / f"{plan.patient_id}_{tp}_msk.nii.gz"),
                             "mask_labels": f"{lesion.number * 10 + 1};{lesion.number * 10 + 2}",
                             "label": lesion.label, "synthetic": 1})
    return rows


def brain1_case() -> dict:
    root = Path(os.environ.get("RN_TEST_DATA", REPO.parent / "shared" / "data")) / "pyradiomics_brain1"
    if not (root / "brain1_image.nrrd").is_file():
        sys.exit(f"--brain1: brain1 not found in {root} (set RN_TEST_DATA)")
    return {"case_id": "brain1", "patient_id": "brain1", "center": "TCGA", "image": str(root / "brain1_image.nrrd"),
            "mask": str(root / "brain1_label.nrrd"), "mask_labels": "1", "label": 1, "synthetic": 0}


def floor(row: dict, spacing) -> None:
    """SimpleITK alone: read image and mask, resample both to ``spacing`` on the image's extent."""
    image, mask = sitk.ReadImage(row["image"]), sitk.ReadImage(row["mask"])
    size = [int(np.ceil(n * s / t)) for n, s, t in zip(image.GetSize(), image.GetSpacing(), spacing)]
    for volume, interpolator, pixel in ((image, sitk.sitkLinear, sitk.sitkFloat32),
                                        (mask, sitk.sitkNearestNeighbor, mask.GetPixelID())):
        sitk.Resample(volume, size, sitk.Transform(), interpolator, volume.GetOrigin(), list(spacing),
                      volume.GetDirection(), 0, pixel)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patients", type=int, default=2, help="SYNTHETIC paper-preset patients (all their lesions)")
    p.add_argument("--brain1", action="store_true", help="add the real brain1 scan")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--worker-cases", type=int, default=24,
                   help="rows of the manifest the workers are timed on (the cases repeated)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="SimpleITK threads in one process")
    p.add_argument("--record", action="store_true", help="append the figures to benchmarks/RESULTS.md")
    args = p.parse_args()

    from rn_classifier.config import load_config
    from rn_classifier.data.manifest import load_manifest
    from rn_classifier.data.preprocess import LESION, PreprocessConfig, preprocess, process_case
    from rn_classifier.provenance import machine_description

    machine = machine_description()
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(args.threads)
    cfg = load_config(PreprocessConfig, REPO / "configs" / "preprocess" / "paper.yaml", [])
    lines = [f"machine: {machine}; SimpleITK threads {args.threads}",
             f"command: python {' '.join(sys.argv)}"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        rows = synthetic_cases(tmp / "cohort", args.patients) + ([brain1_case()] if args.brain1 else [])
        print(f"{len(rows)} cases written in {time.perf_counter() - t0:.0f} s (not timed)", flush=True)
        manifest = tmp / "manifest.csv"
        pd.DataFrame(rows).to_csv(manifest, index=False)
        cases = [dict(r) for _, r in load_manifest(manifest).iterrows()]
        process_case(cases[0], cfg, LESION)            # imports and first-call costs, not timed
        floor(cases[0], cfg.spacing)
        times = {(c["case_id"], k): [] for c in cases for k in ("floor", "ours")}
        for _ in range(args.repeats):
            for case in cases:                         # interleaved: the load hits both alike
                t0 = time.perf_counter()
                floor(case, cfg.spacing)
                t1 = time.perf_counter()
                process_case(case, cfg, LESION)
                times[case["case_id"], "floor"].append(t1 - t0)
                times[case["case_id"], "ours"].append(time.perf_counter() - t1)
        med = {k: statistics.median(v) for k, v in times.items()}
        for case in cases:
            f, o = med[case["case_id"], "floor"], med[case["case_id"], "ours"]
            lines.append(f"{case['case_id']} ({'SYNTHETIC' if case['synthetic'] else 'real'}): ours {o:.2f} s, "
                         f"floor {f:.2f} s → {o / f:.2f}x")
        total_f = sum(v for (_, k), v in med.items() if k == "floor")
        total_o = sum(v for (_, k), v in med.items() if k == "ours")
        lines.append(f"all {len(cases)} cases: ours / floor = {total_o / total_f:.2f}x (goal ≤ 1.5x; medians of "
                     f"{args.repeats}, interleaved)")
        print("\n".join(lines[2:]), flush=True)

        repeated = [dict(rows[i % len(rows)], case_id=f"{rows[i % len(rows)]['case_id']}_copy{i // len(rows)}")
                    for i in range(max(args.worker_cases, len(rows)))]
        pd.DataFrame(repeated).to_csv(tmp / "workers.csv", index=False)
        walls = {1: [], 2: []}
        for r in range(2):
            for workers in (1, 2):
                cfg.workers = workers
                t0 = time.perf_counter()
                preprocess(tmp / "workers.csv", tmp / f"cache_{workers}_{r}", cfg)
                walls[workers].append(time.perf_counter() - t0)
        one, two = min(walls[1]), min(walls[2])
        lines.append(f"preprocess of {len(repeated)} rows (the {len(cases)} cases repeated): 1 worker {one:.1f} s, "
                     f"2 workers {two:.1f} s (spawned, start-up included) → speed-up {one / two:.2f}x "
                     "(best of 2, alternating)")
        print(lines[-1])
    if args.record:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
        with open(Path(__file__).with_name("RESULTS.md"), "a") as fh:
            fh.write(f"\n## {stamp} — preprocess_speed.py (paper preset: case / SimpleITK floor, workers)\n\n"
                     + "".join(f"- {line}\n" for line in lines))
        print("appended to benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
