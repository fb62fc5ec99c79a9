"""Cluster entry point for fine-tuning: the same ``run_finetune`` as ``rn-classifier finetune``.

Takes the options of ``rn-classifier finetune`` (``--config``, ``--set``, ``--out``, ``--encoder``,
``--fold``). Folds are independent, so a cluster runs them in parallel as a job array, one fold
(one GPU) per task: inside a SLURM array task without ``--fold`` the task's index is used as the
fold. Every task writes its fold into the same ``--out``; the task that completes the last fold
writes ``predictions.csv`` (a later plain run of the same command does it too, reusing every
finished fold):

    sbatch --array=0-4 finetune/slurm.sbatch configs/finetune/ssl_full.yaml runs/ssl_vit_full \\
        --encoder runs/dino_vitb
    python finetune/train.py --config configs/finetune/ssl_full.yaml --out runs/ssl_vit_full --fold 2

Late fusion stacks on all folds of an image run: run it after the image run has finished, with
``--set fusion.image_run=RUN_DIR`` (it then trains only logistic models, in seconds).
Run from the repository root (or with rn-classifier installed).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install


def launcher_options(argv: list[str], env: dict[str, str]) -> list[str]:
    """``--fold`` from the SLURM array index when the command line does not name one."""
    given = {a.split("=")[0] for a in argv if a.startswith("--")}
    if "--fold" in given or "SLURM_ARRAY_TASK_ID" not in env:
        return []
    return ["--fold", str(int(env["SLURM_ARRAY_TASK_ID"]))]


def main(argv: list[str] | None = None) -> int:
    from rn_classifier.cli import main as cli_main

    argv = list(sys.argv[1:] if argv is None else argv)
    return cli_main(["finetune", *argv, *launcher_options(argv, dict(os.environ))])


if __name__ == "__main__":
    sys.exit(main())
