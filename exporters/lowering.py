"""How ``torch.ops.dtp.token_split`` / ``token_reconstruct`` become ONNX, per graph flavour.

The functions here are onnxscript *trace-only* functions: ``torch.onnx.export(dynamo=True)``
calls them once per op node with the node's inputs (symbolic values) and its attribute
arguments (plain Python numbers), and records the ONNX nodes they create.

* ``plugin``: one ``dtp::TokenSplit`` / ``dtp::TokenReconstruct`` node each, with the string
  attributes TensorRT's ONNX parser uses to find the plugin (DESIGN.md section 2).
* ``portable``: the same semantics in standard ONNX ops (opset 18), exact, for any runtime:

  - keep rule: ``not (confidence > threshold)``, so equality and NaN stay (DESIGN.md section 2).
  - context slots, O(N K) per image (K classes) instead of a pairwise O(N^2) rank: per class,
    a TopK of k = ``context_topk`` finds the k-th largest score; members above it hold a slot,
    and members equal to it fill the slots left in position order (an exclusive CumSum), which
    makes the tie rule exact without relying on TopK's tie order. NaN confidences and labels
    outside ``[0, num_classes)`` are members of no class.
  - stable compaction: each kept token's output slot is the running count of kept tokens
    (CumSum); a ScatterElements writes positions into a row of N + 1 slots (dropped tokens all
    go to the scratch slot N), which is sliced to the M = max kept count slots; the rows are
    then gathered from the flattened tokens with a zero row appended for the padding. M = 0
    gives empty tensors.
  - reconstruct: ScatterElements into ``base`` padded with a scratch row N for the ``-1``
    padding rows, sliced back to N rows.
"""

from __future__ import annotations

from collections.abc import Callable

from onnxscript import opset18 as op
from onnxscript.values import Opset

from .schemas import DTP_DOMAIN, DTP_VERSION, PLUGIN_ATTRIBUTES, register_dtp_schemas

PORTABLE_MIN_OPSET = 18  # ReduceMax/ReduceSum with axes as input, ScatterElements, CumSum

_dtp = Opset(DTP_DOMAIN, DTP_VERSION)
_INT64 = 7  # onnx.TensorProto.INT64
_FLOAT = 1  # onnx.TensorProto.FLOAT


# -- plugin flavour -----------------------------------------------------------------------
def token_split_plugin(tokens, confidence, label, index, threshold: float, context_topk: int,
                       num_classes: int):
    """``dtp::TokenSplit`` with the op's attributes and the plugin lookup attributes."""
    confidence = op.Cast(confidence, to=_FLOAT)  # the op takes float; a no-op cast is optimised away
    kept_tokens, kept_index = _dtp.TokenSplit(
        tokens, confidence, label, index, threshold=float(threshold),
        context_topk=int(context_topk), num_classes=int(num_classes), _num_outputs=2,
        **PLUGIN_ATTRIBUTES)
    return kept_tokens, kept_index


def token_reconstruct_plugin(base, updates, index):
    """``dtp::TokenReconstruct`` with the plugin lookup attributes."""
    return _dtp.TokenReconstruct(base, updates, index, **PLUGIN_ATTRIBUTES)


# -- portable flavour ---------------------------------------------------------------------
def _ints(*values: int):
    return op.Constant(value_ints=list(values))


def _context_slots(confidence, label, eligible, n, context_topk: int, num_classes: int):
    """(B, N) bool: the tokens holding one of the ``context_topk`` slots of their label.

    Per class, the k-th largest score (TopK over a (B, K, N) table, with one extra ``-inf``
    column so that the row is never empty and k never 0) splits the members into those above
    it (all in) and those equal to it, of which the earliest fill the slots left: the exact tie
    rule without relying on TopK's own tie order. Per-class results are then read per token at
    its label, so only the table build, the TopK and one CumSum touch K x N elements.
    """
    label64 = op.Cast(label, to=_INT64)
    classes = op.Range(op.Constant(value_int=0), op.Constant(value_int=int(num_classes)),
                       op.Constant(value_int=1))
    in_range = op.And(op.Greater(label64, _ints(-1)), op.Less(label64, _ints(int(num_classes))))
    eligible = op.And(eligible, in_range)  # labels out of range are members of no class
    member = op.And(op.Equal(op.Unsqueeze(label64, _ints(1)), op.Unsqueeze(classes, _ints(0, 2))),
                    op.Unsqueeze(eligible, _ints(1)))  # (B, K, N)
    minus_inf = op.Constant(value_float=float("-inf"))
    scores = op.Where(member, op.Unsqueeze(confidence, _ints(1)), minus_inf)
    table_shape = op.Shape(scores)
    column = op.Expand(minus_inf, op.Concat(op.Slice(table_shape, _ints(0), _ints(2)), _ints(1), axis=0))
    k = op.Min(_ints(int(context_topk)), op.Add(n, _ints(1)))
    values, _ = op.TopK(op.Concat(scores, column, axis=2), k, axis=2, largest=1, sorted=1)
    kth = op.Slice(values, _ints(-1), op.Constant(value_ints=[2**62]), _ints(2))  # (B, K, 1)
    # Everything above the k-th value is among the top k: count it on the (B, K, k) values.
    above_count = op.ReduceSum(op.Cast(op.Greater(values, kth), to=_INT64), _ints(2), keepdims=0)
    free = op.Sub(_ints(int(context_topk)), above_count)  # (B, K) slots left for ties at kth
    tied = op.And(member, op.Equal(scores, kth))
    tied_before = op.CumSum(op.Cast(tied, to=_INT64), _ints(2), exclusive=1)  # (B, K, N)
    # Per token, at its own label (clamped; out-of-range tokens are not eligible anyway).
    at_label = op.Where(in_range, label64, _ints(0))
    kth_own = op.GatherElements(op.Squeeze(kth, _ints(2)), at_label, axis=1)
    free_own = op.GatherElements(free, at_label, axis=1)
    tied_before_own = op.Squeeze(op.GatherElements(tied_before, op.Unsqueeze(at_label, _ints(1)),
                                                   axis=1), _ints(1))
    wins_tie = op.And(op.Equal(confidence, kth_own), op.Less(tied_before_own, free_own))
    return op.And(eligible, op.Or(op.Greater(confidence, kth_own), wins_tie))


def token_split_portable(tokens, confidence, label, index, threshold: float, context_topk: int,
                         num_classes: int):
    """``TokenSplit`` in standard ops (see the module docstring for the method)."""
    confidence = op.Cast(confidence, to=_FLOAT)
    n = op.Shape(tokens, start=1, end=2)  # (1,) int64
    minus_one = op.CastLike(op.Constant(value_int=-1), index)
    valid = op.Greater(index, minus_one)
    # "not above" rather than "<=": a NaN confidence compares false both ways and must stay.
    confident = op.Greater(confidence, op.Constant(value_float=float(threshold)))
    keep = op.And(valid, op.Not(confident))
    positions = op.Range(op.Constant(value_int=0), op.Squeeze(n), op.Constant(value_int=1))
    if int(context_topk) > 0:
        eligible = op.And(valid, op.Not(op.IsNaN(confidence)))  # NaN takes no slot
        context = _context_slots(confidence, label, eligible, n, context_topk, num_classes)
        keep = op.Or(keep, context)
    keep64 = op.Cast(keep, to=_INT64)
    width = op.ReduceMax(op.ReduceSum(keep64, _ints(1), keepdims=0), keepdims=1)  # (1,) M
    slot = op.Sub(op.CumSum(keep64, _ints(1)), _ints(1))
    slot = op.Where(keep, slot, op.Expand(n, op.Shape(slot)))  # dropped -> scratch slot N
    batch = op.Shape(tokens, start=0, end=1)
    empty = op.Expand(_ints(-1), op.Concat(batch, op.Add(n, _ints(1)), axis=0))  # (B, N + 1)
    source = op.ScatterElements(empty, slot, op.Expand(positions, op.Shape(slot)), axis=1)
    source = op.Slice(source, _ints(0), width, _ints(1))  # (B, M) kept positions, -1 = pad
    filled = op.Greater(source, _ints(-1))
    kept_index = op.Where(filled, op.GatherElements(index, op.Where(filled, source, _ints(0)), axis=1),
                          minus_one)
    # Whole rows from the (B * N, C) view with one zero row appended for the padding: a row
    # copy, with no (B, M, C) index tensor and no broadcast select over the features.
    channels = op.Shape(tokens, start=2, end=3)
    zero_row = op.Expand(op.CastLike(op.Constant(value_float=0.0), tokens),
                         op.Concat(_ints(1), channels, axis=0))
    flat = op.Concat(op.Reshape(tokens, op.Concat(_ints(-1), channels, axis=0)), zero_row, axis=0)
    offsets = op.Unsqueeze(op.Mul(op.Range(op.Constant(value_int=0), op.Squeeze(batch),
                                           op.Constant(value_int=1)), op.Squeeze(n)), _ints(1))
    zero_at = op.Mul(op.Squeeze(batch), op.Squeeze(n))  # the appended row's number, B * N
    kept_tokens = op.Gather(flat, op.Where(filled, op.Add(source, offsets), zero_at), axis=0)
    return kept_tokens, kept_index


def token_reconstruct_portable(base, updates, index):
    """``TokenReconstruct`` in standard ops: scatter into a scratch-padded copy of ``base``."""
    n = op.Shape(base, start=1, end=2)
    index64 = op.Cast(index, to=_INT64)
    target = op.Where(op.Greater(index64, _ints(-1)), index64, op.Expand(n, op.Shape(index64)))
    scratch_shape = op.Concat(op.Shape(base, start=0, end=1), _ints(1),
                              op.Shape(base, start=2, end=3), axis=0)
    scratch = op.Expand(op.CastLike(op.Constant(value_float=0.0), base), scratch_shape)
    padded = op.Concat(base, scratch, axis=1)  # (B, N + 1, D)
    rows = op.Expand(op.Unsqueeze(target, _ints(2)), op.Shape(updates))
    written = op.ScatterElements(padded, rows, op.CastLike(updates, base), axis=1)
    return op.Slice(written, _ints(0), n, _ints(1))


_TABLES: dict[str, tuple[Callable, Callable]] = {
    "plugin": (token_split_plugin, token_reconstruct_plugin),
    "portable": (token_split_portable, token_reconstruct_portable),
}


def translation_table(flavour: str) -> dict:
    """``custom_translation_table`` for ``torch.onnx.export`` producing ``flavour`` graphs."""
    import torch

    import dtp_deploy.ops.library  # noqa: F401  (registers torch.ops.dtp.*)

    register_dtp_schemas()  # onnxscript looks the dtp ops up in onnx's schema registry
    split, reconstruct = _TABLES[flavour]
    return {torch.ops.dtp.token_split.default: split,
            torch.ops.dtp.token_reconstruct.default: reconstruct}
