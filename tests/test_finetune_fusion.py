"""Late fusion (stacking on out-of-fold logits only) and the intermediate fusion head."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from rn_classifier.errors import InputError
from rn_classifier.finetune.fusion import check_out_of_fold, late_fusion_fold
from rn_classifier.models import create_model
from rn_classifier.models.classifiers import IntermediateFusionClassifier

SPEC = {"age": "numeric", "sex": "categorical"}
N_FOLDS = 3


def _cohort(seed=0, n_train=30):
    """cases (train / internal_test / external), split, and valid per-fold-model image logits."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_train + 6):
        part = "internal_test" if i >= n_train else "train"
        rows.append({"case_id": f"c{i:02d}", "patient_id": f"p{i // 2:02d}", "part": part,
                     "fold": (i // 2) % N_FOLDS if part == "train" else -1})
    for i in range(8):
        rows.append({"case_id": f"e{i}", "patient_id": f"ep{i}", "part": "external", "fold": -1})
    cases = pd.DataFrame(rows)
    cases["label"] = [int(p[-1]) % 2 for p in cases["patient_id"]]
    cases["age"] = rng.normal(60, 8, len(cases)) + 5 * cases["label"]
    cases["sex"] = rng.choice(["F", "M"], len(cases))
    cases = cases.set_index("case_id", drop=False).rename_axis(None)
    split = cases.loc[cases["part"] != "external", ["case_id", "patient_id", "part", "fold"]]
    preds = []
    for k in range(N_FOLDS):
        val = cases[(cases["part"] == "train") & (cases["fold"] == k)]
        held = cases[cases["part"] != "train"]
        for frame, cohort in ((val, "oof"), (held, None)):
            preds.append(pd.DataFrame({
                "case_id": frame["case_id"], "cohort": cohort or frame["part"], "fold": k,
                "y_logit": 2.0 * (frame["label"] - 0.5) + rng.normal(0, 1, len(frame))}))
    return cases, split.reset_index(drop=True), pd.concat(preds, ignore_index=True)


def test_valid_out_of_fold_predictions_are_accepted():
    cases, split, preds = _cohort()
    check_out_of_fold(preds, split)


def test_planted_leak_is_refused():
    """Fold 0's model predicts its own training cases (the fold-1 cases) and the rows are
    passed off as out-of-fold: late fusion must refuse them."""
    cases, split, preds = _cohort()
    leaked = preds.copy()
    fold1 = (leaked["cohort"] == "oof") & (leaked["fold"] == 1)
    leaked.loc[fold1, "fold"] = 0
    with pytest.raises(InputError, match=r"predicted by a fold model that trained on them, e\.g\. case "
                                         r"\w+ \(validation fold 1\) predicted by fold model 0"):
        check_out_of_fold(leaked, split)
    with pytest.raises(InputError, match="predicted by a fold model that trained on them"):
        late_fusion_fold(0, leaked, cases, split, SPEC)


def test_in_sample_rows_and_gaps_are_refused():
    cases, split, preds = _cohort()
    train_rows = preds[preds["cohort"] == "oof"].assign(cohort="train", fold=-1)
    with pytest.raises(InputError, match="not out-of-fold"):
        check_out_of_fold(pd.concat([preds, train_rows]), split)
    dropped = preds.drop(index=preds.index[preds["cohort"] == "oof"][:1])
    with pytest.raises(InputError, match="have no out-of-fold image prediction"):
        check_out_of_fold(dropped, split)


def test_stacker_of_fold_k_never_sees_fold_k_labels():
    cases, split, preds = _cohort()
    k = 1
    _, _, out = late_fusion_fold(k, preds, cases, split, SPEC)
    flipped = cases.copy()
    in_k = (flipped["part"] == "train") & (flipped["fold"] == k)
    flipped.loc[in_k, "label"] = 1 - flipped.loc[in_k, "label"]
    _, _, out_flipped = late_fusion_fold(k, preds, flipped, split, SPEC)
    np.testing.assert_allclose(out["y_prob"], out_flipped["y_prob"])
    # and it does depend on the labels it is fitted on (the check above can fail)
    other = cases.copy()
    in_other = (other["part"] == "train") & (other["fold"] != k)
    other.loc[in_other, "label"] = 1 - other.loc[in_other, "label"]
    _, _, out_other = late_fusion_fold(k, preds, other, split, SPEC)
    assert not np.allclose(out["y_prob"], out_other["y_prob"])
    assert set(out.loc[out["cohort"] == "oof", "case_id"]) == set(cases.index[in_k])
    assert (out.loc[out["cohort"] != "oof", "case_id"].nunique()
            == int((cases["part"] != "train").sum()))


def test_stacker_uses_the_image_logit():
    cases, split, preds = _cohort()
    pipe, stack_spec, out = late_fusion_fold(0, preds, cases, split, SPEC)
    names = list(pipe.named_steps["preprocess"].get_feature_names_out())
    coef = pipe.named_steps["logistic"].coef_.ravel()
    assert names[0] == "numeric__image_logit" and coef[0] > 0


def _oof(cases, split, preds, spec):
    """Every fold's stacker: its out-of-fold rows joined to the image logit, and its choices."""
    rows, choices = [], []
    for k in range(N_FOLDS):
        pipe, _, out = late_fusion_fold(k, preds, cases, split, spec)
        rows.append(out[out["cohort"] == "oof"])
        choices.append(pipe.stacker_choice)
    oof = pd.concat(rows).merge(preds[preds["cohort"] == "oof"][["case_id", "y_logit"]],
                                on="case_id", suffixes=("", "_image"))
    return oof.assign(label=cases.loc[oof["case_id"], "label"].to_numpy()), choices


def test_noise_clinical_columns_leave_the_stacker_a_monotone_map_of_the_image_logit():
    """Ten clinical columns of pure noise: the inner CV keeps them out in every fold, so within
    each fold the fused score ranks the cases exactly as the image logit does."""
    cases, split, preds = _cohort(seed=4, n_train=90)
    rng = np.random.default_rng(4)
    noise = {f"noise{i}": "numeric" for i in range(10)}
    for column in noise:
        cases[column] = rng.normal(size=len(cases))
    oof, choices = _oof(cases, split, preds, noise)
    assert [c["clinical_C"] for c in choices] == [None] * N_FOLDS
    assert all("image only" in c["inner_cv_auc"] and len(c["inner_cv_auc"]) > 1 for c in choices)
    for k, fold in oof.groupby("fold"):
        assert np.array_equal(np.argsort(fold["y_logit"].to_numpy(), kind="stable"),
                              np.argsort(fold["y_logit_image"].to_numpy(), kind="stable")), k


def test_informative_clinical_data_enters_and_the_image_coefficient_is_not_shrunk():
    cases, split, preds = _cohort(seed=1, n_train=90)
    rng = np.random.default_rng(1)
    cases["age"] = 60 + 12 * (cases["label"] - 0.5) + rng.normal(0, 6, len(cases))      # d' = 2
    preds["y_logit"] = cases.loc[preds["case_id"], "label"].to_numpy() - 0.5 + rng.normal(0, 1, len(preds))  # d' = 1
    oof, choices = _oof(cases, split, preds, {"age": "numeric"})
    assert all(c["clinical_C"] is not None for c in choices)
    fused = roc_auc_score(oof["label"], oof["y_logit"])
    assert fused > roc_auc_score(oof["label"], oof["y_logit_image"]) + 0.05
    # at the strongest clinical penalty tried, the image coefficient is the image-only one
    pipe, stack_spec, _ = late_fusion_fold(0, preds, cases, split, {"age": "numeric"}, Cs=(1e-4,))
    logistic = pipe.named_steps["logistic"]
    alone, _, _ = late_fusion_fold(0, preds, cases.assign(age=0.0), split, {"age": "numeric"}, Cs=())
    assert logistic.coef_[0, 0] == pytest.approx(alone.named_steps["logistic"].coef_[0, 0], rel=0.02)


@pytest.mark.parametrize("cross_attention", [False, True])
def test_intermediate_fusion_trains_both_branches(cross_attention):
    torch.manual_seed(0)
    encoder = create_model("vit3d_tiny_p8", img_size=16, in_chans=2)
    net = IntermediateFusionClassifier(encoder, n_clinical=5, clinical_dim=8,
                                       cross_attention=cross_attention, heads=4)
    x, clin = torch.randn(3, 2, 16, 16, 16), torch.randn(3, 5)
    logits = net(x, clin)
    assert logits.shape == (3,)
    logits.sum().backward()
    assert net.clinical_mlp[0].weight.grad.abs().sum() > 0
    assert net.encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    net.eval()
    with torch.no_grad():  # the prediction depends on the clinical vector
        assert not torch.allclose(net(x, clin), net(x, clin + 1.0))
    with pytest.raises(InputError, match="clinical vector"):
        net(x, None)
