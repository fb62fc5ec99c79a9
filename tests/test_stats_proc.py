"""rn_classifier.stats against R's pROC, the reference reviewers trust.

One Rscript run (tests/r/proc_reference.R) exports pROC's aSAH data and computes AUC, DeLong
variance and CI, paired DeLong z / p (all three alternatives) / CI of the difference, and the
unpaired DeLong D / df / p, on aSAH and on two random sets (one with heavy ties). Every number
must agree to 1e-9 relative. Skipped with a reason where Rscript or pROC is missing.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from rn_classifier.stats import auc_delong, delong_paired, delong_unpaired

R_SCRIPT = Path(__file__).parent / "r" / "proc_reference.R"
RTOL = 1e-9
ALTERNATIVES = {"two.sided": "two-sided", "greater": "greater", "less": "less"}


def _random_sets(folder: Path) -> list[Path]:
    rng = np.random.default_rng(20250601)
    paths = []
    # Heavy ties: integer scores on 6 levels, three correlated models, 300 cases.
    n = 300
    y = (rng.random(n) < 0.4).astype(int)
    shared = rng.normal(size=n)
    a = np.clip(np.round(1.5 * y + shared + rng.normal(size=n)), -2, 3)
    b = np.clip(np.round(0.8 * y + 0.5 * shared + rng.normal(size=n)), -2, 3)
    c = np.clip(np.round(1.2 * y + rng.normal(size=n) * 1.5), -2, 3)
    part = np.where(rng.random(n) < 0.45, "A", "B")
    path = folder / "ties.csv"
    pd.DataFrame({"y": y, "a": a, "b": b, "c": c, "part": part}).to_csv(path, index=False)
    paths.append(path)
    # Continuous probabilities (as models write them), 500 cases, unbalanced parts.
    n = 500
    y = (rng.random(n) < 0.3).astype(int)
    logits = 1.2 * y[None, :] + rng.normal(size=(3, n)) * np.array([[1.0], [1.5], [0.7]])
    probs = np.round(expit(logits), 6)
    part = np.where(rng.random(n) < 0.2, "A", "B")
    path = folder / "continuous.csv"
    pd.DataFrame({"y": y, "a": probs[0], "b": probs[1], "c": probs[2], "part": part}).to_csv(
        path, index=False)
    paths.append(path)
    return paths


@pytest.fixture(scope="module")
def proc_results(tmp_path_factory):
    if shutil.which("Rscript") is None:
        pytest.skip("Rscript not found: install r-base-core and r-cran-proc (done by .ci/run) "
                    "to run the pROC cross-check")
    folder = tmp_path_factory.mktemp("proc")
    check = subprocess.run(["Rscript", "-e", "library(pROC)"], capture_output=True, text=True,
                           timeout=120)
    if check.returncode != 0:
        pytest.skip(f"R package pROC not available (r-cran-proc): {check.stderr.strip()[-300:]}")
    data_paths = _random_sets(folder)
    asah_path = folder / "aSAH.csv"
    result_path = folder / "proc.csv"
    run = subprocess.run(["Rscript", str(R_SCRIPT), str(asah_path), *map(str, data_paths),
                          str(result_path)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    records = pd.read_csv(result_path, keep_default_na=False)
    results = {(r.dataset, r.test, r.subject, r.alternative, r.field): float(r.value)
               for r in records.itertuples()}
    frames = {"aSAH": pd.read_csv(asah_path)}
    frames.update({p.name: pd.read_csv(p) for p in data_paths})
    return frames, results


DATASETS = ["aSAH", "ties.csv", "continuous.csv"]
SCORES = ["a", "b", "c"]
PAIRS = [("a", "b"), ("a", "c"), ("b", "c")]


@pytest.mark.parametrize("dataset", DATASETS)
def test_auc_var_ci_match_proc(proc_results, dataset):
    frames, ref = proc_results
    d = frames[dataset]
    for score in SCORES:
        ours = auc_delong(d["y"], d[score])
        key = (dataset, "single", score, "")
        np.testing.assert_allclose(ours.auc, ref[(*key, "auc")], rtol=RTOL)
        np.testing.assert_allclose(ours.var, ref[(*key, "var")], rtol=RTOL)
        np.testing.assert_allclose(ours.ci, [ref[(*key, "ci_lo")], ref[(*key, "ci_hi")]],
                                   rtol=RTOL)


@pytest.mark.parametrize("dataset", DATASETS)
def test_paired_delong_matches_proc(proc_results, dataset):
    frames, ref = proc_results
    d = frames[dataset]
    for first, second in PAIRS:
        for r_alt, alt in ALTERNATIVES.items():
            key = (dataset, "paired", first + second, r_alt)
            ours = delong_paired(d["y"], d[first], d[second], alternative=alt)
            np.testing.assert_allclose(ours.z, ref[(*key, "z")], rtol=RTOL)
            np.testing.assert_allclose(ours.p_value, ref[(*key, "p")], rtol=RTOL)
            np.testing.assert_allclose(ours.ci, [ref[(*key, "ci_lo")], ref[(*key, "ci_hi")]],
                                       rtol=RTOL)


@pytest.mark.parametrize("dataset", DATASETS)
def test_unpaired_delong_matches_proc(proc_results, dataset):
    frames, ref = proc_results
    d = frames[dataset]
    in_a = d["part"] == "A"
    for score in SCORES:
        for r_alt, alt in ALTERNATIVES.items():
            key = (dataset, "unpaired", score, r_alt)
            ours = delong_unpaired(d["y"][in_a], d[score][in_a], d["y"][~in_a], d[score][~in_a],
                                   alternative=alt)
            np.testing.assert_allclose(ours.statistic, ref[(*key, "d")], rtol=RTOL)
            np.testing.assert_allclose(ours.df, ref[(*key, "df")], rtol=RTOL)
            np.testing.assert_allclose(ours.p_value, ref[(*key, "p")], rtol=RTOL)


def test_reference_covers_every_case(proc_results):
    """Guard against a silently short reference file: every expected record is there."""
    _, ref = proc_results
    expected = len(DATASETS) * (4 * len(SCORES) + 4 * 3 * len(PAIRS) + 3 * 3 * len(SCORES))
    assert len(ref) == expected


def test_asah_matches_proc_documentation(proc_results):
    """pROC's documented aSAH figures: s100b 0.7314, ndka 0.6120, Z = 1.3908, p = 0.1643."""
    frames, _ = proc_results
    d = frames["aSAH"]
    test = delong_paired(d["y"], d["a"], d["b"])
    assert round(test.auc_a, 4) == 0.7314
    assert round(test.auc_b, 4) == 0.6120
    assert round(test.z, 4) == 1.3908
    assert round(test.p_value, 4) == 0.1643
