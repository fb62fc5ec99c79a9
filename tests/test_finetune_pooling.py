"""Pooling of the encoder's tokens into the classifier's embedding (``model.pool``)."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import roc_auc_score

from rn_classifier.errors import ConfigError, InputError
from rn_classifier.finetune import config as finetune_config
from rn_classifier.models import classifiers as networks
from rn_classifier.finetune.config import FinetuneConfig, validate_config
from rn_classifier.models.classifiers import ImageClassifier, pool_tokens
from rn_classifier.models import create_model


def _manual_mask_mean(tokens, mask, patch, grid):
    """Weighted mean written out patch by patch: weight = share of the patch inside the mask."""
    b, d = tokens.shape[0], tokens.shape[-1]
    out = torch.zeros(b, d)
    for i in range(b):
        weights = []
        for index in torch.cartesian_prod(*[torch.arange(g) for g in grid]).reshape(-1, len(grid)):
            region = tuple(slice(int(j) * patch, (int(j) + 1) * patch) for j in index)
            weights.append(float(mask[i][region].float().mean()))
        w = torch.tensor(weights)
        out[i] = (w[:, None] * tokens[i, 1:]).sum(0) / w.sum()
    return out


@pytest.mark.parametrize("spatial", [2, 3])
def test_mask_pooling_is_the_mask_weighted_mean_of_patch_tokens(spatial):
    torch.manual_seed(0)
    patch, grid = 4, (3,) * spatial
    size = [patch * g for g in grid]
    x = torch.randn(2, 2, *size)
    x[:, 1] = 0
    x[(0, 1, *[slice(2, 7)] * spatial)] = 1.0        # straddles several patches, partly
    x[(1, 1, *[slice(9, 12)] * spatial)] = 1.0        # one corner patch only
    tokens = torch.randn(2, 1 + 3 ** spatial, 5)
    pooled = pool_tokens(tokens, x, "mask", (patch,) * spatial)
    expected = _manual_mask_mean(tokens, x[:, 1] > 0.5, patch, grid)
    torch.testing.assert_close(pooled, expected)
    torch.testing.assert_close(pooled[1], tokens[1, -1])  # all weight on the last patch


def test_cls_avg_and_empty_mask_pooling():
    tokens = torch.randn(2, 1 + 8, 5)
    x = torch.zeros(2, 2, 8, 8, 8)                     # no lesion in the field of view
    torch.testing.assert_close(pool_tokens(tokens, x, "cls", (4, 4, 4)), tokens[:, 0])
    torch.testing.assert_close(pool_tokens(tokens, x, "avg", (4, 4, 4)), tokens[:, 1:].mean(1))
    torch.testing.assert_close(pool_tokens(tokens, x, "mask", (4, 4, 4)), tokens[:, 1:].mean(1))


def test_pool_choice_is_checked():
    assert finetune_config.POOLS == networks.POOLS  # the schema lists what the network builds
    cfg = FinetuneConfig()
    cfg.data.internal_manifest, cfg.data.internal_cache = "m.csv", "cache"
    cfg.model.pool = "max"
    with pytest.raises(ConfigError, match="model.pool"):
        validate_config(cfg)
    with pytest.raises(InputError, match="pool"):
        ImageClassifier(create_model("vit3d_tiny_p8", img_size=16, in_chans=2), pool="max")


def _small_lesion_crops(n, generator):
    """16³ crops of noise with one 3³ lesion at a random place; class 1 lesions are bright,
    class 0 lesions dark: trivially separable inside the mask, a few voxels of 4096 outside it."""
    x = torch.randn(n, 2, 16, 16, 16, generator=generator) * 0.5
    x[:, 1] = 0
    y = torch.arange(n) % 2
    corners = torch.randint(0, 13, (n, 3), generator=generator)
    for i, (a, b, c) in enumerate(corners.tolist()):
        x[i, 0, a:a + 3, b:b + 3, c:c + 3] += 2.0 if y[i] else -2.0
        x[i, 1, a:a + 3, b:b + 3, c:c + 3] = 1.0
    return x, y.float()


def test_tiny_model_with_mask_pooling_learns_small_lesions():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    x_train, y_train = _small_lesion_crops(48, gen)
    x_test, y_test = _small_lesion_crops(32, gen)
    net = ImageClassifier(create_model("vit3d_tiny_p8", img_size=16, in_chans=2), pool="mask")
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    for step in range(40):
        batch = torch.randperm(48, generator=gen)[:16]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x_train[batch]), y_train[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        auc = roc_auc_score(y_test.numpy(), net(x_test).numpy())
    assert auc > 0.9
