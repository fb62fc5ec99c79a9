"""The demo on the SYNTHETIC cohort: what a new user runs first (`make demo`)."""

from __future__ import annotations

from pathlib import Path

from ..config import load_config
from ..data.check import check_manifest
from ..data.preprocess import PreprocessConfig, preprocess
from ..errors import DataIntegrityError

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def run_data_stages(out: Path, preset: str = "demo", seed: int = 0, echo=print) -> dict:
    """synth → check-data → preprocess on the synthetic cohort; returns the cache folders."""
    from ..data.synth import make_synthetic_cohort

    out = Path(out)
    cohort = out / "cohort"
    if not (cohort / "manifests" / "unlabeled.csv").is_file():
        echo(f"[1/3] synth: writing the SYNTHETIC {preset} cohort to {cohort}")
        make_synthetic_cohort(cohort, preset=preset, seed=seed)
    else:
        echo(f"[1/3] synth: {cohort} exists, reused")
    echo("[2/3] check-data")
    for name in ("internal", "external", "unlabeled"):
        manifest = cohort / "manifests" / f"{name}.csv"
        df, problems = check_manifest(manifest)
        if problems:
            raise DataIntegrityError(str(manifest), problems)
        echo(f"      {name}: {len(df)} cases OK")
    cfg = load_config(PreprocessConfig, REPO_CONFIGS / "preprocess" / f"{preset}.yaml")
    caches = {}
    echo("[3/3] preprocess")
    for name in ("internal", "external", "unlabeled"):
        cache = out / "cache" / name
        meta = preprocess(cohort / "manifests" / f"{name}.csv", cache, cfg)
        caches[name] = cache
        echo(f"      {name}: {meta['n']} crops {meta['crop_size']} {meta['channels']} "
             f"{'(up to date)' if meta.get('skipped') else ''}")
    return caches
