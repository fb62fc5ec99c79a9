"""Attention weights of a ViT, recomputed from q and k, and the maps made from them.

timm's ``Attention`` uses the fused ``F.scaled_dot_product_attention`` kernel, which never
materialises the attention matrix. :class:`AttentionRecorder` adds hooks to every ``Attention``
module for the duration of a ``with`` block; they recompute ``softmax(q kᵀ / √d)`` from the q and
k the module's own ``qkv`` projection produced, with its q/k norms and scale (exactly the
non-fused branch of timm's ``Attention.forward``). Outside the block no hook exists, so training
and ordinary prediction keep the fused path and its speed.

Maps (token 0 = class token, tokens 1… = patches in the row-major order of the patch grid):

* :func:`cls_attention`: the last layer's attention from the class token to every patch,
  ``(B, H, L)`` per head; the head mean is the usual "attention map" (DINO, Caron et al. 2021).
* :func:`attention_rollout`: Abnar & Zuidema, "Quantifying Attention Flow in Transformers",
  ACL 2020 — per layer the head-averaged attention plus the identity for the residual path,
  ``Â = ½ A + ½ I``, rows renormalised, multiplied through the layers
  ``R = Â_L ⋯ Â_1``; the class token's row over the patches, ``(B, L)``.
"""

from __future__ import annotations

import torch
from timm.layers.attention import Attention
from torch import nn


class AttentionRecorder:
    """Record the attention matrices of every timm ``Attention`` in ``model`` during forward.

    ``with AttentionRecorder(model) as rec: model(x)`` → ``rec.maps``: one ``(B, H, N, N)``
    tensor per attention layer, in call order (= depth order for a ViT), rows summing to 1.

    The hook sits on each ``Attention``'s ``qkv`` projection and takes q and k from its output
    (the projection the fused kernel consumes), so recording costs a softmax per layer, not a
    second projection; a pre-hook on the ``Attention`` refuses masked attention.
    """

    def __init__(self, model: nn.Module):
        self.layers = [m for m in model.modules() if isinstance(m, Attention)]
        if not self.layers:
            raise ValueError(f"{type(model).__name__} holds no timm Attention module; attention "
                             "maps need a timm-Block ViT")
        self.maps: list[torch.Tensor] = []
        self._handles: list = []

    @staticmethod
    def weights_from_qkv(module: Attention, qkv: torch.Tensor) -> torch.Tensor:
        """``softmax(q kᵀ · scale)`` from the output ``(B, N, 3·C)`` of ``module.qkv`` → ``(B, H, N, N)``.

        The same reshape, q/k norms and scale as timm's ``Attention.forward``.
        """
        b, n, _ = qkv.shape
        q, k, _ = qkv.reshape(b, n, 3, module.num_heads, module.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = module.q_norm(q), module.k_norm(k)
        return ((q * module.scale) @ k.transpose(-2, -1)).softmax(dim=-1)

    @classmethod
    def attention_weights(cls, module: Attention, x: torch.Tensor) -> torch.Tensor:
        """The attention matrix of ``module`` for its input ``x: (B, N, C)`` → ``(B, H, N, N)``."""
        return cls.weights_from_qkv(module, module.qkv(x))

    @staticmethod
    def _refuse_masks(module: Attention, args: tuple, kwargs: dict) -> None:
        if kwargs.get("attn_mask") is not None or kwargs.get("is_causal"):
            raise ValueError("attention maps are recorded for unmasked self-attention only")

    def _qkv_hook(self, module: Attention):
        def hook(_linear: nn.Module, _args: tuple, qkv: torch.Tensor) -> None:
            with torch.no_grad():
                self.maps.append(self.weights_from_qkv(module, qkv.detach()).float())
        return hook

    def __enter__(self) -> "AttentionRecorder":
        self.maps = []
        for m in self.layers:
            self._handles.append(m.register_forward_pre_hook(self._refuse_masks, with_kwargs=True))
            self._handles.append(m.qkv.register_forward_hook(self._qkv_hook(m)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def cls_attention(maps: list[torch.Tensor], num_prefix_tokens: int = 1,
                  query: torch.Tensor | None = None) -> torch.Tensor:
    """Last layer's attention to the patches: ``(B, H, L)``.

    query: ``(B, N)`` weights of the tokens the classifier pools (models.classifiers.
    pooling_weights); None = the class token (row 0 of ``maps[-1]``). With a pooled query the map
    is the same weighted mean of the attention rows the pooled embedding is of the tokens.
    """
    if query is None:
        return maps[-1][:, :, 0, num_prefix_tokens:]
    last = maps[-1]
    return torch.einsum("bn,bhnm->bhm", query.to(last.dtype), last)[:, :, num_prefix_tokens:]


def attention_rollout(maps: list[torch.Tensor], num_prefix_tokens: int = 1,
                      residual: float = 0.5, query: torch.Tensor | None = None) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020): pooled tokens → patches, ``(B, L)``.

    maps: per layer ``(B, H, N, N)``; residual: weight of the identity (the skip connection);
    query: ``(B, N)`` token weights of the pooling (None = the class token, the original method).
    """
    b, _, n, _ = maps[0].shape
    eye = torch.eye(n, dtype=maps[0].dtype, device=maps[0].device).expand(b, n, n)
    rollout = eye
    for layer in maps:
        a = (1.0 - residual) * layer.mean(dim=1) + residual * eye
        a = a / a.sum(dim=-1, keepdim=True)
        rollout = a @ rollout
    if query is None:
        return rollout[:, 0, num_prefix_tokens:]
    return torch.einsum("bn,bnm->bm", query.to(rollout.dtype), rollout)[:, num_prefix_tokens:]


def patch_grid(values: torch.Tensor, grid) -> torch.Tensor:
    """``(..., L)`` in row-major patch order → ``(..., *grid)``."""
    return values.reshape(*values.shape[:-1], *[int(g) for g in grid])
