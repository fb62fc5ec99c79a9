"""The cluster launcher maps a SLURM array task to one fold."""

from __future__ import annotations

import importlib.util
from pathlib import Path

LAUNCHER = Path(__file__).resolve().parents[1] / "finetune" / "train.py"


def _launcher():
    spec = importlib.util.spec_from_file_location("finetune_train", LAUNCHER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_array_task_becomes_the_fold():
    launcher = _launcher()
    argv = ["--config", "c.yaml"]
    assert launcher.launcher_options(argv, {"SLURM_ARRAY_TASK_ID": "3"}) == ["--fold", "3"]
    assert launcher.launcher_options(argv, {}) == []
    assert launcher.launcher_options(argv + ["--fold", "1"], {"SLURM_ARRAY_TASK_ID": "3"}) == []
