"""Checkpoint formats, round trips and the errors for bad files."""

import pytest
import torch

from dtp_deploy.checkpoint import (
    CheckpointError,
    load_model,
    save_model,
    save_official,
    to_official,
)
from dtp_deploy.models import build_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(1)
    m = build_model("dtop-vit-t", num_classes=4, img_size=(64, 64)).eval()
    with torch.no_grad():
        for head in m.heads:
            head.class_embed.weight.mul_(20)
    m.set_thresholds([0.4, 0.6])
    return m


def outputs(model, images):
    with torch.inference_mode():
        return model(images)


def assert_same_model(a, b, images):
    sa, ca = outputs(a, images)
    sb, cb = outputs(b, images)
    torch.testing.assert_close(sa, sb, rtol=0, atol=0)
    assert torch.equal(ca, cb)


def test_own_format_round_trip_keeps_config_and_thresholds(model, tmp_path):
    path = tmp_path / "m.pth"
    save_model(model, path)
    loaded = load_model(path)
    assert loaded.config.to_dict() == model.config.replace(thresholds=(0.4, 0.6)).to_dict()
    assert loaded.thresholds == (0.4, 0.6)
    assert_same_model(model, loaded, torch.randn(2, 3, 64, 80))


def test_official_round_trip(model, tmp_path):
    path = tmp_path / "official.pth"
    save_official(model, path)
    raw = torch.load(path, weights_only=True)["state_dict"]
    # The names the official DToP (mmseg) checkpoints use.
    for key in ("backbone.layers.0.attn.attn.in_proj_weight", "backbone.layers.5.ffn.layers.0.0.weight",
                "backbone.layers.5.ffn.layers.1.bias", "backbone.layers.2.ln1.weight",
                "backbone.patch_embed.projection.weight", "backbone.cls_token",
                "decode_head.decoder.layers.1.multihead_attn.q.weight",
                "auxiliary_head.0.class_embed.weight", "auxiliary_head.1.q.weight",
                "decode_head.input_proj.weight", "decode_head.proj_norm.bias",
                "decode_head.decoder.layers.0.self_attn.in_proj_weight"):
        assert key in raw, key
    assert raw["backbone.pos_embed"].shape == (1, 1 + 16, 192)
    loaded = load_model(path, thresholds=[0.4, 0.6])
    assert loaded.config.arch == "dtop-vit-t" and loaded.config.img_size == (64, 64)
    assert_same_model(model, loaded, torch.randn(2, 3, 64, 64))


@pytest.mark.parametrize("naming", ["ours", "official"])
def test_bare_state_dict(model, tmp_path, naming):
    path = tmp_path / "bare.pth"
    torch.save(model.state_dict() if naming == "ours" else to_official(model), path)
    loaded = load_model(path, thresholds=[0.4, 0.6])
    assert_same_model(model, loaded, torch.randn(1, 3, 64, 64))


def test_dense_and_threshold_overrides(model, tmp_path):
    path = tmp_path / "m.pth"
    save_model(model, path)
    assert load_model(path, thresholds=[0.9, 0.95]).thresholds == (0.9, 0.95)
    assert load_model(path, pruning=False).pruning is False


def test_wrong_arch_names_keys_and_fix(model, tmp_path):
    path = tmp_path / "official.pth"
    save_official(model, path)
    with pytest.raises(CheckpointError, match=r"do not fit dtop-vit-s.*missing.*--arch") as err:
        load_model(path, arch="dtop-vit-s")
    assert str(path) in str(err.value)


def test_missing_keys_are_listed(model, tmp_path):
    state = to_official(model)
    del state["backbone.layers.3.ln2.weight"]
    state["decode_head.conv_seg.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError, match=r"1 missing \(first: encoder\.blocks\.3\.norm2\.weight\).*1 unexpected"):
        load_model(path)


def test_truncated_file(model, tmp_path):
    path = tmp_path / "m.pth"
    save_model(model, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_model(path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_model(path)
    with pytest.raises(CheckpointError, match="no such file"):
        load_model(tmp_path / "absent.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="not a checkpoint dictionary"):
        load_model(tmp_path / "list.pth")


def test_dovit_keys_are_named(tmp_path):
    path = tmp_path / "dovit.pth"
    torch.save({"state_dict": {"backbone.layers.0.attn.qkv.weight": torch.zeros(3, 1)}}, path)
    with pytest.raises(CheckpointError, match="DoViT"):
        load_model(path)


def test_save_is_atomic(model, tmp_path, monkeypatch):
    path = tmp_path / "m.pth"

    def broken_save(obj, f):
        with open(f, "wb") as fh:
            fh.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_model(model, path)
    assert list(tmp_path.iterdir()) == []
