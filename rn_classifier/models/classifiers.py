"""The classifier networks of fine-tuning, without Lightning or scikit-learn (``predict`` loads
them from a model bundle alone).

* :class:`ImageClassifier`: ViT encoder → pooled embedding ``(B, D)`` → dropout → ``Linear(D, 1)``
  → logit of radiation necrosis ``(B,)``.
* :func:`pool_tokens`: how the tokens become one embedding (``model.pool``): the class token
  (``cls``), the mean of the patch tokens (``avg``), or their mean weighted by the share of
  each patch inside the lesion mask (``mask``). A small lesion covers a few of the 64 patches of
  a 32³ crop; ``mask`` pooling reads the embedding where the lesion is, the way a radiologist
  reads the lesion and its rim rather than the whole field of view.
* :class:`IntermediateFusionClassifier`: the encoder's pooled embedding ⊕ an MLP embedding of
  the clinical vector (optionally a clinical query attending over the image tokens) → logit;
  trained by :mod:`rn_classifier.finetune.fusion`'s intermediate fusion.
* :class:`EncoderClassifierBase`: what every classifier with a ViT encoder shares.

The networks expose timm's ``group_matcher`` so timm's layer-decay grouping sees the encoder's
depth: patch embedding / class token / positional embedding = layer 0, block *i* = layer *i* + 1,
everything above the encoder (heads, clinical branch) = the top layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

ENCODER_PREFIX = "encoder."
POOLS = ("cls", "avg", "mask")
MASK_CHANNEL = 1  # input channels: 0 = T1CE, 1 = lesion mask


def check_pool(pool: str) -> str:
    if pool not in POOLS:
        raise InputError(f"pool must be one of {list(POOLS)}, got {pool!r}")
    return pool


def mask_patch_weights(mask: torch.Tensor, patch_size: tuple[int, ...]) -> torch.Tensor:
    """Share of each patch inside the lesion: ``mask: (B, *spatial)`` → ``(B, L)``, row-major
    patch order (as the patch embedding's tokens)."""
    avg_pool = F.avg_pool3d if len(patch_size) == 3 else F.avg_pool2d
    return avg_pool(mask.unsqueeze(1).float(), kernel_size=patch_size, stride=patch_size).flatten(1)


def pooling_weights(x: torch.Tensor, pool: str, patch_size: tuple[int, ...], n_patches: int,
                    num_prefix_tokens: int = 1) -> torch.Tensor:
    """How the pooled embedding weighs the encoder's tokens: ``(B, P + L)``, each row sums to 1.

    ``cls``: all weight on the class token; ``avg``: equal weights on the patches; ``mask``: each
    patch's share inside the mask channel (``x[:, 1] > 0.5``), normalised; a crop whose mask is
    empty (lesion outside the field of view) falls back to equal weights. The attention maps use
    the same weights as their query, so a map shows what feeds the decision (explain.maps).
    """
    b = x.shape[0]
    weights = torch.zeros(b, num_prefix_tokens + n_patches, device=x.device)
    if check_pool(pool) == "cls":
        weights[:, 0] = 1.0
        return weights
    if pool == "avg":
        weights[:, num_prefix_tokens:] = 1.0 / n_patches
        return weights
    share = mask_patch_weights(x[:, MASK_CHANNEL] > 0.5, patch_size)          # (B, L)
    if share.shape[1] != n_patches:
        raise InputError(f"the mask gives {share.shape[1]} patch weights for {n_patches} "
                         f"patch tokens (patch size {patch_size}, input {tuple(x.shape[2:])})")
    total = share.sum(dim=1, keepdim=True)
    weights[:, num_prefix_tokens:] = torch.where(total > 0, share / total.clamp_min(1e-12),
                                                 torch.full_like(share, 1.0 / n_patches))
    return weights


def pool_tokens(tokens: torch.Tensor, x: torch.Tensor, pool: str, patch_size: tuple[int, ...],
                num_prefix_tokens: int = 1) -> torch.Tensor:
    """``tokens: (B, P + L, D)`` (P prefix tokens, class token first), ``x: (B, C, *spatial)``
    the input → pooled embedding ``(B, D)``, weighted as :func:`pooling_weights` says."""
    if check_pool(pool) == "cls":
        return tokens[:, 0]
    patches = tokens[:, num_prefix_tokens:]
    if pool == "avg":
        return patches.mean(dim=1)
    weights = pooling_weights(x, pool, patch_size, patches.shape[1], num_prefix_tokens)
    return torch.einsum("bl,bld->bd", weights[:, num_prefix_tokens:].to(patches.dtype), patches)


def encoder_group_matcher(prefix: str = ENCODER_PREFIX) -> dict:
    """timm group matcher for an encoder stored under ``prefix`` (timm ViT's own matcher, prefixed)."""
    p = prefix.replace(".", r"\.")
    return {"stem": rf"^{p}(?:cls_token|pos_embed|patch_embed)",
            "blocks": [(rf"^{p}blocks\.(\d+)", None), (rf"^{p}norm", (99999,))]}


class EncoderClassifierBase(nn.Module):
    """Shared by the classifiers: an ``encoder`` attribute, layer grouping, no-decay names."""

    encoder: nn.Module
    pool: str = "cls"

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return encoder_group_matcher()

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {ENCODER_PREFIX + n for n in getattr(self.encoder, "no_weight_decay", lambda: set())()}

    def pooling_weights(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1 + L)``: how :meth:`embed` weighs the encoder's tokens for input ``x``."""
        n_patches = int(torch.Size(self.encoder.grid_for(x.shape[2:])).numel())
        return pooling_weights(x, self.pool, tuple(self.encoder.patch_size), n_patches,
                               self.encoder.num_prefix_tokens)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x: (B, C, X, Y, Z)`` → (tokens ``(B, 1 + L, D)``, pooled embedding ``(B, D)``)."""
        tokens = self.encoder.forward_features(x)
        return tokens, pool_tokens(tokens, x, self.pool, tuple(self.encoder.patch_size),
                                   getattr(self.encoder, "num_prefix_tokens", 1))


class ImageClassifier(EncoderClassifierBase):
    """Image-only classifier: ``forward(x: (B, 2, X, Y, Z)) → logits (B,)``.

    pool: ``cls`` | ``avg`` | ``mask`` (see :func:`pool_tokens`).
    """

    def __init__(self, encoder: nn.Module, head_dropout: float = 0.0, pool: str = "cls"):
        super().__init__()
        encoder.reset_classifier(0)  # the encoder returns embeddings; the head lives here
        self.encoder = encoder
        self.pool = check_pool(pool)
        self.dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(encoder.embed_dim, 1)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor, clinical: torch.Tensor | None = None) -> torch.Tensor:
        _, pooled = self.embed(x)
        return self.head(self.dropout(pooled)).squeeze(-1)


class IntermediateFusionClassifier(EncoderClassifierBase):
    """Image embedding ⊕ clinical embedding → logit, trained end to end.

    forward(x: (B, 2, X, Y, Z), clinical: (B, F)) → logits (B,).
    clinical MLP: F → E → E (GELU, dropout); with ``cross_attention`` a query made from the
    clinical embedding attends over the encoder's tokens ``(B, 1 + L, D)`` (multi-head attention)
    and the attended vector ``(B, D)`` joins the concatenation.
    """

    def __init__(self, encoder: nn.Module, n_clinical: int, clinical_dim: int = 32,
                 cross_attention: bool = False, heads: int = 4, dropout: float = 0.1,
                 pool: str = "cls"):
        super().__init__()
        if n_clinical < 1:
            raise InputError("intermediate fusion needs at least one clinical feature")
        encoder.reset_classifier(0)
        self.encoder = encoder
        self.pool = check_pool(pool)
        dim = encoder.embed_dim
        self.clinical_mlp = nn.Sequential(nn.Linear(n_clinical, clinical_dim), nn.GELU(),
                                          nn.Dropout(dropout), nn.Linear(clinical_dim, clinical_dim))
        self.cross_attention = cross_attention
        width = dim + clinical_dim
        if cross_attention:
            if dim % heads:
                raise InputError(f"fusion.attention_heads={heads} must divide the encoder width {dim}")
            self.clinical_query = nn.Linear(clinical_dim, dim)
            self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
            width += dim
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Dropout(dropout), nn.Linear(width, 1))

    def forward(self, x: torch.Tensor, clinical: torch.Tensor | None = None) -> torch.Tensor:
        if clinical is None:
            raise InputError("intermediate fusion needs the clinical vector of every case")
        tokens, pooled = self.embed(x)
        c = self.clinical_mlp(clinical)
        parts = [pooled, c]
        if self.cross_attention:
            query = self.clinical_query(c).unsqueeze(1)                  # (B, 1, D)
            attended, _ = self.attention(query, tokens, tokens, need_weights=False)
            parts.append(attended.squeeze(1))
        return self.head(torch.cat(parts, dim=-1)).squeeze(-1)
