"""Data: the synthetic scenes the built-in models are trained on, and dataset loaders."""

from .datasets import ADE20K, Cityscapes, ImageMaskFolder, detect_layout, open_dataset
from .synthetic import (
    CALIBRATION_SEED,
    EVALUATION_SEED,
    SYNTHETIC_CLASSES,
    SyntheticScenes,
    make_scene,
)

__all__ = ["CALIBRATION_SEED", "EVALUATION_SEED", "SYNTHETIC_CLASSES", "SyntheticScenes", "make_scene",
           "ADE20K", "Cityscapes", "ImageMaskFolder", "detect_layout", "open_dataset"]
