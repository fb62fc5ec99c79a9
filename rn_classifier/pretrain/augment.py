"""Views of one cached sub-volume for self-supervised pretraining, built from MONAI transforms.

* DINO multi-crop in 3D (Caron et al. 2021, §3.1 and facebookresearch/dino ``DataAugmentationDINO``):
  2 global views and N local views are cut from the same sub-volume, each by a random-size,
  random-position crop (``RandScaleCropd``, side fraction in ``*_crop_scale``) resized to the view
  size (``Resized``, trilinear). Each view then gets random flips on every axis, random 90°
  rotations in the three planes, a bias field, gamma, intensity scale and shift, Gaussian blur and
  Gaussian noise. As in DINO, blur is certain on global view 1, rare on global view 2 and frequent
  on local views (``dino.blur_prob``); colour jitter / solarisation have no MRI counterpart and
  are replaced by the MR intensity changes above.
* MAE (He et al. 2022): one random-resized crop with flips and rotations and a light intensity
  scale/shift; masking happens in the model.
* Crop-statistics regression (``method: statistics``): the lesion-centred two-channel crop at
  native scale, as fine-tuning reads it, with flips and 90° rotations only. Its targets are
  intensity statistics of the lesion's regions, which these leave unchanged and which resizing,
  blur, gamma or intensity jitter would change.

Randomness: :meth:`__call__` takes a seed, and every random transform of every view draws from one
``numpy.random.RandomState`` built from it. The data module derives the seed from
``(run seed, epoch, sample)``, so a sample's views do not depend on which loader worker or which
rank made them, and a resumed run sees the same views as an uninterrupted one.

Input ``volume: (1, X, Y, Z)`` float32 (the T1CE channel of a cached crop); outputs are float32
torch tensors ``(1, S, S, S)``. :mod:`batch_augment` makes the same views for a whole batch on the
training device (GPU), where these per-sample pipelines would starve it; the loader then only
delivers :class:`RawSubVolume`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.data import get_track_meta, set_track_meta
from monai.transforms import (
    Compose,
    RandAdjustContrastd,
    RandBiasFieldd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandRotate90d,
    RandScaleCropd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Randomizable,
    Resized,
)

from ..data.crop import centre_crop
from .config import AugmentConfig, DinoConfig, MaeConfig

KEY = "image"
PLANES = ((0, 1), (0, 2), (1, 2))


def _crop_and_resize(size: int, scale: Sequence[float]) -> list:
    """Random-resized crop in 3D: side fraction ~ U(scale) per axis, resized to ``size``³."""
    return [RandScaleCropd(KEY, roi_scale=float(scale[0]), max_roi_scale=float(scale[1]),
                           random_center=True, random_size=True),
            Resized(KEY, spatial_size=(size,) * 3, mode="trilinear", align_corners=False)]


def _geometry(aug: AugmentConfig) -> list:
    """Flips on every axis and 90° rotations in every plane (any of the cube's orientations)."""
    return ([RandFlipd(KEY, prob=aug.flip_prob, spatial_axis=axis) for axis in range(3)]
            + [RandRotate90d(KEY, prob=aug.rotate90_prob, max_k=3, spatial_axes=plane) for plane in PLANES])


def _mr_intensity(aug: AugmentConfig, blur_prob: float) -> list:
    """MR intensity changes, in the order they arise: bias field, contrast, scale/shift, blur, noise."""
    lo, hi = aug.blur_sigma
    return [
        RandBiasFieldd(KEY, coeff_range=tuple(aug.bias_field_coeff), prob=aug.bias_field_prob),
        RandAdjustContrastd(KEY, gamma=tuple(aug.gamma), prob=aug.gamma_prob, retain_stats=True),
        RandScaleIntensityd(KEY, factors=aug.intensity_scale, prob=aug.intensity_scale_prob),
        RandShiftIntensityd(KEY, offsets=aug.intensity_shift, prob=aug.intensity_shift_prob),
        RandGaussianSmoothd(KEY, sigma_x=(lo, hi), sigma_y=(lo, hi), sigma_z=(lo, hi), prob=blur_prob),
        RandGaussianNoised(KEY, std=aug.noise_std, prob=aug.noise_prob),
    ]


def _as_tensor(x) -> torch.Tensor:
    """Plain float32 tensor (MONAI returns ``MetaTensor``s, whose metadata the batch does not need)."""
    x = x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)
    return x.float().contiguous()


class _SeededViews:
    """Apply view pipelines with one shared, seeded random state (see the module docstring)."""

    pipelines: list[Compose]

    def _seed(self, seed: int | Sequence[int]) -> None:
        state = np.random.RandomState(np.random.SeedSequence(seed).generate_state(4))
        for pipeline in self.pipelines:
            for t in pipeline.transforms:
                if isinstance(t, Randomizable):
                    t.set_random_state(state=state)

    def _view(self, pipeline: Compose, volume: torch.Tensor) -> torch.Tensor:
        return _as_tensor(pipeline({KEY: volume})[KEY])

    def __call__(self, volume: np.ndarray | torch.Tensor, seed: int | Sequence[int]) -> list[torch.Tensor]:
        """``volume: (1, X, Y, Z)`` → list of views ``(1, S, S, S)``, the same for the same seed."""
        self._seed(seed)
        # MONAI's metadata tracking (MetaTensor) costs more than the transforms themselves on
        # small crops and the batch never uses it: switch it off for this call only.
        tracking = get_track_meta()
        set_track_meta(False)
        try:
            return self._views(torch.as_tensor(volume, dtype=torch.float32))
        finally:
            set_track_meta(tracking)


class MultiCropTransform(_SeededViews):
    """DINO multi-crop: ``volume (1, X, Y, Z)`` → ``[global_1, global_2, local_1, ..., local_N]``.

    Global views are ``(1, G, G, G)`` with ``G = dino.global_crop_size``, local views
    ``(1, L, L, L)`` with ``L = dino.local_crop_size``.
    """

    def __init__(self, dino: DinoConfig, aug: AugmentConfig):
        g, loc = dino.global_crop_size, dino.local_crop_size
        blur1, blur2, blur_local = dino.blur_prob
        self.n_local = dino.n_local_crops
        self.global_1 = Compose(_crop_and_resize(g, dino.global_crop_scale) + _geometry(aug)
                                + _mr_intensity(aug, blur1))
        self.global_2 = Compose(_crop_and_resize(g, dino.global_crop_scale) + _geometry(aug)
                                + _mr_intensity(aug, blur2))
        self.local = Compose(_crop_and_resize(loc, dino.local_crop_scale) + _geometry(aug)
                             + _mr_intensity(aug, blur_local))
        self.pipelines = [self.global_1, self.global_2, self.local]

    @property
    def n_views(self) -> int:
        return 2 + self.n_local

    def _views(self, volume: torch.Tensor) -> list[torch.Tensor]:
        views = [self._view(self.global_1, volume), self._view(self.global_2, volume)]
        views += [self._view(self.local, volume) for _ in range(self.n_local)]
        return views


class MAETransform(_SeededViews):
    """MAE view: ``volume (1, X, Y, Z)`` → ``[view (1, S, S, S)]``, ``S = mae.crop_size``."""

    def __init__(self, mae: MaeConfig, aug: AugmentConfig):
        self.pipeline = Compose(
            _crop_and_resize(mae.crop_size, mae.crop_scale) + _geometry(aug)
            + [RandScaleIntensityd(KEY, factors=aug.intensity_scale, prob=aug.intensity_scale_prob),
               RandShiftIntensityd(KEY, offsets=aug.intensity_shift, prob=aug.intensity_shift_prob)])
        self.pipelines = [self.pipeline]

    @property
    def n_views(self) -> int:
        return 1

    def _views(self, volume: torch.Tensor) -> list[torch.Tensor]:
        return [self._view(self.pipeline, volume)]


class LesionViewTransform(_SeededViews):
    """``volume (2, X, Y, Z)`` (T1CE, lesion mask) → ``[view (2, S, S, S)]``: the centre crop of
    side ``S = crop_size`` (no resizing), flipped and turned by 90° as one (image and mask alike)."""

    def __init__(self, crop_size: int, aug: AugmentConfig):
        self.size = (int(crop_size),) * 3
        self.pipeline = Compose(_geometry(aug))
        self.pipelines = [self.pipeline]

    @property
    def n_views(self) -> int:
        return 1

    def _views(self, volume: torch.Tensor) -> list[torch.Tensor]:
        return [self._view(self.pipeline, torch.as_tensor(centre_crop(volume, self.size)))]


class RawSubVolume:
    """For on-device augmentation (``batch_augment``): the sub-volume itself as float16 (half the
    bytes to copy to the GPU; the cache stores float16), centre-cropped or padded to ``size``³ when
    it has another size (internal-cohort crops beside pool sub-volumes), so a batch stacks."""

    n_views = 1

    def __init__(self, size: Sequence[int]):
        self.size = tuple(int(s) for s in size)

    def __call__(self, volume: np.ndarray, seed=None) -> list[torch.Tensor]:
        if tuple(volume.shape[1:]) != self.size:
            volume = _as_tensor(centre_crop(volume, self.size))
        return [torch.as_tensor(volume).to(torch.float16).contiguous()]
