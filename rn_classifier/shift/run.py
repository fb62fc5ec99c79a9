"""``run_shift_check``: preprocess caches + predictions files -> ``shift.json`` and ``cases.csv``;
``record_case_reference``: the part of it that checks one new case -> each model bundle."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from .check import DEFAULT_DRAWS, DEFAULT_LEVEL, case_reference, shift_check

SHIFT_FILE, CASES_FILE = "shift.json", "cases.csv"


def run_shift_check(caches: Sequence[str | os.PathLike], predictions: Sequence[str | os.PathLike],
                    out: str | os.PathLike, level: float = DEFAULT_LEVEL,
                    n_draws: int = DEFAULT_DRAWS, seed: int = 0) -> dict:
    """Check every cohort of ``predictions`` against the internal oof cases; write ``out/shift.json``
    (cohort and fold verdicts, per model score verdicts) and ``out/cases.csv`` (one row per new
    case: distance, flagged). ``caches``: the preprocess caches holding every case (internal and
    external)."""
    from .. import atomic
    from ..data.cache import CropCache
    from ..provenance import run_provenance
    from ..stats.compare import json_ready
    from ..stats.predictions import read_predictions, synthetic_flag
    from .features import cache_features

    opened = [CropCache(c) for c in caches]
    features = pd.concat([cache_features(c) for c in opened])
    features = features[~features.index.duplicated()]
    table = read_predictions(predictions)
    result = shift_check(features, table, level=level, n_draws=n_draws, seed=seed)
    synthetic = bool(synthetic_flag(table)) or any(bool(c.meta.get("synthetic")) for c in opened)
    result = {"synthetic": synthetic, **result, "inputs": {"caches": [str(c) for c in caches],
                                                           "predictions": [str(p) for p in predictions]},
              "provenance": run_provenance()}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cases = pd.DataFrame([{k: v for k, v in c.items() if k != "furthest"}
                          | {"furthest": ", ".join(f"{f} {z:+.1f}" for f, z in c["furthest"].items())}
                          for c in result["image"]["cases"]["cases"]])
    atomic.write_csv(out / CASES_FILE, cases.assign(synthetic=synthetic) if len(cases) else cases)
    atomic.write_json(out / SHIFT_FILE, json_ready(result))
    return result


def record_case_reference(result: dict, bundles: Iterable[str | os.PathLike]) -> list[Path]:
    """Write the case reference of the shift check ``result`` into each model bundle folder whose
    model reads images (``predict`` checks a case's image with it, no study folder needed); a
    clinical-only model reads none and is left as it is. Returns the bundles written."""
    from ..family import ModelFamily
    from ..models.bundle import read_bundle_meta, set_shift_reference

    reference = case_reference(result)
    written = []
    for bundle in bundles:
        if ModelFamily(read_bundle_meta(bundle)["family"]).uses_images:
            set_shift_reference(bundle, reference)
            written.append(Path(bundle))
    return written
