"""The numpy twin of the token ops against the torch reference, and that it needs no torch."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dtp_deploy.ops import numpy_ref, reference


@st.composite
def split_case(draw):
    b, n, c = draw(st.integers(1, 3)), draw(st.integers(0, 20)), draw(st.integers(1, 4))
    k = draw(st.integers(1, 4))
    levels = draw(st.sampled_from([2, 4, 1000]))  # few levels: many ties
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    confidence = (rng.integers(0, levels, (b, n)) / levels).astype(np.float32)
    label = rng.integers(0, k, (b, n)).astype(np.int32)
    index = np.stack([rng.permutation(n) for _ in range(b)]).reshape(b, n).astype(np.int32)
    index[rng.random((b, n)) < draw(st.sampled_from([0.0, 0.3]))] = -1
    threshold = draw(st.sampled_from([-1.0, 0.0, 0.25, 0.5, 0.9, 2.0]))
    topk = draw(st.sampled_from([0, 1, 2, 5]))
    dtype = draw(st.sampled_from([np.float32, np.float16]))
    tokens = rng.standard_normal((b, n, c)).astype(dtype)
    return tokens, confidence, label, index, threshold, topk, k


def _torch_split(tokens, confidence, label, index, threshold, topk, k):
    kept, kept_index = reference.token_split(
        torch.from_numpy(tokens), torch.from_numpy(confidence), torch.from_numpy(label),
        torch.from_numpy(index), threshold=threshold, context_topk=topk, num_classes=k)
    return kept.numpy(), kept_index.numpy()


@settings(max_examples=200, deadline=None)
@given(split_case())
def test_split_matches_torch_reference(case):
    tokens, confidence, label, index, threshold, topk, k = case
    want, want_index = _torch_split(*case)
    got, got_index = numpy_ref.token_split(tokens, confidence, label, index, threshold=threshold,
                                           context_topk=topk, num_classes=k)
    assert got.dtype == tokens.dtype and got_index.dtype == np.int32
    assert got.shape == want.shape
    np.testing.assert_array_equal(got_index, want_index)
    np.testing.assert_array_equal(got, want)


@settings(max_examples=100, deadline=None)
@given(split_case())
def test_reconstruct_matches_torch_reference(case):
    tokens, confidence, label, index, threshold, topk, k = case
    b, n, c = tokens.shape
    grid = np.where(index >= 0, np.arange(n, dtype=np.int32), -1).astype(np.int32)
    updates, kept_index = numpy_ref.token_split(tokens, confidence, label, grid,
                                                threshold=threshold, context_topk=topk)
    base = np.random.default_rng(1).standard_normal((b, n, c)).astype(tokens.dtype)
    want = reference.token_reconstruct(torch.from_numpy(base), torch.from_numpy(updates),
                                       torch.from_numpy(kept_index)).numpy()
    got = numpy_ref.token_reconstruct(base, updates, kept_index)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("threshold, want_width", [(-1.0, 0), (2.0, 6)], ids=["all-exit", "none-exit"])
def test_extreme_thresholds(threshold, want_width):
    tokens = np.ones((2, 6, 3), np.float32)
    confidence = np.full((2, 6), 0.5, np.float32)
    index = np.tile(np.arange(6, dtype=np.int32), (2, 1))
    kept, kept_index = numpy_ref.token_split(tokens, confidence, np.zeros((2, 6), np.int32), index,
                                             threshold=threshold)
    assert kept.shape == (2, want_width, 3) and kept_index.shape == (2, want_width)


def test_ties_go_to_lower_position():
    confidence = np.array([[0.9, 0.95, 0.95, 0.95, 0.2]], np.float32)
    label = np.array([[1, 1, 1, 1, 1]], np.int32)
    index = np.arange(5, dtype=np.int32)[None]
    keep = numpy_ref.keep_mask(confidence, label, index, threshold=0.5, context_topk=2)
    np.testing.assert_array_equal(keep, [[False, True, True, False, True]])


@pytest.mark.parametrize("module", ["dtp_deploy.ops.numpy_ref", "exporters.schemas",
                                    "exporters.ort_dtp_domain"])
def test_import_does_not_need_torch(module):
    code = f"import sys; import {module}; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
