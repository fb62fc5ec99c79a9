"""benchmarks/gpu_check.py in its CPU dry mode (tiny model, 2 steps): every part runs and prints
its figures, and the shortened paper study leaves an encoder and a fine-tuned fold behind. The
figures themselves are not checked (timings are never asserted)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_gpu_check_dry_runs_every_part(tmp_path, capsys):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(BENCHMARKS))

    rc = gpu_check.main(["--dry", "--out", str(tmp_path / "study")])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "every part ran" in printed
    for figure in ("DINO bf16 autocast ours", "MAE bf16 autocast ours", "MFU", "→ ratio",
                   "the paper config ran end to end"):
        assert figure in printed, figure
    study = tmp_path / "study"
    assert (study / "pretrain" / "encoder.json").is_file()
    assert json.loads((study / "pretrain" / "summary.json").read_text())["global_step"] == 2
    from rn_classifier.finetune.cv import fold_dir, read_fold

    run = study / "finetune" / "ssl_vit"
    assert read_fold(fold_dir(run, 0)) is not None        # fold 0 complete ...
    assert read_fold(fold_dir(run, 1)) is None            # ... and only fold 0
