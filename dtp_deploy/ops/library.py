"""The token ops as ``torch.ops.dtp.*`` custom ops.

The model calls these, never the reference functions directly: eagerly they run the reference
semantics (in inference mode without the dispatcher), and under ``torch.export`` they stay
single nodes with a data-dependent width ``M``, which the ONNX exporter then maps to a plugin
node or to a standard-op lowering.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import reference


def _split_kernel(
    tokens: Tensor, confidence: Tensor, label: Tensor, index: Tensor,
    threshold: float, context_topk: int, num_classes: int,
) -> tuple[Tensor, Tensor]:
    kept_tokens, kept_index = reference.token_split(
        tokens, confidence, label, index,
        threshold=threshold, context_topk=context_topk, num_classes=num_classes)
    return kept_tokens.contiguous(), kept_index.contiguous()


token_split_op = torch.library.custom_op("dtp::token_split", _split_kernel, mutates_args=())


@token_split_op.register_fake
def _(tokens, confidence, label, index, threshold, context_topk, num_classes):
    ctx = torch.library.get_ctx()
    # A later split's input width is itself data-dependent: then there is no static bound.
    upper = tokens.shape[1] if isinstance(tokens.shape[1], int) else None
    width = ctx.new_dynamic_size(min=0, max=upper)
    batch, _, channels = tokens.shape
    return tokens.new_empty(batch, width, channels), index.new_empty(batch, width)


@torch.library.custom_op("dtp::token_reconstruct", mutates_args=())
def token_reconstruct_op(base: Tensor, updates: Tensor, index: Tensor) -> Tensor:
    return reference.token_reconstruct(base, updates, index)


@token_reconstruct_op.register_fake
def _(base, updates, index):
    return torch.empty_like(base)


def _reconstruct_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[2])


def _reconstruct_backward(ctx, grad):
    """Rows overwritten by an update take their gradient from the update, the rest from base."""
    (index,) = ctx.saved_tensors
    rows = index.clamp(min=0).long().unsqueeze(-1).expand(-1, -1, grad.shape[-1])
    valid = (index >= 0).unsqueeze(-1)
    grad_updates = grad.gather(1, rows) * valid
    overwritten = reference.token_reconstruct(torch.ones_like(grad[..., :1]),
                                              torch.zeros_like(grad_updates[..., :1]), index)
    return grad * overwritten, grad_updates, None


token_reconstruct_op.register_autograd(_reconstruct_backward, setup_context=_reconstruct_setup)


def _eager_inference() -> bool:
    """Eager code under ``torch.inference_mode()``: nothing traces the ops, nothing needs their
    autograd, so the model may call their kernels directly. Going through the dispatcher into
    a Python kernel costs about 50 us a split and 15 us a reconstruct on a CPU, as much as the
    work itself at small sizes."""
    # is_compiling first: Dynamo cannot trace is_inference_mode_enabled.
    return not torch.compiler.is_compiling() and torch.is_inference_mode_enabled()


def token_split(
    tokens: Tensor, confidence: Tensor, label: Tensor, index: Tensor, *,
    threshold: float, context_topk: int = 0, num_classes: int,
) -> tuple[Tensor, Tensor]:
    """``torch.ops.dtp.token_split``; see :func:`dtp_deploy.ops.reference.token_split`."""
    args = (float(threshold), int(context_topk), int(num_classes))
    split = _split_kernel if _eager_inference() else token_split_op
    return split(tokens, confidence, label, index, *args)


def token_reconstruct(base: Tensor, updates: Tensor, index: Tensor) -> Tensor:
    """``torch.ops.dtp.token_reconstruct``; see :func:`dtp_deploy.ops.reference.token_reconstruct`."""
    if _eager_inference():
        return reference.token_reconstruct(base, updates, index)
    return token_reconstruct_op(base, updates, index)
