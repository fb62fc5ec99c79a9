"""DeLong speed: rn_classifier.stats (Sun & Xu, one covariance matrix) vs R's pROC, one run.

What is timed, on the same data (N cases, 3 models, ~40 % positives):
  ours : ``delong_covariance`` for the 3 models at once, then the 3 AUC CIs and the 3 paired
         DeLong tests read off that matrix;
  pROC : ``roc()`` for the 3 models, ``var()`` of each, and ``roc.test(method="delong")`` for
         the 3 pairs (what a reviewer would run), timed inside R (R start-up and reading the
         CSV are not counted).
Both print the numbers they computed, and the script checks they agree (1e-9 relative).
pROC is timed once at N if it finishes within --proc-timeout seconds; otherwise it is timed
at --proc-fallback-n cases, and ours is timed at that N too, so the ratio is like for like.

Usage: python benchmarks/delong_speed.py [--n 1000000] [--record]
``--record`` appends a dated block to benchmarks/RESULTS.md (never overwrites).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rn_classifier.stats import delong_covariance, paired_test_from_covariance  # noqa: E402
from rn_classifier.provenance import machine_description  # noqa: E402
from rn_classifier.stats.delong import normal_ci  # noqa: E402

PAIRS = [(0, 1), (0, 2), (1, 2)]
R_CODE = r"""
suppressPackageStartupMessages(library(pROC))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
t0 <- proc.time()
rocs <- lapply(c("a", "b", "c"), function(s) roc(d$y, d[[s]], levels = c(0, 1),
                                                 direction = "<", quiet = TRUE))
vars <- sapply(rocs, var)
pairs <- list(c(1, 2), c(1, 3), c(2, 3))
tests <- lapply(pairs, function(p) roc.test(rocs[[p[1]]], rocs[[p[2]]], method = "delong"))
t1 <- proc.time()
cat(sprintf('{"wall": %.6f, "cpu": %.6f, "auc": [%s], "var": [%s], "z": [%s], "p": [%s]}\n',
    (t1 - t0)[["elapsed"]], (t1 - t0)[["user.self"]] + (t1 - t0)[["sys.self"]],
    paste(sprintf("%.17g", sapply(rocs, function(r) as.numeric(auc(r)))), collapse = ","),
    paste(sprintf("%.17g", vars), collapse = ","),
    paste(sprintf("%.17g", sapply(tests, function(t) unname(t$statistic))), collapse = ","),
    paste(sprintf("%.17g", sapply(tests, function(t) t$p.value)), collapse = ",")))
"""


def make_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(np.int8)
    shared = rng.normal(size=n)
    scores = np.vstack([1.0 * y + 0.6 * shared + rng.normal(size=n),
                        0.7 * y + 0.6 * shared + rng.normal(size=n),
                        0.4 * y + rng.normal(size=n)])
    return y, scores


def ours(y: np.ndarray, scores: np.ndarray) -> dict:
    cov = delong_covariance(y, scores)
    cis = [normal_ci(float(a), float(np.sqrt(v)), 0.95)
           for a, v in zip(cov.auc, np.diag(cov.covariance))]
    tests = [paired_test_from_covariance(cov, a, b) for a, b in PAIRS]
    return {"auc": cov.auc.tolist(), "var": np.diag(cov.covariance).tolist(), "ci": cis,
            "z": [t.z for t in tests], "p": [t.p_value for t in tests]}


def time_ours(y, scores, repeats: int) -> tuple[float, float, dict]:
    """Best wall and CPU seconds over ``repeats`` runs (after one warm-up run)."""
    result = ours(y, scores)
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        ours(y, scores)
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return min(walls), min(cpus), result


def time_proc(y, scores, timeout: float) -> dict | None:
    """pROC's wall/CPU seconds and numbers, or None if it ran past ``timeout``."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.csv"
        script = Path(tmp) / "bench.R"
        script.write_text(R_CODE)
        with open(data, "w") as f:
            f.write("y,a,b,c\n")
            np.savetxt(f, np.column_stack([y, scores.T]), fmt=["%d", "%.17g", "%.17g", "%.17g"],
                       delimiter=",")
        try:
            run = subprocess.run(["Rscript", str(script), str(data)], capture_output=True,
                                 text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
    if run.returncode != 0:
        raise RuntimeError(f"Rscript failed:\n{run.stderr}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def max_relative_difference(a: dict, b: dict) -> float:
    worst = 0.0
    for key in ("auc", "var", "z", "p"):
        x, r = np.asarray(a[key]), np.asarray(b[key])
        worst = max(worst, float(np.max(np.abs(x - r) / np.maximum(np.abs(r), 1e-300))))
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="cases")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of ours (best kept)")
    parser.add_argument("--proc-timeout", type=float, default=120.0,
                        help="seconds pROC may take at --n before falling back to a smaller n")
    parser.add_argument("--proc-fallback-n", type=int, default=100_000)
    parser.add_argument("--record", action="store_true",
                        help="append the figures to benchmarks/RESULTS.md")
    args = parser.parse_args()

    lines = [f"machine: {machine_description()}; numpy {np.__version__}"]
    y, scores = make_data(args.n)
    wall, cpu, result = time_ours(y, scores, args.repeats)
    lines.append(f"ours  N={args.n:,} x 3 models: {wall:.3f} s wall, {cpu:.3f} s CPU "
                 f"(best of {args.repeats}; goal < 1 s)")

    if shutil.which("Rscript") is None:
        lines.append("pROC: Rscript not found, not timed (apt-get install r-base-core r-cran-proc)")
    else:
        proc_n, proc = args.n, time_proc(y, scores, args.proc_timeout)
        ours_wall, ours_cpu, ours_result = wall, cpu, result
        if proc is None:
            lines.append(f"pROC at N={args.n:,} ran past {args.proc_timeout:.0f} s; timing both "
                         f"at N={args.proc_fallback_n:,} instead")
            proc_n = args.proc_fallback_n
            y_small, scores_small = make_data(proc_n)
            ours_wall, ours_cpu, ours_result = time_ours(y_small, scores_small, args.repeats)
            proc = time_proc(y_small, scores_small, args.proc_timeout)
            lines.append(f"ours  N={proc_n:,} x 3 models: {ours_wall:.3f} s wall, "
                         f"{ours_cpu:.3f} s CPU")
        if proc is None:
            lines.append("pROC did not finish at the fallback size either")
        else:
            agree = max_relative_difference(ours_result, proc)
            lines.append(f"pROC  N={proc_n:,} x 3 models: {proc['wall']:.3f} s wall, "
                         f"{proc['cpu']:.3f} s CPU (roc + var + roc.test, timed once)")
            lines.append(f"ratio pROC / ours: {proc['wall'] / ours_wall:.1f}x wall, "
                         f"{proc['cpu'] / ours_cpu:.1f}x CPU (goal >= 50x); "
                         f"numbers agree to {agree:.1e} relative")
    for line in lines:
        print(line)
    if args.record:
        stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        block = (f"\n## {stamp} — delong_speed.py (DeLong, 3 models)\n\n"
                 + "".join(f"- {line}\n" for line in lines))
        results = Path(__file__).with_name("RESULTS.md")
        header = "" if results.exists() else (
            "# Benchmark results\n\nDated blocks appended by the scripts in benchmarks/ "
            "(`--record`); newest last.\n")
        with open(results, "a") as f:
            f.write(header + block)
        print("appended to benchmarks/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
