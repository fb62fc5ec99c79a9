"""Per-rank record of what was trained on (``trainer.record_samples``), for audits and tests.

Each rank writes ``RUN_DIR/audit/rank<r>.json``: the sample numbers of every batch it trained on
(rows of ``RUN_DIR/pretrain_samples.csv``) and a SHA-256 digest of its model state at the end.
Under DDP the shares of the ranks are disjoint and the digests identical.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from .. import atomic


def state_digest(module: torch.nn.Module) -> str:
    """SHA-256 over the names and bytes of every parameter and buffer (device- and order-stable)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class SampleAudit(Callback):
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.batches: list[dict] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.batches.append({"step": int(trainer.global_step) - 1, "epoch": int(trainer.current_epoch),
                             "samples": batch["sample"].tolist()})

    def on_train_end(self, trainer, pl_module) -> None:
        atomic.write_json(self.folder / f"rank{trainer.global_rank}.json", {
            "rank": trainer.global_rank, "world_size": trainer.world_size,
            "batches": self.batches, "state_sha256": state_digest(pl_module)})
