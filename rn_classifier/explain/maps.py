"""Run a classifier network once and collect its attention maps on the patch grid."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .attention import AttentionRecorder, attention_rollout, cls_attention, patch_grid


@dataclass
class AttentionMaps:
    """One case's maps on the patch grid ``(gx, gy, gz)``.

    cls_heads: ``(H, gx, gy, gz)`` last-layer attention per head of the pooled query (the class
    token, or the mask-weighted patches under ``model.pool: mask``); cls_mean: their head mean;
    rollout: attention rollout of the same query (sums to ≤ 1: the class token keeps part of the
    flow).
    """

    cls_heads: np.ndarray
    cls_mean: np.ndarray
    rollout: np.ndarray

    @staticmethod
    def mean(maps: list["AttentionMaps"]) -> "AttentionMaps":
        """Average over fold models (the prediction is their mean, so is the map)."""
        return AttentionMaps(np.mean([m.cls_heads for m in maps], axis=0),
                             np.mean([m.cls_mean for m in maps], axis=0),
                             np.mean([m.rollout for m in maps], axis=0))


@torch.no_grad()
def logits_and_attention(network: nn.Module, x: torch.Tensor,
                         clinical: torch.Tensor | None = None) -> tuple[np.ndarray, list[AttentionMaps]]:
    """``network(x, clinical)`` with the encoder's attention recorded.

    network: a classifier with an ``encoder`` (:class:`~rn_classifier.models.vit3d.VisionTransformer3D`);
    x: ``(B, C, X, Y, Z)``. Returns logits ``(B,)`` and one :class:`AttentionMaps` per case.
    """
    encoder = network.encoder
    network.eval()
    with AttentionRecorder(encoder) as recorder:
        logits = network(x, clinical)
    # the encoder's blocks only: a fusion head's own attention (nn.MultiheadAttention) is no timm
    # Attention and is not recorded
    grid = encoder.grid_for(x.shape[2:])
    prefix = encoder.num_prefix_tokens
    # the query of the maps is what the classifier pools: the class token, or the patches under
    # the lesion mask (model.pool: mask), whose class token no longer feeds the decision
    query = network.pooling_weights(x) if hasattr(network, "pooling_weights") else None
    heads = patch_grid(cls_attention(recorder.maps, prefix, query), grid).cpu().numpy()
    rollout = patch_grid(attention_rollout(recorder.maps, prefix, query=query), grid).cpu().numpy()
    maps = [AttentionMaps(heads[b], heads[b].mean(axis=0), rollout[b]) for b in range(x.shape[0])]
    return logits.float().cpu().numpy().reshape(-1), maps


# model.pool -> the query the maps follow (what the classifier pools), in words for titles
MAP_QUERIES = {"cls": "class-token", "avg": "mean-of-patches", "mask": "lesion-mask-pooled"}


def map_description(pool: str) -> str:
    """What an attention map of a model with ``model.pool`` shows (figure titles, report)."""
    return f"last-layer {MAP_QUERIES.get(pool, pool)} attention"
