"""Cluster entry point for pretraining: the same ``run_pretraining`` as ``rn-classifier pretrain``.

Takes the options of ``rn-classifier pretrain`` (``--config``, ``--set``, ``--out``, ``--devices``,
``--accelerator``, ``--max-steps``, ``--resume``, ``--num-nodes``). Under ``torchrun`` or ``srun``
the processes already exist, one per GPU; Lightning's DDP joins them (TorchElastic / SLURM
environment). When ``--devices`` / ``--num-nodes`` / ``--accelerator`` are not given they are taken
from the launcher, so the two must agree:

    torchrun --nproc-per-node 8 pretrain/train.py --config configs/pretrain/dino_vitb.yaml
    srun python pretrain/train.py --config configs/pretrain/dino_vitb.yaml   # see slurm.sbatch

Run from the repository root (or with rn-classifier installed).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install


def launcher_options(argv: list[str], env: dict[str, str]) -> list[str]:
    """Add ``--devices``, ``--num-nodes``, ``--accelerator`` from torchrun / SLURM when missing."""
    given = {a.split("=")[0] for a in argv if a.startswith("--")}
    extra: list[str] = []
    if "LOCAL_WORLD_SIZE" in env and "WORLD_SIZE" in env:          # torchrun
        per_node, world = int(env["LOCAL_WORLD_SIZE"]), int(env["WORLD_SIZE"])
    elif "SLURM_NTASKS_PER_NODE" in env and "SLURM_NNODES" in env:  # srun
        per_node = int(env["SLURM_NTASKS_PER_NODE"].split("(")[0])
        world = per_node * int(env["SLURM_NNODES"])
    else:
        return []
    if "--devices" not in given:
        extra += ["--devices", str(per_node)]
    if "--num-nodes" not in given:
        extra += ["--num-nodes", str(max(world // per_node, 1))]
    if "--accelerator" not in given:
        extra += ["--accelerator", "gpu"]
    return extra


def main(argv: list[str] | None = None) -> int:
    from rn_classifier.cli import main as cli_main

    argv = list(sys.argv[1:] if argv is None else argv)
    return cli_main(["pretrain", *argv, *launcher_options(argv, dict(os.environ))])


if __name__ == "__main__":
    sys.exit(main())
