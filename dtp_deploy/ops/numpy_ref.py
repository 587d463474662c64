"""The two ``dtp`` token ops in numpy, for runtimes that must not import torch.

Same contract as :mod:`dtp_deploy.ops.reference` (DESIGN.md section 2), which stays the
definition: ``tests/test_numpy_ref.py`` checks this module against it. Used by the ONNX Runtime
CPU test domain (``exporters.ort_dtp_domain``) and by anything else that needs the ops without
torch. Importing this module never imports torch.
"""

from __future__ import annotations

import numpy as np

__all__ = ["keep_mask", "token_split", "token_reconstruct"]


def _rank_within_label(confidence: np.ndarray, label: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``(B, N)`` int64: rank of each token among the ``valid`` tokens of its label, most
    confident first, equal confidence ordered by lower position. Other ranks are meaningless."""
    b, n = confidence.shape
    # Padding gets a group of its own after every real label, so it never outranks a token.
    group = np.where(valid, label.astype(np.int64), np.iinfo(np.int64).max)
    position = np.broadcast_to(np.arange(n, dtype=np.int64), (b, n))
    # lexsort: the last key is the primary one -> (group, -confidence, position) order.
    order = np.lexsort((position, -confidence.astype(np.float64), group), axis=-1)
    sorted_group = np.take_along_axis(group, order, axis=1)
    new_group = np.ones((b, n), dtype=bool)
    new_group[:, 1:] = sorted_group[:, 1:] != sorted_group[:, :-1]
    first_slot = np.maximum.accumulate(np.where(new_group, position, 0), axis=1)
    rank = np.empty((b, n), dtype=np.int64)
    np.put_along_axis(rank, order, position - first_slot, axis=1)
    return rank


def keep_mask(confidence: np.ndarray, label: np.ndarray, index: np.ndarray, *,
              threshold: float, context_topk: int = 0, num_classes: int | None = None
              ) -> np.ndarray:
    """Which tokens stay: ``(B, N), (B, N), (B, N) -> (B, N) bool``.

    Kept iff ``index >= 0`` and (confidence not above ``threshold`` or among the
    ``context_topk`` most confident valid tokens of its label in its image; ties: lower position
    first). NaN is not confident and takes no context slot, nor does a label outside
    ``[0, num_classes)`` (``None``: only negative labels).
    """
    confidence, label = np.asarray(confidence), np.asarray(label)
    valid = np.asarray(index) >= 0
    with np.errstate(invalid="ignore"):
        # "not above" rather than "<=": NaN compares false both ways and must stay.
        keep = valid & ~(confidence > np.float32(threshold))
    if context_topk > 0 and keep.size:
        eligible = valid & ~np.isnan(confidence) & (label >= 0)
        if num_classes is not None:
            eligible &= label < num_classes
        keep |= eligible & (_rank_within_label(confidence, label, eligible) < context_topk)
    return keep


def token_split(tokens: np.ndarray, confidence: np.ndarray, label: np.ndarray, index: np.ndarray,
                *, threshold: float, context_topk: int = 0, num_classes: int | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """``(B, N, C), (B, N), (B, N), (B, N) -> (B, M, C), (B, M) int32``.

    Kept rows in their original relative order, zero rows and ``-1`` indices as padding;
    ``M`` is the largest kept count in the batch, possibly 0.
    """
    tokens, index = np.asarray(tokens), np.asarray(index)
    if tokens.ndim != 3 or np.shape(confidence) != tokens.shape[:2]:
        raise ValueError(f"token_split: tokens {tokens.shape} and confidence "
                         f"{np.shape(confidence)} must be (B, N, C) and (B, N)")
    if np.shape(label) != tokens.shape[:2] or index.shape != tokens.shape[:2]:
        raise ValueError(f"token_split: label {np.shape(label)} and index {index.shape} must "
                         f"both be (B, N) = {tokens.shape[:2]}")
    keep = keep_mask(confidence, label, index, threshold=threshold, context_topk=context_topk,
                     num_classes=num_classes)
    b, n, c = tokens.shape
    width = int(keep.sum(axis=1).max()) if keep.size else 0
    # Stable compaction: a stable argsort of "dropped?" lists kept positions first, in order.
    order = np.argsort(~keep, axis=1, kind="stable")[:, :width]
    kept = np.take_along_axis(keep, order, axis=1)
    kept_index = np.where(kept, np.take_along_axis(index, order, axis=1), -1).astype(np.int32)
    kept_tokens = np.take_along_axis(tokens, order[:, :, None], axis=1)
    kept_tokens = np.where(kept[:, :, None], kept_tokens, np.zeros((), tokens.dtype))
    return np.ascontiguousarray(kept_tokens.reshape(b, width, c)), np.ascontiguousarray(kept_index)


def token_reconstruct(base: np.ndarray, updates: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``(B, N, D), (B, M, D), (B, M) -> (B, N, D)``: row ``index[b, m]`` of a copy of ``base``
    becomes ``updates[b, m]`` where ``index >= 0``."""
    base, updates, index = np.asarray(base), np.asarray(updates), np.asarray(index)
    if base.ndim != 3 or updates.ndim != 3 or index.shape != updates.shape[:2]:
        raise ValueError(f"token_reconstruct: base {base.shape}, updates {updates.shape} and "
                         f"index {index.shape} must be (B, N, D), (B, M, D), (B, M)")
    out = base.copy()
    rows, slots = np.nonzero(index >= 0)
    out[rows, index[rows, slots]] = updates[rows, slots].astype(base.dtype)
    return out
