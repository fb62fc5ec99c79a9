"""MAE (He et al. 2022): reconstruct the masked patches of one view from the visible ones.

The registry entry: config section ``mae:``, its checks, the one crop size, the view transforms
(loader: :class:`~rn_classifier.pretrain.augment.MAETransform`; device:
:class:`~rn_classifier.pretrain.batch_augment.BatchMAECrop`) and
:class:`~rn_classifier.pretrain.mae_module.MAEModule`.
"""

from __future__ import annotations

from ...errors import InputError
from ..config import MaeConfig, check_range
from .registry import SSLMethod, register_method


def check_mae(m: MaeConfig, cfg) -> None:
    if not 0.0 < m.mask_ratio < 1.0:
        raise InputError(f"mae.mask_ratio must be in (0, 1), got {m.mask_ratio}")
    check_range("mae.crop_scale", m.crop_scale, 0.0, 1.0)


def _loader_views(m: MaeConfig, augment):
    from ..augment import MAETransform

    return MAETransform(m, augment)


def _device_views(m: MaeConfig, augment):
    from ..batch_augment import BatchMAECrop

    return BatchMAECrop(m, augment)


def _module():
    from ..mae_module import MAEModule

    return MAEModule


MAE = register_method(SSLMethod(
    name="mae", config=MaeConfig, check=check_mae, crop_sizes=lambda m: {"crop_size": m.crop_size},
    loader_views=_loader_views, device_views=_device_views, module=_module,
    bf16_on_cpu=False))  # ViT-S MAE step: bf16 0.50-0.83x fp32 on the 2-core AMX CPU (RESULTS.md): the
                         # per-step weight casts cost what its small matmuls save
