"""Where the report's inputs are, for a study run folder or a single fine-tuning run.

Study run folder (notes/STUDY_LAYOUT.md): ``compare/stats.json``, ``finetune/<model>/`` and other
``*/predictions.csv``, ``provenance.json``, ``study.yaml``. A single fine-tuning run folder
(``config.yaml`` + ``predictions.csv``) works too when a ``stats.json`` is given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError


@dataclass
class ReportSources:
    root: Path
    stats_path: Path
    stats: dict
    prediction_files: list[Path]
    provenance: dict
    config_text: str
    config_name: str
    finetune_runs: dict[str, Path] = field(default_factory=dict)   # model name → run folder


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable JSON file ({exc})") from None


def _model_name(run: Path) -> str | None:
    summary = run / "summary.json"
    if summary.is_file():
        name = json.loads(summary.read_text()).get("model")
        if name:
            return name
    meta = run / "run.json"
    return json.loads(meta.read_text()).get("name") if meta.is_file() else None


def find_sources(run_dir: str | Path, stats: str | Path | None = None) -> ReportSources:
    """Locate and read the inputs; every missing piece is named in one error."""
    root = Path(run_dir)
    if not root.is_dir():
        raise InputError(f"{root}: run folder does not exist")
    single_run = (root / "config.yaml").is_file() and (root / "predictions.csv").is_file()
    stats_path = Path(stats) if stats else root / "compare" / "stats.json"
    if not stats_path.is_file():
        hint = ("pass --stats STATS_JSON (from `rn-classifier compare`)" if single_run else
                "run `rn-classifier compare` first, or pass --stats")
        raise InputError(f"{stats_path} does not exist: the report needs the statistics; {hint}")
    stats_data = _read_json(stats_path)
    if "cohorts" not in stats_data or "reference" not in stats_data:
        raise InputError(f"{stats_path} is not a stats.json of `rn-classifier compare` "
                         "(keys 'cohorts' and 'reference' are missing)")
    if single_run:
        runs = [root]
        # the other models stats.json compares (it records the predictions files it read)
        recorded = [Path(p) for p in stats_data.get("inputs", [])]
        recorded = [p if p.is_absolute() else stats_path.parent / p for p in recorded]
        files = list({p.resolve(): p for p in [root / "predictions.csv", *recorded] if p.is_file()}.values())
        config_path = root / "config.yaml"
    else:
        runs = sorted(p.parent for p in (root / "finetune").glob("*/config.yaml"))
        files = sorted({*root.glob("*/predictions.csv"), *root.glob("finetune/*/predictions.csv")})
        config_path = root / "study.yaml"
    if not files:
        raise InputError(f"{root} holds no predictions.csv (looked in {root.name}/*/ and "
                         f"{root.name}/finetune/*/)")
    provenance_path = root / "provenance.json"
    provenance = _read_json(provenance_path) if provenance_path.is_file() else {}
    finetune_runs = {}
    for run in runs:
        name = _model_name(run)
        if name:
            finetune_runs[name] = run
    return ReportSources(root=root, stats_path=stats_path, stats=stats_data, prediction_files=files,
                         provenance=provenance,
                         config_text=config_path.read_text() if config_path.is_file() else "",
                         config_name=config_path.name if config_path.is_file() else "",
                         finetune_runs=finetune_runs)


def resolve_data_path(value: str | None, run_dir: Path, study_root: Path, fallback: Path | None) -> Path | None:
    """A path from a run's config: relative to the run folder, as written, relative to the study
    root or its parent, or ``fallback`` (e.g. ``RUN/cache/internal``) — the first that exists."""
    candidates = []
    if value:
        p = Path(value)
        # relative to the run folder first (how runs store paths), then the older forms:
        # the working directory the run was made in, the study root or its parent
        candidates += [p] if p.is_absolute() else [run_dir / p, p, study_root / p, study_root.parent / p]
    if fallback is not None:
        candidates.append(fallback)
    return next((c for c in candidates if c.exists()), None)
