"""Optimiser (layer-wise lr decay, warm-up + cosine), class balance and augmentation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from rn_classifier.data.cache import CropCache, write_cache
from rn_classifier.finetune.config import AugmentConfig, OptimConfig
from rn_classifier.finetune.datamodule import balanced_sampler, eval_transform, train_transform
from rn_classifier.finetune.module import FinetuneModule, ImageClassifier
from rn_classifier.models import create_model


def _module(layer_decay=0.5, lr=1.0, epochs=2, steps=5, warmup=1.0, min_ratio=0.1):
    torch.manual_seed(0)
    net = ImageClassifier(create_model("vit3d_tiny_p8", img_size=16, in_chans=2))
    optim = OptimConfig(lr=lr, layer_decay=layer_decay, warmup_epochs=warmup, weight_decay=0.05,
                        min_lr_ratio=min_ratio)
    return FinetuneModule(net, optim, epochs=epochs, steps_per_epoch=steps)


def _group_of(optimizer, param):
    return next(g for g in optimizer.param_groups if any(p is param for p in g["params"]))


def test_layer_wise_lr_decay_follows_depth():
    module = _module(layer_decay=0.5)
    opt = module.configure_optimizers()["optimizer"]
    enc = module.network.encoder
    depth = len(enc.blocks)  # 4: stem = layer 0, blocks = 1..4, head = 5

    def peak(p):
        return _group_of(opt, p)["initial_lr"]  # the peak; "lr" is already scaled by the warm-up

    assert peak(module.network.head.weight) == pytest.approx(1.0)
    for i, block in enumerate(enc.blocks):
        assert peak(block.attn.qkv.weight) == pytest.approx(0.5 ** (depth - i))
    assert peak(enc.patch_embed.proj.weight) == pytest.approx(0.5 ** (depth + 1))
    assert peak(enc.norm.weight) == pytest.approx(peak(enc.blocks[-1].attn.qkv.weight))
    # no weight decay on position embedding, class token, norms and biases
    for p in (enc.pos_embed, enc.cls_token, enc.norm.weight, enc.blocks[0].attn.qkv.bias):
        assert _group_of(opt, p)["weight_decay"] == 0.0
    assert _group_of(opt, enc.blocks[0].attn.qkv.weight)["weight_decay"] == 0.05


def test_warmup_then_cosine_to_the_floor():
    module = _module(layer_decay=1.0, lr=2.0, epochs=2, steps=5, warmup=1.0, min_ratio=0.1)
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert conf["lr_scheduler"]["interval"] == "step"
    lrs = []
    for _ in range(module.total_steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    lrs.append(opt.param_groups[0]["lr"])
    warm = lrs[:module.warmup_steps]
    assert module.warmup_steps == 5 and all(a < b for a, b in zip(warm, warm[1:]))
    assert max(lrs) == pytest.approx(2.0)
    decay = lrs[module.warmup_steps - 1:]
    assert all(a >= b for a, b in zip(decay, decay[1:]))
    assert lrs[-1] == pytest.approx(0.2)


def test_class_balanced_sampler_draws_both_classes_equally():
    labels = [1] * 10 + [0] * 90
    drawn = np.array(labels)[list(balanced_sampler(labels, seed=0))]
    many = np.concatenate([np.array(labels)[list(balanced_sampler(labels, seed=s))] for s in range(20)])
    assert len(drawn) == len(labels)
    assert 0.4 < many.mean() < 0.6   # unweighted sampling would give 0.1


def _lesion_cache(tmp_path, crop=24):
    """Crops whose T1CE is exactly the lesion mask (an off-centre box)."""
    mask = np.zeros((crop,) * 3, np.float32)
    mask[4:12, 6:10, 9:17] = 1.0
    crops = np.stack([np.stack([mask, mask])] * 4)
    index = pd.DataFrame({"case_id": list("abcd"), "patient_id": list("abcd"), "center": "c",
                          "label": [0, 1, 0, 1], "synthetic": 1})
    return CropCache(write_cache(tmp_path / "cache", crops, index,
                                 {"spacing": [2.0] * 3, "channels": ["t1ce", "mask"],
                                  "normalisation": {"method": "none"}, "synthetic": True}))


def test_augmentation_moves_image_and_mask_together(tmp_path):
    cache = _lesion_cache(tmp_path)
    exact = AugmentConfig(affine_prob=0.0, intensity_prob=0.0, flip_prob=0.5, rotate90_prob=0.5)
    transform = train_transform(cache, [16, 16, 16], exact)
    transform.set_random_state(seed=0)
    outputs = [transform({"row": 0, "label": 0})["input"] for _ in range(12)]
    for x in outputs:
        assert tuple(x.shape) == (2, 16, 16, 16) and isinstance(x, torch.Tensor)
        torch.testing.assert_close(x[0], x[1])        # image and mask still coincide
    assert len({tuple(x[1].nonzero().float().mean(0).tolist()) for x in outputs}) > 1  # they moved

    affine = AugmentConfig(affine_prob=1.0, rotate_deg=20, scale=0.1, intensity_prob=0.0)
    transform = train_transform(cache, [16, 16, 16], affine)
    transform.set_random_state(seed=1)
    for _ in range(5):
        x = transform({"row": 0, "label": 0})["input"]
        assert set(torch.unique(x[1]).tolist()) <= {0.0, 1.0}  # the mask stays binary (nearest)
        image, mask = x[0] > 0.5, x[1] > 0.5
        if mask.sum() > 0:
            assert (image & mask).sum() / (image | mask).sum() > 0.7


def test_evaluation_is_a_deterministic_centre_crop(tmp_path):
    cache = _lesion_cache(tmp_path)
    transform = eval_transform(cache, [16, 16, 16])
    a, b = transform({"row": 1})["input"], transform({"row": 1})["input"]
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, torch.as_tensor(cache[1][:, 4:20, 4:20, 4:20]))
