"""Loading and saving checkpoints.

Three inputs are accepted by :func:`load_model`:

* our own format: ``{"format": "dtp-deploy", "config": {...}, "state_dict": {...}}``, which
  rebuilds the model with no extra flags;
* an official DToP checkpoint (mmseg/mmengine ``{"state_dict": ...}`` with ``backbone.*``,
  ``decode_head.*``, ``auxiliary_head.{k}.*`` names);
* an official DoViT checkpoint (mmseg names with timm-style ``backbone.layers.{i}.attn.qkv``,
  FCN heads under ``backbone.auxiliary_head.{k}``, a Segmenter ``decode_head``);
* a bare state dict with any of these namings.

For the last two the architecture is inferred from the weight shapes or given with ``arch``.
Nothing is loaded partially: any missing, unexpected or mis-shaped key is an error that names
the file, the keys and the likely fix.
"""

from __future__ import annotations

import functools
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .mmconfig import config_facts
from .models import PRESETS, ModelConfig, TokenPruningSegmenter, build_from_config, preset
from .models.config import DATASET_VARIANTS

FORMAT = "dtp-deploy"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message says why and what to do."""


# Official (mmseg) DToP backbone names -> ours. Heads keep their names under a new prefix.
_MMSEG_BLOCK = [
    ("ln1.", "norm1."), ("attn.attn.in_proj_weight", "attn.qkv.weight"),
    ("attn.attn.in_proj_bias", "attn.qkv.bias"), ("attn.attn.out_proj.", "attn.proj."),
    ("ln2.", "norm2."), ("ffn.layers.0.0.", "mlp.fc1."), ("ffn.layers.1.", "mlp.fc2."),
]


# Official DoViT backbone blocks: timm-style attention, mmseg norms and FFN.
_DOVIT_BLOCK = [
    ("ln1.", "norm1."), ("attn.qkv.", "attn.qkv."), ("attn.proj.", "attn.proj."),
    ("ln2.", "norm2."), ("ffn.layers.0.0.", "mlp.fc1."), ("ffn.layers.1.", "mlp.fc2."),
]


def _rename(rest: str, table: list[tuple[str, str]], *, to_ours: bool) -> str:
    for old, ours in table:
        src, dst = (old, ours) if to_ours else (ours, old)
        if rest.startswith(src):
            return dst + rest[len(src):]
    return rest


def _dtop_head_prefixes(num_stages: int) -> list[tuple[str, str]]:
    pairs = [(f"auxiliary_head.{k}.", f"heads.{k}.") for k in range(num_stages - 1)]
    return pairs + [("decode_head.", f"heads.{num_stages - 1}.")]


def from_official(state: Mapping[str, torch.Tensor], num_stages: int) -> dict[str, torch.Tensor]:
    """Official DToP (mmseg) names -> this project's names. Unknown keys pass through
    unchanged, so that the strict load reports them."""
    out: dict[str, torch.Tensor] = {}
    heads = _dtop_head_prefixes(num_stages)
    for key, value in state.items():
        new = key
        if key == "backbone.pos_embed":
            new = "encoder.pos_embed"
            value = value[:, 1:] if value.shape[1] == _grid_tokens_with_cls(value) else value
        elif key == "backbone.cls_token":
            continue  # DToP runs without a class token
        elif key.startswith("backbone.patch_embed.projection."):
            new = key.replace("backbone.patch_embed.projection.", "encoder.patch_embed.proj.")
        elif m := re.match(r"backbone\.layers\.(\d+)\.(.*)", key):
            rest = m.group(2)
            for old, ours in _MMSEG_BLOCK:
                if rest.startswith(old):
                    rest = ours + rest[len(old):]
                    break
            new = f"encoder.blocks.{m.group(1)}.{rest}"
        else:
            for old, ours in heads:
                if key.startswith(old):
                    new = ours + key[len(old):]
                    break
        out[new] = value
    return out


def to_official(model: TokenPruningSegmenter) -> dict[str, torch.Tensor]:
    """This project's names -> the official names of the model's method (DToP: incl. the
    unused class token; DoViT: see :func:`dovit_to_official`)."""
    if model.config.method == "dovit":
        return dovit_to_official(model)
    inverse_heads = [(ours, old) for old, ours in _dtop_head_prefixes(model.config.num_stages)]
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if key == "encoder.pos_embed":
            out["backbone.pos_embed"] = torch.cat([value.new_zeros(1, 1, value.shape[-1]), value], 1)
            out["backbone.cls_token"] = value.new_zeros(1, 1, value.shape[-1])
        elif key.startswith("encoder.patch_embed.proj."):
            out[key.replace("encoder.patch_embed.proj.", "backbone.patch_embed.projection.")] = value
        elif m := re.match(r"encoder\.blocks\.(\d+)\.(.*)", key):
            rest = m.group(2)
            for old, ours in _MMSEG_BLOCK:
                if rest.startswith(ours):
                    rest = old + rest[len(ours):]
                    break
            out[f"backbone.layers.{m.group(1)}.{rest}"] = value
        else:
            for ours, old in inverse_heads:
                if key.startswith(ours):
                    out[old + key[len(ours):]] = value
                    break
    return out


def dovit_from_official(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official DoViT (mmseg) names -> ours. Unknown keys pass through for the strict load."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = key
        if key == "backbone.pos_embed":  # (1, 1 + N, C), the class token's slot first
            out["encoder.cls_pos_embed"] = value[:, :1]
            new, value = "encoder.pos_embed", value[:, 1:]
        elif key == "backbone.cls_token":
            new = "encoder.cls_token"
        elif key.startswith("backbone.patch_embed.projection."):
            new = key.replace("backbone.patch_embed.projection.", "encoder.patch_embed.proj.")
        elif key.startswith("backbone.ln1."):  # the final norm
            new = key.replace("backbone.ln1.", "final_norm.")
        elif m := re.match(r"backbone\.layers\.(\d+)\.(.*)", key):
            new = f"encoder.blocks.{m.group(1)}.{_rename(m.group(2), _DOVIT_BLOCK, to_ours=True)}"
        elif m := re.match(r"backbone\.auxiliary_head\.(\d+)\.(.*)", key):
            new = f"aux_heads.{m.group(1)}.{m.group(2)}"
        elif m := re.match(r"decode_head\.layers\.(\d+)\.(.*)", key):
            new = f"decode_head.layers.{m.group(1)}.{_rename(m.group(2), _MMSEG_BLOCK, to_ours=True)}"
        out[new] = value
    return out


def dovit_to_official(model: TokenPruningSegmenter) -> dict[str, torch.Tensor]:
    """Ours -> official DoViT (mmseg) names. The official backbone always runs with a class
    token, so a model without one has no official form."""
    if not model.config.extra.get("class_token"):
        raise ValueError(f"{model.config.arch} has no class token; official DoViT checkpoints "
                         "need one (extra['class_token'] = True). Save it with save_model instead.")
    state = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    out["backbone.cls_token"] = state["encoder.cls_token"]
    out["backbone.pos_embed"] = torch.cat([state["encoder.cls_pos_embed"], state["encoder.pos_embed"]], dim=1)
    for key, value in state.items():
        if key in ("encoder.pos_embed", "encoder.cls_pos_embed", "encoder.cls_token"):
            continue
        new = key
        if key.startswith("encoder.patch_embed.proj."):
            new = key.replace("encoder.patch_embed.proj.", "backbone.patch_embed.projection.")
        elif key.startswith("final_norm."):
            new = key.replace("final_norm.", "backbone.ln1.")
        elif m := re.match(r"encoder\.blocks\.(\d+)\.(.*)", key):
            new = f"backbone.layers.{m.group(1)}.{_rename(m.group(2), _DOVIT_BLOCK, to_ours=False)}"
        elif m := re.match(r"aux_heads\.(\d+)\.(.*)", key):
            new = f"backbone.auxiliary_head.{m.group(1)}.{m.group(2)}"
        elif m := re.match(r"decode_head\.layers\.(\d+)\.(.*)", key):
            new = f"decode_head.layers.{m.group(1)}.{_rename(m.group(2), _MMSEG_BLOCK, to_ours=False)}"
        out[new] = value
    return out


def _grid_tokens_with_cls(pos_embed: torch.Tensor) -> int:
    """``1 + g*g`` when the official position embedding carries a class-token slot."""
    n = pos_embed.shape[1]
    side = int(round((n - 1) ** 0.5))
    return n if side * side == n - 1 else -1


def _is_official(state: Mapping[str, Any]) -> bool:
    return any(k.startswith("backbone.") for k in state)


def _is_dovit(state: Mapping[str, Any]) -> bool:
    """Our naming of a DoViT model (its decode head has class embeddings)."""
    return "decode_head.cls_emb" in state


def _pick_arch(method: str, embed_dim: int, depth: int, num_stages: int, path: str) -> str:
    matches = [name for name, cfg in PRESETS.items() if cfg.method == method
               and cfg.embed_dim == embed_dim and cfg.depth == depth and cfg.num_stages == num_stages]
    if len(matches) != 1:
        raise CheckpointError(
            f"{path}: cannot tell the architecture from its weights ({method}, embed dim "
            f"{embed_dim}, {depth} blocks, {num_stages} heads); pass --arch, one of {sorted(PRESETS)}")
    return matches[0]


def _square_img_size(grid_tokens: int, patch_size: int, path: str) -> tuple[int, int]:
    side = int(round(grid_tokens ** 0.5))
    if side * side != grid_tokens:
        raise CheckpointError(f"{path}: position embedding has {grid_tokens} tokens, not a square "
                              "grid; save the model with dtp-deploy to keep its non-square size")
    return side * patch_size, side * patch_size


def _count(state: Mapping[str, Any], pattern: str) -> int:
    """1 + the largest number ``pattern`` captures over the keys (0 if none match)."""
    found = [int(m.group(1)) for k in state if (m := re.match(pattern, k))]
    return 1 + max(found) if found else 0


def infer_dovit_config(state: Mapping[str, torch.Tensor], arch: str | None, path: str) -> ModelConfig:
    """DoViT architecture from weight shapes (our naming); see :func:`infer_config`."""
    try:
        embed_dim = state["encoder.patch_embed.proj.weight"].shape[0]
        depth = _count(state, r"encoder\.blocks\.(\d+)\.")
        num_aux = _count(state, r"aux_heads\.(\d+)\.")
        _, num_classes, head_dim = state["decode_head.cls_emb"].shape
        head_layers = _count(state, r"decode_head\.layers\.(\d+)\.")
        aux_convs = _count(state, r"aux_heads\.0\.convs\.(\d+)\.")
        aux_channels = state["aux_heads.0.conv_seg.weight"].shape[1] if num_aux else 256
        aux_kernel = state["aux_heads.0.convs.0.conv.weight"].shape[-1] if num_aux and aux_convs else 1
        grid_tokens = state["encoder.pos_embed"].shape[1]
    except KeyError as err:
        raise CheckpointError(
            f"{path}: not a DoViT checkpoint this version understands (no {err}). Expected our "
            "format (saved by dtp-deploy) or official DoViT/mmseg names "
            "(backbone.layers.N.attn.qkv.weight, backbone.auxiliary_head.N.*, decode_head.*)."
        ) from None
    arch = arch or _pick_arch("dovit", embed_dim, depth, num_aux + 1, path)
    base = preset(arch)
    extra = {**base.extra, "class_token": "encoder.cls_token" in state,
             "final_norm": "final_norm.weight" in state, "aux_channels": int(aux_channels),
             "aux_convs": aux_convs, "aux_kernel": int(aux_kernel)}
    head_heads = base.head_heads if head_dim % base.head_heads == 0 else 1
    return preset(arch, num_classes=num_classes, head_dim=head_dim, head_heads=head_heads,
                  head_layers=head_layers, extra=extra,
                  img_size=_square_img_size(grid_tokens, base.patch_size, path))


def infer_config(state: Mapping[str, torch.Tensor], arch: str | None, path: str) -> ModelConfig:
    """Architecture from weight shapes (our naming): embed dim and depth pick the preset;
    classes, head width and trained size are read off the tensors."""
    if _is_dovit(state):
        return infer_dovit_config(state, arch, path)
    try:
        embed_dim = state["encoder.patch_embed.proj.weight"].shape[0]
        depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"encoder\.blocks\.(\d+)\.", k)))
        num_stages = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"heads\.(\d+)\.", k)))
        num_classes, head_dim = state["heads.0.q.weight"].shape
        head_layers = 1 + max(int(m.group(1)) for k in state
                              if (m := re.match(r"heads\.0\.decoder\.layers\.(\d+)\.", k)))
        grid_tokens = state["encoder.pos_embed"].shape[1]
    except (KeyError, ValueError) as err:
        raise CheckpointError(
            f"{path}: not a DToP checkpoint this version understands (no {err}). Expected our "
            "format (saved by dtp-deploy) or official DToP/mmseg names "
            "(backbone.layers.N.attn.attn.in_proj_weight, decode_head.*, auxiliary_head.N.*)."
        ) from None
    arch = arch or _pick_arch("dtop", embed_dim, depth, num_stages, path)
    img_size = _square_img_size(grid_tokens, PRESETS[arch].patch_size, path)
    base = preset(arch)
    head_heads = base.head_heads if head_dim % base.head_heads == 0 else 1
    return preset(arch, num_classes=num_classes, head_dim=head_dim, head_heads=head_heads,
                  head_layers=head_layers,
                  img_size=img_size)


class _TrainingLogState:
    """Stands in for training-log objects that official checkpoints pickle outside the weights
    (mmengine's ``HistoryBuffer`` in ``message_hub``): their state is kept as plain attributes
    and never used. No code of theirs runs."""


def _safe_globals() -> list[Any]:
    """What weights-only loading may rebuild beyond torch's own allow-list.

    Real trainer files pickle numpy values in their logs and meta (mmengine's ``message_hub``
    holds ``HistoryBuffer`` objects with numpy arrays; the best score that mmcv/mmengine hooks
    record is a numpy float). numpy arrays, scalars and dtypes are plain data; numpy 1.x files
    name them under ``numpy.core``, numpy 2.x under ``numpy._core``."""
    import numpy as np

    allowed: list[Any] = [np.ndarray, np.dtype,
                          (_TrainingLogState, "mmengine.logging.history_buffer.HistoryBuffer")]
    allowed += list({type(np.dtype(t)) for t in (np.float64, np.float32, np.float16, np.int64,
                                                 np.int32, np.uint8, np.bool_)})
    reconstruct, scalar = np.zeros(1).__reduce__()[0], np.float64(0).__reduce__()[0]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed += [(reconstruct, f"{module}._reconstruct"), (scalar, f"{module}.scalar")]
    return allowed


_UNSUPPORTED = re.compile(r"GLOBAL ([\w.]+)")


def _load_file(path: str) -> Any:
    """``torch.load`` with ``weights_only=True`` (never anything else): no code in the file runs.

    Errors say what is wrong and how to get a loadable file; torch's own advice (to load
    without ``weights_only``, which can run arbitrary code) is never passed on."""
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path}: is empty (0 bytes); was it written completely? "
                              "Copy or save the checkpoint again")
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt, foreign or unsafe files
        message = str(err)
        detail = message.split("WeightsUnpickler error:", 1)[-1]  # never torch's advice above it
        found = _UNSUPPORTED.search(detail) if "Weights only load failed" in message else None
        if found:
            raise CheckpointError(
                f"{path}: pickles {found.group(1)} beside its weights, which dtp-deploy does not "
                "load (only tensors and plain data are read, so that no code in the file can "
                "run). In the environment that trained it, and only for a file you trust, save "
                "the weights alone: torch.save({'meta': ckpt['meta'], 'state_dict': "
                "ckpt['state_dict']}, 'weights.pth') (drop the meta if it holds that object)"
            ) from None
        first = next((line.strip() for line in detail.splitlines() if line.strip()), "no details")
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: {first[:200]}). "
            "Is the file truncated or of another format?"
        ) from None


#: Entries of official state dicts that only training uses, skipped on load; anything else that
#: the model does not have is an error. Each: (key pattern, what it is).
TRAINING_ONLY: tuple[tuple[str, str], ...] = (
    (r"(decode_head|auxiliary_head\.\d+)\.loss_decode(\.\d+)?\.criterion\.empty_weight",
     "DToP's ATM loss buffer (SetCriterion's class weights with the no-object weight)"),
    (r"ema_[^.]+",
     "mmcv 0.x EMAHook's running averages (one ema_<name> buffer per parameter); the trained "
     "weights are loaded. mmengine's EMAHook keeps its copy under the separate top-level "
     "ema_state_dict, and its state_dict already holds the averaged weights"),
)

#: Where a setting came from, as ``dtp-info`` shows it.
FROM_PRESET, FROM_WEIGHTS, FROM_META, FROM_CONFIG, FROM_FLAG, FROM_OURS = (
    "preset", "weights", "checkpoint meta", "config text", "flag", "dtp-deploy checkpoint")
#: The settings whose origin is tracked.
TRACKED = ("arch", "num_classes", "img_size", "class_names", "palette", "mean", "std",
           "thresholds", "head_heads", "protocol")


def _drop_training_entries(state: Mapping[str, Any]) -> dict[str, Any]:
    patterns = [re.compile(p) for p, _ in TRAINING_ONLY]
    return {k: v for k, v in state.items() if not any(p.fullmatch(k) for p in patterns)}


def _meta_facts(data: Mapping[str, Any], num_classes: int, path: str) -> dict[str, Any]:
    """Class names, palette, ``reduce_zero_label`` and config text from an official file's meta:
    mmengine (``meta.dataset_meta.classes/palette``, ``meta.cfg``) or mmcv 0.x
    (``meta.CLASSES/PALETTE``, ``meta.config``)."""
    meta = data.get("meta")
    if not isinstance(meta, Mapping):
        return {}
    dataset_meta = meta.get("dataset_meta") if isinstance(meta.get("dataset_meta"), Mapping) else {}
    facts: dict[str, Any] = {}
    classes = dataset_meta.get("classes", meta.get("CLASSES"))
    palette = dataset_meta.get("palette", meta.get("PALETTE"))
    if classes is not None:
        if (not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes)
                or len(classes) != num_classes):
            raise CheckpointError(
                f"{path}: its meta lists {len(classes) if isinstance(classes, (list, tuple)) else 'no'} "
                f"class names but the weights have {num_classes} classes; the file mixes two models")
        facts["class_names"] = tuple(classes)
    if palette is not None:
        ok = isinstance(palette, (list, tuple)) and len(palette) == num_classes and all(
            isinstance(c, (list, tuple)) and len(c) == 3
            and all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in palette)
        if not ok:
            raise CheckpointError(f"{path}: its meta palette is not one RGB colour (0-255) for "
                                  f"each of the {num_classes} classes")
        facts["palette"] = tuple(tuple(int(v) for v in c) for c in palette)
    if isinstance(dataset_meta.get("reduce_zero_label"), bool):
        facts["reduce_zero_label"] = dataset_meta["reduce_zero_label"]
    text = meta.get("cfg", meta.get("config"))
    if isinstance(text, str) and text.strip():
        facts["config_text"] = text
    return facts


def _apply_file_facts(config: ModelConfig, data: Mapping[str, Any], sources: dict[str, str],
                      path: str) -> ModelConfig:
    """Use what an official file says about itself: dataset variant (by class count), meta,
    config text. Later sources override earlier ones."""
    changes: dict[str, Any] = {}
    variant = DATASET_VARIANTS.get((config.arch, config.num_classes))
    if variant:
        dataset, overrides = variant
        for key, value in overrides.items():
            if key == "thresholds":
                value = (value,) * (config.num_stages - 1)
            if key == "extra":
                value = {**config.extra, **value}
            changes[key] = value
            sources[key if key != "extra" else "low_conf_stop"] = f"{FROM_PRESET} ({dataset} variant)"
    meta = _meta_facts(data, config.num_classes, path)
    for key in ("class_names", "palette"):
        if key in meta:
            changes[key], sources[key] = meta[key], FROM_META
    protocol = dict(changes.get("protocol", config.protocol))
    if "reduce_zero_label" in meta:
        protocol["reduce_zero_label"] = meta["reduce_zero_label"]
        sources["protocol"] = FROM_META
    if "config_text" in meta:
        try:
            facts = config_facts(meta["config_text"], config.method)
        except ValueError as err:
            sources["config text"] = f"not read: {err}"
            facts = {}
        for key in ("mean", "std", "head_heads"):
            if key in facts:
                changes[key], sources[key] = facts[key], FROM_CONFIG
        thresholds = facts.get("thresholds")
        if isinstance(thresholds, float):
            thresholds = (thresholds,) * (config.num_stages - 1)
        if thresholds is not None:
            if len(thresholds) != config.num_stages - 1:
                raise CheckpointError(
                    f"{path}: its config gives {len(thresholds)} exit thresholds for "
                    f"{config.num_stages - 1} auxiliary heads in the weights; pass --threshold "
                    "once per auxiliary head")
            changes["thresholds"], sources["thresholds"] = tuple(thresholds), FROM_CONFIG
        if "low_conf_stop" in facts:
            changes["extra"] = {**changes.get("extra", config.extra), "low_conf_stop": facts["low_conf_stop"]}
            sources["low_conf_stop"] = FROM_CONFIG
        if facts.get("protocol"):
            protocol.update(facts["protocol"])
            sources["protocol"] = FROM_CONFIG
    changes["protocol"] = protocol
    if "head_heads" in changes and config.head_dim % changes["head_heads"]:
        raise CheckpointError(f"{path}: its config gives {changes['head_heads']} attention heads "
                              f"for decode heads of width {config.head_dim}; pass --head-heads")
    try:
        return config.replace(**changes)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None


def load_model(path: str | os.PathLike, *, arch: str | None = None,
               thresholds: Sequence[float] | None = None, pruning: bool = True,
               head_heads: int | None = None) -> TokenPruningSegmenter:
    """Load a checkpoint into an eval-mode model: our format, an official file as the DToP
    (mmengine) or DoViT (mmcv 0.x) trainer writes it, or a bare state dict.

    From official files the architecture comes from the weights (or ``arch``), class names and
    palette from the meta, and mean/std, exit thresholds, the decode heads' attention heads and
    the evaluation protocol from the config text in the meta (read, never executed); the rest
    from the preset. ``model.sources`` says where each setting came from. Entries listed in
    :data:`TRAINING_ONLY` are skipped; any other missing, unexpected or mis-shaped weight is an
    error naming the file and the fix.

    Args:
        path: the checkpoint file.
        arch: preset name; needed only when the weights do not say it (official/bare files).
        thresholds: per-auxiliary-stage exit thresholds overriding the checkpoint's, each in (0, 1].
        pruning: ``False`` for the dense baseline from the same weights.
        head_heads: attention heads of the decode heads (which weights cannot reveal), overriding
            the checkpoint's config and the preset.
    """
    path = str(path)
    data = _load_file(path)
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path}: holds a {type(data).__name__}, not a checkpoint dictionary")
    if data.get("format") == FORMAT:
        try:
            config = ModelConfig.from_dict(dict(data["config"]))
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: its dtp-deploy config is invalid ({err}); save the "
                                  "model again") from None
        if arch is not None and arch != config.arch:
            raise CheckpointError(f"{path}: holds a {config.arch} model, not {arch}; drop --arch")
        state = data["state_dict"]
        sources = {key: FROM_OURS for key in TRACKED}
        file_names: dict[str, str] = {}
    else:
        state = data.get("state_dict", data)
        if (not isinstance(state, Mapping) or not state
                or not all(isinstance(v, torch.Tensor) for v in state.values())):
            raise CheckpointError(f"{path}: no state dict of tensors found (top-level keys: "
                                  f"{sorted(map(str, data))[:8]})")
        state = _drop_training_entries(state)
        file_names = {}
        rename = None
        if _is_official(state) and any(
                re.fullmatch(r"backbone\.layers\.\d+\.attn\.qkv\.weight", k) for k in state):
            rename = dovit_from_official  # timm-style attention: DoViT
        elif _is_official(state):
            num_stages = 1 + sum(1 for k in state if re.fullmatch(r"auxiliary_head\.\d+\.q\.weight", k))
            rename = functools.partial(from_official, num_stages=num_stages)
        if rename is not None:
            # Errors name the file's own keys: ours -> the official key it came from.
            file_names = {ours: key for key, value in state.items() for ours in rename({key: value})}
            state = rename(state)
        if rename is dovit_from_official:
            config = infer_dovit_config(state, arch, path)
        else:
            config = infer_config(state, arch, path)
        sources = {key: FROM_PRESET for key in TRACKED}
        sources.update({key: FROM_WEIGHTS for key in ("arch", "num_classes", "img_size")})
        if arch:
            sources["arch"] = FROM_FLAG
        config = _apply_file_facts(config, data, sources, path)
    flags: dict[str, Any] = {}
    if thresholds is not None:
        flags["thresholds"] = tuple(float(t) for t in thresholds)
    if head_heads is not None:
        if head_heads < 1 or config.head_dim % head_heads:
            raise CheckpointError(f"--head-heads {head_heads} does not divide the decode heads' "
                                  f"width {config.head_dim}; pass a divisor of it")
        flags["head_heads"] = int(head_heads)
    if flags:
        config = config.replace(**flags)  # validated like every config (thresholds in (0, 1])
        sources.update({key: FROM_FLAG for key in flags})
    model = build_from_config(config)
    _strict_load(model, state, path, file_names)
    model.pruning = pruning
    model.sources = sources
    return model.eval()


def _strict_load(model: TokenPruningSegmenter, state: Mapping[str, torch.Tensor], path: str,
                 file_names: Mapping[str, str] | None = None) -> None:
    """All weights or nothing. Unexpected and mis-shaped keys are named as the file names them
    (``file_names``: our key -> the file's); missing ones as this project names them."""
    named = file_names or {}
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [named.get(k, k) for k in state if k not in expected]
    wrong = [f"{named.get(k, k)} {tuple(state[k].shape)} != {tuple(v.shape)}"
             for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = []
        for name, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", wrong)):
            if keys:
                parts.append(f"{len(keys)} {name} (first: {', '.join(keys[:4])})")
        raise CheckpointError(
            f"{path}: weights do not fit {model.config.arch}: {'; '.join(parts)}. "
            f"Check --arch (one of {sorted(PRESETS)}) and that the file is a "
            f"{'DoViT' if model.config.method == 'dovit' else 'DToP'} checkpoint.")
    model.load_state_dict(state, strict=True)


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` into a temporary file beside ``path`` and rename: never half-written."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make a shared checkpoint private
        torch.save(obj, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(model: TokenPruningSegmenter, path: str | os.PathLike) -> None:
    """Save in our format: the config (with the model's current thresholds) and the weights."""
    config = model.config.replace(thresholds=model.thresholds)
    atomic_save({"format": FORMAT, "version": __version__, "config": config.to_dict(),
                 "state_dict": model.state_dict()}, path)


def save_official(model: TokenPruningSegmenter, path: str | os.PathLike) -> None:
    """Save under the official mmseg names (``{"state_dict": ...}``), e.g. for round trips."""
    atomic_save({"meta": {"saved_by": f"dtp-deploy {__version__}"}, "state_dict": to_official(model)}, path)
