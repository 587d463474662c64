"""The lean inference runtime: exported models behind a numpy API, without torch.

>>> from dtp_deploy.runtime import Segmenter
>>> seg = Segmenter.open("model.onnx")            # or model.engine (TensorRT)
>>> result = seg.predict(image)                   # (H, W, 3) uint8 RGB
>>> result.labels, result.keep_ratio, result.timing.total_ms

Nothing here imports torch, directly or indirectly; ``onnxruntime`` (``.onnx``) or
``tensorrt`` (``.engine``) is imported when a model is opened.
"""

from .backends import BACKENDS, RuntimeSetupError
from .processing import MODES, Plan
from .segmenter import Prediction, Segmenter, Timing

__all__ = ["BACKENDS", "MODES", "Plan", "Prediction", "RuntimeSetupError", "Segmenter", "Timing"]
