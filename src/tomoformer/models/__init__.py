"""Models: every model maps ``signals [B, T, H, W] dB`` (+ optional ``tx_pos [B, T, 3]``) to logits [B, H, W].

Build them by name with ``create_model("tomoformer_tiny", decoder="transformer")``; ``list_models()`` lists
the names.
"""

from tomoformer.models.classical import RTIModel, ThresholdModel
from tomoformer.models.features import frame_features, pixel_statistics
from tomoformer.models.registry import create_model, list_models, register_model
from tomoformer.models.seednet import SeedNet
from tomoformer.models.tomoformer import TomoFormer, TomoFormerConfig
from tomoformer.models.unet import UNet

__all__ = [
    "RTIModel",
    "SeedNet",
    "ThresholdModel",
    "TomoFormer",
    "TomoFormerConfig",
    "UNet",
    "create_model",
    "frame_features",
    "list_models",
    "pixel_statistics",
    "register_model",
]
