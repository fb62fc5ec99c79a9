"""Baselines as study stages, one registered entry each (the radiomics baseline is one of them).

A baseline reads the labelled cohort's manifests and the study's patient-level split, and writes
``predictions.csv`` (seam 2) into its run folder; ``compare`` and ``report`` read only that. Adding
one is one :func:`register_baseline` call (a test file may do it), then naming it in the study
config (``baselines: {NAME: {config: ..., set: [...]}}``; radiomics keeps its ``radiomics:`` section).
An unknown name is an error listing the known ones.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import atomic
from ..errors import ConfigError

RECORD = "baseline.json"     # in the run folder: which baseline wrote it (what the report shows)


@dataclass(frozen=True)
class BaselineRun:
    """What a baseline stage is given: its config file and overrides, the cohorts, the split and
    the run folder to write (``out/predictions.csv`` at least)."""

    config: str | os.PathLike | None
    overrides: list[str]
    internal: Path                     # labelled internal manifest
    external: Path | None              # external manifest, if the study has one
    split: Path | None                 # the study's split.csv (None: the baseline makes its own)
    out: Path
    progress: bool = False


@dataclass(frozen=True)
class Baseline:
    """One baseline.

    model_name(config, overrides): the ``model`` column its predictions.csv writes;
    settings(config, overrides): what changes its results (the study's stage key);
    run(BaselineRun): writes the run folder, returns a summary with ``auc`` per cohort.
    """

    name: str
    description: str                   # one line in the report, e.g. "radiomics baseline (...)"
    model_name: Callable[[str | None, list[str]], str]
    settings: Callable[[str | None, list[str]], dict]
    run: Callable[[BaselineRun], dict]
    default_config: str | None = None


BASELINES: dict[str, Baseline] = {}


def register_baseline(baseline: Baseline) -> Baseline:
    if baseline.name in BASELINES:
        raise ValueError(f"baseline {baseline.name!r} is registered already")
    BASELINES[baseline.name] = baseline
    return baseline


def get_baseline(name: str) -> Baseline:
    try:
        return BASELINES[name]
    except KeyError:
        raise ConfigError(f"unknown baseline {name!r}; known: {sorted(BASELINES)}") from None


def run_baseline(name: str, run: BaselineRun) -> dict:
    """Run a registered baseline and record in its folder which one wrote it."""
    baseline = get_baseline(name)
    summary = baseline.run(run)
    atomic.write_json(Path(run.out) / RECORD, {"baseline": name, "description": baseline.description,
                                               "model": baseline.model_name(run.config, run.overrides)})
    return summary


def read_record(folder: str | os.PathLike) -> dict | None:
    """The ``baseline.json`` of a baseline run folder, or None for other folders."""
    import json

    path = Path(folder) / RECORD
    return json.loads(path.read_text()) if path.is_file() else None


# -- radiomics --------------------------------------------------------------------------------

def _radiomics_config(config, overrides):
    from ..config import load_config
    from .radiomics_config import RadiomicsConfig

    return load_config(RadiomicsConfig, config, overrides)


def _radiomics_settings(config, overrides) -> dict:
    from ..config import to_dict

    settings = to_dict(_radiomics_config(config, overrides))
    settings.get("extraction", {}).pop("workers", None)     # how fast, not what
    return settings


def _run_radiomics(run: BaselineRun) -> dict:
    from .radiomics_run import run_radiomics

    return run_radiomics(run.config, run.internal, run.out, external=run.external, split=run.split,
                         overrides=list(run.overrides), progress=run.progress)


register_baseline(Baseline(
    name="radiomics",
    description="radiomics baseline (pyradiomics features, classical classifier)",
    model_name=lambda config, overrides: _radiomics_config(config, overrides).name,
    settings=_radiomics_settings,
    run=_run_radiomics,
    default_config="configs/radiomics/demo.yaml",
))
