"""Token-pruning segmenters: a plain ViT cut into stages, a head after each stage.

The stage loop is shared by both methods (DESIGN.md section 1); a method only says what its
heads compute, how they grade tokens and how the final map is formed:

* DToP (Tang et al., ICCV 2023, "Dynamic Token Pruning in Plain Vision Transformers for
  Semantic Segmentation"): confident tokens leave the encoder; their prediction is frozen in a
  canvas of mask logits.
* DoViT (Liu et al., WACV 2024) plugs into the same loop with frozen features instead.

Everything is batched: after a split the batch is padded to the largest keep count, so each
image keeps exactly its own token set. Inside a stage the blocks run on the packed real rows
of the batch (:class:`~.vit.PackedRows`); attention runs image by image where the batch size is
known, and with a key-padding bias on the padded layout where it is not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..ops import token_reconstruct, token_split
from .config import ModelConfig
from .heads import ATMHead
from .vit import PackedRows, ViTEncoder, padding_bias


class TokenPruningSegmenter(nn.Module):
    """Base class: runs the stages, splits after every auxiliary stage.

    ``forward(images) -> (scores (B, K, H/p, W/p), keep_counts (B, S) int32)`` where
    ``keep_counts[b, s]`` is the number of grid tokens of image b that enter stage s (a class
    token, when the encoder has one, is not counted; it is always kept).
    ``pruning = False`` runs the dense baseline from the same weights.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = ViTEncoder(embed_dim=config.embed_dim, depth=config.depth,
                                  num_heads=config.num_heads, patch_size=config.patch_size,
                                  mlp_ratio=config.mlp_ratio, img_size=config.img_size,
                                  class_token=bool(config.extra.get("class_token", False)))
        self.pruning = True
        self.thresholds: tuple[float, ...] = tuple(config.thresholds)

    # -- method hooks ---------------------------------------------------------------------
    def init_state(self, tokens: Tensor, grid: tuple[int, int]) -> Any:
        raise NotImplementedError

    def run_head(self, stage: int, tokens: Tensor, index: Tensor, bias: Tensor | None,
                 state: Any, grid: tuple[int, int]) -> tuple[Any, Tensor, Tensor]:
        """Run stage ``stage``'s head on the active tokens; return the new state and each
        active token's ``(confidence, label)``, both ``(B, M)``."""
        raise NotImplementedError

    def predict(self, state: Any, grid: tuple[int, int]) -> Tensor:
        """Final class scores ``(B, K, h, w)`` from the state after the last stage."""
        raise NotImplementedError

    def after_split(self, stage: int, tokens: Tensor, index: Tensor, state: Any) -> Tensor:
        """Adjust the kept tokens ``(B, M, C)`` after stage ``stage``'s split (default: as is)."""
        return tokens

    def head_macs(self, stage: int, num_tokens: int, grid_tokens: int) -> int:
        raise NotImplementedError

    def can_exit(self, stage: int) -> bool:
        """Whether any token can leave at auxiliary stage ``stage`` with its threshold. Where
        none can, the stage's head and split are skipped: nothing they compute survives."""
        return True

    # -- shared machinery -----------------------------------------------------------------
    def set_thresholds(self, thresholds: Sequence[float] | None) -> None:
        """Per-auxiliary-stage exit thresholds (None: the config's)."""
        values = tuple(self.config.thresholds if thresholds is None else (float(t) for t in thresholds))
        if len(values) != self.config.num_stages - 1:
            raise ValueError(f"{self.config.arch} has {self.config.num_stages - 1} auxiliary "
                             f"stages; got {len(values)} thresholds {list(values)}")
        self.thresholds = values

    def fold_for_inference(self) -> TokenPruningSegmenter:
        """Precompute what the heads can (see :meth:`.heads.ATMHead.fold_for_inference`) for
        eager inference-mode runs; call it once the weights are final. Returns ``self``."""
        for module in self.modules():
            if module is not self and hasattr(module, "fold_for_inference"):
                module.fold_for_inference()
        return self

    def runs_head(self, stage: int) -> bool:
        """Whether ``forward`` runs stage ``stage``'s head (and, before the last stage, a split)."""
        return stage == self.config.num_stages - 1 or (self.pruning and self.can_exit(stage))

    def stage_ranges(self) -> list[tuple[int, int]]:
        starts = (0, *self.config.stage_ends[:-1])
        return list(zip(starts, self.config.stage_ends))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        tokens, grid = self.encoder.embed(images)
        batch, num_tokens = tokens.shape[:2]
        index = torch.arange(num_tokens, dtype=torch.int32, device=tokens.device).expand(batch, -1)
        state = self.init_state(tokens, grid)
        bias = packed = None  # no padding until the first split of a batch of several images
        last = self.config.num_stages - 1
        counts = []
        extra = self.encoder.num_class_tokens
        for stage, (start, end) in enumerate(self.stage_ranges()):
            count = (index >= 0).sum(dim=1, dtype=torch.int32)
            counts.append(count - extra if extra else count)
            blocks = self.encoder.blocks[start:end]
            if packed is None:
                for block in blocks:
                    tokens = block(tokens, bias)
            elif len(blocks):
                rows = packed.pack(tokens)
                for block in blocks:
                    rows = block(rows, bias, packed)
                tokens = packed.unpack(rows)
            if not self.runs_head(stage):
                continue  # dense baseline, or an exit no token can take: only later heads count
            state, confidence, label = self.run_head(stage, tokens, index, bias, state, grid)
            if stage < last:
                tokens, index = token_split(  # the op takes float confidence, int32 labels
                    tokens, confidence.float(), label.to(torch.int32), index,
                    threshold=self.thresholds[stage], context_topk=self.config.context_topk,
                    num_classes=self.config.num_classes)
                tokens = self.after_split(stage, tokens, index, state)
                # With one image nothing is padded; a symbolic batch may hold several.
                if not (isinstance(batch, int) and batch == 1):
                    bias = padding_bias(index, tokens.dtype)
                    packed = PackedRows(index)
        return self.predict(state, grid), torch.stack(counts, dim=1)

    def stage_predictions(self, images: Tensor) -> list[Tensor]:
        """Every stage's class scores ``(B, K, h, w)`` with no token exiting (for training
        the heads and for calibrating thresholds)."""
        tokens, grid = self.encoder.embed(images)
        index = torch.arange(tokens.shape[1], dtype=torch.int32, device=tokens.device)
        index = index.expand(tokens.shape[0], -1)
        state = self.init_state(tokens, grid)
        outputs = []
        for stage, (start, end) in enumerate(self.stage_ranges()):
            for block in self.encoder.blocks[start:end]:
                tokens = block(tokens)
            state, _, _ = self.run_head(stage, tokens, index, None, state, grid)
            outputs.append(self.predict(state, grid))
        return outputs

    def macs(self, keep_counts: Sequence[int], grid: tuple[int, int],
             widths: Sequence[int] | None = None) -> dict[str, int]:
        """Analytic multiply-adds (fvcore convention: one MAC per multiply-add) of one image
        whose stages saw ``keep_counts`` grid tokens (blocks also see the class token, if any).
        Element-wise ops, norms and softmax are not counted, as in fvcore.

        ``widths``: the per-stage padded width of the batch the image ran in (its largest keep
        counts): the heads run at it, so this is what a batch really computes for the image.
        The blocks run each image on its own rows (a graph exported for a run-time batch size
        also runs their attention at the padded width; that is not counted here).

        Heads count where ``forward`` runs them (:meth:`runs_head`: the current ``pruning`` and
        thresholds).
        """
        grid_tokens = grid[0] * grid[1]
        out = {"patch_embed": self.encoder.patch_embed.macs(grid_tokens), "blocks": 0, "heads": 0}
        widths = keep_counts if widths is None else widths
        extra = self.encoder.num_class_tokens
        for stage, ((start, end), n, w) in enumerate(zip(self.stage_ranges(), keep_counts, widths)):
            out["blocks"] += sum(self.encoder.blocks[i].macs(int(n) + extra) for i in range(start, end))
            if self.runs_head(stage):
                out["heads"] += self.head_macs(stage, int(w), grid_tokens)
        out["total"] = out["patch_embed"] + out["blocks"] + out["heads"]
        return out


class DToPSegmenter(TokenPruningSegmenter):
    """DToP on a plain ViT with SegViT ATM heads after every stage.

    A token's confidence is the max over classes of ``p_class * sigmoid(mask_logit)``; tokens
    above the stage threshold exit except the ``context_topk`` most confident per predicted
    class. Exited tokens keep their mask logits in a ``(B, N, K)`` canvas; the final map is the
    final head's class probabilities times ``sigmoid(canvas)``. A stage whose threshold is 1 or
    more lets no token out, so its head and split are skipped (:meth:`can_exit`).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.heads = nn.ModuleList(
            ATMHead(config.embed_dim, config.head_dim, config.head_heads, config.head_layers,
                    config.num_classes)
            for _ in range(config.num_stages))

    def init_state(self, tokens: Tensor, grid: tuple[int, int]) -> dict[str, Tensor]:
        canvas = tokens.new_zeros(tokens.shape[0], tokens.shape[1], self.config.num_classes)
        return {"canvas": canvas, "class_probs": canvas[:, 0]}

    def run_head(self, stage, tokens, index, bias, state, grid):
        mask_logits, class_probs = self.heads[stage](tokens, bias)
        canvas = token_reconstruct(state["canvas"], mask_logits, index)
        confidence, label = (class_probs.unsqueeze(1) * mask_logits.sigmoid()).max(dim=-1)
        return {"canvas": canvas, "class_probs": class_probs}, confidence, label

    def predict(self, state, grid):
        scores = state["class_probs"].unsqueeze(1) * state["canvas"].sigmoid()
        return scores.transpose(1, 2).reshape(scores.shape[0], -1, grid[0], grid[1])

    def head_macs(self, stage: int, num_tokens: int, grid_tokens: int) -> int:
        return self.heads[stage].macs(num_tokens)

    def can_exit(self, stage: int) -> bool:
        # A confidence is a probability times a sigmoid, at most 1, and only a token above the
        # threshold exits. If none can, every token the head would write into the canvas is
        # still active and is written again by a later head.
        return self.thresholds[stage] < 1.0


METHODS: dict[str, type[TokenPruningSegmenter]] = {"dtop": DToPSegmenter}


def build_from_config(config: ModelConfig) -> TokenPruningSegmenter:
    if config.method not in METHODS:
        raise ValueError(f"unknown method {config.method!r}; known: {sorted(METHODS)}")
    return METHODS[config.method](config)
