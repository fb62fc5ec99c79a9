"""The FLOP counter matches the analytic count of a ViT, attention included (CPU fused SDPA)."""

from __future__ import annotations

import torch

from rn_classifier.models import create_model
from rn_classifier.models.flops import count_flops, forward_backward_flops


def test_forward_flops_match_analytic_vit_count():
    model = create_model("vit3d_tiny_p8", depth=2)
    b, n, d, depth = 2, 65, 192, 2  # 64 patches + class token
    x = torch.randn(b, 1, 32, 32, 32)
    with torch.no_grad():
        flops = count_flops(lambda: model(x))
    linear = 2 * b * n * depth * (3 * d * d + d * d + 2 * 4 * d * d)  # qkv, proj, MLP
    attention = 2 * 2 * b * n * n * d * depth                          # QKᵀ and AV
    patch_embed = 2 * b * 64 * d * 8 ** 3
    assert flops == linear + attention + patch_embed


def test_backward_roughly_doubles_the_forward():
    model = create_model("vit3d_tiny_p8", depth=2)
    x = torch.randn(2, 1, 32, 32, 32)
    with torch.no_grad():
        forward = count_flops(lambda: model(x))
    total = forward_backward_flops(model, x)
    assert 2.8 * forward < total < 3.3 * forward
    assert all(p.grad is None for p in model.parameters())
