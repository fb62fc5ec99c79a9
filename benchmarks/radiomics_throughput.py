"""Radiomics extraction throughput: cases/s with 1 worker and with N workers, in one run.

    python benchmarks/radiomics_throughput.py [--config configs/radiomics/molab.yaml]
        [--cases 16] [--workers N] [--repeats 2] [--manifest M] [--record]

Each measurement starts from an empty feature cache, so every case is extracted; worker start-up
(spawn, imports) is inside the timed region, as it is in a real run. Workers run one
SimpleITK/OpenMP thread each (``extraction.threads_per_worker``). Without ``--manifest`` the cases
are generated here: a T1CE-like volume (1 x 1 x 2.5 mm voxels) with a ring-enhancing lesion of
10-14 mm radius (4-11 cm^3). Prints cases/s, the speed-up and
the parallel efficiency (speed-up / N; goal >= 0.8). ``--record`` appends a dated block to
``benchmarks/RESULTS.md`` (never overwrites).
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import tempfile
import time
from pathlib import Path

# Only light imports at module level: spawned extraction workers re-import the main module
# (multiprocessing's spawn), so heavy ones here would be timed as worker start-up.
from rn_classifier.baselines.radiomics_batch import extract_cohort, resolve_workers

REPO = Path(__file__).resolve().parents[1]


def generated_cases(folder: Path, n: int, seed: int = 0):
    """``n`` cases: a head (brain ~400 in air ~0) with a shell + core lesion (mask 11, 12).

    The air around the head matters: pyradiomics normalises with the whole image's SD, and the
    lesion's contrast is set so that it spans about as many 5-unit bins as the clinical brain1
    lesion does (original-image range ~200 after normalisation): GLCM's MCC feature costs
    O(bins^3), so an unrealistic contrast would measure something else.
    """
    import nibabel as nib
    import numpy as np
    import pandas as pd
    from scipy import ndimage

    shape, spacing = (96, 96, 40), (1.0, 1.0, 2.5)
    affine = np.diag([*spacing, 1.0])
    grid = np.stack(np.meshgrid(*[np.arange(s) * sp for s, sp in zip(shape, spacing)], indexing="ij"))
    middle = np.array([s * sp / 2 for s, sp in zip(shape, spacing)])
    head = (((grid - middle[:, None, None, None]) / (0.45 * middle[:, None, None, None] * 2)) ** 2).sum(0) <= 1
    rows = []
    for i in range(n):
        rng = np.random.default_rng(seed + i)
        center = middle + rng.uniform(-8, 8, 3)
        radius = rng.uniform(10, 14)
        dist = np.sqrt(((grid - center[:, None, None, None]) ** 2).sum(0))
        image = np.where(head, 400 + 40 * np.sin(grid[0] / 9) * np.cos(grid[1] / 11), 0.0)
        image += rng.normal(0, 12, shape)
        shell, core = dist <= radius, dist <= 0.55 * radius
        image[shell] = 600 + rng.normal(0, 30, int(shell.sum()))
        image[core] = 300 + rng.normal(0, 20, int(core.sum()))
        image = ndimage.gaussian_filter(image, 0.8)  # MR voxels are not independent
        mask = np.where(core, 12, np.where(shell, 11, 0)).astype(np.int16)
        paths = folder / f"case{i:02d}_img.nii.gz", folder / f"case{i:02d}_msk.nii.gz"
        nib.save(nib.Nifti1Image(np.clip(image, 0, None).astype(np.int16), affine), str(paths[0]))
        nib.save(nib.Nifti1Image(mask, affine), str(paths[1]))
        rows.append({"case_id": f"case{i:02d}", "image_path": str(paths[0]),
                     "mask_path": str(paths[1]), "mask_labels": (11, 12)})
    return pd.DataFrame(rows)


def measure(cases, params: dict, workers: int, threads: int) -> tuple[float, float]:
    """(cases/s wall, CPU s/case) of one extraction from an empty cache.

    CPU time counts this process and the worker processes (reaped when the pool shuts down);
    unlike wall time it does not depend on what else runs on the machine.
    """
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    before_self = time.process_time()
    with tempfile.TemporaryDirectory() as cache:
        result = extract_cohort(cases, params, cache, workers=workers, threads_per_worker=threads,
                                progress=False)
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (time.process_time() - before_self
           + (after_children.ru_utime + after_children.ru_stime)
           - (before_children.ru_utime + before_children.ru_stime))
    if len(result.failed):
        raise SystemExit(f"extraction failed: {result.failed['reason'].tolist()}")
    return len(cases) / result.seconds, cpu / len(cases)


def machine() -> str:
    from rn_classifier.provenance import machine_description

    return f"{machine_description()}; {resolve_workers(0)} cores usable"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs/radiomics/molab.yaml")
    parser.add_argument("--cases", type=int, default=16, help="generated cases (without --manifest)")
    parser.add_argument("--workers", type=int, default=0, help="N (0 = one per core)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each setting (best kept)")
    parser.add_argument("--manifest", type=Path, help="measure on the first --cases cases of a manifest")
    parser.add_argument("--record", action="store_true", help="append the figures to benchmarks/RESULTS.md")
    args = parser.parse_args()

    from rn_classifier.baselines.radiomics_config import RadiomicsConfig, validate_config
    from rn_classifier.config import load_config
    from rn_classifier.data.manifest import load_manifest

    cfg = validate_config(load_config(RadiomicsConfig, args.config))
    params, threads = cfg.extraction.pyradiomics, cfg.extraction.threads_per_worker
    n_workers = resolve_workers(args.workers)
    lines = [f"machine: {machine()}"]
    with tempfile.TemporaryDirectory() as tmp:
        if args.manifest:
            cases = load_manifest(args.manifest).head(args.cases)
        else:
            cases = generated_cases(Path(tmp), args.cases)
        source = args.manifest or "generated lesions (4-11 cm^3)"
        lines.append(f"{len(cases)} cases from {source}, {Path(args.config).name}, "
                     f"{threads} SimpleITK/OpenMP thread(s) per worker, empty cache per measurement, "
                     f"best of {args.repeats} alternating runs")
        # alternate the two settings and keep the best of each: other jobs on the machine slow
        # down whichever run they overlap, never speed one up
        one, many = (0.0, float("inf")), (0.0, float("inf"))
        for _ in range(args.repeats):
            one = tuple(f(a, b) for f, a, b in zip((max, min), one, measure(cases, params, 1, threads)))
            many = tuple(f(a, b) for f, a, b in zip((max, min), many,
                                                     measure(cases, params, n_workers, threads)))
    speedup = many[0] / one[0]
    lines += [f"1 worker: {one[0]:.3f} cases/s ({one[1]:.2f} CPU s/case)",
              f"{n_workers} workers: {many[0]:.3f} cases/s ({many[1]:.2f} CPU s/case, incl. worker start-up)",
              f"speed-up {speedup:.2f}x, efficiency {speedup / n_workers:.2f} (goal >= 0.80); "
              f"CPU per case {n_workers} workers / 1 worker: {many[1] / one[1]:.2f} "
              "(1.00 = no parallel overhead; independent of machine load)"]
    for line in lines:
        print(line)
    if args.record:
        stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        results = Path(__file__).with_name("RESULTS.md")
        header = "" if results.exists() else (
            "# Benchmark results\n\nDated blocks appended by the scripts in benchmarks/ "
            "(`--record`); newest last.\n")
        with open(results, "a") as fh:
            fh.write(header + f"\n## {stamp} — radiomics_throughput.py (pyradiomics extraction, "
                     f"1 vs {n_workers} workers)\n\n" + "".join(f"- {line}\n" for line in lines))
        print("appended to benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
