"""The ATM head folded for inference (its input-independent parts computed once) against its
plain layers, and the fold being dropped whenever its source weights visibly change."""

import pytest
import torch
from torch import nn

from dtp_deploy.models.heads import ATMHead
from dtp_deploy.models.vit import padding_bias


def make_head(layers: int, seed: int = 0) -> ATMHead:
    torch.manual_seed(seed)
    head = ATMHead(in_dim=24, dim=16, num_heads=2, num_layers=layers, num_classes=5).eval()
    with torch.no_grad():  # non-trivial norms and biases
        for p in head.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return head


def plain(head, tokens, bias=None):
    with torch.no_grad():  # outside inference mode: the plain layers, folded or not
        return head(tokens, bias)


def inference(head, tokens, bias=None):
    with torch.inference_mode():
        return head(tokens, bias)


def assert_same(got, want):
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_folded_head_matches_the_plain_layers(layers):
    head = make_head(layers).fold_for_inference()
    tokens = torch.randn(3, 7, 24)
    # A full image, a padded one and one with no token left (a uniform softmax over padding).
    index = torch.tensor([list(range(7)), [0, 1, 2, -1, -1, -1, -1], [-1] * 7], dtype=torch.int32)
    for bias in (None, padding_bias(index, torch.float32)):
        assert_same(inference(head, tokens, bias), plain(head, tokens, bias))
        assert head._folded is not None, "inference mode must take the folded path"


def test_the_folded_path_runs_fewer_ops():
    head = make_head(2)
    tokens = torch.randn(1, 6, 24)

    def ops():
        from torch.profiler import profile
        with profile() as prof:
            inference(head, tokens)
        return sum(e.count for e in prof.key_averages() if e.key.startswith("aten::"))

    unfolded = ops()
    head.fold_for_inference()
    assert ops() < unfolded


def _edit_in_place(head):
    with torch.no_grad():
        head.q.weight.mul_(1.5)


def _edit_first_self_attention(head):
    with torch.no_grad():
        head.decoder.layers[0].self_attn.in_proj_weight.add_(0.2)


def _edit_last_values(head):
    with torch.no_grad():
        head.decoder.layers[-1].multihead_attn.v.bias.add_(0.5)


def _load(head):
    head.load_state_dict(make_head(2, seed=1).state_dict())


def _load_assign_from_parent(head):
    # New Parameter objects, loaded through a parent module as a whole model would be.
    nn.ModuleList([head]).load_state_dict(nn.ModuleList([make_head(2, seed=2)]).state_dict(),
                                          assign=True)


def _convert_to_new_parameters(head):
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    try:
        head.double().float()  # same values in new Parameter objects...
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(False)
    _edit_in_place(head)  # ...which then change


@pytest.mark.parametrize("change", [_edit_in_place, _edit_first_self_attention, _edit_last_values,
                                    _load, _load_assign_from_parent, _convert_to_new_parameters])
def test_a_fold_is_dropped_when_its_weights_change(change):
    head = make_head(2).fold_for_inference()
    tokens = torch.randn(2, 6, 24)
    before = inference(head, tokens)
    change(head)
    after = plain(head, tokens)
    assert not all(map(torch.allclose, before, after)), "the change must matter for this test"
    assert_same(inference(head, tokens), after)
    assert head._folded is None


def test_strict_export_of_a_folded_head_traces_the_plain_layers():
    """Dynamo cannot trace ``torch.is_inference_mode_enabled``: the fold must not ask it there."""
    head = make_head(2).fold_for_inference()
    tokens = torch.randn(2, 6, 24)
    program = torch.export.export(head, (tokens,), strict=True)
    assert_same(program.module()(tokens), plain(head, tokens))
