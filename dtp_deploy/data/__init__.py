"""Data: the synthetic scenes the built-in models are trained on, and dataset loaders."""

from .datasets import ADE20K, Cityscapes, ImageMaskFolder, detect_layout, open_dataset
from .synthetic import SYNTHETIC_CLASSES, SyntheticScenes, make_scene

__all__ = ["SYNTHETIC_CLASSES", "SyntheticScenes", "make_scene",
           "ADE20K", "Cityscapes", "ImageMaskFolder", "detect_layout", "open_dataset"]
