"""How ``torch.ops.dtp.token_split`` / ``token_reconstruct`` become ONNX, per graph flavour.

The functions here are onnxscript *trace-only* functions: ``torch.onnx.export(dynamo=True)``
calls them once per op node with the node's inputs (symbolic values) and its attribute
arguments (plain Python numbers), and records the ONNX nodes they create.

* ``plugin``: one ``dtp::TokenSplit`` / ``dtp::TokenReconstruct`` node each, with the string
  attributes TensorRT's ONNX parser uses to find the plugin (DESIGN.md section 2).
* ``portable``: the same semantics in standard ONNX ops (opset 18), exact, for any runtime:

  - context rank: token n's rank within its label is the number of valid tokens of the same
    label that are more confident, or as confident and earlier. A pairwise comparison
    (B x N x N booleans per split, small next to attention's B x N x N x C) makes the tie rule
    exact without relying on any sort being stable.
  - stable compaction: each kept token's output slot is the running count of kept tokens
    (CumSum); a ScatterElements writes positions into a row of N + 1 slots (dropped tokens all
    go to the scratch slot N), which is sliced to the M = max kept count slots. M = 0 gives
    empty tensors, with no TopK of k = 0.
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


def _context_rank(confidence, label, valid, positions):
    """(B, N) float: rank of each token among the valid tokens of its label (0 = first)."""
    conf_self, conf_other = op.Unsqueeze(confidence, _ints(2)), op.Unsqueeze(confidence, _ints(1))
    pos_self, pos_other = op.Unsqueeze(positions, _ints(1)), op.Unsqueeze(positions, _ints(0))
    ahead = op.Or(op.Greater(conf_other, conf_self),
                  op.And(op.Equal(conf_other, conf_self), op.Less(pos_other, pos_self)))
    same_label = op.Equal(op.Unsqueeze(label, _ints(1)), op.Unsqueeze(label, _ints(2)))
    rivals = op.And(op.And(ahead, same_label), op.Unsqueeze(valid, _ints(1)))  # (B, n, m)
    # Counted in float: exact below 2**24 tokens, and reductions over bool-as-float are what
    # every backend supports.
    return op.ReduceSum(op.Cast(rivals, to=_FLOAT), _ints(2), keepdims=0)


def token_split_portable(tokens, confidence, label, index, threshold: float, context_topk: int,
                         num_classes: int):
    """``TokenSplit`` in standard ops (see the module docstring for the method)."""
    del num_classes  # only the CUDA kernel needs it (per-class counters)
    confidence = op.Cast(confidence, to=_FLOAT)
    n = op.Shape(tokens, start=1, end=2)  # (1,) int64
    minus_one = op.CastLike(op.Constant(value_int=-1), index)
    valid = op.Greater(index, minus_one)
    keep = op.And(valid, op.LessOrEqual(confidence, op.Constant(value_float=float(threshold))))
    positions = op.Range(op.Constant(value_int=0), op.Squeeze(n), op.Constant(value_int=1))
    if int(context_topk) > 0:
        rank = _context_rank(confidence, label, valid, positions)
        context = op.Less(rank, op.Constant(value_float=float(context_topk)))
        keep = op.Or(keep, op.And(valid, context))
    keep64 = op.Cast(keep, to=_INT64)
    width = op.ReduceMax(op.ReduceSum(keep64, _ints(1), keepdims=0), keepdims=1)  # (1,) M
    slot = op.Sub(op.CumSum(keep64, _ints(1)), _ints(1))
    slot = op.Where(keep, slot, op.Expand(n, op.Shape(slot)))  # dropped -> scratch slot N
    batch = op.Shape(tokens, start=0, end=1)
    empty = op.Expand(_ints(-1), op.Concat(batch, op.Add(n, _ints(1)), axis=0))  # (B, N + 1)
    source = op.ScatterElements(empty, slot, op.Expand(positions, op.Shape(slot)), axis=1)
    source = op.Slice(source, _ints(0), width, _ints(1))  # (B, M) kept positions, -1 = pad
    filled = op.Greater(source, _ints(-1))
    rows = op.Where(filled, source, _ints(0))
    kept_index = op.Where(filled, op.GatherElements(index, rows, axis=1), minus_one)
    row_shape = op.Concat(op.Shape(rows), op.Shape(tokens, start=2, end=3), axis=0)
    gathered = op.GatherElements(tokens, op.Expand(op.Unsqueeze(rows, _ints(2)), row_shape), axis=1)
    zero = op.CastLike(op.Constant(value_float=0.0), tokens)
    kept_tokens = op.Where(op.Unsqueeze(filled, _ints(2)), gathered, zero)
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
