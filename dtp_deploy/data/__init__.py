"""Data: the synthetic scenes the built-in models are trained on, and dataset loaders."""

from .synthetic import SYNTHETIC_CLASSES, SyntheticScenes, make_scene

__all__ = ["SYNTHETIC_CLASSES", "SyntheticScenes", "make_scene"]
