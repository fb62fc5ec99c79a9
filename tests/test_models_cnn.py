"""The MONAI 3D CNN classifier (models.cnn): the ViT classifiers' interface, and it learns."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from rn_classifier.errors import InputError
from rn_classifier.models.cnn import CNNClassifier, is_cnn


def _lesions(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-channel 16³ crops: noise, a cubic lesion mask, and a lesion whose rim is brighter than
    its core (label 1) or the reverse (label 0): a class told apart only inside the mask."""
    x = torch.randn(n, 2, 16, 16, 16, generator=generator) * 0.3
    y = torch.randint(0, 2, (n,), generator=generator)
    x[:, 1] = 0.0
    x[:, 1, 5:11, 5:11, 5:11] = 1.0
    rim = torch.zeros(16, 16, 16, dtype=torch.bool)
    rim[5:11, 5:11, 5:11] = True
    rim[6:10, 6:10, 6:10] = False
    core = torch.zeros_like(rim)
    core[6:10, 6:10, 6:10] = True
    sign = (2.0 * y - 1.0).view(n, 1, 1, 1)
    x[:, 0] += sign * rim.float() - sign * core.float()
    return x, y


def test_cnn_gives_one_logit_per_crop_and_names_the_known_variants():
    model = CNNClassifier("monai_resnet10_w16", in_chans=2)
    assert model(torch.zeros(3, 2, 16, 16, 16)).shape == (3,)
    assert is_cnn("monai_resnet10_w16") and not is_cnn("vit3d_tiny_p8")
    with pytest.raises(InputError, match="unknown CNN 'resnet_huge'.*monai_resnet10_w16"):
        CNNClassifier("resnet_huge")


def test_cnn_learns_a_rim_versus_core_contrast_it_has_not_seen():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = CNNClassifier("monai_resnet10_w16", in_chans=2)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(30):
        x, y = _lesions(16, g)
        loss = F.binary_cross_entropy_with_logits(model(x), y.float())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    x, y = _lesions(64, torch.Generator().manual_seed(1))  # crops the training never drew
    with torch.no_grad():
        auc = roc_auc_score(y.numpy(), model(x).numpy())
    assert auc > 0.95
