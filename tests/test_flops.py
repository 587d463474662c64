"""Analytic multiply-adds against torch's own FLOP counter (2 FLOPs per multiply-add)."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from dtp_deploy.models import build_model


def counted_and_analytic_macs(model, size):
    """Run one random image; return its keep counts and the analytic MACs, after checking them
    against torch's FLOP counter."""
    images = torch.randn(1, 3, *size)
    # The counter has no formula for the CPU flash-attention kernel: use the math backend,
    # whose matmuls it does count.
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        _, counts = model(images)
    macs = model.macs(counts[0].tolist(), (size[0] // 16, size[1] // 16))
    assert counter.get_total_flops() == 2 * macs["total"]
    return counts, macs


@pytest.mark.parametrize("pruning,thresholds", [(False, (0.5, 0.5)), (True, (0.3, 0.6)), (True, (-1.0, -1.0)),
                                                (True, (0.3, 1.0))],
                         ids=["dense", "pruned", "everything-exits", "second-exit-off"])
@pytest.mark.parametrize("arch,size", [("dtop-vit-t", (96, 128)), ("dtop-vit-s", (64, 64))])
def test_analytic_macs_match_flop_counter(arch, size, pruning, thresholds):
    # FlopCounterMode's module tracker trips over no_grad with parameters needing grad.
    model = build_model(arch, num_classes=6).eval().requires_grad_(False)
    with torch.no_grad():
        for head in model.heads:
            head.class_embed.weight.mul_(20)
    model.set_thresholds(thresholds)
    model.pruning = pruning
    counts, macs = counted_and_analytic_macs(model, size)
    if pruning and thresholds[0] < 0:
        assert counts[0, 1] < counts[0, 0]


def test_batch_macs_count_the_heads_at_the_padded_width():
    """A batch with different keep counts: torch's counter sees the blocks (attention included)
    on each image's own rows and the heads at the batch's largest keep count, which is what
    ``macs(..., widths)`` says the batch computes."""
    model = build_model("dtop-vit-t", num_classes=6).eval().requires_grad_(False)
    with torch.no_grad():
        for head in model.heads:
            head.class_embed.weight.mul_(20)
    model.set_thresholds((0.3, 0.6))
    images = torch.randn(3, 3, 64, 96)
    images[0] *= 0.0  # a flat image grades very differently from noise
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        _, counts = model(images)
    assert len(set(counts[:, 1].tolist())) > 1, "the test needs different keep counts per image"
    widths = counts.max(dim=0).values.tolist()
    batch = sum(model.macs(row, (4, 6), widths)["total"] for row in counts.tolist())
    assert counter.get_total_flops() == 2 * batch
    per_image = sum(model.macs(row, (4, 6))["total"] for row in counts.tolist())
    assert per_image < batch  # padding still costs something: the heads
