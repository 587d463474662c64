"""DoViT's analytic multiply-adds against torch's own FLOP counter (2 FLOPs per multiply-add)."""

import pytest
import torch
from test_flops import counted_and_analytic_macs

from dtp_deploy.models import build_model


@pytest.mark.parametrize("pruning,thresholds", [(False, (0.5, 0.5)), (True, (0.5, 0.6)), (True, (-1.0, -1.0))],
                         ids=["dense", "pruned", "everything-stops"])
@pytest.mark.parametrize("arch,size,kernel", [("dovit-vit-t", (96, 128), 1), ("dovit-vit-t", (64, 64), 3)],
                         ids=["fcn-1x1", "fcn-3x3"])
def test_analytic_macs_match_flop_counter(arch, size, kernel, pruning, thresholds):
    extra = {**build_model(arch).config.extra, "aux_kernel": kernel}
    # FlopCounterMode's module tracker trips over no_grad with parameters needing grad.
    model = build_model(arch, num_classes=6, extra=extra).eval().requires_grad_(False)
    with torch.no_grad():
        for head in model.aux_heads:
            head.conv_seg.weight.mul_(8)
    model.set_thresholds(thresholds)
    model.pruning = pruning
    counts, macs = counted_and_analytic_macs(model, size)
    grid = (size[0] // 16, size[1] // 16)
    if pruning:
        assert counts[0, 2] < counts[0, 0]
    else:
        assert macs["heads"] == model.decode_head.macs(grid[0] * grid[1])


def test_presets_dense_gmacs():
    """Dense multiply-adds of the presets at their training size (fvcore convention), for the
    record: ViT-S/B Segmenter at 512x512 and ViT-L at 768x768."""
    for arch, low, high in [("dovit-vit-s", 35, 42), ("dovit-vit-b", 125, 135), ("dovit-vit-l", 1000, 1100)]:
        with torch.device("meta"):  # counting needs no weights
            model = build_model(arch)
        side = model.config.img_size[0] // 16
        gmacs = model.macs([side * side] * model.config.num_stages, (side, side))["total"] / 1e9
        assert low < gmacs < high, (arch, gmacs)
