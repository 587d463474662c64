"""The exporter's choices, importable without torch or onnx (``dtp-export --help`` on the lean
``dtp-deploy[ort]`` install shows them)."""

FLAVOURS = ("plugin", "portable")
POSTPROCESS = ("none", "argmax")
DEFAULT_OPSET = 18  # what TensorRT 10/11 and ONNX Runtime >= 1.14 all read
