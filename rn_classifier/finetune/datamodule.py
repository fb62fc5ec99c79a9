"""Lightning DataModule over the preprocess cache, with MONAI augmentation.

Each cached crop is ``(2, X, Y, Z)`` = (T1CE, lesion mask), lesion-centred and larger than the
model's input (e.g. 40³ cached, 32³ model). A sample is a dictionary; MONAI dictionary
transforms move the image and its mask together:

training:   random crop to the model size (a random shift of the lesion in the field of view),
            flips, 90° rotations, a small affine (image bilinear, mask nearest), T1CE-only
            intensity scale / shift / Gaussian noise; optionally simulated other scanners
            (:mod:`.acquisition`: thick slices, bias field, Rician noise, contrast; off by default)
evaluation: centre crop to the model size

The batch holds ``input: (B, 2, X, Y, Z)``, ``label: (B,)`` float, ``clinical: (B, F)`` when
the model uses clinical data, and ``case_id``. Class balance (``train.balance``): ``sampler``
draws training cases with probability inversely proportional to their class frequency.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import (CenterSpatialCropd, Compose, ConcatItemsd, DeleteItemsd, EnsureTyped,
                              MapTransform, RandAffined, RandFlipd, RandGaussianNoised,
                              RandRotate90d, RandScaleIntensityd, RandShiftIntensityd,
                              RandSpatialCropd)
from torch.utils.data import WeightedRandomSampler

from ..data.cache import CropCache
from ..errors import InputError
from .acquisition import acquisition_transforms
from .config import AugmentConfig

IMAGE_KEYS = ("image", "mask")
FINETUNE_CHANNELS = ["t1ce", "mask"]


class LoadCropd(MapTransform):
    """``{"row": i}`` → ``{"image": (1, X, Y, Z), "mask": (1, X, Y, Z)}`` read from the cache."""

    def __init__(self, cache: CropCache):
        super().__init__(keys=IMAGE_KEYS)
        self.cache = cache

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        crop = self.cache[int(d["row"])]
        d["image"], d["mask"] = crop[0:1], crop[1:2]
        return d


def check_finetune_cache(cache: CropCache, crop_size: Sequence[int]) -> None:
    """The cache holds (T1CE, mask) crops at least as large as the model's input."""
    if cache.channels != FINETUNE_CHANNELS:
        raise InputError(f"{cache.folder}: fine-tuning needs crops with channels {FINETUNE_CHANNELS} "
                         f"(T1CE + lesion mask), this cache has {cache.channels}; preprocess the "
                         "labelled manifest (with masks)")
    if len(cache.crop_size) != len(crop_size) or any(c < m for c, m in zip(cache.crop_size, crop_size)):
        raise InputError(f"{cache.folder}: cached crops are {list(cache.crop_size)} voxels, smaller than "
                         f"the model crop model.crop_size={list(crop_size)}; preprocess with a larger crop "
                         "or lower model.crop_size")


def train_transform(cache: CropCache, crop_size: Sequence[int], aug: AugmentConfig) -> Compose:
    steps: list = [LoadCropd(cache),
                   RandSpatialCropd(keys=IMAGE_KEYS, roi_size=list(crop_size), random_size=False)]
    if aug.enabled:
        steps += [RandFlipd(keys=IMAGE_KEYS, prob=aug.flip_prob, spatial_axis=axis) for axis in range(3)]
        steps += [
            RandRotate90d(keys=IMAGE_KEYS, prob=aug.rotate90_prob, max_k=3, spatial_axes=(0, 1)),
            RandAffined(keys=IMAGE_KEYS, prob=aug.affine_prob, mode=("bilinear", "nearest"),
                        rotate_range=[math.radians(aug.rotate_deg)] * 3,
                        scale_range=[aug.scale] * 3, padding_mode="border"),
            RandScaleIntensityd(keys="image", factors=aug.intensity_scale, prob=aug.intensity_prob),
            RandShiftIntensityd(keys="image", offsets=aug.intensity_shift, prob=aug.intensity_prob),
            RandGaussianNoised(keys="image", std=aug.noise_std, prob=aug.intensity_prob),
        ]
        steps += acquisition_transforms(aug.acquisition, cache.spacing)
    return Compose(steps + _to_input())


def eval_transform(cache: CropCache, crop_size: Sequence[int]) -> Compose:
    return Compose([LoadCropd(cache), CenterSpatialCropd(keys=IMAGE_KEYS, roi_size=list(crop_size))]
                   + _to_input())


def _to_input() -> list:
    return [ConcatItemsd(keys=IMAGE_KEYS, name="input", dim=0), DeleteItemsd(keys=IMAGE_KEYS),
            EnsureTyped(keys="input", dtype=torch.float32, track_meta=False)]


def make_items(cache: CropCache, case_ids: Sequence[str], labels: Sequence[int] | None = None,
               clinical: np.ndarray | None = None) -> list[dict]:
    """One dictionary per case: ``row`` in the cache, ``label``, optional ``clinical`` vector."""
    rows = cache.rows_for(list(case_ids))
    items = []
    for i, (cid, row) in enumerate(zip(case_ids, rows)):
        item = {"case_id": str(cid), "row": int(row),
                "label": np.float32(labels[i]) if labels is not None else np.float32(-1)}
        if clinical is not None:
            item["clinical"] = clinical[i].astype(np.float32)
        items.append(item)
    return items


def balanced_sampler(labels: Sequence[int], seed: int) -> WeightedRandomSampler:
    """Draw ``len(labels)`` cases per epoch, each class with equal total probability."""
    y = np.asarray(labels, dtype=int)
    counts = np.bincount(y, minlength=2).astype(float)
    weights = 1.0 / counts[y]
    generator = torch.Generator().manual_seed(int(seed))
    return WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), num_samples=len(y),
                                 replacement=True, generator=generator)


class FinetuneDataModule(pl.LightningDataModule):
    """Training and validation cases of one fold (both from the internal cache).

    train_items / val_items: from :func:`make_items`.
    """

    def __init__(self, cache: CropCache, train_items: list[dict], val_items: list[dict],
                 crop_size: Sequence[int], augment: AugmentConfig, batch_size: int,
                 predict_batch_size: int, num_workers: int = 0, balance: str = "sampler",
                 seed: int = 0):
        super().__init__()
        check_finetune_cache(cache, crop_size)
        self.cache, self.crop_size = cache, list(crop_size)
        self.train_items, self.val_items = train_items, val_items
        self.augment, self.balance, self.seed = augment, balance, seed
        self.batch_size, self.predict_batch_size = batch_size, predict_batch_size
        self.num_workers = num_workers

    def train_dataloader(self) -> DataLoader:
        transform = train_transform(self.cache, self.crop_size, self.augment)
        transform.set_random_state(seed=self.seed)  # workers are re-seeded by MONAI's DataLoader
        dataset = Dataset(self.train_items, transform=transform)
        if self.balance == "sampler":
            sampler = balanced_sampler([int(it["label"]) for it in self.train_items], self.seed)
            return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler,
                              num_workers=self.num_workers,
                              persistent_workers=self.num_workers > 0)
        generator = torch.Generator().manual_seed(int(self.seed))
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=True, generator=generator,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return self.eval_loader(self.cache, self.val_items)

    def eval_loader(self, cache: CropCache, items: list[dict]) -> DataLoader:
        """Centre crops, no augmentation, in the order of ``items`` (for prediction)."""
        check_finetune_cache(cache, self.crop_size)
        return DataLoader(Dataset(items, transform=eval_transform(cache, self.crop_size)),
                          batch_size=self.predict_batch_size, shuffle=False,
                          num_workers=self.num_workers)
