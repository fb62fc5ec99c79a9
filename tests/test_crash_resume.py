"""Crash and resume: a pretraining process killed with SIGKILL resumes to the same weights, a
process killed while writing a checkpoint never replaces the previous good one, and fine-tuning
killed inside a fold resumes at that fold (complete folds are kept) with the same predictions.

Real processes, real SIGKILL: nothing in the dying process gets to clean up. The pretraining runs
use the shipped ``configs/pretrain/dino_demo.yaml`` made tiny with ``--set``-style overrides
(vit3d_tiny_p8, 16³ / 8³ views, 8 pool sub-volumes in batches of 2: 4 steps an epoch).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pretrain_fakes import make_pool_cache
from rn_classifier.checkpoints import load_checkpoint
from rn_classifier.config import save_config
from rn_classifier.pretrain.methods import load_pretrain_config

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
TINY = ["data.batch_size=2", "data.num_workers=0", "model.drop_path_rate=0.1",
        "dino.global_crop_size=16", "dino.local_crop_size=8", "dino.n_local_crops=2",
        "dino.out_dim=64", "dino.hidden_dim=32", "dino.bottleneck_dim=16",
        "dino.warmup_teacher_temp_epochs=1", "optim.warmup_epochs=1", "trainer.epochs=2",
        "trainer.max_steps=6", "trainer.checkpoint_every_n_steps=2", "trainer.log_every_n_steps=1",
        "trainer.deterministic=true", "monitor.every_n_epochs=0"]
CHECKPOINT_STEP, KILL_AT_STEP = 2, 3   # killed in epoch 0 (steps 0-3), one step after a checkpoint

# Runs pretraining like the CLI does, plus a callback that announces step KILL_AT_STEP and waits
# there to be killed: the parent kills it from outside with SIGKILL at a known point.
DRIVER = """
import sys, time
from pathlib import Path
from lightning.pytorch.callbacks import Callback
from rn_classifier.pretrain.methods import load_pretrain_config
from rn_classifier.pretrain.run import run_pretraining

config, out, at, ready = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])

class WaitToBeKilled(Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == at:
            ready.write_text(str(batch_idx))
            time.sleep(600)

run_pretraining(load_pretrain_config(config), out=out, accelerator="cpu",
                callbacks=[WaitToBeKilled()])
"""


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)]), "OMP_NUM_THREADS": "1"}


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    code = "import sys; from rn_classifier.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=300)


def _weights(run: Path) -> dict:
    return load_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"]


def test_kill_9_mid_epoch_then_resume_ends_with_the_uninterrupted_weights(tmp_path):
    pool = make_pool_cache(tmp_path / "pool", n=8)
    cfg = load_pretrain_config(REPO / "configs" / "pretrain" / "dino_demo.yaml",
                      [f"data.pool_cache={pool}", *TINY])
    config = save_config(cfg, tmp_path / "dino_tiny.yaml")

    # the run that is killed: started first, so the uninterrupted run overlaps its start-up
    ready = tmp_path / "ready"
    victim = subprocess.Popen([sys.executable, "-c", DRIVER, str(config), str(tmp_path / "killed"),
                               str(KILL_AT_STEP), str(ready)], cwd=tmp_path, env=_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # the uninterrupted run, while the other one starts: a process with the same environment
    # (one OpenMP thread), since another thread count sums floating-point partials in another
    # order and the weights would differ in the last bits whatever the resume did
    straight = _cli("pretrain", "--config", str(config), "--out", str(tmp_path / "straight"),
                    "--accelerator", "cpu", cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr[-3000:]
    deadline = time.monotonic() + 240
    while not ready.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ready.exists(), f"the run never reached step {KILL_AT_STEP}: {victim.communicate()[1][-3000:]}"
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=60) == -signal.SIGKILL
    victim.stderr.close()

    killed = tmp_path / "killed"
    batch_in_epoch = int(ready.read_text())
    assert 0 < batch_in_epoch < 4, "the kill is meant to land in the middle of an epoch"
    assert load_checkpoint(killed / "checkpoints" / "last.ckpt")["global_step"] == CHECKPOINT_STEP
    assert not (killed / "encoder.safetensors").exists() and not (killed / "summary.json").exists()
    assert not list((killed / "checkpoints").glob(".*")), "a temporary checkpoint was left behind"

    # what a kill during a checkpoint write leaves (see the test below); the resume removes it
    leftover = killed / "checkpoints" / ".last.ckpt.k1ll3d_x.tmp"
    leftover.write_bytes(b"PK\x03\x04" + bytes(1000))
    resumed = _cli("pretrain", "--resume", str(killed), "--accelerator", "cpu", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "dirpath has changed" not in resumed.stderr  # Lightning's checkpoint bookkeeping came back
    a, b = _weights(tmp_path / "straight"), _weights(killed)
    assert load_checkpoint(killed / "checkpoints" / "last.ckpt")["global_step"] == 6
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors differ after kill -9 and --resume: {different[:5]}"
    assert (killed / "encoder.safetensors").is_file()
    assert not leftover.exists()


CHECKPOINT_WRITER = """
import os, signal, sys, torch
from rn_classifier.checkpoints import WeightsOnlyCheckpointIO

path = sys.argv[1]
io = WeightsOnlyCheckpointIO()
io.save_checkpoint({"state_dict": {"w": torch.zeros(4096)}, "global_step": 2}, path)

def dies_half_way(obj, f):          # the process is killed after writing part of the file
    f.write(b"PK\\x03\\x04" + bytes(10000))
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)

torch.save = dies_half_way
io.save_checkpoint({"state_dict": {"w": torch.ones(4096)}, "global_step": 4}, path)
"""


def test_process_killed_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    proc = subprocess.run([sys.executable, "-c", CHECKPOINT_WRITER, str(path)], env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    checkpoint = load_checkpoint(path)
    assert checkpoint["global_step"] == 2 and torch.equal(checkpoint["state_dict"]["w"], torch.zeros(4096))
    assert sorted(p.name for p in path.parent.iterdir() if not p.name.startswith(".")) == ["last.ckpt"]
    from rn_classifier.atomic import remove_leftovers

    (path.parent / ".notes.txt").write_text("a user's hidden file stays")
    assert len(remove_leftovers(path.parent)) == 1        # the cut-off write, nothing else
    assert sorted(p.name for p in path.parent.iterdir()) == [".notes.txt", "last.ckpt"]


def test_checkpoint_save_is_atomic_in_process_and_readable_by_others(tmp_path):
    """An error while writing (here: disk full) leaves the previous checkpoint and no temporary file;
    a written checkpoint has the permissions of a normal file (0644 under umask 022)."""
    from rn_classifier.checkpoints import WeightsOnlyCheckpointIO
    from rn_classifier.errors import OutputError

    io = WeightsOnlyCheckpointIO()
    path = tmp_path / "last.ckpt"
    old = os.umask(0o022)
    try:
        io.save_checkpoint({"global_step": 1}, path)
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o644

    def disk_full(obj, f):
        f.write(b"PK\x03\x04" + bytes(100))
        raise OSError(28, "No space left on device")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch, "save", disk_full)
        with pytest.raises(OutputError, match=r"cannot write .*last\.ckpt: the disk is full"):
            io.save_checkpoint({"global_step": 2}, path)
    assert load_checkpoint(path)["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


# -- fine-tuning: resume at fold granularity ------------------------------------------------------

FINETUNE_DRIVER = """
import sys, time
from pathlib import Path
import rn_classifier.finetune.run as finetune_run
from rn_classifier.cli import main

kill_fold, ready = int(sys.argv[1]), Path(sys.argv[2])
real_trainer = finetune_run.clinical_trainer

def trainer_waiting_in_fold(cfg, cases):      # fold kill_fold announces itself and waits to be killed
    train = real_trainer(cfg, cases)
    def fold(k, folder):
        if k == kill_fold:
            ready.write_text(str(k))
            time.sleep(600)
        return train(k, folder)
    return fold

finetune_run.clinical_trainer = trainer_waiting_in_fold
sys.exit(main(sys.argv[3:]))
"""

CLINICAL_CONFIG = """\
name: clinical
data:
  internal_manifest: internal.csv
cv:
  n_folds: 3
clinical:
  age: numeric
  sex: categorical
model:
  kind: clinical
"""


def _clinical_cohort(folder: Path) -> Path:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    rows = [{"case_id": f"C{p:03d}", "patient_id": f"P{p:03d}", "center": "INT", "image": f"i/{p}.nii.gz",
             "mask": f"m/{p}.nii.gz", "mask_labels": "11", "label": p % 2, "age": 55 + 8 * (p % 2) + rng.normal(0, 6),
             "sex": "FM"[int(rng.integers(2))]} for p in range(18)]
    pd.DataFrame(rows).to_csv(folder / "internal.csv", index=False)
    (folder / "clinical.yaml").write_text(CLINICAL_CONFIG)
    return folder / "clinical.yaml"


def test_finetuning_killed_in_a_fold_resumes_at_that_fold(tmp_path, monkeypatch, capsys):
    import pandas as pd

    from rn_classifier.cli import main

    monkeypatch.chdir(tmp_path)
    config = _clinical_cohort(tmp_path)
    assert main(["finetune", "--config", str(config), "--out", "straight"]) == 0

    ready = tmp_path / "ready"
    victim = subprocess.Popen([sys.executable, "-c", FINETUNE_DRIVER, "1", str(ready), "finetune", "--config",
                               str(config), "--out", "killed"], cwd=tmp_path, env=_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ready.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists(), victim.communicate()[1][-3000:]
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=60) == -signal.SIGKILL
    victim.stderr.close()

    folds = tmp_path / "killed" / "folds"
    assert (folds / "fold_0" / "predictions.csv").is_file()            # complete before the kill
    assert not (folds / "fold_1" / "predictions.csv").exists()         # killed inside this fold
    assert not (tmp_path / "killed" / "predictions.csv").exists()
    fold0 = {p.name: p.stat().st_mtime_ns for p in (folds / "fold_0").iterdir()}

    capsys.readouterr()
    assert main(["finetune", "--config", str(config), "--out", "killed"]) == 0
    assert "fold 0: complete" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in (folds / "fold_0").iterdir()} == fold0  # not retrained
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "killed" / "predictions.csv"),
                                  pd.read_csv(tmp_path / "straight" / "predictions.csv"))
