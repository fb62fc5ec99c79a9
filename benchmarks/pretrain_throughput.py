"""Pretraining throughput: our encoder vs MONAI's ViT, model FLOPs utilisation, and the loader.

Prints, from one run on one machine (every figure as soon as it is measured):

1. the matmul rates this machine reaches in fp32 and bf16 (square products), the denominators
   of MFU;
2. a DINO step and a MAE step (forward, backward, clipping, AdamW, teacher EMA for DINO) with our
   encoder (``rn_classifier.pretrain`` modules, ``rn_classifier.ssl``) and with MONAI's
   ``monai.networks.nets.ViT`` / ``MaskedAutoEncoderViT`` of the same width, depth and heads
   (lightly's DINO head and loss on both): sub-volumes/s, the ratio ours / MONAI, and
   MFU = counted FLOPs per second / matmul rate, in fp32 and bf16 autocast on CPU, bf16 on GPU;
3. the input pipeline: on CPU, the MONAI multi-crop loader (``data.augment_on: loader``, worker
   processes) in sub-volumes/s over what the step consumes; on GPU, a step fed by the real
   loader (workers reading a synthetic cache, ``data.augment_on: device`` views made on the GPU)
   over the same step on tensors already on the GPU, and the time of each piece of the views;
4. last, while ``--time-budget`` allows (GPU by default): our step with ``torch.compile``'d
   transformer blocks (``model.compile_blocks``).

Usage (from the repository root)::

    python benchmarks/pretrain_throughput.py                       # CPU, < 5 minutes
    PYTHONPATH=. python benchmarks/pretrain_throughput.py --device cuda   # vit3d_base_p16, 96³, bf16, ~4 min

Every part runs on its own: one that fails prints its error and the next one runs. Each timing is
the median of repeated steps within ``--seconds-per-measure`` (ours and MONAI interleaved).
Absolute figures hold for the machine, its load and the thread count of the run; the ratios are
the result. Goals: ours ≥ 1.5× MONAI; MFU ≥ 0.55 (CPU, vs fp32 matmul) / ≥ 0.40 (GPU, vs bf16
matmul); loader ≥ 5× consumption (CPU); real-loader step ≤ 1.1× tensor step (GPU).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

RESULTS: dict[str, float] = {}


def say(*parts) -> None:
    print(*parts, flush=True)


@contextlib.contextmanager
def part(title: str):
    say(f"\n== {title}")
    try:
        yield
    except Exception as exc:  # one failing part must not stop the others
        say(f"   FAILED: {type(exc).__name__}: {exc}")
        say("   " + "   ".join(traceback.format_exc().splitlines(True)[-6:]))
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(fns: dict, seconds: float, rounds: int = 3, warmup: int = 2) -> dict:
    """Median seconds per call of each function (name → no-argument callable), interleaved.

    ``warmup`` untimed calls each, then ``rounds`` rounds in which each function in turn gets
    ``torch.utils.benchmark.Timer.blocked_autorange`` for its share of ``seconds`` (at least one
    block: a call that takes longer than its share is timed once a round). The Timer synchronises
    the accelerator around each block, sizes blocks so that timer overhead does not count (fast
    calls run several times a block; the median is over blocks, per call) and runs at this
    process's thread count. Interleaving makes a machine whose load changes during the run slow
    every function alike, so the ratios hold.
    """
    from torch.utils import benchmark

    for fn in fns.values():
        for _ in range(warmup):
            fn()
    timers = {k: benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
              for k, fn in fns.items()}
    share = seconds / (rounds * len(fns))
    runs: dict = {k: [] for k in fns}
    for _ in range(rounds):
        for k, timer in timers.items():
            runs[k].append(timer.blocked_autorange(min_run_time=share))
    return {k: benchmark.Measurement.merge(m)[0].median for k, m in runs.items()}


def cpu_has_bf16_units() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AMX or AVX512-BF16); True where the flags
    cannot be read (not Linux), so that bf16 is measured rather than assumed slow."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True
    return "amx_bf16" in flags or "avx512_bf16" in flags


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int, seconds: float) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t = time_steps({"mm": lambda: a @ b}, seconds)["mm"]
    return 2 * n**3 / t


# -- steps ------------------------------------------------------------------------------------

def bench_config(args):
    """A PretrainConfig matching the command line (the engine's own schema)."""
    from rn_classifier.pretrain.methods import new_pretrain_config

    cfg = new_pretrain_config(name="bench", method="dino")
    cfg.model.name = args.model
    cfg.dino.global_crop_size, cfg.dino.local_crop_size = args.crop, args.local_crop
    cfg.dino.n_local_crops, cfg.dino.out_dim = args.n_local, args.out_dim
    cfg.mae.crop_size = args.crop
    cfg.mae.decoder_dim, cfg.mae.decoder_depth, cfg.mae.decoder_heads = args.mae_decoder
    cfg.data.batch_size = args.batch
    return cfg


def method_config(args, method: str):
    cfg = bench_config(args)
    cfg.method = method
    if method == "mae":
        cfg.data.batch_size = args.mae_batch
    return cfg


def schedules_for(method: str):
    from rn_classifier.pretrain.schedules import build_schedules

    extra = dict(teacher_momentum=0.996, teacher_temp=0.04) if method == "dino" else {}
    return build_schedules(total_steps=1000, steps_per_epoch=100, peak_lr=1e-4, min_lr=1e-6,
                           warmup_epochs=0, weight_decay=0.04, weight_decay_end=0.4, **extra)


class Step:
    """One optimisation step of a model: loss → backward → clip → AdamW (→ teacher EMA)."""

    def __init__(self, loss_fn, params, device, bf16: bool, after=None, clip: float = 3.0):
        self.loss_fn, self.params, self.device, self.bf16, self.after, self.clip = loss_fn, params, device, bf16, after, clip
        # fused AdamW for every model on every device, as the training engine uses
        # (PretrainModule.configure_optimizers): ~5x faster than the per-tensor loop on CPU
        self.opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.04, fused=True)

    def forward_backward(self, batch):
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.loss_fn(batch)
        loss.backward()
        return loss

    def __call__(self, batch):
        self.forward_backward(batch)
        torch.nn.utils.clip_grad_norm_(self.params, self.clip, foreach=True)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if self.after is not None:
            self.after()


def ours_dino(cfg, device, bf16):
    from rn_classifier.pretrain.dino_module import DINOModule

    module = DINOModule(cfg, schedules_for("dino"), cfg.data.batch_size).to(device)
    params = [p for p in module.parameters() if p.requires_grad]
    return Step(lambda b: module.compute_loss(b)[0], params, device, bf16,
                after=lambda: module.model.update_teacher(0.996)), module


def ours_mae(cfg, device, bf16):
    from rn_classifier.pretrain.mae_module import MAEModule

    cfg.model.pos_embed_type = "sincos"
    module = MAEModule(cfg, schedules_for("mae"), cfg.data.batch_size).to(device)
    cfg.model.pos_embed_type = None
    return Step(lambda b: module.compute_loss(b)[0], [p for p in module.parameters() if p.requires_grad],
                device, bf16), module


def monai_vit(cfg, img_size: int):
    from monai.networks.nets import ViT

    from rn_classifier.models import model_defaults

    d = model_defaults(cfg.model.name)
    return ViT(in_channels=1, img_size=img_size, patch_size=d["patch_size"], hidden_size=d["embed_dim"],
               mlp_dim=int(d["embed_dim"] * d.get("mlp_ratio", 4.0)), num_layers=d["depth"],
               num_heads=d["num_heads"], proj_type="conv", pos_embed_type="learnable",
               classification=False, spatial_dims=3, qkv_bias=True)


def monai_dino(cfg, device, bf16):
    """The same DINO step with MONAI ViTs: MONAI's positional embedding has a fixed grid, so the
    local crops go through a second ViT of the same size (the same FLOPs as a shared one)."""
    import copy

    from lightly.loss import DINOLoss
    from lightly.models.modules import DINOProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum

    d = cfg.dino
    student_g, student_l = monai_vit(cfg, d.global_crop_size), monai_vit(cfg, d.local_crop_size)
    teacher = copy.deepcopy(student_g)
    width = student_g.patch_embedding.patch_embeddings.out_channels if hasattr(
        student_g.patch_embedding, "patch_embeddings") else student_g.norm.normalized_shape[0]
    head_kw = dict(input_dim=width, hidden_dim=d.hidden_dim, bottleneck_dim=d.bottleneck_dim, output_dim=d.out_dim)
    s_head, t_head = DINOProjectionHead(**head_kw), DINOProjectionHead(**head_kw)
    t_head.load_state_dict(s_head.state_dict())
    deactivate_requires_grad(teacher)
    deactivate_requires_grad(t_head)
    net = torch.nn.ModuleDict(dict(sg=student_g, sl=student_l, t=teacher, sh=s_head, th=t_head)).to(device)
    criterion = DINOLoss(d.out_dim).to(device)

    def embed(vit, x):
        return vit(x)[0].mean(dim=1)

    def loss_fn(batch):
        views = batch["views"]
        with torch.no_grad():
            t_out = t_head(embed(teacher, torch.cat(views[:2]))).chunk(2)
        s_emb = [embed(student_g, torch.cat(views[:2]))]
        if len(views) > 2:
            s_emb.append(embed(student_l, torch.cat(views[2:])))
        s_out = s_head(torch.cat(s_emb)).chunk(len(views))
        return criterion(list(t_out), list(s_out), teacher_temp=0.04)

    def ema():
        update_momentum(student_g, teacher, 0.996)
        update_momentum(s_head, t_head, 0.996)

    return Step(loss_fn, [p for p in net.parameters() if p.requires_grad], device, bf16, after=ema), net


def monai_mae(cfg, device, bf16):
    from monai.networks.nets import MaskedAutoEncoderViT

    from rn_classifier.models import model_defaults
    from rn_classifier.models.patch_embed import patchify

    d, m = model_defaults(cfg.model.name), cfg.mae
    net = MaskedAutoEncoderViT(
        in_channels=1, img_size=m.crop_size, patch_size=d["patch_size"], hidden_size=d["embed_dim"],
        mlp_dim=int(d["embed_dim"] * 4), num_layers=d["depth"], num_heads=d["num_heads"],
        masking_ratio=m.mask_ratio, decoder_hidden_size=m.decoder_dim, decoder_mlp_dim=4 * m.decoder_dim,
        decoder_num_layers=m.decoder_depth, decoder_num_heads=m.decoder_heads, proj_type="conv",
        pos_embed_type="sincos", decoder_pos_embed_type="sincos", spatial_dims=3, qkv_bias=True).to(device)

    # MONAI's MaskedAutoEncoderViT fails under autocast (its index_put mixes float32 mask tokens
    # with bfloat16 tokens), so its bf16 run holds bf16 weights instead (same matmuls, no casts).
    dtype = torch.bfloat16 if bf16 else torch.float32
    net = net.to(dtype)

    def loss_fn(batch):
        x = batch["views"][0].to(dtype)
        pred, mask = net(x)
        target = patchify(x, d["patch_size"]).float()
        return (((pred.float() - target) ** 2).mean(-1) * mask).sum() / mask.sum()

    return Step(loss_fn, [p for p in net.parameters() if p.requires_grad], device, False), net


def random_batch(cfg, method: str, device, batch: int | None = None) -> dict:
    b = batch or cfg.data.batch_size
    if method == "dino":
        sizes = [cfg.dino.global_crop_size] * 2 + [cfg.dino.local_crop_size] * cfg.dino.n_local_crops
    else:
        sizes = [cfg.mae.crop_size]
    return {"views": [torch.randn(b, 1, s, s, s, device=device) for s in sizes],
            "sample": torch.arange(b)}


def step_flops(step: Step, batch) -> int:
    from rn_classifier.models.flops import count_flops

    flops = count_flops(lambda: step.forward_backward(batch))
    step.opt.zero_grad(set_to_none=True)
    return flops


FLOPS: dict[str, int] = {}     # counted FLOPs of our eager step, per method
TIMES: dict[tuple, float] = {}  # (method, name, precision) → seconds per step
MATMUL: dict[str, tuple] = {}   # method → (precision, matmul FLOP/s timed between its steps)


def compare_models(cfg, method: str, device, precisions, peak: dict, seconds: float,
                   with_monai: bool = True, with_compiled: bool = False, with_eager: bool = True) -> dict:
    """Ours vs MONAI for one method, every model and precision timed in ONE interleaved loop,
    beside a square matmul of the MFU precision (so a machine whose load changes during the run
    slows all of them alike: the ratios and the MFU hold); returns our best step."""
    ours = ours_dino if method == "dino" else ours_mae
    builders = {"ours": ours} if with_eager else {}
    if with_monai:
        builders["MONAI"] = monai_dino if method == "dino" else monai_mae
    if with_compiled:
        def compiled(cfg, device, bf16):
            cfg.model.compile_blocks = True
            try:
                return ours(cfg, device, bf16)
            finally:
                cfg.model.compile_blocks = False
        builders["ours+compile"] = compiled
    batch = random_batch(cfg, method, device)
    b = cfg.data.batch_size
    steps, flops = {}, {}
    for bf16 in precisions:
        label = "bf16 autocast" if bf16 else "fp32"
        for name, build in builders.items():
            try:
                torch.manual_seed(0)
                t0 = time.perf_counter()
                step, _ = build(cfg, device, bf16)
                if name == "ours+compile":
                    for _ in range(2):
                        step(batch)  # compile (both crop sizes, forward and backward)
                    sync(device)
                    say(f"   compiling the blocks ({label}) took {time.perf_counter() - t0:.0f} s")
                    flops[name, bf16] = FLOPS.get(method) or step_flops(ours(cfg, device, bf16)[0], batch)
                else:
                    flops[name, bf16] = step_flops(step, batch)
                    if name == "ours":
                        FLOPS[method] = flops[name, bf16]
                steps[name, bf16] = step
            except Exception as exc:
                say(f"   {name} {method} ({label}) failed: {type(exc).__name__}: {exc}")
    if not steps:
        return {}
    mm_name = "bf16" if device.type == "cuda" else "fp32"
    n = 8192 if device.type == "cuda" else 2048
    mm_dtype = torch.bfloat16 if mm_name == "bf16" else torch.float32
    a, c = (torch.randn(n, n, device=device, dtype=mm_dtype) for _ in range(2))
    fns = {key: (lambda s=s: s(batch)) for key, s in steps.items()}
    fns["matmul"] = lambda: a @ c
    times = time_steps(fns, seconds * len(steps))
    mm_rate = 2 * n**3 / times.pop("matmul")
    if with_eager:
        MATMUL[method] = (mm_name, mm_rate)
    say(f"   {mm_name} matmul {n}³ timed between the steps: {mm_rate / 1e12:.3f} TFLOP/s (the MFU denominator here)")
    for (name, bf16), t in times.items():
        label = "bf16 autocast" if bf16 else "fp32"
        rate = flops[name, bf16] / t
        say(f"   {method.upper()} {label:13s} {name:12s}: {t * 1e3:9.1f} ms/step  {b / t:8.2f} sub-volumes/s  "
            f"{flops[name, bf16] / 1e9:8.1f} GFLOP/step  {rate / 1e12:7.3f} TFLOP/s  "
            f"MFU {rate / mm_rate:.2f} of {mm_name} matmul")
        RESULTS[f"{method}_{name}_{'bf16' if bf16 else 'fp32'}_subvol_s"] = b / t
        RESULTS[f"{method}_{name}_{'bf16' if bf16 else 'fp32'}_mfu"] = rate / mm_rate
        TIMES[(method, name, bf16)] = t
    for bf16 in precisions:
        label = "bf16 autocast" if bf16 else "fp32"
        monai_t = TIMES.get((method, "MONAI", bf16)) if with_monai else None
        for name in ("ours", "ours+compile"):
            if (name, bf16) in times and monai_t:
                say(f"   {method.upper()} {label}: {name} / MONAI = {monai_t / times[name, bf16]:.2f}x sub-volumes/s")
                RESULTS[f"{method}_{name}_over_MONAI_{'bf16' if bf16 else 'fp32'}"] = monai_t / times[name, bf16]
    for name in ("ours", "ours+compile"):
        if (name, False) in times and (name, True) in times:
            say(f"   {method.upper()} {name}: bf16 / fp32 = {times[name, False] / times[name, True]:.2f}x sub-volumes/s")
    best = min(((t, bf16, name) for (name, bf16), t in times.items() if name != "MONAI"), default=None)
    del steps
    return {"time": best[0], "bf16": best[1], "name": best[2]} if best else {}


# -- input pipeline -----------------------------------------------------------------------

def synthetic_cache(folder: Path, n: int, size: int) -> Path:
    """A pool cache of ``n`` random ``size``³ sub-volumes (float16), written with write_cache."""
    import pandas as pd

    from rn_classifier.data.cache import write_cache

    rng = np.random.default_rng(0)
    crops = rng.standard_normal((n, 1, size, size, size), dtype=np.float32).astype(np.float16)
    index = pd.DataFrame({"case_id": [f"s{i}" for i in range(n)], "patient_id": [f"p{i}" for i in range(n)],
                          "center": "BENCH", "label": pd.NA, "synthetic": True,
                          "origin_x": 0.0, "origin_y": 0.0, "origin_z": 0.0})
    return write_cache(folder, crops, index, {"spacing": [1.0, 1.0, 1.0], "channels": ["t1ce"],
                                              "normalisation": {"method": "zscore_foreground"},
                                              "synthetic": True})


def make_loader(cfg, transform, workers: int, pin: bool):
    from rn_classifier.pretrain.datamodule import PretrainDataModule

    dm = PretrainDataModule(cfg.data, transform, seed=0)
    # the cached sub-volumes listed 20 times: one epoch outlasts a measurement, so the loader's
    # prefetching never drains at an epoch boundary (a small cache stands in for a large one)
    dm.dataset.items = np.tile(dm.dataset.items, (20, 1))
    return dm.loader(rank=0, world_size=1, start_step=0, pin_memory=pin, num_workers=workers)


def loader_rate(loader, seconds: float, warm_batches: int = 2) -> float:
    """Sub-volumes per second the loader delivers (iterating epochs as needed)."""
    it, n, epoch = iter(loader), 0, 0
    for _ in range(warm_batches):
        next(it)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or n == 0:
        try:
            batch = next(it)
        except StopIteration:
            epoch += 1
            loader.sampler.set_epoch(epoch)
            it = iter(loader)
            continue
        n += batch["views"][0].shape[0]
    return n / (time.perf_counter() - start)


def cpu_loader(cfg, method: str, consumption: float, workers: int, subvolume: int, seconds: float) -> None:
    from rn_classifier.pretrain.augment import MAETransform, MultiCropTransform

    with tempfile.TemporaryDirectory() as tmp:
        n = max(4 * cfg.data.batch_size, 32)
        cfg.data.pool_cache = str(synthetic_cache(Path(tmp) / "pool", n, subvolume))
        cfg.data.spacing = [1.0, 1.0, 1.0]
        transform = (MultiCropTransform(cfg.dino, cfg.augment) if method == "dino"
                     else MAETransform(cfg.mae, cfg.augment))
        rate = loader_rate(make_loader(cfg, transform, workers, pin=False), seconds)
    ratio = rate / consumption
    RESULTS[f"{method}_loader_over_consumption"] = ratio
    say(f"   {method.upper()} MONAI loader ({workers} workers, {subvolume}³ sub-volumes → views): "
        f"{rate:8.2f} sub-volumes/s; the step consumes {consumption:.2f}/s → loader / consumption = {ratio:.1f}x")


def augment_breakdown(cfg, method: str, raw: torch.Tensor) -> None:
    """Time of each piece of the batched views, applied to every sample (upper bounds)."""
    from rn_classifier.pretrain import batch_augment as ba

    device, b = raw.device, raw.shape[0]
    g = torch.Generator().manual_seed(0)
    views = [(cfg.dino.global_crop_size, 2 * b, cfg.dino.global_crop_scale),
             (cfg.dino.local_crop_size, cfg.dino.n_local_crops * b, cfg.dino.local_crop_scale)] \
        if method == "dino" else [(cfg.mae.crop_size, b, cfg.mae.crop_scale)]
    parts = []
    for size, n, scale in views:
        src = raw.repeat(n // b, 1, 1, 1, 1)
        box = ba.crop_box(g, n, src.shape[2:], scale)
        orient = ba.random_orientations(g, n, 0.5, 0.5)
        v = ba.resample(src, ba.sampling_grid(*box, orient, src.shape[2:], size, device))
        fns = {"crop+resize+flip+rot90": lambda: ba.resample(src, ba.sampling_grid(*box, orient, src.shape[2:], size, device)),
               "bias field": lambda: ba.bias_field(v, torch.rand(n, len(ba.bias_field_terms())) * 0.1),
               "gamma": lambda: ba.adjust_gamma(v.clone(), torch.full((n,), 1.3, device=device)),
               "blur": lambda: ba.gaussian_blur(v, torch.full((n, 3), 0.8, device=device)),
               "noise": lambda: v + torch.randn_like(v) * 0.05}
        t = time_steps(fns, 0.5, rounds=2, warmup=1)
        parts.append(f"{n}×{size}³: " + ", ".join(f"{k} {x * 1e3:.1f}" for k, x in t.items()))
    say("   per piece, all samples, ms: " + " | ".join(parts))


def gpu_loader(cfg, method: str, device, workers: int, subvolume: int, n: int, seconds: float,
               compiled: bool = False) -> None:
    """Step fed by the real loader (+ views made on the GPU) vs the same step on resident tensors."""
    from rn_classifier.pretrain.augment import RawSubVolume
    from rn_classifier.pretrain.batch_augment import BatchMAECrop, BatchMultiCrop

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cfg.data.pool_cache = str(synthetic_cache(Path(tmp) / "pool", n, subvolume))
        cfg.data.spacing = [1.0, 1.0, 1.0]
        say(f"   synthetic cache: {n} × {subvolume}³ float16 written in {time.perf_counter() - t0:.1f} s")
        augment = BatchMultiCrop(cfg.dino, cfg.augment) if method == "dino" else BatchMAECrop(cfg.mae, cfg.augment)
        loader = make_loader(cfg, RawSubVolume((subvolume,) * 3), workers, pin=True)
        rate = loader_rate(loader, min(seconds, 3.0))
        say(f"   loader alone ({workers} workers, pinned): {rate:8.1f} sub-volumes/s of {subvolume}³")
        raw = torch.randn(cfg.data.batch_size, 1, subvolume, subvolume, subvolume, device=device)
        t_aug = time_steps({"aug": lambda: augment(raw, (0, 1))}, 1.0)["aug"]
        say(f"   views made on the GPU: {t_aug * 1e3:.1f} ms per batch of {cfg.data.batch_size} "
            f"({cfg.data.batch_size / t_aug:.0f} sub-volumes/s)")
        augment_breakdown(cfg, method, raw)
        torch.manual_seed(0)
        cfg.model.compile_blocks = compiled
        step, _ = (ours_dino if method == "dino" else ours_mae)(cfg, device, bf16=True)
        cfg.model.compile_blocks = False
        resident = random_batch(cfg, method, device)
        state = {"it": iter(loader), "epoch": 0, "i": 0}

        def next_batch():
            try:
                return next(state["it"])
            except StopIteration:
                state["epoch"] += 1
                loader.sampler.set_epoch(state["epoch"])
                state["it"] = iter(loader)
                return next(state["it"])

        def fed_step():
            batch = next_batch()
            x = batch["views"][0].to(device, non_blocking=True)
            state["i"] += 1
            step({"views": augment(x, (0, state["i"])), "sample": batch["sample"]})

        times = time_steps({"resident": lambda: step(resident), "loader": fed_step}, seconds)
    ratio = times["loader"] / times["resident"]
    RESULTS[f"{method}_gpu_loader_step_ratio"] = ratio
    b = cfg.data.batch_size
    say(f"   {method.upper()} step on GPU-resident tensors {times['resident'] * 1e3:8.1f} ms "
        f"({b / times['resident']:.1f} sub-volumes/s); with the real loader + GPU views "
        f"{times['loader'] * 1e3:8.1f} ms ({b / times['loader']:.1f}/s) → ratio {ratio:.2f}x (goal ≤ 1.1)")


# -- summary --------------------------------------------------------------------------------

def summary_table(args, peak: dict, gpu: bool) -> list[str]:
    """One row per method and precision (ours, MONAI, ratio, MFU) and the goals, as text lines."""
    batch = {"dino": args.batch, "mae": args.mae_batch}
    lines = ["| method | precision | ours sub-volumes/s | MONAI sub-volumes/s | ours / MONAI | ours MFU |",
             "|---|---|---|---|---|---|"]
    verdicts = []
    for method in ("dino", "mae"):
        for bf16 in (False, True):
            ours, monai = TIMES.get((method, "ours", bf16)), TIMES.get((method, "MONAI", bf16))
            if ours is None:
                continue
            b = batch[method]
            mfu_peak = MATMUL.get(method, (None, None))[1]
            mfu = f"{FLOPS[method] / ours / mfu_peak:.2f}" if method in FLOPS and mfu_peak else "-"
            lines.append(f"| {method.upper()} | {'bf16 autocast' if bf16 else 'fp32'} | {b / ours:.2f} | "
                         f"{f'{b / monai:.2f}' if monai else '-'} | {f'{monai / ours:.2f}x' if monai else '-'} | {mfu} |")
            if monai:
                verdicts.append(f"{method.upper()} {'bf16' if bf16 else 'fp32'} ours / MONAI {monai / ours:.2f}x "
                                f"({'met' if monai / ours >= 1.5 else 'NOT met'}, goal ≥ 1.5x)")
            if not bf16 and not gpu and method in FLOPS and mfu_peak:
                m = FLOPS[method] / ours / mfu_peak
                verdicts.append(f"{method.upper()} fp32 MFU {m:.3f} ({'met' if m >= 0.55 else 'NOT met'}, goal ≥ 0.55)")
        fp32, bf16 = TIMES.get((method, "ours", False)), TIMES.get((method, "ours", True))
        if fp32 and bf16:
            verdicts.append(f"{method.upper()} ours bf16 / fp32 {fp32 / bf16:.2f}x "
                            f"({'met' if fp32 / bf16 >= 1.5 else 'NOT met'}, goal ≥ 1.5x)")
    for method in ("dino", "mae"):
        for bf16 in (False, True):
            eager, compiled = TIMES.get((method, "ours", bf16)), TIMES.get((method, "ours+compile", bf16))
            if eager and compiled:
                verdicts.append(f"{method.upper()} {'bf16' if bf16 else 'fp32'} torch.compile'd blocks / eager "
                                f"{eager / compiled:.2f}x (timed in a later loop)")
    return lines + [""] + [f"- {v}" for v in verdicts]


def record(lines: list[str], setting: str, machine: str) -> None:
    import datetime as dt

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    block = (f"\n## {stamp} — pretrain_throughput.py (DINO / MAE step, ours vs MONAI ViT, fp32 / bf16)\n\n"
             f"- command: python {' '.join(sys.argv)}\n- machine: {machine}; torch "
             f"{torch.__version__}, {torch.get_num_threads()} threads; load average at the end {load}\n"
             f"- {setting}\n\n" + "\n".join(lines) + "\n")
    with open(Path(__file__).with_name("RESULTS.md"), "a") as fh:
        fh.write(block)
    say("appended to benchmarks/RESULTS.md")


# -- main -----------------------------------------------------------------------------------

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--model", default=None, help="registry name (CPU: vit3d_small_p16, GPU: vit3d_base_p16)")
    p.add_argument("--crop", type=int, default=None, help="global / MAE crop (CPU 64, GPU 96)")
    p.add_argument("--local-crop", type=int, default=None, help="DINO local crop (CPU 32, GPU 48)")
    p.add_argument("--n-local", type=int, default=None, help="DINO local crops (CPU 4, GPU 8)")
    p.add_argument("--batch", type=int, default=None, help="DINO sub-volumes per step (CPU 4, GPU 64)")
    p.add_argument("--mae-batch", type=int, default=None, help="MAE sub-volumes per step (CPU 8, GPU 128)")
    p.add_argument("--out-dim", type=int, default=65536, help="DINO prototypes")
    p.add_argument("--mae-decoder", type=int, nargs=3, default=None, metavar=("DIM", "DEPTH", "HEADS"))
    p.add_argument("--seconds-per-measure", type=float, default=None, help="CPU 6, GPU 6")
    p.add_argument("--workers", type=int, default=None, help="loader workers (CPU 2, GPU 14)")
    p.add_argument("--subvolume", type=int, default=None, help="cached sub-volume size (CPU 80, GPU 96)")
    p.add_argument("--cache-size", type=int, default=256, help="sub-volumes in the GPU loader's cache")
    p.add_argument("--skip", nargs="*", default=[], choices=["dino", "mae", "loader", "monai"])
    p.add_argument("--compile", default="auto", choices=["auto", "on", "off"],
                   help="also time our step with torch.compile'd blocks, last (auto: on GPU only)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    p.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    p.add_argument("--time-budget", type=float, default=270.0,
                   help="seconds; the compiled-step parts are skipped when less than 100 s are left")
    args = p.parse_args()
    gpu = args.device == "cuda"
    defaults = dict(model="vit3d_base_p16", crop=96, local_crop=48, n_local=8, batch=64, mae_batch=128,
                    mae_decoder=[384, 8, 12], seconds_per_measure=6.0, workers=14, subvolume=96) if gpu else \
        dict(model="vit3d_small_p16", crop=64, local_crop=32, n_local=4, batch=4, mae_batch=8,
             mae_decoder=[192, 2, 6], seconds_per_measure=6.0, workers=2, subvolume=80)
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    from rn_classifier.provenance import machine_description

    machine = machine_description()
    started = time.perf_counter()
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = False  # "fp32" means fp32 here; the step runs in bf16
        say(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}, "
            f"{os.cpu_count()} CPU cores")
    else:
        say(f"device: CPU, {torch.get_num_threads()} threads, torch {torch.__version__}")
    setting = (f"model {args.model}; DINO: batch {args.batch}, 2 × {args.crop}³ + {args.n_local} × {args.local_crop}³ "
               f"views, {args.out_dim} prototypes; MAE: batch {args.mae_batch}, {args.crop}³, decoder {args.mae_decoder}; "
               f"fused AdamW for every model; random tensors (no data)")
    say(setting)

    peak = {}
    with_bf16 = gpu or cpu_has_bf16_units()
    with part("matmul rates (the MFU denominators)"):
        n = 8192 if gpu else 2048
        if not with_bf16:
            say("   bf16 skipped: this CPU has no bf16 matrix units (no amx_bf16 / avx512_bf16 in /proc/cpuinfo); "
                "PyTorch emulates bf16 there, minutes per matmul, and the CPU study runs in fp32")
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))[:2 if with_bf16 else 1]:
            peak[name] = matmul_rate(device, dtype, n, 2.0 if gpu else 3.0)
            say(f"   {name} {n}×{n}×{n}: {peak[name] / 1e12:8.2f} TFLOP/s")
        if with_bf16:
            say(f"   bf16 / fp32 = {peak['bf16'] / peak['fp32']:.1f}x")
    peak_for_mfu = {"bf16": peak["bf16"]} if gpu and "bf16" in peak else {k: v for k, v in peak.items() if k == "fp32"}
    if not peak_for_mfu:
        peak_for_mfu = {"nominal": 1.0}
    precisions = (True,) if gpu else (False, True) if with_bf16 else (False,)
    consumption = {}
    for method in ("dino", "mae"):
        if method in args.skip:
            continue
        with part(f"{method.upper()} step: ours vs MONAI" + ("" if "monai" not in args.skip else " (MONAI skipped)")):
            cfg = method_config(args, method)
            best = compare_models(cfg, method, device, precisions, peak_for_mfu, args.seconds_per_measure,
                                  with_monai="monai" not in args.skip)
            if best:
                consumption[method] = cfg.data.batch_size / best["time"]
                consumption[method + "_name"] = best["name"]
                say(f"   fastest {method.upper()} step: {best['name']}, {'bf16 autocast' if best['bf16'] else 'fp32'}")
    if "loader" not in args.skip:
        for method in ("dino", "mae"):
            if method in args.skip:
                continue
            with part(f"{method.upper()} input pipeline"):
                cfg = method_config(args, method)
                if gpu:
                    gpu_loader(cfg, method, device, args.workers, args.subvolume, args.cache_size,
                               args.seconds_per_measure)
                elif method in consumption:
                    cpu_loader(cfg, method, consumption[method], args.workers, args.subvolume,
                               args.seconds_per_measure)
    compile_methods = [m for m in ("dino", "mae") if m not in args.skip] \
        if args.compile == "on" or (args.compile == "auto" and gpu) else []
    for method in compile_methods:
        left = args.time_budget - (time.perf_counter() - started)
        if left < 100:
            say(f"\n== {method.upper()} step with torch.compile'd blocks: skipped, {left:.0f} s of "
                f"--time-budget left (compiling takes about a minute)")
            continue
        with part(f"{method.upper()} step with torch.compile'd blocks (regional compilation)"):
            compare_models(method_config(args, method), method, device, (True,) if gpu else precisions,
                           peak_for_mfu, args.seconds_per_measure, with_monai=False,
                           with_compiled=True, with_eager=False)
    say(f"\nsummary ({time.perf_counter() - started:.0f} s): " +
        ", ".join(f"{k} {v:.2f}" for k, v in RESULTS.items()))
    table = summary_table(args, peak, gpu)
    if peak:
        table.insert(0, "matmul rates: " + ", ".join(f"{k} {v / 1e12:.2f} TFLOP/s" for k, v in peak.items())
                     + f"; MFU is counted FLOPs/s over the {'bf16' if gpu else 'fp32'} rate\n")
    say("\n" + "\n".join(table))
    if args.record:
        record(table, setting + f"; {time.perf_counter() - started:.0f} s in all", machine)


if __name__ == "__main__":
    main()
