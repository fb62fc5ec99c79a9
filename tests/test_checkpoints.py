"""Checkpoints load through torch.load(weights_only=True): a planted pickle payload never runs."""

from __future__ import annotations

import pathlib

import pytest
import torch

from rn_classifier.checkpoints import WeightsOnlyCheckpointIO, load_checkpoint
from rn_classifier.errors import InputError


class _WritesMarker:
    """A pickle payload: unpickling it calls ``Path.write_text(marker, ...)``."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.write_text, (self.marker, "payload ran"))


def _plant(path: pathlib.Path, marker: pathlib.Path) -> None:
    torch.save({"state_dict": {"w": torch.ones(2)}, "hyper_parameters": _WritesMarker(marker)}, path)


def test_payload_is_real_when_loaded_unsafely(tmp_path):
    # Proves the payload below is live: plain unpickling does write the marker.
    marker = tmp_path / "marker_unsafe"
    _plant(tmp_path / "evil.ckpt", marker)
    torch.load(tmp_path / "evil.ckpt", weights_only=False)
    assert marker.read_text() == "payload ran"


def test_pickle_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "marker"
    ckpt = tmp_path / "evil.ckpt"
    _plant(ckpt, marker)
    with pytest.raises(InputError, match=r"evil\.ckpt was refused: it contains a pickled Python object"):
        load_checkpoint(ckpt)
    with pytest.raises(InputError, match="refused"):
        WeightsOnlyCheckpointIO().load_checkpoint(ckpt)
    assert not marker.exists()


def test_plain_checkpoint_round_trip(tmp_path):
    state = {"state_dict": {"w": torch.arange(4.0)}, "epoch": 3, "hyper_parameters": {"lr": 1e-3}}
    torch.save(state, tmp_path / "ok.ckpt")
    loaded = load_checkpoint(tmp_path / "ok.ckpt")
    assert loaded["epoch"] == 3 and loaded["hyper_parameters"] == {"lr": 1e-3}
    assert torch.equal(loaded["state_dict"]["w"], state["state_dict"]["w"])
    assert torch.equal(WeightsOnlyCheckpointIO().load_checkpoint(tmp_path / "ok.ckpt")["state_dict"]["w"],
                       state["state_dict"]["w"])


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="junk.ckpt is not a PyTorch checkpoint"):
        load_checkpoint(tmp_path / "junk.ckpt")


def test_lightning_checkpoint_resumes_through_weights_only_io(tmp_path):
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.save_hyperparameters({"lr": 0.1})
            self.layer = torch.nn.Linear(3, 1)

        def training_step(self, batch, _):
            return self.layer(batch[0]).square().mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    data = DataLoader(TensorDataset(torch.randn(8, 3)), batch_size=4)
    common = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                  enable_model_summary=False, default_root_dir=tmp_path,
                  plugins=[WeightsOnlyCheckpointIO()])
    pl.Trainer(max_steps=2, **common).fit(Tiny(), data)
    ckpt = next(tmp_path.rglob("*.ckpt"))
    assert load_checkpoint(ckpt)["global_step"] == 2  # a real Lightning checkpoint is plain data
    resumed = pl.Trainer(max_steps=4, **common)
    resumed.fit(Tiny(), data, ckpt_path=ckpt)
    assert resumed.global_step == 4
