"""Reference semantics of the two token ops (DESIGN.md section 2, ONNX domain ``dtp`` v1).

These pure functions are *the* definition that every other implementation (portable ONNX
lowering, CUDA kernels, TensorRT plugins, the ONNX Runtime test domain) is tested against.
They are batched and loop-free; the only host synchronisation is reading the data-dependent
width ``M`` of the split output, which any op with a data-dependent shape needs in eager mode.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["keep_mask", "token_split", "token_reconstruct"]


def _rank_within_label(confidence: Tensor, label: Tensor, valid: Tensor) -> Tensor:
    """Rank of every token among the ``valid`` tokens of its label, most confident first.

    Ties are broken by the lower position. Ranks of the other tokens are meaningless.
    Two stable sorts (confidence descending, then label) order each label group by
    (confidence desc, position asc) without an O(N^2) comparison.
    """
    b, n = confidence.shape
    # Invalid tokens go to a group of their own past every real label.
    group = torch.where(valid, label.to(torch.int64), torch.iinfo(torch.int64).max)
    by_conf = torch.sort(confidence, dim=1, descending=True, stable=True).indices
    group_by_conf = group.gather(1, by_conf)
    by_group = torch.sort(group_by_conf, dim=1, stable=True).indices
    order = by_conf.gather(1, by_group)  # token positions in (label, -confidence, position) order
    sorted_group = group.gather(1, order)
    slot = torch.arange(n, device=confidence.device).expand(b, n)
    starts_group = torch.ones_like(valid)
    starts_group[:, 1:] = sorted_group[:, 1:] != sorted_group[:, :-1]
    group_start = torch.where(starts_group, slot, torch.zeros_like(slot)).cummax(dim=1).values
    rank_sorted = slot - group_start
    rank = torch.empty_like(rank_sorted)
    rank.scatter_(1, order, rank_sorted)
    return rank


def keep_mask(
    confidence: Tensor, label: Tensor, index: Tensor, *, threshold: float, context_topk: int = 0,
    num_classes: int | None = None,
) -> Tensor:
    """Which tokens stay in the encoder: ``(B, N), (B, N), (B, N) -> (B, N) bool``.

    A token is kept iff it is not padding (``index >= 0``) and either its confidence is not
    above ``threshold`` or it is among the ``context_topk`` most confident tokens predicted as
    its label in its image (ties: lower position first). Edges (DESIGN.md section 2): equality
    with the threshold stays; NaN is *not confident* (kept) and takes no context slot; a label
    outside ``[0, num_classes)`` takes no context slot (``None``: only negative labels).
    """
    valid = index >= 0
    # "not above" rather than "<=": NaN compares false both ways and must stay.
    keep = valid & ~(confidence > threshold)
    if context_topk > 0:
        eligible = valid & ~torch.isnan(confidence) & (label >= 0)
        if num_classes is not None:
            eligible &= label < num_classes
        keep |= eligible & (_rank_within_label(confidence, label, eligible) < context_topk)
    return keep


def token_split(
    tokens: Tensor,
    confidence: Tensor,
    label: Tensor,
    index: Tensor,
    *,
    threshold: float,
    context_topk: int = 0,
    num_classes: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Gather the tokens that stay: ``(B, N, C), (B, N), (B, N), (B, N) -> (B, M, C), (B, M)``.

    Args:
        tokens: token features, float or half.
        confidence: per-token confidence (float).
        label: per-token predicted class (int32).
        index: each token's original grid position (int32), ``-1`` for padding.
        threshold: tokens above it exit, except the context tokens.
        context_topk: how many of the most confident tokens per predicted class stay (0 = none).
        num_classes: number of classes; a token whose label lies outside ``[0, num_classes)``
            takes no context slot (``None``: no upper bound).

    Returns:
        ``kept_tokens`` with the kept rows in their original relative order and zero padding
        rows, and ``kept_index`` with their original positions and ``-1`` for padding.
        ``M`` is the largest kept count in the batch and may be 0.
    """
    if tokens.dim() != 3 or confidence.shape != tokens.shape[:2]:
        raise ValueError(f"token_split: tokens {tuple(tokens.shape)} and confidence "
                         f"{tuple(confidence.shape)} must be (B, N, C) and (B, N)")
    if label.shape != confidence.shape or index.shape != confidence.shape:
        raise ValueError(f"token_split: label {tuple(label.shape)} and index "
                         f"{tuple(index.shape)} must both be (B, N) = {tuple(confidence.shape)}")
    keep = keep_mask(confidence, label, index, threshold=threshold, context_topk=context_topk,
                     num_classes=num_classes)
    if keep.shape[0] == 1:  # one image pads nothing: its kept rows, in order, are the output
        rows = keep[0].nonzero().squeeze(1)
        return tokens[:, rows], index[:, rows]
    # Stable compaction: a stable sort of "dropped?" puts kept tokens first, in order.
    order = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices
    width = int(keep.sum(dim=1).max()) if keep.numel() else 0  # the one host sync: M
    order = order[:, :width]
    kept = keep.gather(1, order)
    kept_index = torch.where(kept, index.gather(1, order), torch.full_like(order, -1, dtype=index.dtype))
    gathered = tokens.gather(1, order.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
    kept_tokens = gathered * kept.unsqueeze(-1).to(tokens.dtype)
    return kept_tokens, kept_index.to(index.dtype)


def token_reconstruct(base: Tensor, updates: Tensor, index: Tensor) -> Tensor:
    """Write rows back at their grid positions: ``(B, N, D), (B, M, D), (B, M) -> (B, N, D)``.

    Row ``index[b, m]`` of ``base`` is replaced by ``updates[b, m]``; ``-1`` rows are ignored.
    ``base`` is not modified.
    """
    if base.dim() != 3 or updates.dim() != 3 or index.shape != updates.shape[:2]:
        raise ValueError(f"token_reconstruct: base {tuple(base.shape)}, updates "
                         f"{tuple(updates.shape)} and index {tuple(index.shape)} must be "
                         "(B, N, D), (B, M, D), (B, M)")
    b, n, d = base.shape
    valid = index >= 0
    # Padding rows are sent to a scratch row N that is cut off afterwards.
    target = torch.where(valid, index.to(torch.int64), torch.full_like(index, n, dtype=torch.int64))
    out = torch.cat([base, base.new_zeros(b, 1, d)], dim=1)
    out = out.scatter(1, target.unsqueeze(-1).expand(-1, -1, d), updates.to(base.dtype))
    return out[:, :n]
