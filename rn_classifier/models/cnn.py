"""A from-scratch 3D CNN classifier built from MONAI's ResNet: the network a group would try first
on ~100 labelled lesions, and the honest yardstick for the ViT encoders.

:class:`CNNClassifier` reads the same two-channel crop as the ViT classifiers (T1CE + lesion
mask) and returns the same radiation-necrosis logit ``(B,)``; it has no tokens, so it has no
attention maps and no self-supervised start. Widths are named variants (as the ViTs' are in
:mod:`rn_classifier.models.registry`); the small one fits a 40³ crop on a 2-core CPU.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError

# variant: (blocks per stage, channels per stage). The first convolution is 3³ at stride 2 with no
# max-pool: it still reads every voxel (kernel > stride), so the 1–2-voxel rim and margin details
# reach its channels, where MONAI's default 7³ stem plus max-pool would average them over 4 mm.
# (A stride-1 stem with the max-pool was 6x slower per step on a 2-core CPU.)
CNN_VARIANTS: dict[str, tuple[list[int], list[int]]] = {
    "monai_resnet10_w16": ([1, 1, 1, 1], [16, 32, 64, 128]),
    "monai_resnet10_w32": ([1, 1, 1, 1], [32, 64, 128, 256]),
}


def is_cnn(name: str) -> bool:
    return name in CNN_VARIANTS


class CNNClassifier(nn.Module):
    """``forward(x: (B, C, X, Y, Z), clinical=None) → logits (B,)`` of a MONAI ResNet."""

    def __init__(self, name: str = "monai_resnet10_w16", in_chans: int = 2, head_dropout: float = 0.0):
        super().__init__()
        if name not in CNN_VARIANTS:
            raise InputError(f"unknown CNN {name!r}; known CNNs: {', '.join(sorted(CNN_VARIANTS))}")
        from monai.networks.nets import ResNet  # only here: predict never builds a CNN otherwise

        layers, widths = CNN_VARIANTS[name]
        self.arch_name = name
        self.net = ResNet("basic", layers, widths, spatial_dims=3, n_input_channels=in_chans,
                          conv1_t_size=3, conv1_t_stride=2, no_max_pool=True, num_classes=1)
        self.net.fc = nn.Sequential(nn.Dropout(head_dropout), self.net.fc)

    def forward(self, x: torch.Tensor, clinical: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return set()  # timm's grouping already exempts norms and biases (ndim <= 1)
