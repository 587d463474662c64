"""DoViT: Dynamic Token-Pass Vision Transformers (Liu et al., WACV 2024, arXiv:2308.01944).

Light FCN heads grade every token of the full grid between stages; a token whose softmax
max-probability is above the stage threshold *stops*: its feature is frozen and later blocks
run only on the tokens still passing. Before every head the full sequence is put back together
with :func:`~dtp_deploy.ops.token_reconstruct`, so each head, and the final Segmenter
mask-transformer head, predicts all tokens.

Parameter names follow the official mmseg code where loading needs it (``convs.0.conv``,
``conv_seg``, ``dec_proj``, ``cls_emb``, ``patch_proj``, ``classes_proj``, ``decoder_norm``,
``mask_norm``); the decoder blocks reuse the encoder's timm-style :class:`~.vit.Block`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import token_reconstruct
from .config import ModelConfig
from .segmenter import METHODS, TokenPruningSegmenter
from .vit import Block


class ConvBNReLU(nn.Module):
    """mmcv ``ConvModule`` as FCN heads use it: conv without bias, batch norm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


class FCNHead(nn.Module):
    """FCN auxiliary head on the token grid: ``num_convs`` conv-BN-ReLU, then a 1x1 classifier.

    ``(B, C, h, w) -> (B, K, h, w)`` class logits (same resolution as the token grid).
    """

    def __init__(self, in_dim: int, channels: int, num_classes: int, *, num_convs: int = 1,
                 kernel_size: int = 1) -> None:
        super().__init__()
        widths = [in_dim] + [channels] * num_convs
        self.convs = nn.Sequential(*(ConvBNReLU(widths[i], widths[i + 1], kernel_size)
                                     for i in range(num_convs)))
        self.conv_seg = nn.Conv2d(widths[-1], num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_seg(self.convs(x))

    def macs(self, pixels: int) -> int:
        """Multiply-adds on ``pixels`` grid positions (k*k*Cin*Cout per output pixel)."""
        convs = [m.conv for m in self.convs] + [self.conv_seg]
        return pixels * sum(c.kernel_size[0] * c.kernel_size[1] * c.in_channels * c.out_channels
                            for c in convs)


class MaskTransformerHead(nn.Module):
    """Segmenter's mask transformer (Strudel et al., ICCV 2021), mmseg's
    ``SegmenterMaskTransformerHead``: the tokens and K learned class embeddings go through
    ``num_layers`` transformer blocks; the mask logit of token n for class k is the cosine
    similarity of their projections, layer-normed over the classes.

    ``(B, N, C) -> (B, N, K)`` class logits.
    """

    def __init__(self, in_dim: int, dim: int, num_heads: int, num_layers: int, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.dec_proj = nn.Linear(in_dim, dim)
        self.layers = nn.ModuleList(Block(dim, num_heads, 4.0, eps=1e-5) for _ in range(num_layers))
        self.cls_emb = nn.Parameter(torch.zeros(1, num_classes, dim))
        nn.init.trunc_normal_(self.cls_emb, std=0.02)
        self.patch_proj = nn.Linear(dim, dim, bias=False)
        self.classes_proj = nn.Linear(dim, dim, bias=False)
        self.decoder_norm = nn.LayerNorm(dim)
        self.mask_norm = nn.LayerNorm(num_classes)

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.dec_proj(tokens)
        x = torch.cat([x, self.cls_emb.expand(x.shape[0], -1, -1)], dim=1)
        for layer in self.layers:
            x = layer(x)
        x = self.decoder_norm(x)
        k = self.num_classes
        patches = F.normalize(self.patch_proj(x[:, :-k]), dim=-1)
        classes = F.normalize(self.classes_proj(x[:, -k:]), dim=-1)
        return self.mask_norm(patches @ classes.transpose(1, 2))

    def macs(self, num_tokens: int) -> int:
        n, k = num_tokens, self.num_classes
        c, d = self.dec_proj.in_features, self.dec_proj.out_features
        return (n * c * d + sum(layer.macs(n + k) for layer in self.layers)
                + n * d * d + k * d * d + n * k * d)


class DoViTSegmenter(TokenPruningSegmenter):
    """DoViT on a plain ViT: FCN auxiliary heads after every stage but the last, a Segmenter
    mask-transformer decode head at the end.

    Token-pass rule, after auxiliary stage s: the head predicts the full grid (stopped tokens
    carry their frozen features); a still-active token stops when its softmax max-probability
    is above ``thresholds[s]`` (or, if ``extra["low_conf_stop"] > 0``, below it: the official
    ``diff_conf``). Stopped tokens never resume. The split is :func:`token_split` with
    ``context_topk = 0``; the kept features are written back over the full sequence with
    :func:`token_reconstruct` before every head. ``forward`` returns class probabilities.

    With ``extra["class_token"]`` the encoder carries a class token (row N, after the grid) that
    is never graded; with ``extra["agg_rate"]`` it is replaced after a split by the mean of
    its value and the image's stopped tokens when more than ``agg_rate`` of all N + 1 tokens
    have stopped, as the official code does. ``extra["final_norm"]`` applies mmseg's final
    encoder norm before the decode head.

    The class token as the aggregation target is a deliberate reading of the official code. It
    averages the stopped tokens into ``keep_tokens[:, 0]``, the first row after an
    ``argsort(keep_mask, descending=True)``; the class token's mask entry is 1 like every
    passing token's, and ``torch.argsort`` is not stable, so which passing token lands first is
    not defined by the code (on many inputs it is the class token, which leads the sequence).
    Here it is always the class token, the only token that is never graded.

    Differences from the official code: it keeps the *batch-mean* number of tokens in every
    image (argsort of the keep mask, first ``mean(keep count)`` rows), so in a batch some
    stopped tokens run on and some active tokens are frozen, and the class-token aggregation is
    decided for the whole batch. Here every image keeps exactly its own token set (padding plus
    a key-padding bias), so results do not depend on the batch; at batch 1 both agree. The
    auxiliary heads here predict at token resolution (FCN), so the official average-pooling of
    the confidence to the token grid is the identity and is not implemented.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        extra = config.extra
        self.aux_heads = nn.ModuleList(
            FCNHead(config.embed_dim, int(extra.get("aux_channels", 256)), config.num_classes,
                    num_convs=int(extra.get("aux_convs", 1)), kernel_size=int(extra.get("aux_kernel", 1)))
            for _ in range(config.num_stages - 1))
        self.final_norm = (nn.LayerNorm(config.embed_dim, eps=1e-6) if extra.get("final_norm")
                           else nn.Identity())
        self.decode_head = MaskTransformerHead(config.embed_dim, config.head_dim, config.head_heads,
                                               config.head_layers, config.num_classes)
        agg_rate = extra.get("agg_rate")
        self.agg_rate = None if agg_rate is None or not self.encoder.num_class_tokens else float(agg_rate)
        self.low_conf_stop = float(extra.get("low_conf_stop", -1.0))

    def init_state(self, tokens: Tensor, grid: tuple[int, int]) -> dict[str, Tensor]:
        return {"features": tokens, "logits": tokens.new_zeros(tokens.shape[0], 0, 0)}

    def run_head(self, stage, tokens, index, bias, state, grid):
        features = token_reconstruct(state["features"], tokens, index)
        b, c = features.shape[0], features.shape[2]
        n = grid[0] * grid[1]
        if stage == self.config.num_stages - 1:
            logits = self.decode_head(self.final_norm(features[:, :n]))
        else:
            image = features[:, :n].transpose(1, 2).reshape(b, c, grid[0], grid[1])
            logits = self.aux_heads[stage](image).flatten(2).transpose(1, 2)
        confidence, label = logits.softmax(dim=-1).max(dim=-1)  # (B, N) over the full grid
        if self.low_conf_stop > 0:
            confidence = torch.where(confidence < self.low_conf_stop, float("inf"), confidence)
        if self.encoder.num_class_tokens:  # the class token is never graded: it always passes
            confidence = torch.cat([confidence, confidence.new_full((b, 1), -1.0)], dim=1)
            label = torch.cat([label, label.new_zeros(b, 1)], dim=1)
        # Grade the active tokens only; padding rows (-1) read row 0 and are ignored by the split.
        rows = index.clamp(min=0).long()
        return ({"features": features, "logits": logits},
                confidence.gather(1, rows), label.gather(1, rows))

    def after_split(self, stage, tokens, index, state):
        if self.agg_rate is None:
            return tokens
        features = state["features"]  # the full sequence at the split; the class token is last
        b, total, _ = features.shape
        kept = token_reconstruct(features.new_zeros(b, total, 1),
                                 tokens.new_ones(index.shape[0], index.shape[1], 1), index)
        stopped = 1.0 - kept  # every stopped token so far, this stage's and earlier ones
        count = stopped.sum(dim=1)  # (B, 1)
        mean = (features * stopped).sum(dim=1) / count.clamp(min=1.0)
        merged = (0.5 * (mean + features[:, total - 1])).to(tokens.dtype)
        replace = (index == total - 1).unsqueeze(-1) & (count / total > self.agg_rate).unsqueeze(1)
        return torch.where(replace, merged.unsqueeze(1), tokens)

    def predict(self, state, grid):
        scores = state["logits"].softmax(dim=-1)
        return scores.transpose(1, 2).reshape(scores.shape[0], -1, grid[0], grid[1])

    def head_macs(self, stage: int, num_tokens: int, grid_tokens: int) -> int:
        # Every head predicts the full grid, whatever the number of active tokens.
        if stage == self.config.num_stages - 1:
            return self.decode_head.macs(grid_tokens)
        return self.aux_heads[stage].macs(grid_tokens)


METHODS["dovit"] = DoViTSegmenter

__all__ = ["ConvBNReLU", "DoViTSegmenter", "FCNHead", "MaskTransformerHead"]
