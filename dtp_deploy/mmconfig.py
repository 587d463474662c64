"""Facts from an OpenMMLab config's Python text, read with :mod:`ast` and never executed.

mmengine (``meta["cfg"]``) and mmcv 0.x (``meta["config"]``) checkpoints carry the training
config as Python source: ``Config.pretty_text``, the merged config written as
``name = dict(key=value, ...)`` assignments. A config file as written by hand (with ``_base_``
files not merged, variables such as ``in_channels // 2``) reads the same way as far as it goes.

Only literals, ``dict(...)`` calls (with ``**other``), names assigned earlier in the same text
and arithmetic on numbers are evaluated; anything else (imports, function calls, comprehensions,
lazy-import class names) reads as unknown and the fact it would have given is simply absent.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Mapping
from typing import Any

#: Longest config text read; real configs are a few kB.
MAX_TEXT = 1_000_000


class _Unknown:
    """An expression the reader does not evaluate."""

    def __repr__(self) -> str:
        return "<unknown>"


UNKNOWN = _Unknown()

_NUMBER_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
               ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Reader:
    def __init__(self) -> None:
        self.names: dict[str, Any] = {}

    def value(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [self.value(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.Dict):
            out: dict[Any, Any] = {}
            for key, val in zip(node.keys, node.values):
                if key is None:  # {**other}
                    other = self.value(val)
                    if not isinstance(other, dict):
                        return UNKNOWN
                    out.update(other)
                else:
                    k = self.value(key)
                    if isinstance(k, (str, int, float, bool, tuple)):
                        out[k] = self.value(val)
            return out
        if isinstance(node, ast.Name):
            return self.names.get(node.id, UNKNOWN)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
            out = {}
            for arg in node.args:  # dict({...}): pretty_text's form for keys that are not names
                base = self.value(arg)
                if not isinstance(base, dict):
                    return UNKNOWN
                out.update(base)
            for kw in node.keywords:
                if kw.arg is None:
                    other = self.value(kw.value)
                    if not isinstance(other, dict):
                        return UNKNOWN
                    out.update(other)
                else:
                    out[kw.arg] = self.value(kw.value)
            return out
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            operand = self.value(node.operand)
            if _is_number(operand):
                return -operand if isinstance(node.op, ast.USub) else operand
            return UNKNOWN
        if isinstance(node, ast.BinOp) and type(node.op) in _NUMBER_OPS:
            left, right = self.value(node.left), self.value(node.right)
            if _is_number(left) and _is_number(right):
                try:
                    result = _NUMBER_OPS[type(node.op)](left, right)
                except (ZeroDivisionError, OverflowError):
                    return UNKNOWN
                return result if not isinstance(result, float) or math.isfinite(result) else UNKNOWN
            if isinstance(node.op, ast.Add) and isinstance(left, str) and isinstance(right, str):
                return left + right
        return UNKNOWN

    def assign(self, target: ast.AST, value: Any) -> None:
        if isinstance(target, ast.Name):
            self.names[target.id] = value


def read_config_text(text: str) -> dict[str, Any]:
    """Top-level assignments of a config's Python text -> their values (unknown ones omitted).

    Raises ``ValueError`` (with the reason) for text that is not Python or is too large.
    """
    if len(text) > MAX_TEXT:
        raise ValueError(f"config text of {len(text)} characters is longer than {MAX_TEXT}")
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        raise ValueError(f"config text is not Python ({type(err).__name__}: {err})") from None
    reader = _Reader()
    for stmt in tree.body:
        try:
            if isinstance(stmt, ast.Assign):
                value = reader.value(stmt.value)
                for target in stmt.targets:
                    reader.assign(target, value)
            elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
                reader.assign(stmt.target, reader.value(stmt.value))
        except RecursionError:  # absurdly nested expression: that one value stays unknown
            continue
    return {k: v for k, v in reader.names.items() if v is not UNKNOWN}


def _get(tree: Any, *path: Any) -> Any:
    for key in path:
        if isinstance(tree, Mapping) and key in tree:
            tree = tree[key]
        elif isinstance(tree, (list, tuple)) and isinstance(key, int) and -len(tree) <= key < len(tree):
            tree = tree[key]
        else:
            return None
    return None if tree is UNKNOWN else tree


def _numbers(value: Any, n: int | None = None) -> list[float] | None:
    if isinstance(value, (list, tuple)) and all(_is_number(v) for v in value) and value:
        if n is None or len(value) == n:
            return [float(v) for v in value]
    return None


def _pair(value: Any) -> list[int] | None:
    if _is_number(value) and int(value) == value:
        return [int(value), int(value)]
    nums = _numbers(value, 2)
    return [int(v) for v in nums] if nums and all(int(v) == v for v in nums) else None


def _steps(pipeline: Any) -> list[Mapping[str, Any]]:
    """Every transform dict of a pipeline, nested ones (``MultiScaleFlipAug``) included."""
    out: list[Mapping[str, Any]] = []
    if isinstance(pipeline, (list, tuple)):
        for step in pipeline:
            out.extend(_steps(step))
    elif isinstance(pipeline, Mapping):
        out.append(pipeline)
        out.extend(_steps(pipeline.get("transforms")))
    return out


#: mmseg dataset class -> this project's dataset name (``protocol["dataset"]``, the names
#: :mod:`dtp_deploy.data` and :mod:`dtp_deploy.runtime.protocol` use); others keep their name.
DATASET_NAMES = {"ADE20KDataset": "ade20k", "CityscapesDataset": "cityscapes",
                 "PascalContextDataset59": "pascal_context_59", "COCOStuffDataset": "coco_stuff"}
#: ``reduce_zero_label`` of mmseg's dataset classes when a config does not set it.
DATASET_REDUCE_ZERO_LABEL = {"ade20k": True, "pascal_context_59": True, "cityscapes": False}


def config_facts(text: str, method: str) -> dict[str, Any]:
    """What dtp-deploy uses from a DToP (mmseg 1.x) or DoViT (mmseg 0.x) training config.

    Returns only the facts found, among: ``mean``, ``std`` (RGB, 0-255), ``thresholds`` (per
    auxiliary head), ``low_conf_stop`` (DoViT ``diff_conf``), ``head_heads`` (the decode heads'
    attention heads), ``protocol`` (``crop_size`` [h, w], ``stride`` [h, w], ``test_scale``
    [w, h], ``dataset``, ``reduce_zero_label``). Raises ``ValueError`` for unreadable text.
    """
    cfg = read_config_text(text)
    model = cfg.get("model") if isinstance(cfg.get("model"), Mapping) else {}
    facts: dict[str, Any] = {}

    # Normalisation: mmseg 1.x data preprocessor, mmseg 0.x img_norm_cfg / Normalize step.
    test_pipeline = (_get(cfg, "test_dataloader", "dataset", "pipeline") or _get(cfg, "data", "test", "pipeline")
                     or cfg.get("test_pipeline"))
    norm_sources = [_get(model, "data_preprocessor"), cfg.get("data_preprocessor"), cfg.get("img_norm_cfg")]
    norm_sources += [s for s in _steps(test_pipeline) if s.get("type") == "Normalize"]
    for source in norm_sources:
        mean, std = _numbers(_get(source, "mean"), 3), _numbers(_get(source, "std"), 3)
        if mean and std:
            facts["mean"], facts["std"] = tuple(mean), tuple(std)
            break

    if method == "dtop":
        aux = _get(model, "auxiliary_head")
        if isinstance(aux, Mapping):
            aux = [aux]
        if isinstance(aux, (list, tuple)) and aux and all(isinstance(h, Mapping) for h in aux):
            thresh = [h.get("thresh", 1.0) for h in aux]  # PruneHead's default: nothing exits
            if all(_is_number(t) for t in thresh):
                facts["thresholds"] = tuple(float(t) for t in thresh)
        head = _get(model, "decode_head")
        if isinstance(head, Mapping) and head.get("type", "PruneHead") == "PruneHead":
            heads = head.get("num_heads", 6)  # PruneHead's default
            if _is_number(heads):
                facts["head_heads"] = int(heads)
    else:
        backbone = _get(model, "backbone") or {}
        exit_conf = _get(backbone, "exit_conf")
        if _is_number(exit_conf):
            facts["thresholds"] = float(exit_conf)  # one value for every auxiliary head
        elif _numbers(exit_conf):
            facts["thresholds"] = tuple(_numbers(exit_conf) or ())
        diff = _get(backbone, "diff_conf")
        if _is_number(diff):
            facts["low_conf_stop"] = float(diff)
        heads = _get(model, "decode_head", "num_heads")
        if _is_number(heads):
            facts["head_heads"] = int(heads)

    protocol: dict[str, Any] = {}
    test_cfg = _get(model, "test_cfg") or cfg.get("test_cfg")
    if isinstance(test_cfg, Mapping) and test_cfg.get("mode") == "slide":
        crop, stride = _pair(test_cfg.get("crop_size")), _pair(test_cfg.get("stride"))
        if crop and stride:
            protocol["crop_size"], protocol["stride"] = crop, stride
    for step in _steps(test_pipeline):
        # mmseg 1.x: Resize(scale=(w, h), keep_ratio=True); 0.x: MultiScaleFlipAug(img_scale=(w, h)).
        scale = None
        if step.get("type") == "Resize" and step.get("keep_ratio", False) is True:
            scale = _pair(step.get("scale"))
        elif step.get("type") == "MultiScaleFlipAug" and not step.get("img_ratios"):
            scale = _pair(step.get("img_scale"))
        if scale:
            protocol["test_scale"] = scale
            break
    dataset = (_get(cfg, "test_dataloader", "dataset", "type") or _get(cfg, "data", "test", "type")
               or cfg.get("dataset_type"))
    if isinstance(dataset, str):
        dataset = DATASET_NAMES.get(dataset, dataset)
        protocol["dataset"] = dataset
    reduce = _get(cfg, "test_dataloader", "dataset", "reduce_zero_label")
    if reduce is None:
        reduce = _get(cfg, "data", "test", "reduce_zero_label")
    if reduce is None:
        reduce = next((s["reduce_zero_label"] for s in _steps(test_pipeline)
                       if s.get("type") == "LoadAnnotations" and "reduce_zero_label" in s), None)
    if reduce is None and isinstance(dataset, str):
        reduce = DATASET_REDUCE_ZERO_LABEL.get(dataset)
    if isinstance(reduce, bool):
        protocol["reduce_zero_label"] = reduce
    if protocol:
        facts["protocol"] = protocol
    return facts
