"""GPU check: one command, about 8 minutes on one H100 / H200, nothing downloaded.

Prints, from one run on one GPU (every figure as soon as it is measured):

1. **MFU**: the bf16 DINO and MAE steps of ViT-B/16 on 96³ crops (our encoder; forward, backward,
   clipping, fused AdamW, teacher EMA for DINO) in sub-volumes/s and model FLOPs utilisation:
   counted FLOPs per second over a bf16 8192³ matmul timed between the steps
   (``pretrain_throughput.compare_models``);
2. **loader**: the step fed by the real loader (workers reading a synthetic cache, views made on
   the GPU) over the same step on GPU-resident tensors, for DINO and MAE (goal ≤ 1.1;
   ``pretrain_throughput.gpu_loader``);
3. **paper config end to end**: ``configs/study/paper_synthetic_gpu.yaml`` on a SYNTHETIC cohort of
   the ``paper`` preset with a reduced unlabeled pool (``--pool-size``): cohort → check-data →
   preprocess → split → DINO pretraining of ViT-B for ``--pretrain-steps`` steps → fine-tuning
   fold 0 of ``ssl_vit`` for ``--finetune-epochs`` epochs; per-stage seconds and the fold's
   validation AUC (noise at this length: the point is that every stage runs on CUDA).

``--dry`` runs the same code on the CPU with a tiny model (vit3d_tiny_p8, 16³ crops, 2 steps, the
``mini`` synthetic preset), so the script is tested without a GPU (tests/test_gpu_check.py); its
figures mean nothing.

Usage (repository root)::

    PYTHONPATH=. python benchmarks/gpu_check.py                  # on the GPU machine
    PYTHONPATH=. python benchmarks/gpu_check.py --dry            # anywhere, ~1-3 minutes
    PYTHONPATH=. python benchmarks/gpu_check.py --parts mfu loader --record

Every part runs on its own: one that fails prints its error and the next one runs; the exit
status is 1 when any part failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import pretrain_throughput as pt  # noqa: E402
import torch  # noqa: E402

PARTS = ("mfu", "loader", "study")
STUDY_CONFIG = REPO / "configs" / "study" / "paper_synthetic_gpu.yaml"
FAILED: list[str] = []


def bench_args(dry: bool) -> argparse.Namespace:
    """The step settings: pretrain_throughput's GPU defaults, or a tiny CPU model (--dry)."""
    if dry:
        return argparse.Namespace(model="vit3d_tiny_p8", crop=16, local_crop=8, n_local=2, batch=2,
                                  mae_batch=2, out_dim=256, mae_decoder=[48, 1, 3])
    return argparse.Namespace(model="vit3d_base_p16", crop=96, local_crop=48, n_local=8, batch=64,
                              mae_batch=128, out_dim=65536, mae_decoder=[384, 8, 12])


def mfu_part(args, device: torch.device, seconds: float) -> None:
    for method in ("dino", "mae"):
        cfg = pt.method_config(bench_args(args.dry), method)
        pt.compare_models(cfg, method, device, (True,), {}, seconds, with_monai=False)


def loader_part(args, device: torch.device, seconds: float) -> None:
    b = bench_args(args.dry)
    workers, subvolume, n = (0, 24, 8) if args.dry else (min(14, (os.cpu_count() or 2) - 2), 96, 256)
    for method in ("dino", "mae"):
        pt.gpu_loader(pt.method_config(b, method), method, device, workers, subvolume, n, seconds)


def study_config(args):
    """The paper GPU study shortened to a check: small pool, few steps, only ssl_vit, one fold."""
    from rn_classifier.study.run import load_study_config

    cores = os.cpu_count() or 2
    scalars = [f"data.synth.pool_size={args.pool_size}", f"pretrain.max_steps={args.pretrain_steps}",
               "pretrain.devices=1", "radiomics.enabled=false", "report.enabled=false"]
    if args.dry:
        scalars += ["data.synth.preset=mini", "data.synth.seed=4", "data.synth.workers=1", "split.n_folds=2",
                    "pretrain.accelerator=cpu",
                    "preprocess.config=configs/preprocess/demo.yaml"]
    else:
        scalars += [f"data.synth.workers={cores}"]
    cfg = load_study_config(STUDY_CONFIG, scalars)
    if args.dry:   # the sizes of configs/study/tiny.yaml
        cfg.preprocess.set = ["spacing=[3.0,3.0,3.0]", "labelled_crop=[20,20,20]", "pool_crop=[24,24,24]",
                              "workers=1"]
        cfg.pretrain.set = ["data.spacing=[3.0,3.0,3.0]", "data.batch_size=2", "data.num_workers=0",
                            "model.name=vit3d_tiny_p8", "dino.global_crop_size=16", "dino.local_crop_size=8",
                            "dino.n_local_crops=2", "dino.out_dim=64", "dino.hidden_dim=32",
                            "dino.bottleneck_dim=16", "monitor.every_n_epochs=0",
                            "data.split=null", "data.internal_cache=null"]   # the monitor is off
        cfg.finetune.set = ["train.accelerator=cpu", "model.arch=vit3d_tiny_p8", "model.crop_size=[16,16,16]",
                            f"train.epochs={args.finetune_epochs}", "train.batch_size=4", "train.num_workers=0",
                            "train.precision=32-true"]
    else:
        cfg.preprocess.set = [*cfg.preprocess.set, f"workers={cores}"]
        cfg.finetune.set = [*cfg.finetune.set, "train.accelerator=gpu", f"train.epochs={args.finetune_epochs}"]
    return cfg


def study_part(args, out: Path) -> None:
    from rn_classifier.finetune.run import run_finetune
    from rn_classifier.study.run import Study
    from rn_classifier.study.stages import StageBook

    study = Study(study_config(args), out, echo=lambda line: pt.say("   " + line))
    study.write_header()
    study.book = StageBook(out, echo=lambda line: pt.say("   " + line))
    for name in ("cohort", "check", "preprocess", "split", "pretrain"):
        t0 = time.perf_counter()
        getattr(study, f"stage_{name}")()
        pt.say(f"   stage {name}: {time.perf_counter() - t0:.0f} s")
    model = study.finetune_models()["ssl_vit"]
    t0 = time.perf_counter()
    summary = run_finetune(study.fill_finetune_paths(model), out / "finetune" / "ssl_vit",
                           encoder_dir=study.encoder_dir(), folds=[0], echo=lambda m: pt.say("   " + m))
    pt.say(f"   fine-tuning ssl_vit fold 0 ({args.finetune_epochs} epoch(s)): {time.perf_counter() - t0:.0f} s; "
           f"summary: {summary}")
    pt.say(f"   the paper config ran end to end on {'the CPU (dry run)' if args.dry else 'CUDA'}; "
           "cohort SYNTHETIC (paper preset" + (", mini in --dry" if args.dry else "") + ")")


def run_part(name: str, fn, *fn_args) -> None:
    t0 = time.perf_counter()
    with pt.part(f"{name}"):
        try:
            fn(*fn_args)
        except Exception:
            FAILED.append(name)
            raise
    pt.say(f"   ({time.perf_counter() - t0:.0f} s)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry", action="store_true", help="CPU, tiny model, 2 steps: checks the script only")
    p.add_argument("--parts", nargs="*", default=list(PARTS), choices=PARTS)
    p.add_argument("--seconds-per-measure", type=float, default=None, help="GPU 6, dry 0.2")
    p.add_argument("--pool-size", type=int, default=None, help="unlabeled sub-volumes (GPU 512, dry 4)")
    p.add_argument("--pretrain-steps", type=int, default=None, help="GPU 300, dry 2")
    p.add_argument("--finetune-epochs", type=int, default=None, help="GPU 3, dry 1")
    p.add_argument("--out", type=Path, default=None, help="keep the study run here (default: a temporary folder)")
    p.add_argument("--record", action="store_true", help="append the printed figures to benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    for key, gpu_value, dry_value in (("seconds_per_measure", 6.0, 0.2), ("pool_size", 512, 4),
                                      ("pretrain_steps", 300, 2), ("finetune_epochs", 3, 1)):
        if getattr(args, key) is None:
            setattr(args, key, dry_value if args.dry else gpu_value)
    if not args.dry and not torch.cuda.is_available():
        pt.say("no CUDA device: run this on the GPU machine, or pass --dry to check the script on the CPU")
        return 2
    from rn_classifier.provenance import machine_description

    device = torch.device("cpu" if args.dry else "cuda")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        pt.say(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    else:
        torch.set_num_threads(min(2, os.cpu_count() or 1))
        pt.say(f"device: CPU (--dry: tiny model, figures mean nothing), torch {torch.__version__}")
    pt.say(f"machine: {machine_description()}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if "mfu" in args.parts:
            run_part("MFU: bf16 DINO and MAE steps", mfu_part, args, device, args.seconds_per_measure)
        if "loader" in args.parts:
            run_part("loader: real-loader step / resident-tensor step (goal ≤ 1.1)", loader_part,
                     args, device, args.seconds_per_measure)
        if "study" in args.parts:
            run_part(f"paper config end to end ({STUDY_CONFIG.relative_to(REPO)}, shortened)", study_part,
                     args, args.out or Path(tmp) / "study")
    summary = ", ".join(f"{k} {v:.2f}" for k, v in pt.RESULTS.items())
    pt.say(f"\nsummary ({time.perf_counter() - started:.0f} s): {summary}" +
           (f"; FAILED parts: {', '.join(FAILED)}" if FAILED else "; every part ran"))
    if args.record and not args.dry:
        import datetime as dt

        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
        with open(Path(__file__).with_name("RESULTS.md"), "a") as fh:
            fh.write(f"\n## {stamp} — gpu_check.py\n\n- command: python {' '.join(sys.argv)}\n"
                     f"- machine: {machine_description()}; {torch.cuda.get_device_name(device)}\n"
                     f"- {summary}\n")
        pt.say("appended to benchmarks/RESULTS.md")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
