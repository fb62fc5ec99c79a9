"""The classifier networks of fine-tuning, without Lightning (``predict`` loads them alone).

* :class:`ImageClassifier`: ViT encoder → pooled embedding ``(B, D)`` → dropout → ``Linear(D, 1)``
  → logit of radiation necrosis ``(B,)``.
* :class:`EncoderClassifierBase`: what every classifier with a ViT encoder shares
  (the intermediate-fusion network of :mod:`.fusion` builds on it too).

The networks expose timm's ``group_matcher`` so timm's layer-decay grouping sees the encoder's
depth: patch embedding / class token / positional embedding = layer 0, block *i* = layer *i* + 1,
everything above the encoder (heads, clinical branch) = the top layer.
"""

from __future__ import annotations

import torch
from torch import nn

ENCODER_PREFIX = "encoder."


def encoder_group_matcher(prefix: str = ENCODER_PREFIX) -> dict:
    """timm group matcher for an encoder stored under ``prefix`` (timm ViT's own matcher, prefixed)."""
    p = prefix.replace(".", r"\.")
    return {"stem": rf"^{p}(?:cls_token|pos_embed|patch_embed)",
            "blocks": [(rf"^{p}blocks\.(\d+)", None), (rf"^{p}norm", (99999,))]}


class EncoderClassifierBase(nn.Module):
    """Shared by the classifiers: an ``encoder`` attribute, layer grouping, no-decay names."""

    encoder: nn.Module

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return encoder_group_matcher()

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {ENCODER_PREFIX + n for n in getattr(self.encoder, "no_weight_decay", lambda: set())()}

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x: (B, C, X, Y, Z)`` → (tokens ``(B, 1 + L, D)``, pooled embedding ``(B, D)``)."""
        tokens = self.encoder.forward_features(x)
        return tokens, self.encoder.forward_head(tokens, pre_logits=True)


class ImageClassifier(EncoderClassifierBase):
    """Image-only classifier: ``forward(x: (B, 2, X, Y, Z)) → logits (B,)``."""

    def __init__(self, encoder: nn.Module, head_dropout: float = 0.0):
        super().__init__()
        encoder.reset_classifier(0)  # the encoder returns embeddings; the head lives here
        self.encoder = encoder
        self.dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(encoder.embed_dim, 1)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor, clinical: torch.Tensor | None = None) -> torch.Tensor:
        _, pooled = self.embed(x)
        return self.head(self.dropout(pooled)).squeeze(-1)
