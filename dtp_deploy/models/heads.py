"""Decode heads.

``ATMHead`` is the SegViT "attention-to-mask" head used by DToP at every stage (official
``PruneHead``): class queries attend to the tokens, and the head-averaged pre-softmax
query-token logits of the last decoder layer are the per-class mask logits.
Parameter names match the official checkpoints (``input_proj``, ``proj_norm``, ``q``,
``class_embed``, ``decoder.layers.{j}.*``) so loading is a prefix change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class QuerySelfAttention(nn.Module):
    """Self-attention over the class queries with ``nn.MultiheadAttention``'s parameter names
    (so official weights load as they are) but plain ops: its inference fast path is opaque
    to FLOP counters and exporters."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: Tensor) -> Tensor:
        b, k, d = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        qkv = qkv.reshape(b, k, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.out_proj(out.transpose(1, 2).reshape(b, k, d))


class CrossAttention(nn.Module):
    """Queries attend to tokens; also returns the head-averaged pre-softmax logits."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, queries: Tensor, tokens: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(B, K, D), (B, M, D) -> (B, K, D), (B, K, M)``"""
        b, k, d = queries.shape
        m = tokens.shape[1]
        h = self.num_heads
        q = self.q(queries).reshape(b, k, h, d // h).transpose(1, 2)
        key = self.k(tokens).reshape(b, m, h, d // h).transpose(1, 2)
        value = self.v(tokens).reshape(b, m, h, d // h).transpose(1, 2)
        logits = (q @ key.transpose(-2, -1)) * self.scale
        weights = (logits if bias is None else logits + bias).softmax(dim=-1)
        out = (weights @ value).transpose(1, 2).reshape(b, k, d)
        return self.proj(out), logits.mean(dim=1)


class DecoderLayer(nn.Module):
    """Post-norm decoder layer: query self-attention, cross-attention, ReLU FFN."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.self_attn = QuerySelfAttention(dim, num_heads)
        self.multihead_attn = CrossAttention(dim, num_heads)
        self.linear1 = nn.Linear(dim, dim * 4)
        self.linear2 = nn.Linear(dim * 4, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, queries: Tensor, tokens: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor]:
        queries = self.norm1(queries + self.self_attn(queries))
        attended, logits = self.multihead_attn(queries, tokens, bias)
        queries = self.norm2(queries + attended)
        queries = self.norm3(queries + self.linear2(F.relu(self.linear1(queries))))
        return queries, logits


class Decoder(nn.Module):
    def __init__(self, dim: int, num_heads: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(dim, num_heads) for _ in range(num_layers))


class ATMHead(nn.Module):
    """SegViT ATM head as DToP uses it: one present/absent logit pair per class query."""

    def __init__(self, in_dim: int, dim: int, num_heads: int, num_layers: int, num_classes: int) -> None:
        super().__init__()
        self.input_proj = nn.Linear(in_dim, dim)
        self.proj_norm = nn.LayerNorm(dim)
        self.decoder = Decoder(dim, num_heads, num_layers)
        self.q = nn.Embedding(num_classes, dim)
        self.class_embed = nn.Linear(dim, 2)

    def forward(self, tokens: Tensor, bias: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(B, M, C) -> mask logits (B, M, K), class probabilities (B, K)``."""
        x = self.proj_norm(self.input_proj(tokens))
        queries = self.q.weight.unsqueeze(0).expand(tokens.shape[0], -1, -1)
        logits = None
        for layer in self.decoder.layers:
            queries, logits = layer(queries, x, bias)
        class_probs = self.class_embed(queries).softmax(dim=-1)[..., 0]
        return logits.transpose(1, 2), class_probs

    def macs(self, num_tokens: int) -> int:
        """Multiply-adds for ``num_tokens`` tokens and K class queries."""
        n, k = num_tokens, self.q.num_embeddings
        d, c = self.input_proj.out_features, self.input_proj.in_features
        per_layer = (
            4 * k * d * d + 2 * k * k * d  # query self-attention
            + 2 * k * d * d + 2 * n * d * d + 2 * k * n * d  # cross-attention
            + 8 * k * d * d  # FFN
        )
        return n * c * d + len(self.decoder.layers) * per_layer + 2 * k * d
