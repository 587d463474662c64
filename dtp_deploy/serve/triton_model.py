"""The Triton Python-backend models of a dtp model repository (see :mod:`.repository`).

Triton imports ``<model>/1/model.py``, which re-exports one class of this module as
``TritonPythonModel``; the code lives here once, in the installed package. Each class is
configured from its ``config.pbtxt`` parameters (string values):

- :class:`SegmenterModel`: the whole model: ``dtp_deploy.runtime.Segmenter`` on ``model_file``
  (ONNX Runtime on the CPU, a TensorRT engine on the GPU, or any backend ``Segmenter.open``
  knows, named by ``backend``). ``IMAGE`` uint8 ``[n, H, W, 3]`` in, ``LABELS`` int32
  ``[n, H, W]``, ``KEEP_RATIO`` float64 ``[n, S]``, ``KEEP_COUNTS`` int32 ``[n, windows, S]`` and,
  when asked for, ``SCORES`` float32 ``[n, K, H, W]`` out. All the images of one dynamic batch
  go through one ``Segmenter.predict_batch`` call, so the windows of equal size share network
  batches whatever their requests' image sizes.
- :class:`Preprocess` / :class:`Postprocess`: the two ends of the TensorRT ensemble (whole mode
  on a fixed-size engine).

Requests may carry parameters ``mode`` (``whole``/``slide``), ``crop``, ``stride`` (pixels)
and ``color`` (``rgb``/``bgr``); the defaults are the repository's parameters.
"""

from __future__ import annotations

import ctypes
import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by the Python backend's stub

from dtp_deploy.metadata import ModelMetadata
from dtp_deploy.runtime import processing
from dtp_deploy.serve.options import RequestOptions, check_image

__all__ = ["Postprocess", "Preprocess", "SegmenterModel"]


def _parameters(args: dict) -> tuple[dict, Path]:
    config = json.loads(args["model_config"])
    params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
    return params, Path(args["model_repository"]) / str(args["model_version"])


def _input(request, name: str) -> np.ndarray:
    return np.from_dlpack(pb_utils.get_input_tensor_by_name(request, name))


_set_capsule_name = ctypes.pythonapi.PyCapsule_SetName
_set_capsule_name.argtypes = [ctypes.py_object, ctypes.c_char_p]
_CONSUMED = ctypes.c_char_p(b"used_dltensor")  # kept alive: the capsule keeps a pointer to it


def _output(name: str, value: np.ndarray):
    """An output tensor, handed over through DLPack.

    Not ``Tensor(name, array)``: the stub's numpy binding reads the dtype's item size from
    numpy 1's struct layout, which numpy 2 changed (outputs came back empty). The stub marks
    the capsule consumed under a name numpy's capsule destructor does not know, so it is
    renamed to numpy's own; otherwise numpy reports an error for every output.
    """
    capsule = np.ascontiguousarray(value).__dlpack__()
    tensor = pb_utils.Tensor.from_dlpack(name, capsule)
    _set_capsule_name(capsule, _CONSUMED)
    return tensor


def _error(message: str):
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))


class SegmenterModel:
    """A ``Segmenter`` behind Triton's Python backend (see the module docstring)."""

    def initialize(self, args: dict) -> None:
        from dtp_deploy.runtime import Segmenter

        params, version_dir = _parameters(args)
        gpu = args.get("model_instance_kind") == "GPU"
        device = f"cuda:{args['model_instance_device_id']}" if gpu else "cpu"
        threads = int(params.get("threads", "0")) or None
        metadata = params.get("metadata_file")
        kwargs = {"threads": threads} if not gpu else {}
        self.segmenter = Segmenter.open(
            version_dir / params["model_file"], backend=params.get("backend", "auto"), device=device,
            metadata=version_dir / metadata if metadata else None, **kwargs)
        self.defaults = RequestOptions.from_parameters(params)
        self.max_pixels = int(params.get("max_pixels", "0"))
        labels = {"model": args["model_name"], "version": str(args["model_version"])}
        kept = pb_utils.MetricFamily(name="dtp_tokens_kept", kind=pb_utils.MetricFamily.COUNTER,
                                     description="Tokens entering each pruning stage, summed over images")
        seen = pb_utils.MetricFamily(name="dtp_tokens_seen", kind=pb_utils.MetricFamily.COUNTER,
                                     description="Tokens of the images' windows (those entering the first stage)")
        stages = range(self.segmenter.num_stages)
        self._kept = [kept.Metric(labels={**labels, "stage": str(s)}) for s in stages]
        self._seen = seen.Metric(labels=labels)
        self._families = (kept, seen)  # the metrics live as long as their families

    def execute(self, requests: list) -> list:
        responses: dict[int, object] = {}
        groups: dict[RequestOptions, list[tuple[int, np.ndarray]]] = {}
        for index, request in enumerate(requests):
            try:
                options = self.defaults.updated(request.parameters())
                images = _input(request, "IMAGE")
                for image in images:
                    check_image(image, self.max_pixels)
            except ValueError as err:
                responses[index] = _error(str(err))
                continue
            groups.setdefault(options, []).append((index, images))
        for options, members in groups.items():
            images = [image for _, batch in members for image in batch]
            try:
                predictions = self.segmenter.predict_batch(
                    images, color=options.color, mode=options.mode, crop=options.crop,
                    stride=options.stride, return_scores=any(
                        "SCORES" in requests[i].requested_output_names() for i, _ in members))
            except ValueError as err:
                for index, _ in members:
                    responses[index] = _error(str(err))
                continue
            first = 0
            for index, batch in members:
                mine = predictions[first:first + len(batch)]
                first += len(batch)
                responses[index] = self._response(requests[index], mine)
        return [responses[i] for i in range(len(requests))]

    def _response(self, request, predictions: list):
        wanted = request.requested_output_names()
        outputs = {
            "LABELS": np.stack([p.labels for p in predictions]).astype(np.int32),
            "KEEP_RATIO": np.asarray([p.keep_ratio for p in predictions], np.float64),
            "KEEP_COUNTS": np.stack([p.keep_counts for p in predictions]).astype(np.int32),
        }
        if "SCORES" in wanted:
            outputs["SCORES"] = np.stack([p.scores for p in predictions]).astype(np.float32)
        for p in predictions:  # the first stage sees every token of a window
            self._seen.increment(float(p.keep_counts[:, 0].sum()))
            for stage, count in enumerate(p.keep_counts.sum(0)):
                self._kept[stage].increment(float(count))
        return pb_utils.InferenceResponse(output_tensors=[
            _output(name, value) for name, value in outputs.items() if not wanted or name in wanted])

    def finalize(self) -> None:
        self.segmenter = None


class Preprocess:
    """Ensemble step 1: ``IMAGE`` uint8 ``[n, H, W, 3]`` -> ``images`` (the engine's input,
    resized and padded as in whole mode) and ``IMAGE_SIZE`` int32 ``[n, 2]``."""

    def initialize(self, args: dict) -> None:
        params, version_dir = _parameters(args)
        self.metadata = ModelMetadata.from_props(
            json.loads((version_dir / params["metadata_file"]).read_text()), params["metadata_file"])
        self.input_size = tuple(self.metadata.input_size)
        self.dtype = np.float16 if self.metadata.precision == "fp16" else np.float32
        self.max_pixels = int(params.get("max_pixels", "0"))

    def plan(self, height: int, width: int) -> processing.Plan:
        return processing.make_plan(height, width, mode="whole", patch=self.metadata.patch_size,
                                    input_size=self.input_size)

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                images = _input(request, "IMAGE")
                inputs, sizes = [], []
                for image in images:
                    check_image(image, self.max_pixels)
                    plan = self.plan(*image.shape[:2])
                    canvas = processing.prepare(image, plan, self.metadata.mean, self.metadata.std)
                    inputs.append(next(iter(processing.crops(canvas, plan))))
                    sizes.append(image.shape[:2])
            except ValueError as err:
                responses.append(_error(str(err)))
                continue
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                _output("images", np.stack(inputs).astype(self.dtype)),
                _output("IMAGE_SIZE", np.asarray(sizes, np.int32))]))
        return responses


class Postprocess(Preprocess):
    """Ensemble step 3: the engine's ``scores`` and ``keep_counts`` with ``IMAGE_SIZE`` ->
    ``LABELS`` and ``KEEP_RATIO`` (as :class:`SegmenterModel`)."""

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            scores = _input(request, "scores")
            keep = _input(request, "keep_counts")
            sizes = _input(request, "IMAGE_SIZE")
            labels, ratios = [], []
            for row, (height, width) in enumerate(sizes):
                plan = self.plan(int(height), int(width))
                grid = processing.stitch([scores[row].astype(np.float32)], plan)
                labels.append(processing.labels_from_grid(grid, plan))
                ratios.append(keep[row] / plan.tokens_per_window)
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                _output("LABELS", np.stack(labels).astype(np.int32)),
                _output("KEEP_RATIO", np.asarray(ratios, np.float64))]))
        return responses
