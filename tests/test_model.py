"""The batched DToP model against the official per-image loop, re-implemented from DESIGN.md."""

import pytest
import torch

from dtp_deploy.models import build_model
from dtp_deploy.models.vit import PackedRows, padding_bias


def official_loop(model, image):
    """One image at a time, as the official code runs: exited tokens are dropped, each head
    writes its mask logits into a canvas at the active positions, and above-threshold tokens
    exit except the top ``context_topk`` per predicted class among them (stable on ties)."""
    cfg = model.config
    x, grid = model.encoder.embed(image[None])
    active = torch.arange(x.shape[1])
    canvas = torch.zeros(cfg.num_classes, x.shape[1])
    counts = []
    for stage, (start, end) in enumerate(model.stage_ranges()):
        counts.append(len(active))
        for block in model.encoder.blocks[start:end]:
            x = block(x)
        logits, class_probs = model.heads[stage](x)
        canvas[:, active] = logits[0].T
        if stage == cfg.num_stages - 1:
            scores = class_probs[0, :, None] * canvas.sigmoid()
            return scores.reshape(-1, *grid), counts
        value, label = (class_probs[0] * logits[0].sigmoid()).max(dim=-1)
        exits = value > model.thresholds[stage]
        for cls in label[exits].unique():
            members = torch.nonzero(exits & (label == cls)).flatten()
            order = sorted(members.tolist(), key=lambda n: (-float(value[n]), n))
            exits[order[:cfg.context_topk]] = False
        x = x[:, ~exits]
        active = active[~exits]


def make_model(thresholds, **kw):
    model = build_model("dtop-vit-t", num_classes=5, **kw).eval()
    # Sharpen the class scores of random weights so that confidences spread across (0, 1).
    with torch.no_grad():
        for head in model.heads:
            head.class_embed.weight.mul_(20)
    model.set_thresholds(thresholds)
    return model


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("size", [(96, 96), (64, 112)], ids=["square", "non-square"])
@pytest.mark.parametrize("thresholds", [(0.3, 0.3), (2.0, 2.0), (-1.0, -1.0), (0.2, 0.5), (1.0, 0.3)],
                         ids=["some-exit", "nothing-exits", "everything-exits", "mixed", "first-exit-off"])
def test_batched_model_matches_official_loop(batch, size, thresholds):
    model = make_model(thresholds)
    images = torch.randn(batch, 3, *size)
    with torch.inference_mode():
        scores, counts = model(images)
        for b in range(batch):
            want, want_counts = official_loop(model, images[b])
            assert counts[b].tolist() == want_counts
            torch.testing.assert_close(scores[b], want, atol=1e-5, rtol=1e-4)


def test_batch_holds_different_keep_counts():
    model = make_model((0.3, 0.3))
    images = torch.randn(4, 3, 96, 96)
    images[0] *= 0.0  # a flat image grades very differently from noise
    with torch.inference_mode():
        _, counts = model(images)
    assert counts[:, 0].eq(36).all()
    assert len(set(counts[:, 1].tolist())) > 1, "the test needs different keep counts per image"


@pytest.mark.parametrize("thresholds,runs", [((0.3, 0.3), [1, 1, 1]), ((0.3, 1.0), [1, 0, 1]),
                                             ((1.0, 2.0), [0, 0, 1])])
def test_an_exit_no_token_can_take_runs_no_head(thresholds, runs):
    """A DToP confidence is at most 1, so at a threshold of 1 or more no token exits and
    whatever the head would write is written again later: the head and split are skipped."""
    model = make_model(thresholds)
    calls = [0] * len(model.heads)
    for s, head in enumerate(model.heads):
        head.register_forward_hook(lambda *_, s=s: calls.__setitem__(s, calls[s] + 1))
    with torch.inference_mode():
        _, counts = model(torch.randn(1, 3, 96, 96))
    assert calls == runs
    stages = [s for s, run in enumerate(runs) if run]
    macs = model.macs(counts[0].tolist(), (6, 6))
    assert macs["heads"] == sum(model.heads[s].macs(int(counts[0, s])) for s in stages)


def test_dense_mode_is_the_segvit_baseline():
    """Dense mode runs only the final head on all tokens; pruning that never prunes agrees."""
    model = make_model((2.0, 2.0))
    images = torch.randn(2, 3, 64, 80)
    with torch.inference_mode():
        pruned, _ = model(images)
        model.pruning = False
        dense, counts = model(images)
        x, grid = model.encoder.embed(images)
        for block in model.encoder.blocks:
            x = block(x)
        logits, class_probs = model.heads[-1](x)
    assert counts.eq(20).all()
    baseline = (class_probs[:, None] * logits.sigmoid()).transpose(1, 2).reshape(2, -1, *grid)
    torch.testing.assert_close(dense, baseline)
    torch.testing.assert_close(pruned, dense)


def test_position_embedding_is_resized_bicubically_for_other_sizes():
    model = make_model((0.5, 0.5))
    assert model.encoder.position_embedding((12, 12)) is model.encoder.pos_embed
    pos = model.encoder.position_embedding((4, 7))
    assert pos.shape == (1, 28, model.config.embed_dim)


@pytest.mark.parametrize("bad", [(2, 3, 100, 96), (2, 1, 96, 96)])
def test_bad_input_shapes_raise_clear_errors(bad):
    with pytest.raises(ValueError, match="multiple of the patch size|expected images"):
        make_model((0.5, 0.5))(torch.randn(*bad))


def test_threshold_count_is_checked():
    with pytest.raises(ValueError, match="2 auxiliary stages"):
        make_model((0.5, 0.5)).set_thresholds([0.5])


def test_no_host_sync_loops_in_forward_source():
    """The forward pass must not wait on the host per value (.item(), .tolist()). (Attention
    after a split does loop over the images of a known batch size, on purpose: each image's
    attention then runs on exactly its rows.)"""
    import inspect

    from dtp_deploy.models import heads, segmenter, vit
    for module in (segmenter, heads, vit):
        source = inspect.getsource(module)
        assert ".item()" not in source and ".tolist()" not in source.split("def macs")[0]


def test_packed_rows_round_trip_and_zero_padding():
    index = torch.tensor([[4, 7, -1], [-1, -1, -1], [0, 2, 5]], dtype=torch.int32)
    rows = torch.arange(9 * 2, dtype=torch.float32).reshape(3, 3, 2)
    packed = PackedRows(index)
    flat = packed.pack(rows)
    torch.testing.assert_close(flat, torch.stack([rows[0, 0], rows[0, 1], rows[2, 0], rows[2, 1], rows[2, 2]]))
    want = rows * (index >= 0).unsqueeze(-1)
    torch.testing.assert_close(packed.unpack(flat), want)
    nothing = PackedRows(torch.zeros(2, 0, dtype=torch.int32))  # every token exited
    assert nothing.pack(torch.zeros(2, 0, 4)).shape == (0, 4)
    assert nothing.unpack(torch.zeros(0, 4)).shape == (2, 0, 4)


def test_blocks_after_a_split_run_on_the_kept_rows_of_the_batch_only():
    """After a split the batch is padded to its largest keep count, but the blocks' row-wise
    work (here the MLP) sees only the real kept rows: a batch costs what its images cost."""
    model = make_model((0.3, 0.3))
    images = torch.randn(4, 3, 96, 96)
    images[0] *= 0.0
    rows_seen = []
    hooks = [block.mlp.fc1.register_forward_hook(
        lambda module, args, out: rows_seen.append(args[0].shape[:-1].numel()))
        for block in model.encoder.blocks]
    with torch.inference_mode():
        _, counts = model(images)
    for hook in hooks:
        hook.remove()
    assert len(set(counts[:, 1].tolist())) > 1, "the test needs different keep counts per image"
    want = []
    for stage, (start, end) in enumerate(model.stage_ranges()):
        want += [int(counts[:, stage].sum())] * (end - start)
    assert rows_seen == want


def _random_index(seed: int) -> torch.Tensor:
    """A split's ``(B, M)`` output index: each image's kept positions first, then -1 padding;
    counts from 0 to M, the largest always M."""
    gen = torch.Generator().manual_seed(seed)
    batch, width = 5, 7
    counts = torch.randint(0, width + 1, (batch,), generator=gen)
    counts[int(torch.randint(0, batch, (1,), generator=gen))] = width
    index = torch.full((batch, width), -1, dtype=torch.int32)
    for b, n in enumerate(counts.tolist()):
        index[b, :n] = torch.randperm(40, generator=gen)[:n].sort().values.to(torch.int32)
    return index


@pytest.mark.parametrize("batch_known", [True, False], ids=["per-image", "padded"])
@pytest.mark.parametrize("index", [
    torch.tensor([[0, 1, 2, -1], [-1, -1, -1, -1], [3, 1, -1, -1]], dtype=torch.int32),
    *(_random_index(seed) for seed in range(3))], ids=["with-empty-image", "random0", "random1", "random2"])
def test_attention_of_a_packed_batch_sees_each_image_alone(batch_known, index):
    """Attention after a split: image by image where the batch size is known (no padding at
    all), on the padded layout with the key-padding bias where it is not. Both equal each
    image run alone, an image with no rows left included."""
    torch.manual_seed(0)
    block = make_model((0.3, 0.3)).encoder.blocks[0]
    tokens = torch.randn(*index.shape, block.attn.proj.in_features)
    packed = PackedRows(index)
    if not batch_known:
        packed.counts = None  # what a graph with a run-time batch size has
    with torch.inference_mode():
        out = packed.unpack(block(packed.pack(tokens), padding_bias(index, tokens.dtype), packed))
        for b, n in enumerate((index >= 0).sum(dim=1).tolist()):
            alone = block(tokens[b:b + 1, :n])[0]
            torch.testing.assert_close(out[b, :n], alone, atol=1e-5, rtol=1e-5)
            assert out[b, n:].eq(0).all()
    if batch_known:
        assert packed.counts == (index >= 0).sum(dim=1).tolist()
