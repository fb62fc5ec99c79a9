"""DINO (Caron et al. 2021): self-distillation with a momentum teacher over multi-crop views.

The registry entry: config section ``dino:``, its checks, crop sizes (2 global + N local views),
the multi-crop transforms (loader: :class:`~rn_classifier.pretrain.augment.MultiCropTransform`;
device: :class:`~rn_classifier.pretrain.batch_augment.BatchMultiCrop`), the teacher momentum /
temperature schedules, and :class:`~rn_classifier.pretrain.dino_module.DINOModule`.
"""

from __future__ import annotations

from ...errors import InputError
from ..config import DinoConfig, check_probability, check_range
from .registry import SSLMethod, register_method


def check_dino(d: DinoConfig, cfg) -> None:
    if d.local_crop_size > d.global_crop_size:
        raise InputError(f"dino.local_crop_size ({d.local_crop_size}) is larger than "
                         f"dino.global_crop_size ({d.global_crop_size}); local crops must be the "
                         "smaller views")
    if d.n_local_crops < 0:
        raise InputError(f"dino.n_local_crops must be >= 0, got {d.n_local_crops}")
    check_range("dino.global_crop_scale", d.global_crop_scale, 0.0, 1.0)
    check_range("dino.local_crop_scale", d.local_crop_scale, 0.0, 1.0)
    if len(d.blur_prob) != 3:
        raise InputError(f"dino.blur_prob must list 3 probabilities (global view 1, global view 2, "
                         f"local views), got {list(d.blur_prob)}")
    for p in d.blur_prob:
        check_probability("dino.blur_prob", p)
    for key in ("teacher_momentum", "teacher_momentum_end", "center_momentum"):
        if not 0.0 <= getattr(d, key) <= 1.0:
            raise InputError(f"dino.{key} must be in [0, 1], got {getattr(d, key)}")
    if min(d.teacher_temp, d.warmup_teacher_temp, d.student_temp) <= 0:
        raise InputError("dino.teacher_temp, dino.warmup_teacher_temp and dino.student_temp must be > 0")


def _loader_views(d: DinoConfig, augment):
    from ..augment import MultiCropTransform

    return MultiCropTransform(d, augment)


def _device_views(d: DinoConfig, augment):
    from ..batch_augment import BatchMultiCrop

    return BatchMultiCrop(d, augment)


def _module():
    from ..dino_module import DINOModule

    return DINOModule


def _schedules(d: DinoConfig) -> dict:
    return dict(teacher_momentum=d.teacher_momentum, teacher_momentum_end=d.teacher_momentum_end,
                teacher_temp=d.teacher_temp, warmup_teacher_temp=d.warmup_teacher_temp,
                warmup_teacher_temp_epochs=d.warmup_teacher_temp_epochs)


DINO = register_method(SSLMethod(
    name="dino", config=DinoConfig, check=check_dino,
    crop_sizes=lambda d: {"global_crop_size": d.global_crop_size, "local_crop_size": d.local_crop_size},
    loader_views=_loader_views, device_views=_device_views, module=_module, schedules=_schedules,
    bf16_on_cpu=True))   # ViT-S DINO step: bf16 1.08-1.69x fp32 on the 2-core AMX CPU (RESULTS.md)
