"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _real_data_root() -> Path:
    env = os.environ.get("RN_TEST_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """``../shared/data`` (or ``$RN_TEST_DATA``): real clinical data that is not in the repo."""
    root = _real_data_root()
    case = root / "pyradiomics_brain1"
    if not (case / "brain1_image.nrrd").is_file():
        pytest.skip(f"real test data not found at {case} (set RN_TEST_DATA to the folder holding "
                    "pyradiomics_brain1/ to run this test)")
    return root


@pytest.fixture(scope="session")
def brain1(real_data_dir) -> dict[str, Path]:
    case = real_data_dir / "pyradiomics_brain1"
    return {"image": case / "brain1_image.nrrd", "mask": case / "brain1_label.nrrd",
            "baseline": case / "baseline_brain1.csv"}


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory) -> Path:
    """A trained SYNTHETIC study run folder (3 tiny models, compare/stats.json), built once per session
    (tests/builders.py: tiny_study_run); used by the report, predict and attention tests."""
    from builders import tiny_study_run

    return tiny_study_run(tmp_path_factory.mktemp("tiny_study") / "run")
