"""Model families (one config + one model class each), the size table and the one registry."""

from .beit import Beit, BeitConfig
from .common import VitlabModel
from .config import ModelConfig, ViT1dConfig, ViTConfig
from .cvt import CvT, CvTConfig
from .deit import DeiT, DeiTConfig
from .mobilevit import MobileViT, MobileViTConfig
from .pvt import PvtConfig, PyramidVisionTransformer
from .pvt_v2 import PvtV2Config, PyramidVisionTransformerV2
from .registry import (
    ARCHITECTURES,
    Architecture,
    UnknownModelError,
    build_model,
    config_from_dict,
    create_model,
    get_architecture,
    get_config,
    list_architectures,
    list_models,
)
from .swin import SwinConfig, SwinTransformer
from .vit import AttentionOutput, VisionTransformer
from .vit_1d import VisionTransformer1d

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "AttentionOutput",
    "Beit",
    "BeitConfig",
    "CvT",
    "CvTConfig",
    "DeiT",
    "DeiTConfig",
    "MobileViT",
    "MobileViTConfig",
    "ModelConfig",
    "PvtConfig",
    "PvtV2Config",
    "PyramidVisionTransformer",
    "PyramidVisionTransformerV2",
    "SwinConfig",
    "SwinTransformer",
    "UnknownModelError",
    "ViT1dConfig",
    "ViTConfig",
    "VisionTransformer",
    "VisionTransformer1d",
    "VitlabModel",
    "build_model",
    "config_from_dict",
    "create_model",
    "get_architecture",
    "get_config",
    "list_architectures",
    "list_models",
]
