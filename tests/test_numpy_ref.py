"""The numpy twin of the token ops against the hand-worked edge cases and the per-token loop of
``op_cases``, and that it needs no torch."""

import subprocess
import sys

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

from dtp_deploy.ops import numpy_ref, reference


@pytest.mark.parametrize("name", list(EDGE_CASES))
def test_split_edge_cases(name):
    case = EDGE_CASES[name]
    tokens, confidence, label, index = edge_inputs(case)
    got, got_index = numpy_ref.token_split(tokens, confidence, label, index,
                                           threshold=case.threshold, context_topk=case.topk,
                                           num_classes=case.num_classes)
    assert got_index.dtype == np.int32
    assert_split_equal(got, got_index, *split_from_positions(tokens, index, case.kept))


@settings(max_examples=200, deadline=None)
@given(split_arrays(dtype=np.float32) | split_arrays(dtype=np.float16))
def test_split_matches_loop(case):
    tokens, confidence, label, index, threshold, topk, k = case
    got, got_index = numpy_ref.token_split(tokens, confidence, label, index, threshold=threshold,
                                           context_topk=topk, num_classes=k)
    assert got.dtype == tokens.dtype
    want = split_from_positions(tokens, index, loop_kept_positions(confidence, label, index,
                                                                   threshold, topk, k))
    assert_split_equal(got, got_index, *want)


@settings(max_examples=60, deadline=None)
@given(split_arrays())
def test_reconstruct_matches_torch_reference(case):
    tokens, confidence, label, index, threshold, topk, k = case
    b, n, c = tokens.shape
    grid = np.where(index >= 0, np.arange(n, dtype=np.int32), -1).astype(np.int32)
    updates, kept_index = numpy_ref.token_split(tokens, confidence, label, grid,
                                                threshold=threshold, context_topk=topk,
                                                num_classes=k)
    base = np.random.default_rng(1).standard_normal((b, n, c)).astype(tokens.dtype)
    want = reference.token_reconstruct(torch.from_numpy(base), torch.from_numpy(updates),
                                       torch.from_numpy(kept_index)).numpy()
    got = numpy_ref.token_reconstruct(base, updates, kept_index)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("module", ["dtp_deploy.ops.numpy_ref", "exporters.schemas",
                                    "exporters.ort_dtp_domain"])
def test_import_does_not_need_torch(module):
    code = f"import sys; import {module}; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
