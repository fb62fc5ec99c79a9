"""Latency of ``rn-classifier predict`` on the real brain1 scan (goal: < 3 s on a 2-core CPU).

Case: ``../shared/data/pyradiomics_brain1`` (NRRD, 256 × 256 × 25 voxels of 0.78 × 0.78 × 6.5 mm,
LPS) with its lesion mask. Model: a demo-trained fine-tuning run (``--model``, default
``demo_run/finetune/ssl_vit`` from ``make demo``); when it does not exist, a tiny model is trained
first on a small SYNTHETIC cohort (tests/builders.py, about half a minute; not timed).

What is timed, in one run:
  in-process, warm : ``predict_case`` with the run's fold models already loaded (best and median
                     of --repeats): read, resample, normalise, crop, every fold model with attention
                     recorded, maps mapped back to the image grid, NIfTI + PNG written;
  in-process, first: the first call of this process (loads the fold models; includes the lazy
                     imports unless training the tiny model already did them);
  command line     : a fresh ``rn-classifier predict`` process, wall clock, alternating with a
                     fresh bare ``python -c "import torch"`` (medians of --cli-repeats): the
                     ratio is the command line's goal (≤ 1.5x; the predict path imports no
                     Lightning, MONAI or scikit-learn, and matplotlib only to write the PNG).
The < 3 s goal applies to the in-process figures (a service or notebook keeps the interpreter).

Usage: python benchmarks/predict_latency.py [--model RUN_DIR] [--repeats 5] [--cli-repeats 3] [--record]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GOAL_S = 3.0
CLI_GOAL = 1.5   # fresh `rn-classifier predict` over a bare `python -c "import torch"`


def brain1() -> tuple[Path, Path]:
    root = Path(os.environ.get("RN_TEST_DATA", REPO.parent / "shared" / "data")) / "pyradiomics_brain1"
    image, mask = root / "brain1_image.nrrd", root / "brain1_label.nrrd"
    if not image.is_file():
        sys.exit(f"brain1 not found at {root} (set RN_TEST_DATA to the folder holding pyradiomics_brain1/)")
    return image, mask


def demo_model(requested: str | None, scratch: Path) -> tuple[Path, str]:
    default = REPO / "demo_run" / "finetune" / "ssl_vit"
    path = Path(requested) if requested else default
    if (path / "config.yaml").is_file():
        import json

        provenance = path / "provenance.json"
        synthetic = provenance.is_file() and json.loads(provenance.read_text()).get("synthetic")
        origin = "run folder given" if requested else "demo_run/finetune/ssl_vit"
        return path, f"{path.name} ({origin}; trained on {'SYNTHETIC' if synthetic else 'real'} data)"
    if requested:
        sys.exit(f"--model {path}: not a fine-tuning run folder (config.yaml missing)")
    sys.path.insert(0, str(REPO / "tests"))
    from builders import tiny_study_run

    print("demo_run/finetune/ssl_vit not found: training a tiny ssl_vit on a small SYNTHETIC cohort "
          "(not timed) ...", flush=True)
    return tiny_study_run(scratch / "study") / "finetune" / "ssl_vit", \
        "tiny ssl_vit (vit3d_tiny_p8, 32³, 3 folds) trained on a SYNTHETIC cohort by tests/builders.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="fine-tuning run folder (default demo_run/finetune/ssl_vit)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cli-repeats", type=int, default=3, help="fresh predict / bare torch processes, alternating")
    parser.add_argument("--record", action="store_true", help="append the figures to benchmarks/RESULTS.md")
    args = parser.parse_args()
    from rn_classifier.provenance import machine_description

    machine = machine_description()
    image, mask = brain1()
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        model_dir, model_note = demo_model(args.model, scratch)
        first_note = ("fold models loaded; torch etc. were already imported (the tiny model was trained "
                      "in this process)" if "torch" in sys.modules else
                      "fold models loaded, lazy imports of torch, MONAI, timm included")
        from rn_classifier.predict import load_model, predict_case

        t0 = time.perf_counter()
        run = load_model(model_dir)
        predict_case(model_dir, image, mask, scratch / "first", run=run)
        first = time.perf_counter() - t0
        warm = []
        for k in range(args.repeats):
            t0 = time.perf_counter()
            result = predict_case(model_dir, image, mask, scratch / f"warm{k}", run=run)
            warm.append(time.perf_counter() - t0)

        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        cli = [sys.executable, "-m", "rn_classifier.cli", "predict", "--model", str(model_dir),
               "--image", str(image), "--mask", str(mask), "--out", str(scratch / "cli")]
        command, bare = [], []
        for _ in range(args.cli_repeats):   # alternating: start-up times are noisy on a shared CPU
            t0 = time.perf_counter()
            done = subprocess.run(cli, capture_output=True, text=True, env=env, cwd=REPO)
            command.append(time.perf_counter() - t0)
            if done.returncode != 0:
                sys.exit(f"rn-classifier predict failed:\n{done.stderr}")
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import torch"], check=True, env=env, cwd=REPO)
            bare.append(time.perf_counter() - t0)
        command, bare = statistics.median(command), statistics.median(bare)
        setting = (f"{run.n_folds} fold models, crop {list(run.preprocessing.crop_size)} at "
                   f"{list(run.preprocessing.spacing)} mm")

    best, median = min(warm), statistics.median(warm)
    lines = [
        f"- machine: {machine}; torch threads {__import__('torch').get_num_threads()}",
        f"- model: {model_note}; {setting}",
        f"- case: brain1 (NRRD 256 × 256 × 25, 0.78 × 0.78 × 6.5 mm, LPS), P(RN) = {result['probability_rn']:.3f}",
        f"- in-process, warm: best {best:.2f} s, median {median:.2f} s of {len(warm)} "
        f"(goal < {GOAL_S:g} s: {'met' if median < GOAL_S else 'NOT met'})",
        f"- in-process, first call: {first:.2f} s ({first_note})",
        f"- command line, fresh process: {command:.2f} s wall; bare `python -c \"import torch\"`: {bare:.2f} s "
        f"(medians of {args.cli_repeats}, alternating) → {command / bare:.2f}x (goal ≤ {CLI_GOAL:g}x: "
        f"{'met' if command / bare <= CLI_GOAL else 'NOT met'})",
    ]
    print("\n".join(lines))
    if args.record:
        stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        with open(Path(__file__).with_name("RESULTS.md"), "a") as fh:
            fh.write(f"\n## {stamp} — predict_latency.py (predict on brain1)\n\n" + "\n".join(lines) + "\n")
        print("appended to benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
