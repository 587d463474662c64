"""CUDA token kernels (built as a torch extension) against dtp_deploy.ops.reference, and against
the hand-worked edge table and the per-token loop of ``op_cases``."""

from __future__ import annotations

import shutil

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

from dtp_deploy.ops.reference import token_reconstruct, token_split

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():
    pytest.skip("no CUDA device (torch.cuda.is_available() is False)", allow_module_level=True)
if shutil.which("nvcc") is None:
    pytest.skip("nvcc not on PATH: cannot build the kernel extension", allow_module_level=True)

# (B, N, C, dtype, threshold, context_topk, num_classes, confident share)
SPLIT_CASES = {
    "vit-b-1024-float": (1, 1024, 768, torch.float32, 0.9, 5, 150, 0.6),
    "batch4-half-different-counts": (4, 1024, 768, torch.float16, 0.9, 5, 150, None),
    "vit-l-4096-float": (2, 4096, 1024, torch.float32, 0.95, 5, 150, 0.7),
    "4096-half-odd-c": (2, 4096, 193, torch.float16, 0.9, 5, 19, 0.8),
    "m-zero": (3, 1024, 192, torch.float32, 0.5, 0, 10, 1.0),
    "m-equals-n": (2, 1024, 384, torch.float16, 2.0, 5, 150, 0.0),
    "no-context": (2, 1024, 256, torch.float32, 0.9, 0, 150, 0.5),
    "many-classes": (2, 1024, 64, torch.float32, 0.9, 3, 6000, 0.9),
}


@pytest.fixture(scope="module")
def ext():
    from dtp_deploy.trt.kernels_ext import load_kernels

    return load_kernels()


def _inputs(b, n, c, dtype, threshold, num_classes, confident, pad=0.1):
    device = "cuda"
    tokens = torch.randn(b, n, c, device=device).to(dtype)
    share = (torch.linspace(0.2, 0.95, b, device=device) if confident is None
             else torch.full((b,), confident, device=device))
    high = torch.rand(b, n, device=device) < share[:, None]
    # Quantised confidences create ties that the position tie-break must resolve.
    conf = torch.where(high, threshold + (1 - threshold) * torch.rand(b, n, device=device) + 1e-3,
                       threshold * torch.rand(b, n, device=device))
    # Rounding away from the threshold keeps every token on its side of it.
    conf = torch.where(high, torch.ceil(conf * 16), torch.floor(conf * 16)) / 16
    label = torch.randint(0, num_classes, (b, n), device=device, dtype=torch.int32)
    index = torch.arange(n, device=device, dtype=torch.int32).expand(b, n).clone()
    index[torch.rand(b, n, device=device) < pad] = -1
    return tokens, conf, label, index


@pytest.mark.parametrize("case", list(SPLIT_CASES), ids=list(SPLIT_CASES))
def test_split_matches_reference(ext, case):
    b, n, c, dtype, threshold, topk, k, confident = SPLIT_CASES[case]
    tokens, conf, label, index = _inputs(b, n, c, dtype, threshold, k, confident)
    want_tokens, want_index = token_split(tokens, conf, label, index, threshold=threshold,
                                          context_topk=topk, num_classes=k)
    got_tokens, got_index, counts = ext.token_split(tokens, conf, label, index, threshold, topk, k)
    assert got_index.shape == want_index.shape
    torch.testing.assert_close(got_index, want_index, rtol=0, atol=0)
    torch.testing.assert_close(got_tokens, want_tokens, rtol=0, atol=0)  # pure data movement
    torch.testing.assert_close(counts, (want_index >= 0).sum(1).to(torch.int32), rtol=0, atol=0)


def test_split_padded_layout(ext):
    tokens, conf, label, index = _inputs(3, 1024, 128, torch.float16, 0.9, 150, None)
    want_tokens, want_index = token_split(tokens, conf, label, index, threshold=0.9,
                                          context_topk=5, num_classes=150)
    kept, kept_index, counts, max_count = ext.token_split_raw(tokens, conf, label, index, 0.9, 5,
                                                              150, True)
    m = want_index.shape[1]
    assert int(max_count.item()) == m
    torch.testing.assert_close(kept[:, :m], want_tokens, rtol=0, atol=0)
    torch.testing.assert_close(kept_index[:, :m], want_index, rtol=0, atol=0)
    assert bool((kept_index[:, m:] == -1).all()) and bool((kept[:, m:] == 0).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["float", "half"])
@pytest.mark.parametrize("n,m,d", [(1024, 600, 768), (4096, 4096, 1024), (4096, 0, 150),
                                   (1024, 300, 193)], ids=["vit-b", "m-equals-n", "m-zero", "odd-d"])
def test_reconstruct_matches_reference(ext, dtype, n, m, d):
    b = 3
    base = torch.randn(b, n, d, device="cuda").to(dtype)
    updates = torch.randn(b, m, d, device="cuda").to(dtype)
    index = torch.stack([torch.randperm(n, device="cuda")[:m] for _ in range(b)]).to(torch.int32)
    index[torch.rand(b, m, device="cuda") < 0.1] = -1
    base_before = base.clone()
    got = ext.token_reconstruct(base, updates, index)
    torch.testing.assert_close(got, token_reconstruct(base, updates, index), rtol=0, atol=0)
    torch.testing.assert_close(base, base_before, rtol=0, atol=0)


def test_split_then_reconstruct_roundtrip(ext):
    tokens, conf, label, index = _inputs(4, 4096, 768, torch.float16, 0.9, 150, None, pad=0.0)
    kept, kept_index, _ = ext.token_split(tokens, conf, label, index, 0.9, 5, 150)
    out = ext.token_reconstruct(torch.zeros_like(tokens), kept, kept_index)
    keep = torch.zeros(tokens.shape[:2], dtype=torch.bool, device="cuda")
    valid = kept_index >= 0
    keep.scatter_(1, kept_index.clamp(min=0).long(), valid)
    torch.testing.assert_close(out, tokens * keep[..., None].to(tokens.dtype), rtol=0, atol=0)


def _cuda(*arrays):
    return [torch.from_numpy(np.ascontiguousarray(a)).cuda() for a in arrays]


@pytest.mark.parametrize("name", list(EDGE_CASES))
def test_split_edge_cases(ext, name):
    case = EDGE_CASES[name]
    tokens, confidence, label, index = edge_inputs(case)
    got_tokens, got_index, counts = ext.token_split(*_cuda(tokens, confidence, label, index),
                                                    case.threshold, case.topk, case.num_classes)
    assert_split_equal(got_tokens.cpu(), got_index.cpu(), *split_from_positions(tokens, index, case.kept))
    assert counts.cpu().tolist() == [len(row) for row in case.kept]


@settings(max_examples=150, deadline=None)
@given(split_arrays(max_tokens=40) | split_arrays(max_tokens=40, dtype=np.float16))
def test_split_matches_loop(ext, case):
    tokens, confidence, label, index, threshold, topk, k = case
    got_tokens, got_index, _ = ext.token_split(*_cuda(tokens, confidence, label, index),
                                               threshold, topk, k)
    want = split_from_positions(tokens, index, loop_kept_positions(confidence, label, index,
                                                                   threshold, topk, k))
    assert_split_equal(got_tokens.cpu(), got_index.cpu(), *want)


def _edge_inputs(rng, b, n, c, threshold, num_classes, dtype):
    """Batch ``b`` with a different confident share per image, and the contract's edges mixed
    in: confidences equal to the threshold, NaN, +-inf, exact ties, out-of-range labels."""
    share = np.linspace(0.3, 0.95, b)[:, None]
    confidence = np.where(rng.random((b, n)) < share, rng.uniform(threshold, 1.0, (b, n)),
                          rng.uniform(0.0, threshold, (b, n)))
    confidence = (np.round(confidence * 16) / 16).astype(np.float32)  # ties, some at threshold
    edges = np.array([threshold, np.nan, np.inf, -np.inf], np.float32)
    pick = rng.random((b, n)) < 0.05
    confidence[pick] = rng.choice(edges, int(pick.sum()))
    label = rng.integers(0, num_classes, (b, n)).astype(np.int32)
    out_of_range = rng.random((b, n)) < 0.02
    label[out_of_range] = rng.choice([-1, num_classes], int(out_of_range.sum()))
    tokens = rng.standard_normal((b, n, c)).astype(dtype)
    return tokens, confidence, label


def test_two_splits_chained_batch3(ext):
    """The exported graphs' chain: the second split takes the first one's padded output (its
    kept_index as index) with new confidences; batch 3 keeps a different count per image."""
    rng = np.random.default_rng(0)
    b, n, c, k = 3, 1024, 384, 150
    tokens, confidence, label = _edge_inputs(rng, b, n, c, 0.5, k, np.float16)
    index = np.tile(np.arange(n, dtype=np.int32), (b, 1))
    kept1 = loop_kept_positions(confidence, label, index, 0.5, 5, k)
    want_tokens1, want_index1 = split_from_positions(tokens, index, kept1)
    assert len({len(row) for row in kept1}) == 3, "images must keep different counts"
    got_tokens1, got_index1, _ = ext.token_split(*_cuda(tokens, confidence, label, index), 0.5, 5, k)
    assert_split_equal(got_tokens1.cpu(), got_index1.cpu(), want_tokens1, want_index1)

    _, confidence2, label2 = _edge_inputs(rng, b, want_index1.shape[1], c, 0.75, k, np.float16)
    kept2 = loop_kept_positions(confidence2, label2, want_index1, 0.75, 5, k)
    got_tokens2, got_index2, _ = ext.token_split(got_tokens1, *_cuda(confidence2, label2),
                                                 got_index1, 0.75, 5, k)
    assert_split_equal(got_tokens2.cpu(), got_index2.cpu(),
                       *split_from_positions(want_tokens1, want_index1, kept2))
    # kept_index is still a position of the original grid.
    assert set(got_index2.cpu().numpy().ravel()) - {-1} <= set(range(n))
