"""The self-supervised methods pretraining can run, one registry entry each (:mod:`.registry`).

Importing a method's module registers it; the shipped ones are imported here.
"""

from . import dino, mae, statistics  # noqa: F401  (registers DINO, MAE and statistics)
from .registry import (METHODS, SSLMethod, check_config, crop_sizes, encoder_crop_size, get_method,
                       list_methods, load_pretrain_config, method_section, new_pretrain_config,
                       pretrain_schema, register_method)

__all__ = ["METHODS", "SSLMethod", "check_config", "crop_sizes", "encoder_crop_size", "get_method",
           "list_methods", "load_pretrain_config", "method_section", "new_pretrain_config",
           "pretrain_schema", "register_method"]
