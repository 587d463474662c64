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
        return self.attend(queries, self.k(tokens), self.v(tokens), bias)

    def attend(self, queries: Tensor, keys: Tensor, values: Tensor, bias: Tensor | None
               ) -> tuple[Tensor, Tensor]:
        """Like ``forward`` on tokens already projected to ``keys`` and ``values`` ``(B, M, D)``."""
        b, k, d = queries.shape
        m = keys.shape[1]
        h = self.num_heads
        q = self.q(queries).reshape(b, k, h, d // h).transpose(1, 2)
        key = keys.reshape(b, m, h, d // h).transpose(1, 2)
        value = values.reshape(b, m, h, d // h).transpose(1, 2)
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
        queries = self.self_attend(queries)
        return self._after_attention(queries, *self.multihead_attn(queries, tokens, bias))

    def self_attend(self, queries: Tensor) -> Tensor:
        return self.norm1(queries + self.self_attn(queries))

    def cross(self, queries: Tensor, keys: Tensor, values: Tensor, bias: Tensor | None
              ) -> tuple[Tensor, Tensor]:
        """The rest of the layer after :meth:`self_attend`, on projected keys and values."""
        return self._after_attention(queries, *self.multihead_attn.attend(queries, keys, values, bias))

    def _after_attention(self, queries: Tensor, attended: Tensor, logits: Tensor) -> tuple[Tensor, Tensor]:
        queries = self.norm2(queries + attended)
        queries = self.norm3(queries + self.linear2(F.relu(self.linear1(queries))))
        return queries, logits


class Decoder(nn.Module):
    def __init__(self, dim: int, num_heads: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(dim, num_heads) for _ in range(num_layers))


class ATMHead(nn.Module):
    """SegViT ATM head as DToP uses it: one present/absent logit pair per class query.

    :meth:`fold_for_inference` computes the head's input-independent parts once: the first
    layer's query self-attention (the queries are learned constants) and every layer's key and
    value weights stacked into one matrix, so that one GEMM projects the tokens for all layers.
    At small sizes an eager head is bound by its number of ops, not by its arithmetic. The
    folded path runs only in eager ``torch.inference_mode()``; training, ``no_grad`` (FLOP
    counting), ``torch.compile`` and export run the plain layers. Fold after the weights are
    final: a fold whose source parameters were changed in place, moved or reloaded is dropped
    (the plain layers run), but one that cannot be seen (through ``.data``, by replacing a
    Parameter, with ``torch.func.functional_call``) needs :meth:`unfold` or a new fold.
    """

    def __init__(self, in_dim: int, dim: int, num_heads: int, num_layers: int, num_classes: int) -> None:
        super().__init__()
        self.input_proj = nn.Linear(in_dim, dim)
        self.proj_norm = nn.LayerNorm(dim)
        self.decoder = Decoder(dim, num_heads, num_layers)
        self.q = nn.Embedding(num_classes, dim)
        self.class_embed = nn.Linear(dim, 2)
        self._folded: tuple | None = None
        self.register_load_state_dict_post_hook(_drop_fold)

    def forward(self, tokens: Tensor, bias: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(B, M, C) -> mask logits (B, M, K), class probabilities (B, K)``."""
        x = self.proj_norm(self.input_proj(tokens))
        batch = tokens.shape[0]
        layers = self.decoder.layers
        folded = self._folded_constants()
        logits = None
        if folded is None:
            queries = self.q.weight.unsqueeze(0).expand(batch, -1, -1)
            for layer in layers:
                queries, logits = layer(queries, x, bias)
        else:
            first_queries, kv_weight, kv_bias = folded
            keys_values = F.linear(x, kv_weight, kv_bias).chunk(2 * len(layers), dim=-1)
            queries = first_queries.expand(batch, -1, -1)
            for j, layer in enumerate(layers):
                if j:
                    queries = layer.self_attend(queries)
                queries, logits = layer.cross(queries, keys_values[2 * j], keys_values[2 * j + 1], bias)
        class_probs = self.class_embed(queries).softmax(dim=-1)[..., 0]
        return logits.transpose(1, 2), class_probs

    @torch.no_grad()
    def fold_for_inference(self) -> ATMHead:
        """Compute the input-independent parts now (see the class doc); returns ``self``."""
        layers = self.decoder.layers
        first = layers[0]
        projections = [lin for layer in layers for lin in (layer.multihead_attn.k, layer.multihead_attn.v)]
        sources = (self.q.weight, *first.self_attn.parameters(), *first.norm1.parameters(),
                   *(p for lin in projections for p in lin.parameters()))
        self._folded = (sources, _versions(sources),
                        (first.self_attend(self.q.weight.unsqueeze(0)),
                         torch.cat([lin.weight for lin in projections]),
                         torch.cat([lin.bias for lin in projections])))
        return self

    def unfold(self) -> None:
        self._folded = None

    def _folded_constants(self) -> tuple[Tensor, Tensor, Tensor] | None:
        """The folded constants where they apply (eager inference mode, fold still current)."""
        # is_compiling first: Dynamo cannot trace is_inference_mode_enabled.
        if self._folded is None or torch.compiler.is_compiling() or not torch.is_inference_mode_enabled():
            return None
        sources, versions, constants = self._folded
        if _versions(sources) != versions:
            self._folded = None  # the weights changed after the fold
            return None
        return constants

    def _apply(self, fn, recurse=True):
        self._folded = None  # conversions may put new Parameter objects in place
        return super()._apply(fn, recurse)

    def macs(self, num_tokens: int) -> int:
        """Multiply-adds for ``num_tokens`` tokens and K class queries: the architecture's count
        (a folded head computes its first layer's query self-attention once, not per call)."""
        n, k = num_tokens, self.q.num_embeddings
        d, c = self.input_proj.out_features, self.input_proj.in_features
        per_layer = (
            4 * k * d * d + 2 * k * k * d  # query self-attention
            + 2 * k * d * d + 2 * n * d * d + 2 * k * n * d  # cross-attention
            + 8 * k * d * d  # FFN
        )
        return n * c * d + len(self.decoder.layers) * per_layer + 2 * k * d


def _versions(tensors) -> tuple:
    return tuple((t.data_ptr(), t._version) for t in tensors)


def _drop_fold(head: ATMHead, incompatible_keys) -> None:
    """``load_state_dict`` hook: new weights (``assign=True``: new Parameter objects)."""
    head._folded = None
