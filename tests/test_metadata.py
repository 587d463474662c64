"""ModelMetadata's optional palette and protocol: written as JSON, absent in older graphs."""

import json

import pytest

from dtp_deploy.metadata import ModelMetadata

# metadata_props of a graph written before palette and protocol existed (keys as then written).
OLDER_GRAPH = {
    "dtp.version": '"0.1.0"', "dtp.arch": '"dtop-vit-t"', "dtp.method": '"dtop"',
    "dtp.flavour": '"portable"', "dtp.dense": "false", "dtp.class_names": '["a", "b"]',
    "dtp.mean": "[123.675, 116.28, 103.53]", "dtp.std": "[58.395, 57.12, 57.375]",
    "dtp.patch_size": "16", "dtp.input_layout": '"NCHW float32 normalised RGB"',
    "dtp.input_size": "null", "dtp.trained_size": "[192, 192]", "dtp.stage_ends": "[3, 4, 6]",
    "dtp.thresholds": "[0.9, 0.9]", "dtp.context_topk": "5", "dtp.precision": '"fp32"',
    "dtp.outputs": '["scores", "keep_counts"]',
}


def test_older_graphs_parse_with_empty_palette_and_protocol():
    meta = ModelMetadata.from_props(OLDER_GRAPH, "old.onnx")
    assert meta.palette == () and meta.protocol == {}
    assert meta.class_names == ("a", "b") and meta.trained_size == (192, 192)


def test_palette_and_protocol_are_json_props():
    protocol = {"crop_size": [512, 512], "stride": [341, 341], "test_scale": [2048, 512],
                "dataset": "ade20k", "reduce_zero_label": True}
    props = {**OLDER_GRAPH, "dtp.palette": "[[120, 120, 120], [180, 120, 120]]",
             "dtp.protocol": json.dumps(protocol)}
    meta = ModelMetadata.from_props(props, "new.onnx")
    assert meta.palette == ((120, 120, 120), (180, 120, 120))
    assert meta.protocol == protocol
    assert json.loads(meta.to_props()["dtp.palette"]) == [[120, 120, 120], [180, 120, 120]]


def test_a_required_key_is_still_required():
    props = dict(OLDER_GRAPH)
    del props["dtp.mean"]
    with pytest.raises(ValueError, match=r"old.onnx: .*missing metadata dtp\.mean"):
        ModelMetadata.from_props(props, "old.onnx")
