"""Official checkpoint files, as the DToP (mmengine) and DoViT (mmcv 0.x) trainers write them.

The fixtures are module trees with the official layout (tests/official_layout.py) at small
widths, saved with the official top-level structure; the loader sees them with no flags. The
official key table pins the full-size layouts of the presets.
"""

import json
import math
from pathlib import Path

import onnx
import pytest
import torch
from click.testing import CliRunner
from official_layout import (
    OFFICIAL_MODELS,
    DoViTOfficial,
    DToPOfficial,
    add_mmcv_ema_buffers,
    official_keys,
    save_mmcv,
    save_mmengine,
)

from dtp_deploy import checkpoint
from dtp_deploy.checkpoint import CheckpointError, load_model
from dtp_deploy.cli import info
from dtp_deploy.models import PRESETS, build_model, preset

FULL_PRESETS = dict(PRESETS)
HALF = (127.5, 127.5, 127.5)
IMAGENET_MEAN = (123.675, 116.28, 103.53)


def names(k):
    return [f"thing{i}" for i in range(k)]


def colours(k):
    return [[(7 * i) % 256, (13 * i) % 256, (29 * i) % 256] for i in range(k)]


# Config text in the form mmengine's Config.pretty_text writes (the merged config).
DTOP_B_CFG = """
crop_size = (512, 512)
data_preprocessor = dict(
    type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size=(512, 512))
model = dict(
    type='EncoderDecoderPrune',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, size=(512, 512)),
    backbone=dict(type='ViT_prune', num_classes=150, img_size=(512, 512), embed_dims=768,
                  num_layers=12, num_heads=12, out_indices=[5, 7, 11], with_cls_token=False),
    decode_head=dict(type='PruneHead', img_size=512, in_channels=768, channels=384,
                     num_classes=150, thresh=1.0, layers_per_decoder=3,
                     loss_decode=dict(type='ATMLoss', num_classes=1, dec_layers=1, loss_weight=1.0)),
    auxiliary_head=[
        dict(type='PruneHead', in_channels=768, channels=384, num_classes=150, thresh=0.85,
             in_index=0, loss_decode=dict(type='ATMLoss', num_classes=1, dec_layers=1)),
        dict(type='PruneHead', in_channels=768, channels=384, num_classes=150, thresh=0.8,
             in_index=1, loss_decode=dict(type='ATMLoss', num_classes=1, dec_layers=1)),
    ],
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))
dataset_type = 'ADE20KDataset'
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
test_dataloader = dict(batch_size=1, dataset=dict(
    type='ADE20KDataset', data_root='data/ade', pipeline=[
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(2048, 512), keep_ratio=True),
        dict(type='LoadAnnotations', reduce_zero_label=True),
        dict(type='PackSegInputs')]))
"""

# A hand-written (unmerged) config, as the Pascal-Context ViT-L one: variables and arithmetic.
DTOP_L_PC_CFG = """
in_channels = 1024
thresh = 0.95
num_classes = 59
crop_size = (480, 480)
img_scale = (2048, 520)
data_preprocessor = dict(type='SegDataPreProcessor', mean=[127.5, 127.5, 127.5],
                         std=[127.5, 127.5, 127.5], bgr_to_rgb=True, size=crop_size)
model = dict(
    type='EncoderDecoderPrune',
    decode_head=dict(type='PruneHead', in_channels=in_channels, channels=in_channels // 2,
                     num_classes=num_classes, thresh=thresh, num_heads=16),
    auxiliary_head=[
        dict(type='PruneHead', channels=in_channels // 2, thresh=thresh, num_heads=16, in_index=0),
        dict(type='PruneHead', channels=in_channels // 2, thresh=thresh, num_heads=16, in_index=1)],
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(320, 320)))
dataset_type = 'PascalContextDataset59'
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=img_scale, keep_ratio=True),
                 dict(type='LoadAnnotations', reduce_zero_label=True), dict(type='PackSegInputs')]
"""

# mmcv 0.x pretty_text of a DoViT ADE20K config (merged with mmseg's Segmenter base).
DOVIT_S_CFG = """
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    type='DoEncoderDecoder',
    backbone=dict(type='DoViT', img_size=(512, 512), embed_dims=384, num_heads=6,
                  out_indices=(2, 5, 8, 11), final_norm=True, with_cls_token=True,
                  exit_conf=0.97, diff_conf=0.03, max_iters=140000.0),
    decode_head=dict(type='SegmenterMaskTransformerHead', in_channels=384, channels=384,
                     num_classes=150, num_layers=2, num_heads=6, embed_dims=384),
    auxiliary_head=[dict(type='FCNHead', in_channels=384, channels=256, num_convs=1,
                         kernel_size=1, num_classes=150)] * 3,
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(480, 480)))
dataset_type = 'ADE20KDataset'
img_norm_cfg = dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5], to_rgb=True)
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='MultiScaleFlipAug', img_scale=(2048, 512), flip=False, transforms=[
        dict(type='Resize', keep_ratio=True), dict(type='RandomFlip'),
        dict(type='Normalize', mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5], to_rgb=True),
        dict(type='ImageToTensor', keys=['img']), dict(type='Collect', keys=['img'])])
]
data = dict(samples_per_gpu=1, test=dict(type='ADE20KDataset', data_root='data/ade',
                                         pipeline=test_pipeline))
"""

# Small widths with the official depths, head placement and names. The arch is told from the
# width, so the presets are narrowed to these widths for the fixtures (their other values stay).
SMALL = {
    "dtop-vit-b": dict(embed_dim=48, num_heads=4, head_dim=24),
    "dtop-vit-l": dict(embed_dim=64, num_heads=4, head_dim=32),
    "dovit-vit-s": dict(embed_dim=48, num_heads=4, head_dim=48, head_heads=4),
    "dovit-vit-b": dict(embed_dim=64, num_heads=4, head_dim=64, head_heads=4),
}


@pytest.fixture(autouse=True)
def small_presets(monkeypatch):
    for arch, widths in SMALL.items():
        monkeypatch.setitem(PRESETS, arch, preset(arch, **widths))


def dtop_b(classes=150, img=64):
    torch.manual_seed(0)
    return DToPOfficial(dim=48, heads=4, depth=12, img=img, classes=classes, head_dim=24, head_heads=6).eval()


def dtop_l(classes=59, img=64):
    torch.manual_seed(1)
    return DToPOfficial(dim=64, heads=4, depth=24, img=img, classes=classes, head_dim=32, head_heads=16).eval()


def dovit(arch, classes, img=64):
    torch.manual_seed(2)
    dim = SMALL[arch]["embed_dim"]
    return DoViTOfficial(dim=dim, heads=4, depth=12, img=img, classes=classes).eval()


def small_keys(arch, **kw):
    spec = {**OFFICIAL_MODELS[arch], "dim": SMALL[arch]["embed_dim"], "img": 64, **kw}
    if spec["method"] == "dtop":
        spec["head_dim"] = SMALL[arch]["head_dim"]
    else:
        spec["aux_channels"] = 16
    return official_keys(**spec)


def shapes(state):
    return {k: tuple(v.shape) for k, v in state.items()}


# -- the layout records agree -------------------------------------------------------------------


@pytest.mark.parametrize("arch", sorted(OFFICIAL_MODELS))
def test_presets_take_exactly_the_official_keys_and_shapes(arch, monkeypatch):
    """Full size, on the meta device: the official key table of each preset, mapped by the
    loader, is exactly the model's state (names and shapes), after the documented skips."""
    monkeypatch.setitem(PRESETS, arch, FULL_PRESETS[arch])
    spec = OFFICIAL_MODELS[arch]
    with torch.device("meta"):
        model = build_model(arch)
        official = {k: torch.empty(s) for k, s in official_keys(**spec).items()}
    state = checkpoint._drop_training_entries(official)
    if spec["method"] == "dtop":
        mapped = checkpoint.from_official(state, model.config.num_stages)
    else:
        mapped = checkpoint.dovit_from_official(state)
    assert shapes(mapped) == shapes(model.state_dict())
    dropped = sorted(set(official) - set(state))
    if spec["method"] == "dtop":
        assert dropped == sorted(f"{h}.loss_decode.criterion.empty_weight" for h in
                                 ("decode_head", "auxiliary_head.0", "auxiliary_head.1"))
    else:
        assert dropped == []


@pytest.mark.parametrize("arch,mirror", [("dtop-vit-b", dtop_b), ("dtop-vit-l", dtop_l),
                                         ("dovit-vit-s", lambda: dovit("dovit-vit-s", 150)),
                                         ("dovit-vit-b", lambda: dovit("dovit-vit-b", 150))])
def test_mirror_modules_have_the_official_keys(arch, mirror):
    classes = 59 if arch == "dtop-vit-l" else 150
    assert shapes(mirror().state_dict()) == small_keys(arch, classes=classes)


# -- DToP, mmengine files ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def dtop_b_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("dtop") / "prune_segvit_ade20k.pth"
    save_mmengine(path, dtop_b(), classes=names(150), palette=colours(150), cfg=DTOP_B_CFG)
    return path


def test_dtop_vit_b_mmengine_file_loads_with_no_flags(dtop_b_file):
    model = load_model(dtop_b_file)
    cfg = model.config
    assert cfg.arch == "dtop-vit-b" and cfg.num_classes == 150 and cfg.img_size == (64, 64)
    assert cfg.class_names == tuple(names(150))
    assert cfg.palette == tuple(tuple(c) for c in colours(150))
    assert cfg.mean == IMAGENET_MEAN and model.thresholds == (0.85, 0.8)
    assert cfg.head_heads == 6  # PruneHead's default: the config names no num_heads
    assert cfg.protocol == {"crop_size": [512, 512], "stride": [341, 341], "test_scale": [2048, 512],
                            "dataset": "ade20k", "reduce_zero_label": True}
    assert model.sources["class_names"] == "checkpoint meta"
    assert model.sources["thresholds"] == "config text"
    assert model.sources["arch"] == "weights"


def test_dtop_numeric_reference(dtop_b_file):
    """Block 1 on the official module tree (torch's nn.MultiheadAttention) equals ours."""
    mirror = dtop_b()
    model = load_model(dtop_b_file)
    images = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        want = mirror.first_block(images)
        tokens, _ = model.encoder.embed(images)
        got = model.encoder.blocks[0](tokens)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_dtop_vit_l_pascal_context(tmp_path):
    """Config text gives mean = std = 127.5 and 16 head heads; the thresholds are its variables."""
    path = tmp_path / "prune_segvit_pc.pth"
    save_mmengine(path, dtop_l(), classes=names(59), palette=colours(59), cfg=DTOP_L_PC_CFG, ema=True)
    model = load_model(path)
    cfg = model.config
    assert cfg.arch == "dtop-vit-l" and cfg.num_classes == 59
    assert cfg.mean == HALF and cfg.std == HALF and cfg.head_heads == 16
    assert model.thresholds == (0.95, 0.95)
    assert cfg.protocol == {"crop_size": [480, 480], "stride": [320, 320], "test_scale": [2048, 520],
                            "dataset": "pascal_context_59", "reduce_zero_label": True}
    assert model.sources["head_heads"] == model.sources["mean"] == "config text"


def test_dtop_vit_l_without_config_text_uses_the_dataset_variant(tmp_path):
    path = tmp_path / "pc_no_cfg.pth"
    save_mmengine(path, dtop_l(), classes=names(59), palette=colours(59), cfg=None)
    model = load_model(path)
    assert model.config.head_heads == 16 and model.config.mean == HALF
    assert model.config.protocol["crop_size"] == [480, 480]
    assert model.sources["head_heads"] == "preset (Pascal-Context 59 variant)"
    # The flag wins over everything.
    assert load_model(path, head_heads=8).config.head_heads == 8
    assert load_model(path, head_heads=8).sources["head_heads"] == "flag"


# -- DoViT, mmcv 0.x files ---------------------------------------------------------------------


def test_dovit_vit_s_mmcv_file_loads_with_no_flags(tmp_path):
    path = tmp_path / "segmenter_dovit-s.pth"
    save_mmcv(path, dovit("dovit-vit-s", 150), classes=names(150), palette=colours(150), config=DOVIT_S_CFG)
    model = load_model(path)
    cfg = model.config
    assert cfg.arch == "dovit-vit-s" and cfg.class_names == tuple(names(150))
    assert cfg.palette[3] == tuple(colours(150)[3])
    assert cfg.mean == HALF and cfg.std == HALF
    assert model.thresholds == (0.97, 0.97, 0.97) and cfg.extra["low_conf_stop"] == 0.03
    assert cfg.head_heads == 6 and model.sources["head_heads"] == "config text"
    assert cfg.protocol == {"crop_size": [512, 512], "stride": [480, 480], "test_scale": [2048, 512],
                            "dataset": "ade20k", "reduce_zero_label": True}


def test_dovit_numeric_reference_class_token_slot_is_first(tmp_path):
    """The official sequence is [cls, grid] with pos_embed's slot 0 for the class token; ours
    is [grid, cls]. Block 1 must agree row for row."""
    mirror = dovit("dovit-vit-b", 19)
    path = tmp_path / "dovit-b-city.pth"
    save_mmcv(path, mirror, classes=names(19), palette=colours(19), config=None)
    model = load_model(path)
    torch.testing.assert_close(model.encoder.cls_pos_embed, mirror.backbone.pos_embed[:, :1])
    images = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        want = mirror.first_block(images)
        tokens, _ = model.encoder.embed(images)
        got = model.encoder.blocks[0](tokens)
    torch.testing.assert_close(got[:, :-1], want[:, 1:], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got[:, -1], want[:, 0], rtol=1e-4, atol=1e-5)


def test_dovit_vit_b_cityscapes_with_mmcv_ema_buffers(tmp_path):
    mirror = dovit("dovit-vit-b", 19)
    add_mmcv_ema_buffers(mirror)
    path = tmp_path / "dovit-b-city-ema.pth"
    save_mmcv(path, mirror, classes=names(19), palette=colours(19), config=None)
    model = load_model(path)
    cfg = model.config
    assert cfg.arch == "dovit-vit-b" and cfg.num_classes == 19
    assert cfg.mean == IMAGENET_MEAN and model.thresholds == (0.985,) * 3
    assert cfg.extra["low_conf_stop"] == -1.0
    assert cfg.protocol["stride"] == [512, 512] and cfg.protocol["reduce_zero_label"] is False
    assert model.sources["thresholds"] == "preset (Cityscapes variant)"


# -- strict errors remain -----------------------------------------------------------------------


@pytest.mark.parametrize("change,message", [
    ("missing", r"1 missing \(first: encoder\.blocks\.3\.norm2\.weight\)"),
    ("unknown", r"1 unexpected \(first: decode_head\.conv_seg\.weight\)"),
    ("shape", r"1 mis-shaped \(first: auxiliary_head\.0\.class_embed\.bias \(3,\) != \(2,\)\)"),
    ("loss buffer elsewhere", r"1 unexpected \(first: backbone\.loss_decode\.criterion\.empty_weight\)"),
])
def test_official_file_errors_stay_strict(tmp_path, change, message):
    mirror = dtop_b(classes=150)
    state = mirror.state_dict()
    if change == "missing":
        del state["backbone.layers.3.ln2.weight"]
    elif change == "unknown":
        state["decode_head.conv_seg.weight"] = torch.zeros(150, 24, 1, 1)
    elif change == "shape":
        state["auxiliary_head.0.class_embed.bias"] = torch.zeros(3)
    else:
        state["backbone.loss_decode.criterion.empty_weight"] = torch.ones(2)
    path = tmp_path / "broken.pth"
    save_mmengine(path, mirror, classes=names(150), palette=colours(150), cfg=DTOP_B_CFG, state_dict=state)
    with pytest.raises(CheckpointError, match=message) as err:
        load_model(path)
    assert str(path) in str(err.value) and "--arch" in str(err.value)


def test_meta_that_does_not_fit_the_weights(tmp_path):
    path = tmp_path / "mixed.pth"
    save_mmengine(path, dtop_b(), classes=names(19), palette=colours(19), cfg=None)
    with pytest.raises(CheckpointError, match="19 class names but the weights have 150"):
        load_model(path)


def test_config_thresholds_outside_0_1_are_refused(tmp_path):
    path = tmp_path / "bad_thresh.pth"
    save_mmengine(path, dtop_b(), classes=names(150), palette=colours(150),
                  cfg=DTOP_B_CFG.replace("thresh=0.85", "thresh=1.5"))
    with pytest.raises(CheckpointError, match=r"threshold 1.5 is outside \(0, 1\]"):
        load_model(path)


@pytest.mark.parametrize("value", [0.0, -1.0, 1.01, math.nan, math.inf])
def test_flag_thresholds_outside_0_1_are_refused(dtop_b_file, value):
    with pytest.raises(ValueError, match=r"outside \(0, 1\]"):
        load_model(dtop_b_file, thresholds=[0.5, value])


def test_config_text_is_never_executed(tmp_path):
    marker = tmp_path / "ran"
    hostile = (f"import os\nos.system('touch {marker}')\n"
               f"model = dict(test_cfg=__import__('os').system('touch {marker}'))\n"
               f"crop = [open('{marker}', 'w') for _ in range(1)]\n" + DTOP_B_CFG)
    path = tmp_path / "hostile_cfg.pth"
    save_mmengine(path, dtop_b(), classes=names(150), palette=colours(150), cfg=hostile)
    model = load_model(path)
    assert not marker.exists()
    assert model.thresholds == (0.85, 0.8)  # the plain assignments after it are still read


def test_unreadable_config_text_is_reported_not_fatal(tmp_path):
    path = tmp_path / "bad_cfg.pth"
    save_mmengine(path, dtop_b(), classes=names(150), palette=colours(150), cfg="model = dict(\n")
    model = load_model(path)
    assert model.config.mean == IMAGENET_MEAN and model.sources["mean"] == "preset"
    assert model.sources["config text"].startswith("not read: config text is not Python")


def test_unsafe_pickle_is_refused_without_torch_advice(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "unsafe.pth"
    torch.save({"meta": {"x": Payload()}, "state_dict": dtop_b().state_dict()}, path)
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    text = str(err.value)
    assert "print" in text and "weights.pth" in text and str(path) in text
    assert "weights_only" not in text and "Re-running" not in text


# -- the command lines, with no flags ---------------------------------------------------------------


def test_empty_file_is_one_clear_error(tmp_path):
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    result = CliRunner().invoke(info, [str(path), "--scenes", "0"])
    assert result.exit_code == 2
    assert result.output.startswith("error:") and "is empty (0 bytes)" in result.output
    assert "Traceback" not in result.output


def test_dtp_info_shows_where_settings_came_from(dtop_b_file):
    result = CliRunner().invoke(info, [str(dtop_b_file), "--scenes", "0", "--json"])
    assert result.exit_code == 0, result.output
    settings = json.loads(result.output)["settings"]
    assert settings["mean"] == {"value": list(IMAGENET_MEAN), "from": "config text"}
    assert settings["class_names"]["from"] == "checkpoint meta"
    assert settings["head_heads"] == {"value": 6, "from": "config text"}
    assert settings["protocol"]["value"]["stride"] == [341, 341]
    flagged = CliRunner().invoke(info, [str(dtop_b_file), "--scenes", "0", "--json", "--head-heads", "4",
                                        "--threshold", "0.7", "--threshold", "0.6"])
    settings = json.loads(flagged.output)["settings"]
    assert settings["head_heads"] == {"value": 4, "from": "flag"}
    assert settings["thresholds"] == {"value": [0.7, 0.6], "from": "flag"}
    bad = CliRunner().invoke(info, [str(dtop_b_file), "--scenes", "0", "--head-heads", "5"])
    assert bad.exit_code == 2 and "--head-heads 5" in bad.output


def test_dtp_calibrate_passes_head_heads_to_the_loader(dtop_b_file, tmp_path):
    from dtp_deploy.bench.cli import calibrate

    bad = CliRunner().invoke(calibrate, [str(dtop_b_file), "--head-heads", "5", "--target-gmacs", "1",
                                         "-o", str(tmp_path / "out.pth")])
    assert bad.exit_code == 2 and "--head-heads 5" in bad.output
    assert not (tmp_path / "out.pth").exists()


def _export_no_flags(path):
    from exporters.cli import main as export

    result = CliRunner().invoke(export, [str(path)])
    assert result.exit_code == 0, result.output
    graph = onnx.load(str(Path(path).with_suffix(".onnx")))
    return {p.key: json.loads(p.value) for p in graph.metadata_props}


def test_dtp_export_official_file_with_no_flags(tmp_path):
    """dtp-export ckpt.pth on a small mmengine file (the DToP layout at dtop-vit-t's depth):
    the graph carries the file's class names, palette, normalisation and protocol."""
    torch.manual_seed(3)
    mirror = DToPOfficial(dim=192, heads=3, depth=6, img=32, classes=5, head_dim=96, head_heads=3).eval()
    for head in [mirror.decode_head, *mirror.auxiliary_head]:
        del head.decoder.layers[2]  # dtop-vit-t's two decoder layers per head
    cfg = DTOP_B_CFG.replace("mean=[123.675, 116.28, 103.53]", "mean=[127.5, 127.5, 127.5]")
    path = tmp_path / "tiny_official.pth"
    save_mmengine(path, mirror, classes=names(5), palette=colours(5), cfg=cfg)
    props = _export_no_flags(path)
    assert props["dtp.arch"] == "dtop-vit-t" and props["dtp.class_names"] == names(5)
    assert props["dtp.palette"] == colours(5) and props["dtp.mean"] == list(HALF)
    assert props["dtp.std"] == [58.395, 57.12, 57.375]
    assert props["dtp.thresholds"] == [0.85, 0.8]
    assert props["dtp.protocol"]["stride"] == [341, 341]


@pytest.mark.slow
def test_dtp_export_official_dovit_file_with_no_flags(tmp_path):
    path = tmp_path / "dovit_s.pth"
    save_mmcv(path, dovit("dovit-vit-s", 150, img=32), classes=names(150), palette=colours(150),
              config=DOVIT_S_CFG)
    props = _export_no_flags(path)
    assert props["dtp.arch"] == "dovit-vit-s" and props["dtp.class_names"] == names(150)
    assert props["dtp.palette"] == colours(150) and props["dtp.mean"] == list(HALF)
    assert props["dtp.thresholds"] == [0.97] * 3
    assert props["dtp.protocol"]["stride"] == [480, 480]


def test_dtop_head_numeric_reference(dtop_b_file):
    """The prune heads' query self-attention through torch's own nn.MultiheadAttention (the
    official TransformerDecoderLayer's) equals ours, for the final and an auxiliary head."""
    mirror = dtop_b()
    model = load_model(dtop_b_file)
    queries = torch.randn(2, 150, 24)
    for official, ours in ((mirror.decode_head, model.heads[2]), (mirror.auxiliary_head[0], model.heads[0])):
        with torch.inference_mode():
            seq_first = queries.transpose(0, 1)
            want = official.decoder.layers[0].self_attn(seq_first, seq_first, seq_first,
                                                        need_weights=False)[0].transpose(0, 1)
            got = ours.decoder.layers[0].self_attn(queries)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_folded_heads_of_an_official_checkpoint(dtop_b_file):
    """Heads folded for inference, loaded from a file in the official layout: the first layer's
    folded queries equal torch's own MultiheadAttention and post-norm on the official weights,
    and every head's outputs equal the plain layers'."""
    mirror = dtop_b()
    model = load_model(dtop_b_file)
    tokens = torch.randn(2, 20, model.config.embed_dim)
    with torch.no_grad():
        plain = [head(tokens) for head in model.heads]
    model.fold_for_inference()
    with torch.inference_mode():
        folded = [head(tokens) for head in model.heads]
        layer = mirror.decode_head.decoder.layers[0]
        q = mirror.decode_head.q.weight[:, None]  # sequence-first, batch 1
        want = layer.norm1(q + layer.self_attn(q, q, q, need_weights=False)[0]).transpose(0, 1)
    torch.testing.assert_close(model.heads[2]._folded[2][0], want, rtol=1e-4, atol=1e-5)
    for got, expected in zip(folded, plain, strict=True):
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


def test_config_reader_takes_pretty_text_mapping_form_and_ignores_calls():
    from dtp_deploy.mmconfig import config_facts, read_config_text

    text = ("norm = dict({'mean': [1, 2, 3], 'std': [4, 5, 6]})\n"
            "data_preprocessor = dict(**norm, bgr_to_rgb=True)\n"
            "crop = 512 // 2 * 2\n"
            "model = dict(test_cfg=dict(mode='slide', crop_size=(crop, crop), stride=(crop - 171, 341)))\n"
            "items = sorted([3, 1])\n")
    values = read_config_text(text)
    assert "items" not in values and values["crop"] == 512
    facts = config_facts(text, "dtop")
    assert facts["mean"] == (1.0, 2.0, 3.0) and facts["std"] == (4.0, 5.0, 6.0)
    assert facts["protocol"] == {"crop_size": [512, 512], "stride": [341, 341]}
