"""The augmentations of :mod:`augment`, applied to a whole batch on the training device.

On a fast GPU the per-sample MONAI pipelines of :mod:`augment` cannot keep up: a DINO sample of
ViT-B/16 on 96³ views costs the GPU about 1 ms, the multi-crop of the same sample about 100 ms of
one CPU core. With ``data.augment_on: device`` the loader workers only read sub-volumes from the
cache and the views are made here, for the whole batch at once, from the same transforms in the
same order and with the same parameter distributions as the MONAI pipelines:

1. random-resized crop + flips + 90° rotations, folded into one affine sampling grid per view
   (``F.affine_grid`` + ``F.grid_sample``, trilinear, ``align_corners=False``): the crop of side
   fraction ``s`` at centre ``c`` resized to ``S``³ samples the sub-volume at ``c + diag(s)·M·u``
   for output coordinates ``u``, where ``M`` is the product of the flip and rotation matrices;
2. bias field ``exp(Σ c_ijk P_i(x) P_j(y) P_k(z))`` (Legendre, degree 3, as MONAI
   ``RandBiasField``), gamma with retained mean / std (``RandAdjustContrast``), intensity scale
   and shift, Gaussian blur (erf kernel truncated at 4 σ, zero padding, as MONAI
   ``GaussianSmooth``, computed as banded matrix products), Gaussian noise with
   ``std ~ U(0, noise_std)`` (``RandGaussianNoise``). Each change is computed only for the samples
   it applies to.

Each step is tested equal to the MONAI transform for the same parameters
(``tests/test_pretrain_batch_augment.py``). Per-sample parameters are drawn from a generator
seeded per optimizer step and rank, so a resumed run draws the same views.

Shapes: input ``x: (B, 1, X, Y, Z)``; outputs as :mod:`augment`: a list of ``(B, 1, S, S, S)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .config import AugmentConfig, DinoConfig, MaeConfig

PLANES = ((0, 1), (0, 2), (1, 2))
BIAS_DEGREE = 3
BLUR_TRUNCATED = 4.0


# -- random parameters ----------------------------------------------------------------------

def _uniform(g: torch.Generator, shape, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=g, dtype=torch.float64)


def _coin(g: torch.Generator, n: int, p: float) -> torch.Tensor:
    return torch.rand(n, generator=g, dtype=torch.float64) < p


def flip_matrix(axis: int) -> torch.Tensor:
    m = torch.eye(3, dtype=torch.float64)
    m[axis, axis] = -1.0
    return m


def rot90_matrix(k: int, plane: Sequence[int]) -> torch.Tensor:
    """Coordinate map of ``np.rot90(image, k, axes=plane)``: output at ``u`` reads input at ``M u``."""
    a, b = plane
    one = torch.eye(3, dtype=torch.float64)
    one[a, a] = one[b, b] = 0.0
    one[a, b], one[b, a] = 1.0, -1.0
    return torch.linalg.matrix_power(one, k % 4)


def random_orientations(g: torch.Generator, n: int, flip_prob: float, rotate_prob: float) -> torch.Tensor:
    """``(n, 3, 3)`` products of random flips (each axis with ``flip_prob``) then random 90°
    rotations (each plane with ``rotate_prob``, ``k ∈ {1, 2, 3}``), in the order of
    ``augment._geometry``."""
    out = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
    for axis in range(3):
        flip = _coin(g, n, flip_prob)
        out[flip] = out[flip] @ flip_matrix(axis)
    for plane in PLANES:
        rotate = _coin(g, n, rotate_prob)
        ks = torch.randint(1, 4, (n,), generator=g)
        for i in torch.nonzero(rotate).flatten().tolist():
            out[i] = out[i] @ rot90_matrix(int(ks[i]), plane)
    return out


# -- geometry -------------------------------------------------------------------------------

def crop_box(g: torch.Generator, n: int, in_size: Sequence[int], scale: Sequence[float]
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crop boxes as ``RandScaleCropd(random_size=True, random_center=True)``: integer
    sizes ``(n, 3)`` and starts ``(n, 3)`` in voxels."""
    in_size = torch.tensor([int(s) for s in in_size], dtype=torch.float64)
    lo = torch.clamp(torch.ceil(in_size * scale[0]), min=1)
    hi = torch.clamp(torch.ceil(in_size * scale[1]), min=1)
    size = torch.floor(lo + (hi - lo + 1) * torch.rand((n, 3), generator=g, dtype=torch.float64))
    size = torch.minimum(size, hi)
    start = torch.floor((in_size - size + 1) * torch.rand((n, 3), generator=g, dtype=torch.float64))
    return size, start


def sampling_grid(size: torch.Tensor, start: torch.Tensor, orientation: torch.Tensor,
                  in_size: Sequence[int], out_size: int, device, dtype=torch.float32) -> torch.Tensor:
    """``F.grid_sample`` grid ``(n, S, S, S, 3)`` for boxes (voxels) and orientations.

    In normalised coordinates of the sub-volume (``align_corners=False``) a box of ``L`` voxels
    starting at voxel ``a`` maps output coordinate ``u ∈ (-1, 1)`` to ``(L / W) u + (2a + L) / W - 1``,
    which is where ``F.interpolate(..., align_corners=False)`` of the cropped box samples.
    """
    w = torch.tensor([int(s) for s in in_size], dtype=torch.float64)
    scale = size / w                                   # (n, 3), axis order X, Y, Z
    centre = (2 * start + size) / w - 1.0
    linear = scale[:, :, None] * orientation           # diag(scale) @ M
    # affine_grid works in (W, H, D) = (Z, Y, X) order: reverse both axes of the matrix
    theta = torch.cat([linear.flip(1).flip(2), centre.flip(1)[:, :, None]], dim=2)
    n = theta.shape[0]
    return F.affine_grid(theta.to(device=device, dtype=dtype), [n, 1, out_size, out_size, out_size],
                         align_corners=False)


def resample(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Trilinear sampling; outside the sub-volume the border value is repeated (as the clamped
    source index of ``F.interpolate``)."""
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=False)


# -- intensity ------------------------------------------------------------------------------

def legendre_basis(n: int, degree: int, device, dtype=torch.float32) -> torch.Tensor:
    """``(degree + 1, n)`` Legendre polynomials on ``linspace(-1, 1, n)``."""
    x = torch.linspace(-1.0, 1.0, n, device=device, dtype=dtype)
    p = [torch.ones_like(x), x]
    for k in range(1, degree):
        p.append(((2 * k + 1) * x * p[k] - k * p[k - 1]) / (k + 1))
    return torch.stack(p[:degree + 1])


def bias_field_terms(degree: int = BIAS_DEGREE) -> list[tuple[int, int, int]]:
    """The ``(i, j, k)`` with ``i + j + k <= degree``, in MONAI's coefficient order."""
    return [(i, j, k) for i in range(degree + 1) for j in range(degree + 1 - i)
            for k in range(degree + 1 - i - j)]


def bias_field(x: torch.Tensor, coeffs: torch.Tensor, degree: int = BIAS_DEGREE) -> torch.Tensor:
    """``x * exp(field)``; ``coeffs: (B, n_terms)`` in :func:`bias_field_terms` order."""
    b, _, *shape = x.shape
    mat = torch.zeros(b, degree + 1, degree + 1, degree + 1, device=x.device, dtype=torch.float32)
    idx = torch.tensor(bias_field_terms(degree), device=x.device)
    mat[:, idx[:, 0], idx[:, 1], idx[:, 2]] = coeffs.to(device=x.device, dtype=torch.float32)
    px, py, pz = (legendre_basis(n, degree, x.device) for n in shape)
    field = torch.einsum("bijk,kz->bijz", mat, pz)         # one axis at a time: small intermediates
    field = torch.einsum("bijz,jy->biyz", field, py)
    field = torch.einsum("biyz,ix->bxyz", field, px)
    return x * torch.exp(field)[:, None].to(x.dtype)


def adjust_gamma(x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Per-sample gamma on min-max scaled intensities, then the sample's mean and (unbiased)
    standard deviation restored (MONAI ``AdjustContrast(retain_stats=True)``); ``gamma: (B,)``."""
    view = (-1,) + (1,) * (x.ndim - 1)
    flat = x.flatten(1)
    var, mean = torch.var_mean(flat, dim=1)
    lo, hi = torch.aminmax(flat, dim=1)
    rng = (hi - lo).view(view)
    out = ((x - lo.view(view)) / (rng + 1e-7)).clamp_(min=0).pow_(gamma.view(view).to(x.dtype))
    out = out.mul_(rng).add_(lo.view(view))
    var2, mean2 = torch.var_mean(out.flatten(1), dim=1)
    scale = var.sqrt() / (var2.sqrt() + 1e-8)
    return out.sub_(mean2.view(view)).mul_(scale.view(view)).add_(mean.view(view))


def gaussian_kernels(sigma: torch.Tensor, tail: int) -> torch.Tensor:
    """``(B, 2·tail + 1)`` erf-approximated Gaussian kernels (MONAI ``gaussian_1d(approx="erf")``),
    each cut at its own MONAI tail ``int(max(4σ, 0.5) + 0.5)``."""
    x = torch.arange(-tail, tail + 1, dtype=torch.float32, device=sigma.device)
    t = 0.70710678 / sigma.abs()[:, None]
    k = (0.5 * (torch.erf(t * (x + 0.5)) - torch.erf(t * (x - 0.5)))).clamp(min=0)
    own_tail = torch.floor(torch.clamp(sigma * BLUR_TRUNCATED, min=0.5) + 0.5)
    return k * (x.abs()[None] <= own_tail[:, None])


def blur_matrices(sigma: torch.Tensor, n: int) -> torch.Tensor:
    """``(B, n, n)`` banded matrices ``A`` with ``(A v)_i = Σ_t k_t v_{i+t}``: the 1D Gaussian
    convolution of a length-``n`` line with zero padding, per sample."""
    tail = int(max(float(sigma.max()) * BLUR_TRUNCATED, 0.5) + 0.5)
    k = gaussian_kernels(sigma, tail)                                    # (B, 2·tail + 1)
    i = torch.arange(n, device=sigma.device)
    offset = i[None, :] - i[:, None]                                     # j - i
    inside = offset.abs() <= tail
    a = k[:, (offset + tail).clamp(0, 2 * tail)]                         # (B, n, n)
    return a * inside


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with per-sample ``sigma: (B, 3)`` (voxels), zero padding.

    Each axis is one batched matrix product with a banded matrix (:func:`blur_matrices`): on a
    GPU the tensor cores do this faster than a grouped 3D convolution with per-sample kernels.
    """
    b, c, nx, ny, nz = x.shape
    sigma = sigma.to(device=x.device, dtype=torch.float32)
    ax, ay, az = (blur_matrices(sigma[:, i], n).to(x.dtype) for i, n in enumerate((nx, ny, nz)))
    x = torch.einsum("bcxyz,bwz->bcxyw", x, az)
    x = torch.einsum("bcxyz,bvy->bcxvz", x, ay)
    return torch.einsum("bcxyz,bux->bcuyz", x, ax)


# -- pipelines ------------------------------------------------------------------------------

class _BatchViews:
    """Shared machinery: one view type = box scale, output size and blur probability."""

    def __init__(self, aug: AugmentConfig):
        self.aug = aug

    def _geometry(self, g: torch.Generator, x: torch.Tensor, out_size: int, scale) -> torch.Tensor:
        n, in_size = x.shape[0], x.shape[2:]
        size, start = crop_box(g, n, in_size, scale)
        orient = random_orientations(g, n, self.aug.flip_prob, self.aug.rotate90_prob)
        return resample(x, sampling_grid(size, start, orient, in_size, out_size, x.device))

    @staticmethod
    def _on_subset(apply: torch.Tensor, x: torch.Tensor, fn) -> torch.Tensor:
        """``fn(x[idx], idx)`` on the samples where ``apply`` is true only (the others are not
        computed: the changes apply to 10-50 % of the samples)."""
        idx = torch.nonzero(apply).flatten()
        if len(idx) == 0:
            return x
        if len(idx) == x.shape[0]:
            return fn(x, idx)
        idx_dev = idx.to(x.device)
        x[idx_dev] = fn(x[idx_dev], idx)  # in place: x is this view's own buffer
        return x

    def _intensity(self, g: torch.Generator, noise_g: torch.Generator, x: torch.Tensor,
                   blur_prob: float, full: bool = True) -> torch.Tensor:
        """MR intensity changes in the order of ``augment._mr_intensity`` (``full=False``: only
        scale and shift, as the MAE pipeline). All parameters are drawn for every sample, in a
        fixed order, so the draws do not depend on which samples a change applies to."""
        a, n, dev = self.aug, x.shape[0], x.device
        view = (-1, 1, 1, 1, 1)
        if full:
            apply = _coin(g, n, a.bias_field_prob)
            coeffs = _uniform(g, (n, len(bias_field_terms())), *a.bias_field_coeff)
            x = self._on_subset(apply, x, lambda v, i: bias_field(v, coeffs[i]))
            apply, gamma = _coin(g, n, a.gamma_prob), _uniform(g, n, *a.gamma)
            x = self._on_subset(apply, x, lambda v, i: adjust_gamma(v, gamma[i].to(dev)))
        apply, factor = _coin(g, n, a.intensity_scale_prob), _uniform(g, n, -a.intensity_scale, a.intensity_scale)
        scale = torch.where(apply, 1.0 + factor, 1.0)
        apply, offset = _coin(g, n, a.intensity_shift_prob), _uniform(g, n, -a.intensity_shift, a.intensity_shift)
        shift = torch.where(apply, offset, 0.0)
        x = torch.addcmul(shift.to(dev, x.dtype).view(view), x, scale.to(dev, x.dtype).view(view))
        if full:
            apply, sigma = _coin(g, n, blur_prob), _uniform(g, (n, 3), *a.blur_sigma)
            x = self._on_subset(apply, x, lambda v, i: gaussian_blur(v, sigma[i].float().to(dev)))
            apply, std = _coin(g, n, a.noise_prob), _uniform(g, n, 0.0, a.noise_std)
            noise_seed = int(torch.randint(0, 2**62, (1,), generator=g))
            x = self._on_subset(apply, x, lambda v, i: v + self._noise(v.shape, noise_g, noise_seed)
                                * std[i].to(dev, x.dtype).view(view))
        return x

    @staticmethod
    def _noise(shape, noise_g: torch.Generator, seed: int) -> torch.Tensor:
        """Standard normal noise for the noisy samples only, from a seed drawn for the view."""
        noise_g.manual_seed(seed)
        return torch.randn(shape, generator=noise_g, device=noise_g.device)

    @staticmethod
    def generators(seed: int | Sequence[int], device: torch.device) -> tuple[torch.Generator, torch.Generator]:
        """A CPU generator for the per-sample parameters and one on ``device`` for the noise."""
        state = np.random.SeedSequence(seed).generate_state(2, dtype=np.uint64)
        g = torch.Generator().manual_seed(int(state[0] >> 1))
        noise_g = torch.Generator(device=device).manual_seed(int(state[1] >> 1))
        return g, noise_g


class BatchMultiCrop(_BatchViews):
    """DINO multi-crop of a batch: ``x (B, 1, X, Y, Z)`` → ``[global_1, global_2, local_1, ...]``."""

    def __init__(self, dino: DinoConfig, aug: AugmentConfig):
        super().__init__(aug)
        self.dino = dino

    @property
    def n_views(self) -> int:
        return 2 + self.dino.n_local_crops

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, seed: int | Sequence[int]) -> list[torch.Tensor]:
        d = self.dino
        g, noise_g = self.generators(seed, x.device)
        x = x.float()
        views = []
        for blur_prob in d.blur_prob[:2]:
            v = self._geometry(g, x, d.global_crop_size, d.global_crop_scale)
            views.append(self._intensity(g, noise_g, v, blur_prob))
        if d.n_local_crops:
            b = x.shape[0]
            many = x.repeat(d.n_local_crops, 1, 1, 1, 1)     # local view j of sample i at j·B + i
            v = self._geometry(g, many, d.local_crop_size, d.local_crop_scale)
            views += list(self._intensity(g, noise_g, v, d.blur_prob[2]).split(b))
        return views


class BatchMAECrop(_BatchViews):
    """MAE view of a batch: ``x (B, 1, X, Y, Z)`` → ``[view (B, 1, S, S, S)]``."""

    def __init__(self, mae: MaeConfig, aug: AugmentConfig):
        super().__init__(aug)
        self.mae = mae

    @property
    def n_views(self) -> int:
        return 1

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, seed: int | Sequence[int]) -> list[torch.Tensor]:
        g, noise_g = self.generators(seed, x.device)
        v = self._geometry(g, x.float(), self.mae.crop_size, self.mae.crop_scale)
        return [self._intensity(g, noise_g, v, 0.0, full=False)]
