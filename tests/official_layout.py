"""Checkpoint files in the exact layout the official trainers write, for the loader tests.

Two independent records of the official layout, both written from reading the official code
(DToP: zbwxp/Dynamic-Token-Pruning on mmseg 1.x / mmengine; DoViT: FLHonker/DoViT-code on
mmseg 0.x / mmcv 0.x), never from this project's loader:

* module trees with the official module names, built from torch's own modules (so that
  ``state_dict()`` yields the official key names, and their forward is computed by torch's
  ``nn.MultiheadAttention`` / ``F.multi_head_attention_forward``, not by this project's code);
* a table of every official key and its shape per model (:func:`official_keys`).

The writers save them with the official top level: mmengine (``meta`` with ``dataset_meta``,
``cfg`` and versions, ``state_dict``, ``message_hub`` with ``HistoryBuffer`` objects and numpy
values, ``optimizer``, ``param_schedulers``) and mmcv 0.x (``meta`` with ``CLASSES``,
``PALETTE``, ``config``, ``mmseg_version``, ``hook_msgs``; ``state_dict``; ``optimizer``).
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# -- shared mmcv / mmseg pieces -------------------------------------------------------------


class PatchEmbed(nn.Module):  # mmseg.models.utils.embed.PatchEmbed, patch_norm=False
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.projection = nn.Conv2d(3, dim, kernel_size=16, stride=16)


class FFN(nn.Module):  # mmcv.cnn.bricks.transformer.FFN, num_fcs=2
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.0)),
                                    nn.Linear(hidden, dim), nn.Dropout(0.0))


class MMCVMultiheadAttention(nn.Module):  # mmcv's wrapper: the torch module sits at .attn
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.proj_drop = nn.Dropout(0.0)


class MMSegEncoderLayer(nn.Module):  # mmseg.models.backbones.vit.TransformerEncoderLayer
    def __init__(self, dim: int, heads: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim, eps=eps)
        self.attn = MMCVMultiheadAttention(dim, heads)
        self.ln2 = nn.LayerNorm(dim, eps=eps)
        self.ffn = FFN(dim, 4 * dim)

    def forward(self, x):  # pre-norm, residuals as identity inside attn and ffn
        h = self.ln1(x)
        x = x + self.attn.attn(h, h, h, need_weights=False)[0]
        return x + self.ffn.layers(self.ln2(x))


def _trunc(shape):
    return nn.Parameter(torch.nn.init.trunc_normal_(torch.empty(shape), std=0.5))


# -- DToP (mmseg 1.x: EncoderDecoderPrune, ViT_prune, PruneHead with ATMLoss) ----------------


class TPNAttention(nn.Module):  # atm_head.Attention, qkv_bias=True
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(0.1)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(0.0)


class TPNDecoderLayer(nn.TransformerDecoderLayer):  # torch's layer, cross-attention replaced
    def __init__(self, d_model: int, nhead: int, dim_feedforward: int) -> None:
        super().__init__(d_model=d_model, nhead=nhead, dim_feedforward=dim_feedforward)
        del self.multihead_attn
        self.multihead_attn = TPNAttention(d_model, nhead)


class SetCriterion(nn.Module):  # the ATM loss's criterion: a class-weight buffer
    def __init__(self, num_classes: int = 1, eos_coef: float = 0.1) -> None:
        super().__init__()
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight)


class ATMLoss(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.criterion = SetCriterion(num_classes=1)


class PruneHead(nn.Module):
    def __init__(self, in_dim: int, dim: int, heads: int, classes: int, layers: int = 3) -> None:
        super().__init__()
        self.loss_decode = ATMLoss()  # BaseDecodeHead builds it; conv_seg is deleted
        self.input_proj = nn.Linear(in_dim, dim)
        self.proj_norm = nn.LayerNorm(dim)
        self.decoder = nn.TransformerDecoder(TPNDecoderLayer(dim, heads, dim * 4), layers)
        self.q = nn.Embedding(classes, dim)
        self.class_embed = nn.Linear(dim, 2)


class SegDataPreProcessor(nn.Module):  # mean/std are non-persistent buffers: not in the file
    def __init__(self, mean, std) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(-1, 1, 1), False)
        self.register_buffer("std", torch.tensor(std).view(-1, 1, 1), False)


class MMSegViT(nn.Module):
    """mmseg ViT: the class token always exists and ``pos_embed`` always has its slot first."""

    def __init__(self, dim: int, heads: int, depth: int, img: int, final_norm: bool = False) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(dim)
        self.cls_token = _trunc((1, 1, dim))
        self.pos_embed = _trunc((1, 1 + (img // 16) ** 2, dim))
        self.layers = nn.ModuleList(MMSegEncoderLayer(dim, heads) for _ in range(depth))
        if final_norm:
            self.ln1 = nn.LayerNorm(dim, eps=1e-6)

    def embed(self, images):
        """``[cls, grid]`` tokens with position embeddings (the official order)."""
        x = self.patch_embed.projection(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return x + self.pos_embed


class DToPOfficial(nn.Module):
    def __init__(self, *, dim, heads, depth, img, classes, head_dim, head_heads, num_aux=2,
                 mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375)) -> None:
        super().__init__()
        self.data_preprocessor = SegDataPreProcessor(mean, std)
        self.backbone = MMSegViT(dim, heads, depth, img)
        self.decode_head = PruneHead(dim, head_dim, head_heads, classes)
        self.auxiliary_head = nn.ModuleList(PruneHead(dim, head_dim, head_heads, classes)
                                            for _ in range(num_aux))

    def first_block(self, images):
        """Official order of operations up to block 1 (``with_cls_token=False``: the class
        token is dropped after the position embedding)."""
        return self.backbone.layers[0](self.backbone.embed(images)[:, 1:])


# -- DoViT (mmseg 0.x: DoEncoderDecoder, DoViT backbone, FCN + Segmenter heads) ---------------


class TimmAttention(nn.Module):  # do_vit.MultiheadAttention (timm-style qkv)
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.num_heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(0.0)

    def forward(self, x):  # torch's own multi-head attention on the same weights
        t = x.transpose(0, 1)
        out, _ = F.multi_head_attention_forward(
            t, t, t, x.shape[-1], self.num_heads, self.qkv.weight, self.qkv.bias, None, None,
            False, 0.0, self.proj.weight, self.proj.bias, training=False, need_weights=False)
        return out.transpose(0, 1)


class DoViTLayer(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = TimmAttention(dim, heads)
        self.ln2 = nn.LayerNorm(dim, eps=1e-6)
        self.ffn = FFN(dim, 4 * dim)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.ffn.layers(self.ln2(x))


class ConvModule(nn.Module):  # mmcv ConvModule with a norm: conv without bias, then "bn"
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)


class FCNHead(nn.Module):  # num_convs=1, kernel_size=1, concat_input=False, dropout_ratio=0
    def __init__(self, dim: int, channels: int, classes: int) -> None:
        super().__init__()
        self.conv_seg = nn.Conv2d(channels, classes, 1)
        self.convs = nn.Sequential(ConvModule(dim, channels))


class DoViTBackbone(MMSegViT):
    def __init__(self, dim, heads, depth, img, num_aux, aux_channels, classes) -> None:
        super().__init__(dim, heads, depth, img, final_norm=True)
        self.layers = nn.ModuleList(DoViTLayer(dim, heads) for _ in range(depth))
        self.auxiliary_head = nn.ModuleList(FCNHead(dim, aux_channels, classes) for _ in range(num_aux))


class SegmenterMaskTransformerHead(nn.Module):  # mmseg 0.x; conv_seg deleted
    def __init__(self, dim: int, heads: int, classes: int, layers: int = 2) -> None:
        super().__init__()
        self.dec_proj = nn.Linear(dim, dim)
        self.layers = nn.ModuleList(MMSegEncoderLayer(dim, heads, eps=1e-5) for _ in range(layers))
        self.cls_emb = _trunc((1, classes, dim))
        self.patch_proj = nn.Linear(dim, dim, bias=False)
        self.classes_proj = nn.Linear(dim, dim, bias=False)
        self.decoder_norm = nn.LayerNorm(dim)
        self.mask_norm = nn.LayerNorm(classes)


class DoViTOfficial(nn.Module):
    def __init__(self, *, dim, heads, depth, img, classes, num_aux=3, aux_channels=16) -> None:
        super().__init__()
        self.backbone = DoViTBackbone(dim, heads, depth, img, num_aux, aux_channels, classes)
        self.decode_head = SegmenterMaskTransformerHead(dim, heads, classes)

    def first_block(self, images):
        """``[cls, grid]`` after block 1, in the official order."""
        return self.backbone.layers[0](self.backbone.embed(images))


def add_mmcv_ema_buffers(model: nn.Module) -> None:
    """What mmcv 0.x's EMAHook does before training: one ``ema_<name>`` buffer per parameter."""
    for name, param in list(model.named_parameters()):
        model.register_buffer(f"ema_{name.replace('.', '_')}", param.detach().clone())


# -- the independent table of official keys and shapes ----------------------------------------


def _mmseg_layer(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.ln1.weight": (c,), f"{prefix}.ln1.bias": (c,),
            f"{prefix}.attn.attn.in_proj_weight": (3 * c, c), f"{prefix}.attn.attn.in_proj_bias": (3 * c,),
            f"{prefix}.attn.attn.out_proj.weight": (c, c), f"{prefix}.attn.attn.out_proj.bias": (c,),
            f"{prefix}.ln2.weight": (c,), f"{prefix}.ln2.bias": (c,),
            f"{prefix}.ffn.layers.0.0.weight": (4 * c, c), f"{prefix}.ffn.layers.0.0.bias": (4 * c,),
            f"{prefix}.ffn.layers.1.weight": (c, 4 * c), f"{prefix}.ffn.layers.1.bias": (c,)}


def _vit_stem(c: int, img: int) -> dict[str, tuple[int, ...]]:
    return {"backbone.cls_token": (1, 1, c), "backbone.pos_embed": (1, 1 + (img // 16) ** 2, c),
            "backbone.patch_embed.projection.weight": (c, 3, 16, 16),
            "backbone.patch_embed.projection.bias": (c,)}


def official_keys(method: str, *, dim: int, depth: int, classes: int, img: int, num_aux: int,
                  head_dim: int = 0, aux_channels: int = 256, decoder_layers: int = 3,
                  mask_layers: int = 2) -> dict[str, tuple[int, ...]]:
    """Every key of an official checkpoint's ``state_dict`` and its shape."""
    c, k = dim, classes
    keys = _vit_stem(c, img)
    if method == "dtop":
        for i in range(depth):
            keys.update(_mmseg_layer(f"backbone.layers.{i}", c))
        d = head_dim
        for head in ["decode_head"] + [f"auxiliary_head.{a}" for a in range(num_aux)]:
            keys.update({f"{head}.input_proj.weight": (d, c), f"{head}.input_proj.bias": (d,),
                         f"{head}.proj_norm.weight": (d,), f"{head}.proj_norm.bias": (d,),
                         f"{head}.q.weight": (k, d), f"{head}.class_embed.weight": (2, d),
                         f"{head}.class_embed.bias": (2,),
                         f"{head}.loss_decode.criterion.empty_weight": (2,)})
            for j in range(decoder_layers):
                p = f"{head}.decoder.layers.{j}"
                keys.update({f"{p}.self_attn.in_proj_weight": (3 * d, d), f"{p}.self_attn.in_proj_bias": (3 * d,),
                             f"{p}.self_attn.out_proj.weight": (d, d), f"{p}.self_attn.out_proj.bias": (d,),
                             f"{p}.linear1.weight": (4 * d, d), f"{p}.linear1.bias": (4 * d,),
                             f"{p}.linear2.weight": (d, 4 * d), f"{p}.linear2.bias": (d,)})
                for name in ("q", "k", "v", "proj"):
                    keys.update({f"{p}.multihead_attn.{name}.weight": (d, d), f"{p}.multihead_attn.{name}.bias": (d,)})
                for n in (1, 2, 3):
                    keys.update({f"{p}.norm{n}.weight": (d,), f"{p}.norm{n}.bias": (d,)})
        return keys
    for i in range(depth):
        p = f"backbone.layers.{i}"
        keys.update({f"{p}.ln1.weight": (c,), f"{p}.ln1.bias": (c,), f"{p}.attn.qkv.weight": (3 * c, c),
                     f"{p}.attn.qkv.bias": (3 * c,), f"{p}.attn.proj.weight": (c, c), f"{p}.attn.proj.bias": (c,),
                     f"{p}.ln2.weight": (c,), f"{p}.ln2.bias": (c,),
                     f"{p}.ffn.layers.0.0.weight": (4 * c, c), f"{p}.ffn.layers.0.0.bias": (4 * c,),
                     f"{p}.ffn.layers.1.weight": (c, 4 * c), f"{p}.ffn.layers.1.bias": (c,)})
    keys.update({"backbone.ln1.weight": (c,), "backbone.ln1.bias": (c,)})
    for a in range(num_aux):
        p = f"backbone.auxiliary_head.{a}"
        keys.update({f"{p}.conv_seg.weight": (k, aux_channels, 1, 1), f"{p}.conv_seg.bias": (k,),
                     f"{p}.convs.0.conv.weight": (aux_channels, c, 1, 1),
                     f"{p}.convs.0.bn.weight": (aux_channels,), f"{p}.convs.0.bn.bias": (aux_channels,),
                     f"{p}.convs.0.bn.running_mean": (aux_channels,),
                     f"{p}.convs.0.bn.running_var": (aux_channels,), f"{p}.convs.0.bn.num_batches_tracked": ()})
    keys.update({"decode_head.dec_proj.weight": (c, c), "decode_head.dec_proj.bias": (c,),
                 "decode_head.cls_emb": (1, k, c), "decode_head.patch_proj.weight": (c, c),
                 "decode_head.classes_proj.weight": (c, c), "decode_head.decoder_norm.weight": (c,),
                 "decode_head.decoder_norm.bias": (c,), "decode_head.mask_norm.weight": (k,),
                 "decode_head.mask_norm.bias": (k,)})
    for j in range(mask_layers):
        keys.update(_mmseg_layer(f"decode_head.layers.{j}", c))
    return keys


#: The official models' sizes, from their configs (backbone, heads, crop size, classes).
OFFICIAL_MODELS = {
    "dtop-vit-b": dict(method="dtop", dim=768, depth=12, classes=150, img=512, num_aux=2, head_dim=384),
    "dtop-vit-l": dict(method="dtop", dim=1024, depth=24, classes=150, img=640, num_aux=2, head_dim=512),
    "dovit-vit-s": dict(method="dovit", dim=384, depth=12, classes=150, img=512, num_aux=3),
    "dovit-vit-b": dict(method="dovit", dim=768, depth=12, classes=150, img=512, num_aux=3),
    "dovit-vit-l": dict(method="dovit", dim=1024, depth=24, classes=19, img=768, num_aux=3),
}


# -- the official top levels -----------------------------------------------------------------


class HistoryBuffer:  # mmengine.logging.history_buffer.HistoryBuffer's pickled state
    def __init__(self, values) -> None:
        self.max_length = 1000000
        self._log_history = np.array(values, dtype=np.float64)
        self._count_history = np.ones(len(values), dtype=np.int64)


@contextlib.contextmanager
def _mmengine_importable():
    """Pickle finds the class by its module path, as it would with mmengine installed."""
    names = ("mmengine", "mmengine.logging", "mmengine.logging.history_buffer")
    saved = {n: sys.modules.get(n) for n in names}
    for n in names:
        sys.modules[n] = types.ModuleType(n)
    HistoryBuffer.__module__ = names[-1]
    sys.modules[names[-1]].HistoryBuffer = HistoryBuffer
    try:
        yield
    finally:
        HistoryBuffer.__module__ = __name__
        for n, module in saved.items():
            if module is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = module


def save_mmengine(path, model: nn.Module, *, classes, palette, cfg: str | None,
                  state_dict=None, ema: bool = False, reduce_zero_label: bool = True) -> None:
    """A file as mmengine's ``Runner.save_checkpoint`` writes it (mmseg 1.x, DToP)."""
    state = OrderedDict(model.state_dict() if state_dict is None else state_dict)
    meta = {"dataset_meta": {"classes": tuple(classes), "palette": [list(c) for c in palette],
                             "label_map": None, "reduce_zero_label": reduce_zero_label},
            "seed": 1234, "experiment_name": "prune_segvit", "time": "20231005_101010",
            "mmengine_version": "0.8.4", "epoch": 0, "iter": 40000}
    if cfg is not None:
        meta["cfg"] = cfg
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()  # real files carry per-parameter moments
    checkpoint = {
        "meta": meta,
        "state_dict": state,
        "message_hub": {
            "log_scalars": OrderedDict({"train/lr": HistoryBuffer([2e-5, 1.9e-5]),
                                        "train/loss": HistoryBuffer([3.2, 2.9])}),
            "runtime_info": OrderedDict({"iter": 40000, "max_iters": 40000, "cfg": cfg or "",
                                         "best_score": np.float64(0.4978), "best_ckpt": "best_mIoU.pth"}),
            "resumed_keys": OrderedDict({"train/lr": True, "train/loss": True, "iter": True}),
        },
        "optimizer": optimizer.state_dict(),
        "param_schedulers": [
            {"start_factor": 1e-6, "end_factor": 1.0, "begin": 0, "end": 1500, "by_epoch": False,
             "last_step": 40000, "verbose": False, "param_name": "lr", "base_values": [2e-5],
             "_global_step": 40000, "_get_value_called_within_step": False, "_last_value": [2e-5]},
            {"eta_min": 0.0, "power": 0.9, "begin": 1500, "end": 40000, "by_epoch": False,
             "last_step": 40000, "verbose": False, "param_name": "lr", "base_values": [2e-5],
             "_global_step": 40000, "_get_value_called_within_step": False, "_last_value": [0.0]},
        ],
    }
    if ema:  # mmengine's EMAHook: the averaged copy beside, under module.<name>, plus steps
        checkpoint["ema_state_dict"] = OrderedDict(
            [(f"module.{k}", v.clone()) for k, v in state.items()] + [("steps", torch.tensor(40000))])
    with _mmengine_importable():
        torch.save(checkpoint, path)


def save_mmcv(path, model: nn.Module, *, classes, palette, config: str | None) -> None:
    """A file as mmcv 0.x's ``save_checkpoint`` writes it for mmseg 0.x (DoViT)."""
    meta = {"env_info": "sys.platform: linux", "seed": 0, "exp_name": "segmenter_dovit.py",
            "mmseg_version": "0.20.2+abc1234", "CLASSES": tuple(classes),
            "PALETTE": [list(c) for c in palette], "mmcv_version": "1.4.0",
            "time": "Thu Oct  5 10:10:10 2023", "epoch": 1, "iter": 160000,
            "hook_msgs": {"last_ckpt": "work_dirs/iter_160000.pth", "best_score": np.float64(0.4812),
                          "best_ckpt": "work_dirs/best_mIoU_iter_160000.pth"}}
    if config is not None:
        meta["config"] = config
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    torch.save({"meta": meta, "state_dict": OrderedDict(model.state_dict()),
                "optimizer": optimizer.state_dict()}, path)
