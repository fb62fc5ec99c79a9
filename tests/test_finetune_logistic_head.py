"""The head fitted in closed form (train.head_init: logistic, rn_classifier.finetune.logistic_head):
the network's logit is the probe's logistic regression, a fold with 0 epochs is that probe, and
the settings that cannot hold it are refused by name."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader

from rn_classifier.config import load_config
from rn_classifier.errors import ConfigError, InputError
from rn_classifier.finetune.config import FinetuneConfig, result_settings, validate_config
from rn_classifier.finetune.logistic_head import fit_logistic_head, frozen_embeddings
from rn_classifier.models import create_model
from rn_classifier.models.classifiers import ImageClassifier, IntermediateFusionClassifier

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "finetune"
SIZE = 16


def _cases(n=24, seed=0, signal=1.5):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    image = torch.randn(n, SIZE, SIZE, SIZE, generator=g)
    mask = torch.zeros(n, SIZE, SIZE, SIZE)
    mask[:, 5:11, 5:11, 5:11] = 1.0
    image += mask * (signal * (labels.float() - 0.5)).view(-1, 1, 1, 1)
    inputs = torch.stack([image, mask], dim=1)
    return [{"input": x, "label": y} for x, y in zip(inputs, labels)], labels.numpy()


def _network():
    torch.manual_seed(0)
    encoder = create_model("vit3d_tiny_p8", img_size=SIZE, in_chans=2, drop_path_rate=0.1)
    return ImageClassifier(encoder, head_dropout=0.1, pool="mask")


def test_the_fitted_head_computes_the_logistic_regressions_logit():
    cases, labels = _cases()
    patients = np.arange(len(labels)) // 2
    network = _network()
    loader = DataLoader(cases, batch_size=5)
    info = fit_logistic_head(network, loader, labels, patients)
    assert info["inner_folds"] == 5 and network.training   # the mode it was called in is kept
    features = frozen_embeddings(network, loader)
    # the same model by hand: standardised features, the chosen C, balanced classes
    by_hand = make_pipeline(StandardScaler(), LogisticRegression(C=info["C"], class_weight="balanced",
                                                                 max_iter=5000)).fit(features, labels)
    network.eval()
    with torch.no_grad():
        logits = torch.cat([network(b["input"]) for b in loader]).numpy()
    np.testing.assert_allclose(logits, by_hand.decision_function(features), rtol=1e-3, atol=1e-3)


def test_the_encoder_is_not_changed_by_the_fit():
    cases, labels = _cases()
    network = _network()
    before = copy.deepcopy(network.encoder.state_dict())
    fit_logistic_head(network, DataLoader(cases, batch_size=8), labels, np.arange(len(labels)))
    assert all(torch.equal(before[k], v) for k, v in network.encoder.state_dict().items())


def test_a_fusion_network_or_a_single_class_is_refused():
    cases, labels = _cases()
    loader = DataLoader(cases, batch_size=8)
    fusion = IntermediateFusionClassifier(create_model("vit3d_tiny_p8", img_size=SIZE, in_chans=2), 3)
    with pytest.raises(InputError, match="linear head"):
        fit_logistic_head(fusion, loader, labels, np.arange(len(labels)))
    with pytest.raises(InputError, match="both classes"):
        fit_logistic_head(_network(), loader, np.ones_like(labels), np.arange(len(labels)))


def _demo(tmp_path, *overrides):
    return load_config(FinetuneConfig, CONFIGS / "ssl_demo.yaml",
                       [f"data.internal_manifest={tmp_path / 'internal.csv'}",
                        f"data.internal_cache={tmp_path / 'cache'}", "data.external_manifest=null",
                        "data.external_cache=null", *overrides])


def test_zero_epochs_need_the_logistic_head_and_intermediate_fusion_cannot_have_it(tmp_path):
    assert validate_config(_demo(tmp_path, "train.epochs=0", "train.head_init=logistic")).train.epochs == 0
    with pytest.raises(ConfigError, match=r"train\.epochs must be >= 1 \(or 0 with train\.head_init=logistic"):
        validate_config(_demo(tmp_path, "train.epochs=0"))
    with pytest.raises(ConfigError, match=r"train\.head_init must be one of"):
        validate_config(_demo(tmp_path, "train.head_init=sgd"))
    cfg = load_config(FinetuneConfig, CONFIGS / "ssl_clinical_intermediate_demo.yaml",
                      [f"data.internal_manifest={tmp_path / 'internal.csv'}", f"data.internal_cache={tmp_path}",
                       "data.external_manifest=null", "data.external_cache=null", "train.head_init=logistic"])
    with pytest.raises(ConfigError, match="intermediate"):
        validate_config(cfg)


def test_the_result_settings_carry_head_init_only_when_it_is_not_random():
    default = FinetuneConfig()
    assert "head_init" not in result_settings(default)["train"]
    logistic = copy.deepcopy(default)
    logistic.train.head_init = "logistic"
    assert result_settings(logistic)["train"]["head_init"] == "logistic"


def test_a_fold_with_zero_epochs_is_the_probe_on_the_unchanged_encoder(tmp_path):
    """Through run_finetune: no training step, the fold model's encoder is the export as built,
    and its oof logits are those of the fitted head."""
    from builders import tiny_encoder_export, write_crop_cohort

    from rn_classifier.data.cache import CropCache
    from rn_classifier.finetune.run import encoder_builder, run_finetune

    root = write_crop_cohort(tmp_path / "cohort", n_internal=30, n_external=2, crop=24)
    export = tiny_encoder_export(tmp_path / "encoder", crop=SIZE)
    cfg = load_config(FinetuneConfig, CONFIGS / "ssl_demo.yaml", [
        f"data.internal_manifest={root / 'internal.csv'}", f"data.external_manifest={root / 'external.csv'}",
        f"data.internal_cache={root / 'cache' / 'internal'}", f"data.external_cache={root / 'cache' / 'external'}",
        f"model.pretrained={export}", f"model.crop_size=[{SIZE},{SIZE},{SIZE}]", "cv.n_folds=2",
        "train.epochs=0", "train.head_init=logistic"])
    run_finetune(cfg, tmp_path / "run", folds=[0], echo=lambda s: None)
    fold = tmp_path / "run" / "folds" / "fold_0"
    info = json.loads((fold / "fold.json").read_text())
    assert info["epochs_run"] == 0 and info["logistic_head"]["C"] > 0
    saved = load_file(str(fold / "model.safetensors"))
    build, _ = encoder_builder(cfg, CropCache(cfg.data.internal_cache))
    expected = build()
    expected.reset_classifier(0)
    assert all(torch.equal(saved["encoder." + k], v) for k, v in expected.state_dict().items())
    assert torch.count_nonzero(saved["head.weight"]) == saved["head.weight"].numel()   # fitted, not the init


@pytest.mark.parametrize("scoring", ["roc_auc", "neg_log_loss"])
def test_the_head_keeps_the_C_with_the_best_mean_inner_fold_score(scoring):
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_score

    from rn_classifier.finetune.logistic_head import CS

    cases, labels = _cases(n=40, seed=3, signal=0.3)   # a weak signal: the Cs score differently
    patients = np.arange(len(labels)) // 2
    network = _network()
    loader = DataLoader(cases, batch_size=6)
    info = fit_logistic_head(network, loader, labels, patients, scoring=scoring)
    # by hand: the same inner folds, each C's mean score, the best one (the first of equals)
    features = StandardScaler().fit_transform(frozen_embeddings(network, loader))
    folds = list(StratifiedGroupKFold(info["inner_folds"], shuffle=True, random_state=0)
                 .split(features, labels, groups=patients.astype(str)))
    means = [cross_val_score(LogisticRegression(C=c, class_weight="balanced", max_iter=5000), features,
                             labels, cv=folds, scoring=scoring).mean() for c in CS]
    chosen = int(np.argmin(np.abs(np.log(CS) - np.log(info["C"]))))
    assert len(set(np.round(means, 3))) > 1          # the candidates differ: the choice means something
    # the best, to within the solver's tolerance (the CV fits along a warm-started path)
    assert means[chosen] >= max(means) - 2e-3, (info["C"], means)


def test_head_scoring_is_a_checked_choice_and_kept_in_the_result_settings_only_when_changed(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.head_scoring must be one of"):
        validate_config(_demo(tmp_path, "train.head_init=logistic", "train.head_scoring=accuracy"))
    cfg = validate_config(_demo(tmp_path, "train.head_init=logistic", "train.head_scoring=neg_log_loss"))
    assert result_settings(cfg)["train"]["head_scoring"] == "neg_log_loss"
    cfg.train.head_scoring = "roc_auc"
    assert "head_scoring" not in result_settings(cfg)["train"]
    with pytest.raises(ValueError, match="scoring must be one of"):
        fit_logistic_head(_network(), DataLoader(_cases()[0], batch_size=8), _cases()[1],
                          np.arange(24), scoring="accuracy")
