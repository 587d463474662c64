"""The reference token ops against hand-worked edge cases and a plain per-token loop written from
DESIGN.md section 2 (both in ``op_cases``)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from op_cases import (
    EDGE_CASES,
    assert_split_equal,
    edge_inputs,
    loop_kept_positions,
    split_arrays,
    split_from_positions,
)

from dtp_deploy.ops import reference, token_reconstruct, token_split


def _torch(*arrays):
    return [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]


def _inference_split(*args, **kwargs):
    """The torch op as the model calls it in inference mode: its kernel without the dispatcher."""
    with torch.inference_mode():
        return token_split(*args, **kwargs)


SPLITS = {"reference": reference.token_split, "torch-op": token_split,
          "torch-op-inference": _inference_split}


@pytest.mark.parametrize("name", list(EDGE_CASES))
@pytest.mark.parametrize("split", list(SPLITS))
def test_split_edge_cases(split, name):
    case = EDGE_CASES[name]
    tokens, confidence, label, index = edge_inputs(case)
    kept, kept_index = SPLITS[split](*_torch(tokens, confidence, label, index), threshold=case.threshold,
                                     context_topk=case.topk, num_classes=case.num_classes)
    assert kept_index.dtype == torch.int32
    assert_split_equal(kept, kept_index, *split_from_positions(tokens, index, case.kept))


def test_edge_table_agrees_with_the_loop():
    """The hand-worked answers and the literal loop check each other."""
    for name, case in EDGE_CASES.items():
        _, confidence, label, index = edge_inputs(case)
        assert loop_kept_positions(confidence, label, index, case.threshold, case.topk,
                                   case.num_classes) == case.kept, name


@pytest.mark.parametrize("split", ["reference", "torch-op-inference"])
@settings(max_examples=200, deadline=None)
@given(split_arrays(dtype=np.float32) | split_arrays(dtype=np.float16))
def test_split_matches_loop(split, case):
    """Batches of one image (the reference compacts them with ``nonzero``) and of several."""
    tokens, confidence, label, index, threshold, topk, k = case
    kept, kept_index = SPLITS[split](*_torch(tokens, confidence, label, index),
                                     threshold=threshold, context_topk=topk, num_classes=k)
    want = split_from_positions(tokens, index, loop_kept_positions(confidence, label, index,
                                                                   threshold, topk, k))
    assert kept.dtype == torch.from_numpy(tokens).dtype
    assert_split_equal(kept, kept_index, *want)


@settings(max_examples=100, deadline=None)
@given(split_arrays())
def test_reconstruct_after_split_puts_rows_back(case):
    tokens, confidence, label, index, threshold, topk, k = case
    b, n, _ = tokens.shape
    # Reconstruct needs distinct positions in [0, N): the identity grid, with the same padding.
    grid = np.where(index >= 0, np.arange(n, dtype=np.int32), -1).astype(np.int32)
    kept, kept_index = token_split(*_torch(tokens, confidence, label, grid), threshold=threshold,
                                   context_topk=topk, num_classes=k)
    base = torch.full(tokens.shape, 7.0)
    out = token_reconstruct(base, kept, kept_index)
    with torch.inference_mode():  # the model's path: the kernel without the dispatcher
        assert torch.equal(token_reconstruct(base, kept, kept_index), out)
    want = np.full(tokens.shape, 7.0, np.float32)
    for i, row in enumerate(loop_kept_positions(confidence, label, grid, threshold, topk, k)):
        want[i, row] = tokens[i, row]
    np.testing.assert_array_equal(out.numpy(), want)
    assert torch.equal(base, torch.full(tokens.shape, 7.0)), "base must not be modified"


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="must be"):
        token_split(torch.randn(2, 5, 3), torch.rand(2, 4), torch.zeros(2, 5, dtype=torch.int32),
                    torch.zeros(2, 5, dtype=torch.int32), threshold=0.5, num_classes=1)
    with pytest.raises(ValueError, match="must be"):
        token_reconstruct(torch.randn(2, 5, 3), torch.randn(2, 2, 3), torch.zeros(2, 3, dtype=torch.int32))


def test_strict_export_keeps_each_op_one_node():
    """Under Dynamo (strict export, torch.compile) the model's calls stay the custom ops."""
    class Ops(torch.nn.Module):
        def forward(self, tokens, confidence, label, index):
            kept, kept_index = token_split(tokens, confidence, label, index, threshold=0.5,
                                           context_topk=1, num_classes=3)
            return token_reconstruct(tokens, kept, kept_index)

    tokens, confidence = torch.randn(2, 6, 4), torch.rand(2, 6)
    label = torch.randint(0, 3, (2, 6), dtype=torch.int32)
    index = torch.arange(6, dtype=torch.int32).expand(2, 6).contiguous()
    program = torch.export.export(Ops(), (tokens, confidence, label, index), strict=True)
    targets = [n.target for n in program.graph.nodes if n.op == "call_function"]
    assert torch.ops.dtp.token_split.default in targets
    assert torch.ops.dtp.token_reconstruct.default in targets
