"""Crop-statistics regression: predict the lesion's label-free crop statistics from its
two-channel view (issue 14; :mod:`rn_classifier.pretrain.statistics_module`).

The registry entry: config section ``statistics:`` (crop size, pooling), its checks, the one crop
size, the loader view transform (:class:`~rn_classifier.pretrain.augment.LesionViewTransform`:
lesion-centred, native scale, flips and 90° turns) and
:class:`~rn_classifier.pretrain.statistics_module.StatisticsModule`. It reads the mask
(``reads_mask``): only lesion-centred sub-volumes with a mask channel are used, and the encoder
is exported with 2 input channels.
"""

from __future__ import annotations

from ...errors import ConfigError, check_choice
from ...finetune.config import POOLS
from ..config import StatisticsConfig
from .registry import SSLMethod, register_method


def check_statistics(s: StatisticsConfig, cfg) -> None:
    check_choice(s.pool, "statistics.pool", POOLS, ConfigError)


def _loader_views(s: StatisticsConfig, augment):
    from ..augment import LesionViewTransform

    return LesionViewTransform(s.crop_size, augment)


def _module():
    from ..statistics_module import StatisticsModule

    return StatisticsModule


STATISTICS = register_method(SSLMethod(
    name="statistics", config=StatisticsConfig, check=check_statistics,
    crop_sizes=lambda s: {"crop_size": s.crop_size}, loader_views=_loader_views, device_views=None,
    module=_module, reads_mask=True,
    bf16_on_cpu=False))   # not measured on an AMX CPU: fp32 until benchmarks/pretrain_throughput.py says otherwise
