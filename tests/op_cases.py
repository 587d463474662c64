"""One oracle for every TokenSplit implementation (DESIGN.md section 2), independent of all of them.

* ``EDGE_CASES``: small inputs whose kept positions were worked out by hand from the contract.
* ``loop_kept_positions``: the keep rule read literally, image by image, token by token, in plain
  Python (no sort trick, no vectorisation shared with the code under test).
* ``split_arrays``: a Hypothesis strategy drawing the arrays themselves (NaN, +-inf, -0.0, values
  equal to the threshold, exact ties, out-of-range labels, duplicate and -1 indices, all-padding
  rows, B up to 3), so that a failure shrinks to a readable case.

The test modules of the reference, the numpy twin, the exported graphs and the CUDA kernels all
import this one table; ``plugins/tests/kernel_test.cu`` carries the same cases in C++.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

NAN, INF = float("nan"), float("inf")


@dataclass(frozen=True)
class EdgeCase:
    confidence: list[list[float]]
    label: list[list[int]]
    threshold: float
    topk: int
    num_classes: int
    kept: list[list[int]]  # kept positions per image, worked out by hand
    index: list[list[int]] | None = None  # None: the identity grid
    note: str = field(default="", compare=False)


# threshold 0.9 is not a float32 number: the op compares float32 confidences with float32(0.9).
_T09 = float(np.float32(0.9))
_ABOVE_T09 = float(np.nextafter(np.float32(0.9), np.float32(1)))
_BELOW_T09 = float(np.nextafter(np.float32(0.9), np.float32(0)))

EDGE_CASES: dict[str, EdgeCase] = {
    "nan-is-kept-takes-no-slot": EdgeCase(
        [[0.95, NAN, 0.99, 0.97, 0.2]], [[0, 0, 0, 0, 0]], 0.5, 2, 1, [[1, 2, 3, 4]],
        note="NaN stays; the two context slots go to 0.99 and 0.97, so 0.95 exits"),
    "equal-to-threshold-stays": EdgeCase(
        [[0.5, 0.500001, 0.49, 0.6]], [[0, 0, 0, 0]], 0.5, 0, 1, [[0, 2]]),
    "equal-to-float32-threshold-stays": EdgeCase(
        [[_T09, _ABOVE_T09, _BELOW_T09, 0.95]], [[0, 0, 0, 0]], 0.9, 0, 1, [[0, 2]]),
    "plus-inf-confident-minus-inf-not": EdgeCase(
        [[INF, -INF, 0.7, INF]], [[0, 0, 0, 0]], 0.5, 0, 1, [[1]]),
    "inf-ties-go-to-lower-position": EdgeCase(
        [[INF, -INF, 0.7, INF]], [[0, 0, 0, 0]], 0.5, 1, 1, [[0, 1]]),
    "label-out-of-range-takes-no-slot": EdgeCase(
        [[0.9, 0.8, 0.95, 0.99, 0.7, 0.1]], [[0, 1, -1, 2, 1, 7]], 0.5, 1, 2, [[0, 1, 5]],
        note="labels -1 and 2 (num_classes 2) exit though most confident; label 7 at 0.1 stays"),
    "ties-go-to-lower-position": EdgeCase(
        [[0.95, 0.99, 0.99, 0.99]], [[0, 0, 0, 0]], 0.5, 2, 1, [[1, 2]]),
    "ties-per-label": EdgeCase(
        [[0.9] * 6], [[1, 0, 1, 0, 1, 0]], 0.5, 2, 2, [[0, 1, 2, 3]]),
    "minus-zero-ties-plus-zero": EdgeCase(
        [[0.0, -0.0, -0.0]], [[0, 0, 0]], -0.5, 1, 1, [[0]]),
    "padding-takes-no-slot": EdgeCase(
        [[0.99, 0.9, 0.95, 0.98, 0.2]], [[0, 0, 0, 0, 0]], 0.5, 1, 1, [[2, 4]],
        index=[[-1, 11, 12, -1, 14]]),
    "duplicate-indices-are-carried": EdgeCase(
        [[0.1, 0.9, 0.2]], [[0, 0, 0]], 0.5, 0, 1, [[0, 2]], index=[[3, 3, 3]]),
    "everything-exits-m-zero": EdgeCase(
        [[0.9, 0.8], [0.7, 1.0]], [[0, 0], [0, 0]], 0.5, 0, 1, [[], []]),
    "all-padding-row": EdgeCase(
        [[0.1, 0.9, 0.2], [0.1, 0.1, 0.1]], [[0, 0, 0], [0, 0, 0]], 0.5, 0, 1, [[0, 2], []],
        index=[[0, 1, 2], [-1, -1, -1]]),
    "batch3-mixed-counts": EdgeCase(
        [[0.1, 0.2, 0.3, 0.4], [0.9, 0.1, 0.9, 0.9], [0.9, 0.9, 0.9, 0.9]],
        [[0, 0, 0, 0]] * 3, 0.5, 1, 1, [[0, 1, 2, 3], [0, 1], [0]]),
    "context-only": EdgeCase(
        [[0.3, 0.1, 0.2, 0.4]], [[0, 0, 1, 1]], -1.0, 1, 2, [[0, 3]]),
    "all-nan": EdgeCase(
        [[NAN, NAN]], [[0, 0]], 0.5, 5, 1, [[0, 1]]),
    "no-tokens": EdgeCase(
        [[], []], [[], []], 0.5, 5, 1, [[], []]),
}


def edge_inputs(case: EdgeCase, channels: int = 3, dtype=np.float32):
    """``(tokens, confidence, label, index)`` numpy arrays for a case; token rows are distinct
    and non-zero, so a wrong row or a non-zero padding row shows."""
    b, n = len(case.confidence), len(case.confidence[0])
    confidence = np.array(case.confidence, np.float32).reshape(b, n)
    label = np.array(case.label, np.int32).reshape(b, n)
    index = (np.tile(np.arange(n, dtype=np.int32), (b, 1)) if case.index is None
             else np.array(case.index, np.int32).reshape(b, n))
    tokens = (np.arange(b * n * channels, dtype=np.float32).reshape(b, n, channels) + 1).astype(dtype)
    return tokens, confidence, label, index


def loop_kept_positions(confidence, label, index, threshold: float, topk: int,
                        num_classes: int) -> list[list[int]]:
    """The keep rule of DESIGN.md section 2, read literally, one image and one token at a time."""
    confidence, label, index = np.asarray(confidence), np.asarray(label), np.asarray(index)
    limit = float(np.float32(threshold))  # the op's threshold attribute is a float32
    kept = []
    for b in range(confidence.shape[0]):
        conf = [float(c) for c in confidence[b]]
        n_tokens = len(conf)
        valid = [int(index[b, n]) >= 0 for n in range(n_tokens)]
        # Who may take a context slot: valid, a real number, a label in range.
        eligible = [n for n in range(n_tokens) if valid[n] and not math.isnan(conf[n])
                    and 0 <= int(label[b, n]) < num_classes]
        context = set()
        for cls in {int(label[b, n]) for n in eligible}:
            members = [n for n in eligible if int(label[b, n]) == cls]
            members.sort(key=lambda n: (-conf[n], n))
            context.update(members[:topk])
        kept.append([n for n in range(n_tokens)
                     if valid[n] and (not conf[n] > limit or n in context)])
    return kept


def split_from_positions(tokens, index, kept: list[list[int]]):
    """The outputs a split must produce when it keeps ``kept``: rows in order, zero/-1 padding."""
    tokens, index = np.asarray(tokens), np.asarray(index)
    b, _, c = tokens.shape
    width = max((len(row) for row in kept), default=0)
    out = np.zeros((b, width, c), tokens.dtype)
    out_index = np.full((b, width), -1, np.int32)
    for i, row in enumerate(kept):
        for m, n in enumerate(row):
            out[i, m] = tokens[i, n]
            out_index[i, m] = index[i, n]
    return out, out_index


def assert_split_equal(got_tokens, got_index, want_tokens, want_index) -> None:
    got_tokens, got_index = np.asarray(got_tokens), np.asarray(got_index)
    assert got_index.shape == want_index.shape, (got_index.shape, want_index.shape)
    np.testing.assert_array_equal(got_index, want_index, err_msg="kept_index")
    assert got_tokens.shape == want_tokens.shape, (got_tokens.shape, want_tokens.shape)
    np.testing.assert_array_equal(got_tokens, want_tokens, err_msg="kept_tokens")


@st.composite
def split_arrays(draw, thresholds=(-1.0, 0.0, 0.5, 0.9, 2.0), topks=(0, 1, 2, 3),
                 max_batch=3, max_tokens=12, dtype=np.float32):
    """``(tokens, confidence, label, index, threshold, topk, num_classes)`` with the edges the
    contract names drawn on purpose. ``thresholds``/``topks`` restrict the attributes for
    implementations that fix them per graph."""
    threshold = draw(st.sampled_from(thresholds))
    topk = draw(st.sampled_from(topks))
    num_classes = draw(st.integers(1, 3))
    b, n, c = draw(st.integers(1, max_batch)), draw(st.integers(0, max_tokens)), draw(st.integers(1, 3))
    special = st.sampled_from([float(np.float32(threshold)), NAN, INF, -INF, 0.0, -0.0,
                               0.25, 0.5, 0.75, 1.0])  # few levels: many exact ties
    confidence = draw(arrays(np.float32, (b, n), elements=special | st.floats(width=32)))
    label = draw(arrays(np.int32, (b, n), elements=st.integers(-2, num_classes + 1)))
    index = draw(arrays(np.int32, (b, n), elements=st.integers(-1, max(n, 1))))  # dups and -1
    padded_rows = draw(arrays(np.bool_, (b,), elements=st.booleans() if b > 1 else st.just(False)))
    index[padded_rows] = -1
    tokens = (np.arange(b * n * c, dtype=np.float32).reshape(b, n, c) + 1).astype(dtype)
    return tokens, confidence, label, index, threshold, topk, num_classes
