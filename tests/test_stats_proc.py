"""rn_classifier.stats against R's pROC, the reference reviewers trust.

One Rscript run (tests/r/proc_reference.R) exports pROC's aSAH data and computes AUC, DeLong
variance and CI, paired DeLong z / p (all three alternatives) / CI of the difference, and the
unpaired DeLong D / df / p, on aSAH and on two random sets (one with heavy ties). Every number
must agree to 1e-9 relative. Skipped with a reason where Rscript or pROC is missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

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
    probs = np.round(1.0 / (1.0 + np.exp(-logits)), 6)
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
    check = subprocess.run(["Rscript", "-e", "library(pROC); library(jsonlite)"],
                           capture_output=True, text=True, timeout=120)
    if check.returncode != 0:
        pytest.skip(f"R packages pROC/jsonlite not available: {check.stderr.strip()[-300:]}")
    data_paths = _random_sets(folder)
    asah_path = folder / "aSAH.csv"
    result_path = folder / "proc.json"
    run = subprocess.run(["Rscript", str(R_SCRIPT), str(asah_path), *map(str, data_paths),
                          str(result_path)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    results = json.loads(result_path.read_text())
    frames = {"aSAH": pd.read_csv(asah_path)}
    frames.update({p.name: pd.read_csv(p) for p in data_paths})
    return frames, results


DATASETS = ["aSAH", "ties.csv", "continuous.csv"]


@pytest.mark.parametrize("dataset", DATASETS)
def test_auc_var_ci_match_proc(proc_results, dataset):
    frames, results = proc_results
    d = frames[dataset]
    for score, ref in results[dataset]["single"].items():
        ours = auc_delong(d["y"], d[score])
        np.testing.assert_allclose(ours.auc, ref["auc"], rtol=RTOL)
        np.testing.assert_allclose(ours.var, ref["var"], rtol=RTOL)
        np.testing.assert_allclose(ours.ci, ref["ci"], rtol=RTOL)


@pytest.mark.parametrize("dataset", DATASETS)
def test_paired_delong_matches_proc(proc_results, dataset):
    frames, results = proc_results
    d = frames[dataset]
    for pair in results[dataset]["paired"]:
        for r_alt, alt in ALTERNATIVES.items():
            ref = pair["tests"][r_alt]
            ours = delong_paired(d["y"], d[pair["first"]], d[pair["second"]], alternative=alt)
            np.testing.assert_allclose(ours.z, ref["z"], rtol=RTOL)
            np.testing.assert_allclose(ours.p_value, ref["p"], rtol=RTOL)
            np.testing.assert_allclose(ours.ci, ref["ci"], rtol=RTOL)


@pytest.mark.parametrize("dataset", DATASETS)
def test_unpaired_delong_matches_proc(proc_results, dataset):
    frames, results = proc_results
    d = frames[dataset]
    in_a = d["part"] == "A"
    for entry in results[dataset]["unpaired"]:
        s = entry["score"]
        for r_alt, alt in ALTERNATIVES.items():
            ref = entry["tests"][r_alt]
            ours = delong_unpaired(d["y"][in_a], d[s][in_a], d["y"][~in_a], d[s][~in_a],
                                   alternative=alt)
            np.testing.assert_allclose(ours.statistic, ref["d"], rtol=RTOL)
            np.testing.assert_allclose(ours.df, ref["df"], rtol=RTOL)
            np.testing.assert_allclose(ours.p_value, ref["p"], rtol=RTOL)


def test_asah_matches_proc_documentation(proc_results):
    """pROC's documented aSAH figures: s100b 0.7314, ndka 0.6120, Z = 1.3908, p = 0.1643."""
    frames, _ = proc_results
    d = frames["aSAH"]
    test = delong_paired(d["y"], d["a"], d["b"])
    assert round(test.auc_a, 4) == 0.7314
    assert round(test.auc_b, 4) == 0.6120
    assert round(test.z, 4) == 1.3908
    assert round(test.p_value, 4) == 0.1643
