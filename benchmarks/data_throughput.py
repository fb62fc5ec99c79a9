"""Data throughput: random two-channel training crops per second, preprocess cache vs NIfTI files.

    python benchmarks/data_throughput.py [--cohort DIR] [--preset demo|paper] [--crop N]
        [--file-draws 12] [--seconds 3] [--record]

What a fine-tuning loader needs per sample is a random ``crop``³ two-channel crop (T1CE + lesion
mask) around a lesion, at the training spacing, normalised. Two ways to get it, both measured
here in one run, single process, the same random sub-crop code after the source:

* from the files: read the image and mask ``.nii.gz`` (nibabel), RAS, resample to the
  training spacing (MONAI), normalise, cut the lesion-centred crop — what every epoch would
  pay without the cache (:func:`rn_classifier.data.preprocess.process_case`);
* from the cache: one row of the memory-mapped float16 ``crops.npy``
  (:class:`rn_classifier.data.cache.CropCache`), built once by ``rn-classifier preprocess``.

Without ``--cohort`` a SYNTHETIC cohort of the given preset is generated in a temporary folder
(its unlabeled pool cut to a few sub-volumes: only the labelled internal cases are read). The
goal of the data-layer issue is a ratio >= 20x. ``--record`` appends a dated block to
``benchmarks/RESULTS.md`` (never overwrites).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def random_subcrop(crop: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``size``³ window of a ``(C, X, Y, Z)`` crop, as a contiguous float32 array."""
    starts = [int(rng.integers(0, s - size + 1)) for s in crop.shape[1:]]
    window = crop[(slice(None), *(slice(a, a + size) for a in starts))]
    return np.ascontiguousarray(window, dtype=np.float32)


def crops_from_files(rows: list[dict], cfg, size: int, draws: int, rng) -> tuple[float, int]:
    """Crops/s when every sample is read and preprocessed from its NIfTI files."""
    from rn_classifier.data.preprocess import LESION, process_case

    start = time.perf_counter()
    for _ in range(draws):
        crop, _ = process_case(rows[int(rng.integers(len(rows)))], cfg, LESION)
        random_subcrop(crop, size, rng)
    return draws / (time.perf_counter() - start), draws


def crops_from_cache(cache, size: int, seconds: float, rng) -> tuple[float, int]:
    """Crops/s when every sample is one random row of the memory-mapped cache."""
    n = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(64):
            random_subcrop(cache.crops[int(rng.integers(len(cache)))], size, rng)
        n += 64
    return n / elapsed, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", type=Path, help="cohort folder with manifests/internal.csv "
                        "(default: generate a SYNTHETIC one of --preset)")
    parser.add_argument("--preset", default="demo", choices=["demo", "paper"],
                        help="synthetic preset and configs/preprocess/<preset>.yaml")
    parser.add_argument("--crop", type=int, help="training crop edge (default: the largest "
                        "multiple of 8 <= 0.86 x the cached crop: 32 of 40, 96 of 112)")
    parser.add_argument("--file-draws", type=int, default=12, help="samples read from files")
    parser.add_argument("--seconds", type=float, default=3.0, help="time spent reading the cache")
    parser.add_argument("--record", action="store_true", help="append the figures to benchmarks/RESULTS.md")
    args = parser.parse_args()

    from rn_classifier.config import load_config
    from rn_classifier.data.cache import CropCache
    from rn_classifier.data.manifest import load_manifest
    from rn_classifier.data.preprocess import PreprocessConfig, preprocess
    from rn_classifier.provenance import machine_description

    cfg = load_config(PreprocessConfig, REPO / "configs" / "preprocess" / f"{args.preset}.yaml",
                      [f"workers={min(2, os.cpu_count() or 1)}"])
    size = args.crop or int(0.86 * min(cfg.labelled_crop)) // 8 * 8
    rng = np.random.default_rng(0)
    lines = [f"machine: {machine_description()}"]
    with tempfile.TemporaryDirectory() as tmp:
        cohort = args.cohort
        if cohort is None:
            from rn_classifier.data.synth import make_synthetic_cohort

            cohort = Path(tmp) / "cohort"
            make_synthetic_cohort(cohort, preset=args.preset, seed=0, pool_size=4)
        manifest_path = cohort / "manifests" / "internal.csv"
        rows = load_manifest(manifest_path).to_dict("records")
        t0 = time.perf_counter()
        preprocess(manifest_path, Path(tmp) / "cache", cfg)
        build_s = time.perf_counter() - t0
        cache = CropCache(Path(tmp) / "cache")
        synthetic = bool(cache.meta.get("synthetic"))
        files_rate, n_files = crops_from_files(rows, cfg, size, args.file_draws, rng)
        cache_rate, n_cache = crops_from_cache(cache, size, args.seconds, rng)
    source = f"{'SYNTHETIC ' if synthetic else ''}{args.preset if args.cohort is None else cohort.name}"
    lines += [
        f"{len(rows)} labelled internal cases of the {source} cohort; "
        f"configs/preprocess/{args.preset}.yaml: spacing {cfg.spacing} mm, cached crop "
        f"{cfg.labelled_crop}, random {size}^3 two-channel training crops, one process",
        f"from .nii.gz files (read, RAS, resample, normalise, crop): {files_rate:.2f} crops/s "
        f"({n_files} draws)",
        f"from the cache (memory-mapped float16): {cache_rate:.0f} crops/s ({n_cache} draws)",
        f"ratio cache / files: {cache_rate / files_rate:.0f}x (goal >= 20x); building the cache "
        f"once took {build_s:.1f} s ({cfg.workers} workers)",
    ]
    for line in lines:
        print(line)
    if args.record:
        stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        with open(Path(__file__).with_name("RESULTS.md"), "a") as fh:
            fh.write(f"\n## {stamp} — data_throughput.py (training crops: cache vs NIfTI files)\n\n"
                     + "".join(f"- {line}\n" for line in lines))
        print("appended to benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
