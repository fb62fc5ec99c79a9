"""Model-side speed: the patch-embedding route, fp32 vs bf16 autocast, and the achieved FLOP rate.

Prints, from one run with interleaved repeats (median of each):

1. the patch embedding (``PatchEmbed``) forward + backward computed as ``patchify`` + matmul (what
   the encoder does) vs the equivalent ``nn.Conv3d`` (kernel = stride = patch), fp32 and bf16;
2. one encoder training step (forward + backward) of ``--model`` on ``--crop``³ crops, fp32 vs
   bf16 autocast (optionally ``torch.compile``-d), with the achieved FLOP rate (FLOPs counted by
   ``rn_classifier.models.flops``) and, given ``--peak-tflops``, the model FLOPs utilisation;
3. on CPU, the share of dtype casts (``aten::copy_`` / ``_to_copy``) in a bf16 step's profile.

Usage: ``python benchmarks/model_speed.py [--device cuda] [--model vit3d_small_p16] [--crop 96]
[--batch 4] [--compile] [--peak-tflops 989]``. Ratios are the result; absolute figures hold for
the machine, thread count and load of the run only.
"""

from __future__ import annotations

import argparse

import torch
from pretrain_throughput import time_steps  # benchmarks/ is the script's folder: on sys.path

from rn_classifier.models import create_model
from rn_classifier.models.flops import forward_backward_flops


def _step(module, x, bf16: bool, forward=None):
    def run():
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            out = (module if forward is None else forward)(x)
        out.float().square().mean().backward()
        module.zero_grad(set_to_none=True)
    return run


def patch_embed_routes(crop: int, batch: int, repeats: int, device: torch.device) -> None:
    pe = create_model("vit3d_small_p16", img_size=crop, depth=1).patch_embed.to(device)
    x = torch.randn(batch, 1, *(crop,) * 3, device=device)

    def conv_route(inp):
        return pe.proj(inp).flatten(2).transpose(1, 2)

    torch.testing.assert_close(pe(x), conv_route(x), rtol=1e-2, atol=1e-2)  # GPU convs use TF32
    print(f"patch embedding {pe.patch_size} on {batch}×{crop}³ ({device.type}), forward+backward, "
          f"median of {repeats}:")
    for bf16 in (False, True):
        # one call of each route a round (the two interleaved), after two warm-up calls
        t = time_steps({"matmul": _step(pe, x, bf16), "conv": _step(pe, x, bf16, conv_route)},
                       seconds=0.0, rounds=repeats)
        print(f"  {'bf16' if bf16 else 'fp32'}: patchify+matmul {t['matmul'] * 1e3:8.2f} ms | Conv3d "
              f"{t['conv'] * 1e3:8.2f} ms | conv / matmul = {t['conv'] / t['matmul']:.2f}x")


def precision(model_name: str, crop: int, batch: int, repeats: int, device: torch.device,
              compile_model: bool, peak_tflops: float | None,
              precisions: tuple[str, ...] = ("fp32", "bf16")) -> None:
    torch.manual_seed(0)
    model = create_model(model_name, img_size=crop).to(device)
    x = torch.randn(batch, 1, *(crop,) * 3, device=device)
    flops = forward_backward_flops(model, x)
    runner = torch.compile(model) if compile_model else model
    modes = [p == "bf16" for p in precisions]
    t = time_steps({bf16: _step(model, x, bf16, forward=runner) for bf16 in modes},
                   seconds=0.0, rounds=repeats, warmup=3 if compile_model else 2)
    threads = f"{torch.get_num_threads()} threads" if device.type == "cpu" else torch.cuda.get_device_name(device)
    print(f"{model_name} training step (forward+backward), {batch}×{crop}³, {flops / 1e9:.1f} GFLOP "
          f"per step, {threads}{', torch.compile' if compile_model else ''}:")
    for bf16 in modes:
        rate = flops / t[bf16] / 1e12
        mfu = f", MFU {rate / peak_tflops:.2f} of {peak_tflops:g} TFLOP/s" if peak_tflops else ""
        print(f"  {'bf16 autocast' if bf16 else 'fp32         '}: {t[bf16] * 1e3:9.2f} ms/step, "
              f"{rate:8.3f} TFLOP/s{mfu}")
    if len(t) == 2:
        print(f"  bf16 / fp32 speed = {t[False] / t[True]:.2f}x")

    if device.type == "cpu" and True in t:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            _step(model, x, True)()
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        casts = sum(e.self_cpu_time_total for e in events if e.key in ("aten::copy_", "aten::_to_copy"))
        mm = sum(e.self_cpu_time_total for e in events if e.key in ("aten::mm", "aten::addmm", "aten::bmm"))
        print(f"  bf16 profile: dtype casts {casts / total:.0%} of CPU time, matmuls {mm / total:.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="vit3d_small_p16")
    parser.add_argument("--crop", type=int, default=96)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="torch.compile the encoder")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's peak dense bf16 TFLOP/s, to print MFU (H100/H200 SXM: 989)")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32, bf16")
    parser.add_argument("--skip-patch-embed", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    if not args.skip_patch_embed:
        patch_embed_routes(args.crop, args.batch, args.repeats, device)
    precisions = tuple(p.strip() for p in args.precisions.split(","))
    if not set(precisions) <= {"fp32", "bf16"}:
        parser.error(f"--precisions must list fp32 and/or bf16, got {args.precisions!r}")
    precision(args.model, args.crop, args.batch, args.repeats, device, args.compile, args.peak_tflops,
              precisions)


if __name__ == "__main__":
    main()
