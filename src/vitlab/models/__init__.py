"""Model configs, the model classes, the size table and the registry."""

from .config import ViT1dConfig, ViTConfig
from .registry import UnknownModelError, create_model, get_config, list_models
from .vit import AttentionOutput, VisionTransformer
from .vit_1d import VisionTransformer1d

__all__ = [
    "AttentionOutput",
    "UnknownModelError",
    "ViT1dConfig",
    "ViTConfig",
    "VisionTransformer",
    "VisionTransformer1d",
    "create_model",
    "get_config",
    "list_models",
]
