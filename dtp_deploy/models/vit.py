"""Plain ViT encoder pieces (patch 16, no class token, no final norm) with key-padding support.

Names follow timm (``blocks.{i}.attn.qkv``); checkpoint loaders map mmseg names onto them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Additive bias for padded keys. Finite and well inside fp16 range, so a row with only padding
# gives a uniform (never NaN) softmax; exp(-30000) is exactly zero in every float type.
PAD_BIAS = -30000.0


def padding_bias(index: Tensor, dtype: torch.dtype) -> Tensor:
    """``(B, M)`` token index (-1 = pad) -> ``(B, 1, 1, M)`` additive attention bias."""
    bias = torch.where(index < 0, PAD_BIAS, 0.0).to(dtype)
    return bias[:, None, None, :]


def attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None) -> Tensor:
    """``softmax(q k^T / sqrt(d) + bias) v`` over ``(B, heads, N, d)`` tensors.

    With concrete sizes this is the fused kernel. When the token count is symbolic (a traced
    graph after a token split) it is plain matmuls: the fused op's shape checks would have to
    decide whether the data-dependent count is 0 or 1, which no trace can know.
    """
    if not isinstance(q.shape[2], torch.SymInt) and not isinstance(k.shape[2], torch.SymInt):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    logits = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    return (logits if bias is None else logits + bias).softmax(dim=-1) @ v


class PackedRows:
    """The real rows of a padded ``(B, M, ...)`` batch, as one ``(T, ...)`` sequence.

    After a split every image of a batch is padded to the largest keep count. Norms, linear
    layers and the MLP treat rows independently, so they run on the T kept rows of the whole
    batch and never on padding (FasterTransformer's "remove padding"). Attention needs each
    image's rows apart: it runs image by image on exactly its rows where the batch size is
    known, and on the padded layout otherwise. A batch then costs what its images cost.
    """

    def __init__(self, index: Tensor) -> None:
        """``index``: ``(B, M)`` token positions, -1 for padding."""
        self.batch, self.width = index.shape
        real = index >= 0
        # counts: each image's number of rows, where the batch size is known (always in eager
        # mode; in graphs of a fixed batch), so that attention can run image by image on
        # exactly its rows. A graph of a run-time batch size has no per-image list to unroll:
        # there attention runs on the padded layout with the key-padding bias.
        self.counts: list | None = None
        if isinstance(self.batch, int):
            per_image = [torch.nonzero(real[b]).squeeze(1) for b in range(self.batch)]
            self.counts = [rows.shape[0] for rows in per_image]
            self.rows = torch.cat([rows + b * self.width for b, rows in enumerate(per_image)])
        else:
            self.rows = torch.nonzero(real.reshape(-1)).squeeze(1)  # (T,) flat row numbers

    def pack(self, x: Tensor) -> Tensor:
        """``(B, M, D) -> (T, D)``: the real rows, image after image."""
        return x.reshape(-1, x.shape[-1]).index_select(0, self.rows)

    def unpack(self, x: Tensor) -> Tensor:
        """``(T, D) -> (B, M, D)`` with zero padding rows."""
        out = x.new_zeros(self.batch * self.width, x.shape[-1]).index_copy(0, self.rows, x)
        return out.reshape(self.batch, self.width, x.shape[-1])


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W) -> (B, H/p * W/p, C)``"""
        return self.proj(images).flatten(2).transpose(1, 2)

    def macs(self, num_tokens: int) -> int:
        conv = self.proj
        return num_tokens * conv.out_channels * conv.in_channels * self.patch_size ** 2


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, bias: Tensor | None = None, packed: PackedRows | None = None) -> Tensor:
        """``(B, N, C)``, or the ``(T, C)`` rows of a ``packed`` batch: then attention runs image
        by image where the batch size is known, else on the padded layout with ``bias``."""
        qkv = self.qkv(x)
        if packed is not None and packed.counts is not None:  # image by image, no padding
            out = torch.cat([self._attend(part[None], None)[0] for part in qkv.split(packed.counts)])
            return self.proj(out)
        if packed is not None:
            qkv = packed.unpack(qkv)
        out = self._attend(qkv, bias)
        return self.proj(out if packed is None else packed.pack(out))

    def _attend(self, qkv: Tensor, bias: Tensor | None) -> Tensor:
        """``(B, N, 3C)`` projected tokens -> ``(B, N, C)`` attention output."""
        b, n, c3 = qkv.shape
        c = c3 // 3
        qkv = qkv.reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        return attention(qkv[0], qkv[1], qkv[2], bias).transpose(1, 2).reshape(b, n, c)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block (mmseg ``TransformerEncoderLayer`` at inference)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, bias: Tensor | None = None, packed: PackedRows | None = None) -> Tensor:
        """``(B, N, C)`` tokens, or the ``(T, C)`` rows of a ``packed`` batch."""
        x = x + self.attn(self.norm1(x), bias, packed)
        return x + self.mlp(self.norm2(x))

    def macs(self, num_tokens: int) -> int:
        """Multiply-adds for ``num_tokens`` tokens: linear layers and the two attention matmuls."""
        dim, hidden = self.mlp.fc1.in_features, self.mlp.fc1.out_features
        return num_tokens * (4 * dim * dim + 2 * dim * hidden) + 2 * num_tokens * num_tokens * dim


class ViTEncoder(nn.Module):
    """Patch embedding + position embedding + blocks; stages are run by the segmenter.

    With ``class_token`` a learned class token (plus its own position embedding) is appended
    *after* the grid tokens, so that row ``n < N`` is still grid position ``n`` and the class
    token is row ``N``. mmseg puts it first; attention does not care about the order.
    """

    def __init__(self, *, embed_dim: int, depth: int, num_heads: int, patch_size: int,
                 mlp_ratio: float, img_size: tuple[int, int], class_token: bool = False) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.pos_grid = (img_size[0] // patch_size, img_size[1] // patch_size)
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.pos_grid[0] * self.pos_grid[1], embed_dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        # Tokens beyond the grid that every block sees (0 or 1).
        self.num_class_tokens = int(class_token)
        if class_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.cls_pos_embed = nn.Parameter(torch.zeros(1, 1, embed_dim))
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))

    def position_embedding(self, grid: tuple[int, int]) -> Tensor:
        """Position embeddings for a token grid, resized bicubically from the trained grid
        (as mmseg does for inputs of another size)."""
        # A symbolic (run-time) size is always resized; bicubic at the same size is the identity.
        if not any(isinstance(g, torch.SymInt) for g in grid) and tuple(grid) == self.pos_grid:
            return self.pos_embed
        gh, gw = self.pos_grid
        pos = self.pos_embed.reshape(1, gh, gw, -1).permute(0, 3, 1, 2)
        pos = F.interpolate(pos, size=grid, mode="bicubic", align_corners=False)
        return pos.flatten(2).transpose(1, 2)

    def embed(self, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """``(B, 3, H, W) -> (B, N + num_class_tokens, C)`` tokens and the ``(H/p, W/p)`` grid."""
        p = self.patch_size
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        h, w = images.shape[-2:]
        if not isinstance(h, torch.SymInt) and (h % p or w % p):
            raise ValueError(f"image size {h}x{w} must be a multiple of the patch size {p}")
        grid = (h // p, w // p)
        tokens = self.patch_embed(images) + self.position_embedding(grid)
        if self.num_class_tokens:
            cls = (self.cls_token + self.cls_pos_embed).expand(tokens.shape[0], -1, -1)
            tokens = torch.cat([tokens, cls], dim=1)
        return tokens, grid
