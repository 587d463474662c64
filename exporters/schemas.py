"""ONNX operator schemas of the ``dtp`` domain, version 1 (DESIGN.md section 2).

ONNX itself does not know ``dtp::TokenSplit`` / ``dtp::TokenReconstruct``. Registering these
schemas (once per process, :func:`register_dtp_schemas`) lets ``onnx.checker`` with
``full_check=True`` and ``onnx.shape_inference`` with ``strict_mode=True`` accept plugin-flavour
graphs: attributes are type-checked and output types and shapes are inferred. The kept width
``M`` of a split depends on the data, so it is inferred as a symbolic dimension named after the
node (``<node name>_M``).

torch-free: runtimes import this with only ``onnx`` installed.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto
from onnx.defs import OpSchema

DTP_DOMAIN = "dtp"
DTP_VERSION = 1
# What TensorRT's ONNX parser reads to find a plugin creator (name = op type).
PLUGIN_ATTRIBUTES = {"plugin_namespace": "dtp", "plugin_version": "1"}

_ROW_TYPES = ["tensor(float)", "tensor(float16)"]
# TokenSplit's bound attribute (DESIGN.md section 3): from the second split on, the input width is
# itself data-dependent, so the TensorRT plugin takes its size tensor's bound from here.
MAX_TOKENS = "max_tokens"


def bound_token_splits(model: onnx.ModelProto) -> int | None:
    """Write ``max_tokens`` on every ``dtp::TokenSplit`` node of ``model``, in place: the widest
    static token count any split sees, i.e. the full sequence of the first split (the grid, plus
    DoViT's class token), which bounds every later split's data-dependent width. Returns the
    bound, or None (nothing written) when no split has a static width (``--dynamic-shape``)."""
    register_dtp_schemas()
    typed = onnx.shape_inference.infer_shapes(model)
    dims = {v.name: v.type.tensor_type.shape.dim
            for v in (*typed.graph.input, *typed.graph.value_info, *typed.graph.output)}
    splits = [n for n in model.graph.node if n.domain == DTP_DOMAIN and n.op_type == "TokenSplit"]
    widths = [dims[n.input[0]][1].dim_value for n in splits
              if n.input[0] in dims and len(dims[n.input[0]]) == 3 and dims[n.input[0]][1].HasField("dim_value")]
    if not widths:
        return None
    bound = max(widths)
    for node in splits:
        kept = [a for a in node.attribute if a.name != MAX_TOKENS]
        del node.attribute[:]
        node.attribute.extend([*kept, onnx.helper.make_attribute(MAX_TOKENS, int(bound))])
    return bound


def _dims_of(value_type: onnx.TypeProto) -> list[onnx.TensorShapeProto.Dimension] | None:
    tensor = value_type.tensor_type
    return list(tensor.shape.dim) if tensor.HasField("shape") else None


def _tensor(elem_type: int, dims: list[onnx.TensorShapeProto.Dimension | str | None] | None
            ) -> onnx.TypeProto:
    """A tensor type; each dim is copied from a dimension, named by a string, or left unknown."""
    out = onnx.TypeProto()
    out.tensor_type.elem_type = elem_type
    if dims is None:
        return out
    shape = out.tensor_type.shape
    shape.SetInParent()  # rank known even when every dim is unknown
    for dim in dims:
        new = shape.dim.add()
        if isinstance(dim, str):
            new.dim_param = dim
        elif dim is not None:
            new.CopyFrom(dim)
    return out


def _require_rank(ctx, slot: int, name: str, rank: int, op_type: str):
    dims = _dims_of(ctx.get_input_type(slot))
    if dims is not None and len(dims) != rank:
        raise onnx.shape_inference.InferenceError(
            f"{op_type} {_node_name(ctx, op_type)!r}: input {name} has rank {len(dims)}, "
            f"expected {rank}")
    return dims


def _node_name(ctx, op_type: str) -> str:
    # onnx describes the node as "node TokenSplit[dtp] (name)"; keep just the name.
    shown = ctx.get_display_name() or ""
    if shown.endswith(")") and "(" in shown:
        shown = shown[shown.rindex("(") + 1:-1]
    return shown or op_type


def _infer_token_split(ctx) -> None:
    tokens = ctx.get_input_type(0)
    dims = _require_rank(ctx, 0, "tokens", 3, "TokenSplit")
    for slot, name in ((1, "confidence"), (2, "label"), (3, "index")):
        _require_rank(ctx, slot, name, 2, "TokenSplit")
    width = f"{_node_name(ctx, 'TokenSplit')}_M"  # data-dependent, 0 <= M <= N
    if dims is None:
        row_dims = index_dims = None
    else:
        row_dims, index_dims = [dims[0], width, dims[2]], [dims[0], width]
    ctx.set_output_type(0, _tensor(tokens.tensor_type.elem_type, row_dims))
    ctx.set_output_type(1, _tensor(TensorProto.INT32, index_dims))


def _infer_token_reconstruct(ctx) -> None:
    base = ctx.get_input_type(0)
    dims = _require_rank(ctx, 0, "base", 3, "TokenReconstruct")
    _require_rank(ctx, 1, "updates", 3, "TokenReconstruct")
    _require_rank(ctx, 2, "index", 2, "TokenReconstruct")
    ctx.set_output_type(0, _tensor(base.tensor_type.elem_type, dims))


def _plugin_attributes() -> list[OpSchema.Attribute]:
    # Only for TensorRT's parser; they do not change what the op computes.
    return [OpSchema.Attribute(name, OpSchema.AttrType.STRING,
                               f"TensorRT plugin {name.split('_')[1]} (always {value!r})",
                               required=False)
            for name, value in PLUGIN_ATTRIBUTES.items()]


def dtp_schemas() -> list[OpSchema]:
    """The two schemas (new objects on each call)."""
    param = OpSchema.FormalParameter
    split = OpSchema(
        "TokenSplit", DTP_DOMAIN, DTP_VERSION,
        doc=("Keep the tokens whose confidence is at most `threshold`, plus the `context_topk` "
             "most confident valid tokens of each predicted label (ties: lower position); "
             "compact them in order into M = max kept count rows, zero / -1 padded."),
        inputs=[param("tokens", "T", "(B, N, C) token features"),
                param("confidence", "tensor(float)", "(B, N) confidence"),
                param("label", "tensor(int32)", "(B, N) predicted class"),
                param("index", "tensor(int32)", "(B, N) grid position, -1 = padding")],
        outputs=[param("kept_tokens", "T", "(B, M, C)"),
                 param("kept_index", "tensor(int32)", "(B, M) grid position, -1 = padding")],
        type_constraints=[("T", _ROW_TYPES, "token features")],
        attributes=[
            OpSchema.Attribute("threshold", OpSchema.AttrType.FLOAT,
                               "tokens above it exit (except context tokens)", required=True),
            OpSchema.Attribute("context_topk", OpSchema.AttrType.INT,
                               "context tokens kept per predicted class (0 = none)",
                               required=True),
            OpSchema.Attribute("num_classes", OpSchema.AttrType.INT,
                               "number of classes (labels lie in [0, num_classes))",
                               required=True),
            OpSchema.Attribute(MAX_TOKENS, OpSchema.AttrType.INT,
                               "token count of the full sequence (the grid, plus a class token): the static bound of N and M "
                               "that TensorRT needs for the size tensor M (absent: unknown)",
                               required=False),
            *_plugin_attributes()])
    split.set_type_and_shape_inference_function(_infer_token_split)
    reconstruct = OpSchema(
        "TokenReconstruct", DTP_DOMAIN, DTP_VERSION,
        doc="`base` with row index[b, m] replaced by updates[b, m] wherever index >= 0.",
        inputs=[param("base", "T", "(B, N, D)"), param("updates", "T", "(B, M, D)"),
                param("index", "tensor(int32)", "(B, M) grid position, -1 = padding")],
        outputs=[param("out", "T", "(B, N, D)")],
        type_constraints=[("T", _ROW_TYPES, "rows")],
        attributes=_plugin_attributes())
    reconstruct.set_type_and_shape_inference_function(_infer_token_reconstruct)
    return [split, reconstruct]


def register_dtp_schemas() -> None:
    """Make the ``dtp`` v1 schemas known to ``onnx`` in this process; safe to call again."""
    for schema in dtp_schemas():
        if not onnx.defs.has(schema.name, DTP_VERSION, DTP_DOMAIN):
            onnx.defs.register_schema(schema)
