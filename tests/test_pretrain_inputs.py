"""Bad pretraining input: one clear InputError before any training starts, and nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from pretrain_fakes import make_internal_cache, make_pool_cache, tiny_config
from rn_classifier.cli import main as cli_main
from rn_classifier.config import save_config
from rn_classifier.errors import InputError
from rn_classifier.pretrain.run import run_pretraining


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return make_pool_cache(tmp_path_factory.mktemp("pool") / "pool", n=6)


def _dino(pool, **settings):
    cfg = tiny_config(pool, "dino")
    for key, value in settings.items():
        section, name = key.split("__")
        setattr(getattr(cfg, section), name, value)
    return cfg


def _mae(pool, **settings):
    cfg = tiny_config(pool, "mae")
    for key, value in settings.items():
        section, name = key.split("__")
        setattr(getattr(cfg, section), name, value)
    return cfg


CASES = {
    "global crop not divisible by patch": (lambda p: _dino(p, dino__global_crop_size=20),
                                           r"dino.global_crop_size = 20 is not a positive multiple of the patch size 8"),
    "local crop not divisible by patch": (lambda p: _dino(p, dino__local_crop_size=12),
                                          r"dino.local_crop_size = 12 is not a positive multiple"),
    "mae crop not divisible by patch": (lambda p: _mae(p, mae__crop_size=30), r"mae.crop_size = 30"),
    "local crop larger than global": (lambda p: _dino(p, dino__local_crop_size=24),
                                      r"dino.local_crop_size \(24\) is larger than dino.global_crop_size \(16\)"),
    "mask ratio 0": (lambda p: _mae(p, mae__mask_ratio=0.0), r"mae.mask_ratio must be in \(0, 1\), got 0.0"),
    "mask ratio 1": (lambda p: _mae(p, mae__mask_ratio=1.0), r"mae.mask_ratio must be in \(0, 1\), got 1.0"),
    "unknown architecture": (lambda p: _dino(p, model__name="vit3d_huge_p2"), r"unknown model 'vit3d_huge_p2'"),
    "other spacing": (lambda p: _dino(p, data__spacing=[1.0, 1.0, 1.0]), r"was built with spacing \[2.0, 2.0, 2.0\]"),
    "empty pool": (lambda p: _dino(p, data__exclude_centers=["PUBLIC"]), r"no sub-volumes to pretrain on"),
    "missing pool": (lambda p: _dino(Path(p).parent / "nowhere"), r"is not a preprocess cache"),
    "internal cache without split": (lambda p: _dino(p, data__internal_cache=str(p), data__include_internal_train=True),
                                     r"data.internal_cache is set but data.split is not"),
    "batch larger than pool": (lambda p: _dino(p, data__batch_size=7), r"6 sub-volume\(s\) do not fill one batch of 7"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_config_fails_before_training(case, pool, tmp_path):
    make, message = CASES[case]
    out = tmp_path / "run"
    with pytest.raises(InputError, match=message):
        run_pretraining(make(pool), out=out, accelerator="cpu")
    assert not out.exists()                                   # nothing written


def test_resume_on_folder_without_run(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no pretraining run to resume"):
        run_pretraining(None, resume=tmp_path / "empty", accelerator="cpu")


def test_existing_run_folder_is_not_overwritten(pool, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("name: x\n")
    with pytest.raises(InputError, match="already holds a pretraining run; continue it with --resume"):
        run_pretraining(tiny_config(pool), out=out, accelerator="cpu")


def test_monitor_needs_both_classes(tmp_path, pool):
    internal, index, split = make_internal_cache(tmp_path / "internal", tmp_path / "split.csv")
    split.loc[split["part"] == "train", "fold"] = 0               # one fold: no cross-validation
    split.to_csv(tmp_path / "split.csv", index=False)
    cfg = tiny_config(pool, internal_cache=str(internal), split=str(tmp_path / "split.csv"))
    cfg.monitor.every_n_epochs = 1
    with pytest.raises(InputError, match="at least 2 CV folds in the split; set monitor.every_n_epochs: 0"):
        run_pretraining(cfg, out=tmp_path / "run", accelerator="cpu")


def test_cli_reports_bad_input_with_exit_code_2(pool, tmp_path, capsys):
    config = save_config(tiny_config(pool, "mae"), tmp_path / "mae.yaml")
    code = cli_main(["pretrain", "--config", str(config), "--set", "mae.mask_ratio=1.5",
                     "--out", str(tmp_path / "run"), "--accelerator", "cpu"])
    assert code == 2
    assert "mae.mask_ratio must be in (0, 1), got 1.5" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
