"""Counting floating-point operations of a forward / backward pass, for model FLOPs utilisation.

Uses PyTorch's ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions, attention; a
multiply-add counts as 2 FLOPs). Its registry lacks the CPU kernel of fused attention
(``aten._scaled_dot_product_flash_attention_for_cpu`` and its backward), which timm ``Block`` calls
through ``F.scaled_dot_product_attention`` on CPU; without it the attention matmuls (≈ 9 % of a
ViT-S/16 step on 96³ crops) would be missed, so they are added here with PyTorch's own formulas.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

_aten = torch.ops.aten


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args,
                             out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


_CPU_ATTENTION = {
    _aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops,
    _aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flops,
}


def count_flops(fn: Callable[[], Any]) -> int:
    """Run ``fn()`` once and return the FLOPs it executed (forward and any backward inside)."""
    with FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION) as counter:
        fn()
    return int(counter.get_total_flops())


def forward_backward_flops(model: torch.nn.Module, *inputs: torch.Tensor) -> int:
    """FLOPs of ``model(*inputs)`` plus the backward pass of the sum of its output(s).

    Gradients accumulated into ``model`` are cleared afterwards.
    """
    def step() -> None:
        out = model(*inputs)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        sum(o.float().sum() for o in outs if torch.is_tensor(o) and o.requires_grad).backward()

    flops = count_flops(step)
    model.zero_grad(set_to_none=True)
    return flops
