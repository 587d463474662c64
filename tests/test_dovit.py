"""The batched DoViT model against the official per-image loop, re-implemented from DESIGN.md
and the official code's structure; dense mode, edge cases and official checkpoints."""

import pytest
import torch

from dtp_deploy.checkpoint import (
    CheckpointError,
    load_model,
    save_model,
    save_official,
    to_official,
)
from dtp_deploy.models import DoViTSegmenter, build_model, preset
from dtp_deploy.models.config import ADE20K_MEAN


def official_loop(model, image):
    """One image as the official backbone runs it: the class token comes first and always
    passes; before the first block of each later stage the auxiliary head grades the full grid,
    still-active tokens above the threshold (or below ``low_conf_stop``) stop, only the rest go
    through the blocks, and the full sequence is rebuilt after every block. When more than
    ``agg_rate`` of the N + 1 tokens have stopped, the class token becomes the mean of itself
    and the mean stopped token."""
    cfg = model.config
    tokens, grid = model.encoder.embed(image[None])
    x = torch.cat([tokens[:, -1:], tokens[:, :-1]], dim=1)  # class token first, as mmseg has it
    n = grid[0] * grid[1]
    passing = torch.ones(n, dtype=torch.bool)
    rows = torch.arange(n + 1)
    head_before = {end: k for k, end in enumerate(cfg.stage_ends[:-1])}
    counts = [n]
    active = x
    for i, block in enumerate(model.encoder.blocks):
        if i in head_before:
            k = head_before[i]
            logits = model.aux_heads[k](x[0, 1:].T.reshape(1, -1, *grid))
            prob = logits.softmax(dim=1).amax(dim=1).flatten()
            stop = prob > model.thresholds[k]
            if cfg.extra["low_conf_stop"] > 0:
                stop |= prob < cfg.extra["low_conf_stop"]
            passing &= ~stop
            keep = torch.cat([torch.tensor([True]), passing])
            rows = torch.nonzero(keep).flatten()
            active = x[:, rows].clone()
            stopped = x[:, ~keep]
            if stopped.shape[1] / (n + 1) > cfg.extra["agg_rate"]:
                active[:, 0] = 0.5 * (stopped.mean(dim=1) + active[:, 0])
            counts.append(int(passing.sum()))
        active = block(active)
        x = x.clone()
        x[:, rows] = active
    logits = model.decode_head(model.final_norm(x)[:, 1:])
    return logits[0].softmax(dim=-1).T.reshape(-1, *grid), counts


def make_model(thresholds, **kw):
    model = build_model("dovit-vit-t", num_classes=5, **kw).eval()
    # Sharpen the auxiliary predictions of random weights so that confidences spread out.
    with torch.no_grad():
        for head in model.aux_heads:
            head.conv_seg.weight.mul_(8)
    model.set_thresholds(thresholds)
    return model


CASES = {"some-stop": (0.5, 0.6), "nothing-stops": (2.0, 2.0), "everything-stops": (-1.0, -1.0),
         "mixed": (0.4, 0.8)}


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("size", [(96, 96), (64, 112)], ids=["square", "non-square"])
@pytest.mark.parametrize("case", list(CASES))
def test_batched_model_matches_official_loop(batch, size, case):
    model = make_model(CASES[case])
    images = torch.randn(batch, 3, *size)
    with torch.inference_mode():
        scores, counts = model(images)
        for b in range(batch):
            want, want_counts = official_loop(model, images[b])
            assert counts[b].tolist() == want_counts
            torch.testing.assert_close(scores[b], want, atol=1e-5, rtol=1e-4)
    n = size[0] * size[1] // 256
    if case == "nothing-stops":
        assert counts.eq(n).all()
    if case == "everything-stops":
        assert counts[:, 1:].eq(0).all()


def test_low_confidence_tokens_stop_too():
    model = build_model("dovit-vit-t", num_classes=5, extra={**make_model((0.5, 0.5)).config.extra,
                                                            "low_conf_stop": 0.45}).eval()
    model.set_thresholds((2.0, 2.0))
    images = torch.randn(2, 3, 96, 96)
    with torch.inference_mode():
        scores, counts = model(images)
        assert counts[:, 2].lt(36).all()
        for b in range(2):
            want, want_counts = official_loop(model, images[b])
            assert counts[b].tolist() == want_counts
            torch.testing.assert_close(scores[b], want, atol=1e-5, rtol=1e-4)


def test_batch_holds_different_keep_counts():
    model = make_model((0.5, 0.6))
    images = torch.randn(4, 3, 96, 96)
    images[0] *= 0.0  # a flat image grades very differently from noise
    with torch.inference_mode():
        _, counts = model(images)
    assert counts[:, 0].eq(36).all()
    assert len(set(counts[:, 1].tolist())) > 1, "the test needs different keep counts per image"
    assert (counts[:, 2] <= counts[:, 1]).all(), "stopped tokens never resume"


def test_stopped_tokens_are_frozen_and_predicted():
    """A stopped token reaches the final head with the feature it had at the stage where it
    stopped, the others with a feature that went on changing; the final head predicts every
    token. Features are captured with hooks; who stops where is worked out here from the
    auxiliary heads' outputs and the stop rule."""
    model = make_model((0.5, 0.6))
    images = torch.randn(2, 3, 64, 96)
    seen = {}

    def keep(name):
        return lambda module, args, out=None: seen.__setitem__(name, (args[0].clone(), out))

    hooks = [head.register_forward_hook(keep(k)) for k, head in enumerate(model.aux_heads)]
    hooks.append(model.final_norm.register_forward_pre_hook(keep("final")))
    try:
        with torch.inference_mode():
            scores, counts = model(images)
    finally:
        for hook in hooks:
            hook.remove()
    final = seen["final"][0]  # (B, N, C): the grid tokens the decode head sees
    n = final.shape[1]
    stopped_at = torch.full((2, n), -1)
    for k, threshold in enumerate(model.thresholds):
        grid_features, logits = seen[k]  # (B, C, h, w) at the stage boundary, (B, K, h, w)
        stops = (logits.softmax(dim=1).amax(dim=1).flatten(1) > threshold) & (stopped_at < 0)
        stopped_at[stops] = k
        for b in range(2):
            rows = stops[b].nonzero().flatten()
            torch.testing.assert_close(final[b, rows], grid_features[b].flatten(1).T[rows],
                                       rtol=0, atol=0)
        assert counts[:, k + 1].tolist() == (stopped_at < 0).sum(dim=1).tolist()
    assert ((stopped_at >= 0).sum(dim=1) > 0).all(), "the case needs stopped tokens"
    assert (stopped_at == 1).any(), "and tokens that stop at the second stage"
    moving = stopped_at < 0
    first = seen[0][0].flatten(2).transpose(1, 2)
    assert (final[moving] != first[moving]).any(dim=-1).all(), "active tokens go on changing"
    torch.testing.assert_close(scores.sum(dim=1), torch.ones(2, 4, 6))


def test_dense_mode_is_the_segmenter_baseline():
    """Dense mode: all blocks on all tokens (class token included), the final norm and the
    Segmenter decode head; pruning that never stops a token agrees."""
    model = make_model((2.0, 2.0))
    images = torch.randn(2, 3, 64, 80)
    with torch.inference_mode():
        pruned, _ = model(images)
        model.pruning = False
        dense, counts = model(images)
        x, grid = model.encoder.embed(images)
        for block in model.encoder.blocks:
            x = block(x)
        logits = model.decode_head(model.final_norm(x)[:, :20])
    assert counts.eq(20).all()
    baseline = logits.softmax(dim=-1).transpose(1, 2).reshape(2, -1, *grid)
    torch.testing.assert_close(dense, baseline)
    torch.testing.assert_close(pruned, dense)


def test_stage_predictions_are_probabilities_per_stage():
    model = make_model((0.5, 0.5))
    outputs = model.stage_predictions(torch.randn(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outputs] == [(2, 5, 4, 4)] * 3
    for o in outputs:
        torch.testing.assert_close(o.sum(dim=1), torch.ones(2, 4, 4))


@pytest.mark.parametrize("arch,ends,threshold", [
    ("dovit-vit-s", (2, 5, 8, 12), 0.96), ("dovit-vit-b", (2, 5, 8, 12), 0.96),
    ("dovit-vit-l", (6, 12, 18, 24), 0.985)])
def test_presets_follow_the_official_configs(arch, ends, threshold):
    cfg = preset(arch)
    assert cfg.method == "dovit" and cfg.stage_ends == ends and cfg.context_topk == 0
    assert cfg.thresholds == (threshold,) * 3 and cfg.head_layers == 2 and cfg.head_dim == cfg.embed_dim
    assert cfg.extra["aux_channels"] == 256 and cfg.extra["class_token"] and cfg.extra["final_norm"]


def test_no_host_sync_loops_in_forward_source():
    import inspect

    from dtp_deploy.models import dovit
    source = inspect.getsource(dovit)
    assert ".item()" not in source and ".tolist()" not in source


# -- checkpoints ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_like():
    torch.manual_seed(1)
    model = make_model((0.5, 0.6), img_size=(64, 64))
    with torch.no_grad():  # non-trivial batch-norm statistics
        for head in model.aux_heads:
            head.convs[0].bn.running_mean.normal_()
            head.convs[0].bn.running_var.uniform_(0.5, 2.0)
    return model


def assert_same_model(a, b, images):
    with torch.inference_mode():
        sa, ca = a(images)
        sb, cb = b(images)
    torch.testing.assert_close(sa, sb, rtol=0, atol=0)
    assert torch.equal(ca, cb)


def test_official_round_trip(trained_like, tmp_path):
    path = tmp_path / "official.pth"
    save_official(trained_like, path)
    raw = torch.load(path, weights_only=True)["state_dict"]
    for key in ("backbone.layers.0.attn.qkv.weight", "backbone.layers.5.attn.proj.bias",
                "backbone.layers.3.ln1.weight", "backbone.layers.3.ffn.layers.0.0.weight",
                "backbone.layers.3.ffn.layers.1.bias", "backbone.ln1.weight", "backbone.cls_token",
                "backbone.patch_embed.projection.weight",
                "backbone.auxiliary_head.1.convs.0.conv.weight",
                "backbone.auxiliary_head.0.convs.0.bn.running_var", "backbone.auxiliary_head.0.conv_seg.bias",
                "decode_head.layers.1.attn.attn.in_proj_weight", "decode_head.layers.0.attn.attn.out_proj.bias",
                "decode_head.layers.0.ln2.weight", "decode_head.layers.1.ffn.layers.1.weight",
                "decode_head.cls_emb", "decode_head.dec_proj.weight", "decode_head.patch_proj.weight",
                "decode_head.classes_proj.weight", "decode_head.decoder_norm.bias", "decode_head.mask_norm.weight"):
        assert key in raw, key
    assert raw["backbone.pos_embed"].shape == (1, 1 + 16, 192)
    assert not any(k.startswith(("encoder.", "aux_heads.", "final_norm.")) for k in raw)
    loaded = load_model(path, thresholds=[0.5, 0.6])
    assert isinstance(loaded, DoViTSegmenter)
    assert loaded.config.arch == "dovit-vit-t" and loaded.config.img_size == (64, 64)
    assert loaded.config.extra == trained_like.config.extra
    assert_same_model(trained_like, loaded, torch.randn(3, 3, 64, 64))


@pytest.mark.parametrize("naming", ["ours", "official"])
def test_bare_state_dict(trained_like, tmp_path, naming):
    path = tmp_path / "bare.pth"
    torch.save(trained_like.state_dict() if naming == "ours" else to_official(trained_like), path)
    loaded = load_model(path, thresholds=[0.5, 0.6])
    assert_same_model(trained_like, loaded, torch.randn(2, 3, 64, 80))


def test_own_format_round_trip(trained_like, tmp_path):
    path = tmp_path / "m.pth"
    save_model(trained_like, path)
    loaded = load_model(path)
    assert loaded.thresholds == (0.5, 0.6) and loaded.config.method == "dovit"
    assert_same_model(trained_like, loaded, torch.randn(2, 3, 64, 64))


def test_cityscapes_checkpoint_gets_cityscapes_settings(tmp_path):
    model = build_model("dovit-vit-s", num_classes=19, img_size=(64, 64)).eval()
    path = tmp_path / "cityscapes.pth"
    save_official(model, path)
    loaded = load_model(path)
    assert loaded.config.arch == "dovit-vit-s" and loaded.config.num_classes == 19
    assert loaded.thresholds == (0.985,) * 3 and loaded.config.mean == ADE20K_MEAN


def test_wrong_arch_names_keys_and_fix(trained_like, tmp_path):
    path = tmp_path / "official.pth"
    save_official(trained_like, path)
    with pytest.raises(CheckpointError, match=r"do not fit dovit-vit-s.*mis-shaped.*--arch.*DoViT") as err:
        load_model(path, arch="dovit-vit-s")
    assert str(path) in str(err.value)


def test_missing_keys_are_listed(trained_like, tmp_path):
    state = to_official(trained_like)
    del state["backbone.layers.3.ln2.weight"]
    state["backbone.auxiliary_head.0.conv_cat.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError,
                       match=r"1 missing \(first: encoder\.blocks\.3\.norm2\.weight\).*1 unexpected"):
        load_model(path)


def test_official_form_needs_a_class_token():
    extra = {**preset("dovit-vit-t").extra, "class_token": False}
    model = build_model("dovit-vit-t", num_classes=3, img_size=(32, 32), extra=extra)
    with pytest.raises(ValueError, match="no class token"):
        to_official(model)


# -- the built-in DoViT model ---------------------------------------------------------------
def test_builtin_dovit_stops_easy_tokens_and_keeps_accuracy():
    from dtp_deploy.builtin import builtin_checkpoint_path
    from dtp_deploy.report import model_summary

    summary = model_summary(str(builtin_checkpoint_path("dovit-vit-t")), scenes=16)
    assert summary["arch"] == "dovit-vit-t" and summary["method"] == "dovit"
    assert summary["stages"][1]["keep_ratio"] < 0.8, "easy tokens should stop after stage 0"
    assert summary["stages"][2]["keep_ratio"] <= summary["stages"][1]["keep_ratio"]
    assert summary["gmacs_ratio"] < 0.9
    assert summary["miou_dense"] > 0.7, "the built-in model should segment synthetic scenes"
    assert summary["miou_pruned"] > summary["miou_dense"] - 0.03
    assert summary["pruned_dense_agreement"] > 0.95
