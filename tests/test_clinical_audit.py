"""Clinical values a cohort lacks, and levels the internal cohort never holds (issue 15, item 1):
one policy (``clinical.unseen_levels``) decided at check-data, before any training.

The study tests use the SYNTHETIC `mini` cohort of seed 0, whose external centre holds primary
tumour code 9 (ovary), absent internally, with the clinical-only model only (no images trained).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from rn_classifier.data.clinical_audit import (apply_unseen_policy, audit_lines, clinical_audit,
                                               missing_values, unseen_levels)
from rn_classifier.errors import ConfigError, DataIntegrityError
from rn_classifier.study.run import Study, load_study_config

SPEC = {"age": "numeric", "sex": "categorical", "primary": "categorical"}


def _frame(ids, age, sex, primary):
    return pd.DataFrame({"case_id": ids, "age": age, "sex": sex, "primary": primary})


INTERNAL = _frame(["i1", "i2", "i3"], [60, np.nan, 70], ["1", "2", "1"], ["1", "2", "2"])
EXTERNAL = _frame(["e1", "e2", "e3"], [50, 55, np.nan], ["2", np.nan, "1"], ["9", "2", "9.0"])


def test_missing_values_are_listed_per_column_and_case():
    assert missing_values(EXTERNAL, SPEC) == {"age": ["e3"], "sex": ["e2"]}
    assert missing_values(INTERNAL, SPEC) == {"age": ["i2"]}


def test_unseen_levels_name_the_cases_and_a_float_coded_level_is_the_same_level():
    assert unseen_levels(INTERNAL, EXTERNAL, SPEC) == {"primary": {"9": ["e1", "e3"]}}


def test_impute_makes_the_unseen_level_missing_and_the_audit_lists_it_as_imputed():
    external, unseen = apply_unseen_policy(INTERNAL, EXTERNAL, SPEC, "impute", "external.csv")
    assert unseen == {"primary": {"9": ["e1", "e3"]}}
    assert external["primary"].isna().tolist() == [True, False, True]
    assert EXTERNAL["primary"].tolist() == ["9", "2", "9.0"]          # the input is not changed
    audit = clinical_audit({"internal": INTERNAL, "external": EXTERNAL}, SPEC, "impute")
    ext = audit["cohorts"]["external"]
    assert ext["imputed"] == {"age": ["e3"], "sex": ["e2"], "primary": ["e1", "e3"]}
    assert audit["cohorts"]["internal"]["unseen_levels"] == {}
    lines = audit_lines(audit)
    assert any("'primary' level '9' is never seen in the internal cohort (2 case(s): e1, e3)" in x for x in lines)
    json.dumps(audit)                                                  # goes into stats.json as is


def test_error_policy_refuses_with_the_cases_and_the_fix():
    with pytest.raises(DataIntegrityError, match=r"'primary' holds level '9', never seen in the internal "
                                                 r"cohort \(case\(s\) e1, e3\); known levels \['1', '2'\]\. "
                                                 r"Recode it"):
        apply_unseen_policy(INTERNAL, EXTERNAL, SPEC, "error", "external.csv")
    with pytest.raises(ConfigError, match=r"must be one of \['impute', 'error'\], got 'drop'"):
        apply_unseen_policy(INTERNAL, EXTERNAL, SPEC, "drop", "external.csv")


def _clinical_only_study(overrides=()):
    cfg = load_study_config("configs/study/tiny.yaml",
                            ["data.synth.seed=0", "pretrain.enabled=false", "radiomics.enabled=false",
                             "compare.reference=clinical", *overrides])
    cfg.finetune.models = {"clinical": cfg.finetune.models["clinical"]}
    return cfg


def test_a_study_whose_external_centre_holds_an_unseen_level_runs_to_its_report(tmp_path):
    out = tmp_path / "run"
    lines: list[str] = []
    result = Study(_clinical_only_study(), out, echo=lines.append).run()
    assert any("'primary' level '9' is never seen in the internal cohort" in x and "imputed" in x
               for x in lines), lines
    first_training = next(i for i, x in enumerate(lines) if x.startswith("[finetune:"))
    assert any("level '9'" in x for x in lines[:first_training])      # said at check-data, before training
    audit = json.loads((out / "check" / "clinical.json").read_text())
    unseen = audit["cohorts"]["external"]["unseen_levels"]["primary"]
    assert list(unseen) == ["9"]
    stats = json.loads((out / "compare" / "stats.json").read_text())
    assert stats["clinical_data"]["cohorts"]["external"]["unseen_levels"]["primary"] == unseen
    assert set(unseen["9"]) <= set(stats["clinical_data"]["cohorts"]["external"]["imputed"]["primary"])
    summary = json.loads((out / "finetune" / "clinical" / "summary.json").read_text())
    assert summary["clinical_data"]["cohorts"]["external"]["unseen_levels"]["primary"] == unseen
    html = result["report"].read_text()
    assert 'id="imputed-table"' in html and f"primary = 9 ({unseen['9'][0]}" in html


def test_a_study_with_the_strict_policy_stops_at_check_data(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(DataIntegrityError, match=r"'primary' holds level '9', never seen in the internal cohort"):
        Study(_clinical_only_study(["clinical.unseen_levels=error"]), out, echo=lambda m: None).run()
    stages = json.loads((out / "stages.json").read_text())["stages"]
    assert stages["check-data"]["status"] == "failed"
    assert "preprocess" not in stages and not (out / "finetune").exists()
