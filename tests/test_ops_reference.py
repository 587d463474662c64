"""The reference token ops against a plain per-token loop written from DESIGN.md section 2."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dtp_deploy.ops import reference, token_reconstruct, token_split


def loop_keep(confidence, label, index, threshold, topk):
    """Per image, per token: the keep rule read literally."""
    keep = []
    for b in range(confidence.shape[0]):
        row = []
        for n in range(confidence.shape[1]):
            if index[b, n] < 0:
                row.append(False)
                continue
            same = [m for m in range(confidence.shape[1])
                    if index[b, m] >= 0 and label[b, m] == label[b, n]]
            ranked = sorted(same, key=lambda m: (-float(confidence[b, m]), m))
            row.append(bool(confidence[b, n] <= threshold) or n in ranked[:topk])
        keep.append(row)
    return torch.tensor(keep, dtype=torch.bool).reshape(confidence.shape)


def loop_split(tokens, keep, index):
    width = int(keep.sum(1).max()) if keep.numel() else 0
    out = torch.zeros(tokens.shape[0], width, tokens.shape[2], dtype=tokens.dtype)
    out_index = torch.full((tokens.shape[0], width), -1, dtype=torch.int32)
    for b in range(tokens.shape[0]):
        kept = [n for n in range(tokens.shape[1]) if keep[b, n]]
        for m, n in enumerate(kept):
            out[b, m] = tokens[b, n]
            out_index[b, m] = index[b, n]
    return out, out_index


@st.composite
def split_case(draw):
    b = draw(st.integers(1, 3))
    n = draw(st.integers(0, 24))
    c = draw(st.integers(1, 5))
    k = draw(st.integers(1, 4))
    # Few distinct confidence levels so ties are common.
    levels = draw(st.sampled_from([3, 5, 1000]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    confidence = torch.randint(0, levels, (b, n), generator=gen).float() / levels
    label = torch.randint(0, k, (b, n), dtype=torch.int32, generator=gen)
    index = torch.stack([torch.randperm(n, generator=gen) for _ in range(b)]).to(torch.int32)
    pad = torch.rand(b, n, generator=gen) < draw(st.sampled_from([0.0, 0.3]))
    index = torch.where(pad, -1, index).to(torch.int32)
    threshold = draw(st.sampled_from([-1.0, 0.0, 0.3, 0.5, 0.99, 2.0]))
    topk = draw(st.integers(0, 6))
    return torch.randn(b, n, c, generator=gen), confidence, label, index, threshold, topk, k


@settings(max_examples=150, deadline=None)
@given(split_case())
def test_split_matches_loop(case):
    tokens, confidence, label, index, threshold, topk, k = case
    keep = loop_keep(confidence, label, index, threshold, topk)
    kept, kept_index = token_split(tokens, confidence, label, index, threshold=threshold,
                                   context_topk=topk, num_classes=k)
    want, want_index = loop_split(tokens, keep, index)
    assert kept_index.dtype == torch.int32
    torch.testing.assert_close(kept_index, want_index)
    torch.testing.assert_close(kept, want)


@settings(max_examples=80, deadline=None)
@given(split_case())
def test_reconstruct_after_split_puts_rows_back(case):
    tokens, confidence, label, index, threshold, topk, k = case
    n = tokens.shape[1]
    # Reconstruct needs positions in [0, N): use the identity grid, with the same padding.
    grid_index = torch.where(index >= 0, torch.arange(n, dtype=torch.int32), -1).to(torch.int32)
    kept, kept_index = token_split(tokens, confidence, label, grid_index, threshold=threshold,
                                   context_topk=topk, num_classes=k)
    base = torch.full_like(tokens, 7.0)
    out = token_reconstruct(base, kept, kept_index)
    keep = reference.keep_mask(confidence, label, grid_index, threshold=threshold, context_topk=topk)
    torch.testing.assert_close(out, torch.where(keep.unsqueeze(-1), tokens, base))
    assert torch.equal(base, torch.full_like(tokens, 7.0)), "base must not be modified"


@pytest.mark.parametrize("threshold,expected_width", [(2.0, 6), (-1.0, 0)], ids=["nothing-exits", "everything-exits"])
def test_split_edge_widths(threshold, expected_width):
    tokens = torch.randn(2, 6, 4)
    index = torch.arange(6, dtype=torch.int32).expand(2, 6)
    kept, kept_index = token_split(tokens, torch.rand(2, 6), torch.zeros(2, 6, dtype=torch.int32),
                                   index, threshold=threshold, context_topk=0, num_classes=1)
    assert kept.shape == (2, expected_width, 4) and kept_index.shape == (2, expected_width)
    if expected_width:
        torch.testing.assert_close(kept, tokens)


def test_split_batch_with_different_keep_counts_pads_with_zeros():
    tokens = torch.randn(2, 4, 3)
    confidence = torch.tensor([[0.1, 0.9, 0.2, 0.95], [0.99, 0.99, 0.99, 0.1]])
    index = torch.arange(4, dtype=torch.int32).expand(2, 4)
    kept, kept_index = token_split(tokens, confidence, torch.zeros(2, 4, dtype=torch.int32), index,
                                   threshold=0.5, context_topk=0, num_classes=1)
    assert kept_index.tolist() == [[0, 2], [3, -1]]
    assert torch.equal(kept[1, 1], torch.zeros(3))
    torch.testing.assert_close(kept[1, 0], tokens[1, 3])


def test_context_topk_ties_prefer_lower_position():
    confidence = torch.tensor([[0.95, 0.99, 0.99, 0.99]])
    index = torch.arange(4, dtype=torch.int32)[None]
    _, kept_index = token_split(torch.randn(1, 4, 2), confidence, torch.zeros(1, 4, dtype=torch.int32),
                                index, threshold=0.5, context_topk=2, num_classes=1)
    assert kept_index.tolist() == [[1, 2]]


def test_half_tokens_keep_their_dtype():
    tokens = torch.randn(1, 5, 8).half()
    kept, _ = token_split(tokens, torch.rand(1, 5), torch.zeros(1, 5, dtype=torch.int32),
                          torch.arange(5, dtype=torch.int32)[None], threshold=0.5, num_classes=1)
    assert kept.dtype == torch.half


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="must be"):
        token_split(torch.randn(2, 5, 3), torch.rand(2, 4), torch.zeros(2, 5, dtype=torch.int32),
                    torch.zeros(2, 5, dtype=torch.int32), threshold=0.5)
    with pytest.raises(ValueError, match="must be"):
        token_reconstruct(torch.randn(2, 5, 3), torch.randn(2, 2, 3), torch.zeros(2, 3, dtype=torch.int32))
