"""The mmseg evaluation protocol (``dtp_deploy.runtime.protocol``) against independent oracles:
hand-listed windows and sizes, OpenCV's own resize output, a toy runner whose averages are
worked out by hand, and a PyTorch transcription of mmseg's ``slide_inference`` written here.
"""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

from dtp_deploy.bench.accuracy import Evaluator, protocol_spec
from dtp_deploy.data import open_dataset
from dtp_deploy.models import build_model
from dtp_deploy.runtime import protocol
from dtp_deploy.runtime.protocol import (
    SlideSpec,
    rescale_size,
    resize_image,
    resolve_spec,
    slide_inference,
    slide_windows,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- sizes and windows, listed by hand ------------------------------------------------------

@pytest.mark.parametrize("size, scale, expected", [
    ((640, 480), (2048, 512), (683, 512)),  # short edge bound: 480 * 512/480, 640 * 1.0667 + 0.5
    ((2000, 300), (2048, 512), (2048, 307)),  # long edge bound: 300 * 1.024 = 307.2
    ((100, 100), (2048, 512), (512, 512)),  # small images are enlarged
    ((2048, 1024), (2048, 1024), (2048, 1024)),  # Cityscapes: unchanged
    ((2048, 1024), (1024, 2048), (2048, 1024)),  # the bound's order does not matter
    ((333, 500), (2048, 512), (512, 769)),  # portrait: 500 * 512/333 = 768.77 -> 769
], ids=["ade-landscape", "long-bound", "enlarge", "cityscapes", "swapped", "portrait"])
def test_rescale_size_as_mmcv(size, scale, expected):
    assert rescale_size(*size, scale) == expected


# Recorded with OpenCV 5.0.0: cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR), which
# mmcv's imrescale calls, on image = (arange(5 * 7 * 3).reshape(5, 7, 3) * 37) % 256.
OPENCV_3x4_CHANNEL0 = [[44, 207, 177, 115], [60, 222, 192, 130], [74, 87, 207, 145]]
OPENCV_8x11_CHANNEL1 = [
    [37, 87, 135, 42, 43, 114, 185, 185, 93, 140, 191], [41, 91, 139, 46, 47, 118, 188, 189, 97, 144, 195],
    [46, 97, 144, 52, 53, 124, 194, 195, 103, 150, 201], [52, 102, 150, 58, 58, 129, 200, 201, 108, 155, 206],
    [58, 108, 156, 63, 64, 135, 205, 206, 114, 161, 212], [63, 114, 161, 69, 70, 140, 211, 212, 119, 167, 217],
    [69, 119, 167, 74, 75, 146, 125, 113, 112, 173, 223], [73, 123, 171, 78, 79, 150, 58, 35, 106, 176, 227]]


def test_resize_is_opencv_bit_for_bit():
    image = ((np.arange(5 * 7 * 3).reshape(5, 7, 3) * 37) % 256).astype(np.uint8)
    assert resize_image(image, (3, 4))[..., 0].tolist() == OPENCV_3x4_CHANNEL0
    assert resize_image(image, (8, 11))[..., 1].tolist() == OPENCV_8x11_CHANNEL1
    assert resize_image(image, (5, 7)) is image


def test_resize_matches_opencv_on_random_sizes():
    cv2 = pytest.importorskip("cv2", reason="OpenCV not installed: the recorded cases above still run")
    rng = np.random.default_rng(0)
    for _ in range(40):
        (h, w), (oh, ow) = rng.integers(1, 60, 2), rng.integers(1, 90, 2)
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        expected = cv2.resize(image, (int(ow), int(oh)), interpolation=cv2.INTER_LINEAR).reshape(oh, ow, 3)
        np.testing.assert_array_equal(resize_image(image, (oh, ow)), expected)


@pytest.mark.parametrize("size, crop, stride, expected", [
    # DToP ViT-B: the second row is flush with the bottom edge (starts at 700 - 512, not 341)
    ((700, 512), (512, 512), (341, 341), [(0, 512, 0, 512), (188, 700, 0, 512)]),
    # an ADE20K image after its resize: two columns, the last flush right
    ((512, 683), (512, 512), (341, 341), [(0, 512, 0, 512), (0, 512, 171, 683)]),
    # smaller than the crop: one window of the image's own size
    ((300, 400), (512, 512), (341, 341), [(0, 300, 0, 400)]),
    # DoViT ADE20K stride 480: third column would end at 1472, so it is shifted to 512..1024
    ((512, 1024), (512, 512), (480, 480), [(0, 512, 0, 512), (0, 512, 480, 992), (0, 512, 512, 1024)]),
    # a tall image, smaller than the crop across only
    ((600, 100), (512, 512), (341, 341), [(0, 512, 0, 100), (88, 600, 0, 100)]),
], ids=["flush-bottom", "ade-683", "smaller-than-crop", "dovit-480", "narrow"])
def test_slide_windows_listed_by_hand(size, crop, stride, expected):
    assert slide_windows(*size, crop, stride) == expected


def test_cityscapes_frame_windows():
    windows = slide_windows(1024, 2048, (768, 768), (512, 512))
    assert [(y1, y2) for y1, y2, _, _ in windows[::4]] == [(0, 768), (256, 1024)]
    assert [(x1, x2) for _, _, x1, x2 in windows[:4]] == [(0, 768), (512, 1280), (1024, 1792), (1280, 2048)]


def test_spec_precedence_and_defaults():
    dtop = resolve_spec("dtop", 16, (512, 512))
    assert (dtop.crop, dtop.stride, dtop.test_scale) == ((512, 512), (341, 341), None)
    assert resolve_spec("dovit", 16, (512, 512)).stride == (480, 480)
    assert resolve_spec("dovit", 16, (768, 768)).stride == (512, 512)
    assert resolve_spec("dtop", 16, (192, 192)).stride == (128, 128)  # two thirds
    assert resolve_spec("dtop", 16, (512, 512), dataset="ade20k").test_scale == (2048, 512)
    facts = {"crop_size": [640, 640], "stride": [320, 320], "test_scale": [2560, 640], "dataset": "ade20k"}
    large = resolve_spec("dtop", 16, (512, 512), facts)
    assert (large.crop, large.stride, large.test_scale) == ((640, 640), (320, 320), (2560, 640))
    assert large.sources == {"crop": "model", "stride": "model", "test_scale": "model"}
    chosen = resolve_spec("dtop", 16, (512, 512), facts, crop=480, stride=(300, 320), test_scale="none")
    assert (chosen.crop, chosen.stride, chosen.test_scale) == ((480, 480), (300, 320), None)
    with pytest.raises(ValueError, match="larger than the crop"):
        resolve_spec("dtop", 16, (512, 512), stride=600)
    with pytest.raises(ValueError, match="unknown method"):
        resolve_spec("setr", 16, (512, 512))


# -- accumulation, with a runner whose output is known -----------------------------------------

def _window_index_runner(k: int = 3):
    """Window i (in call order) scores class 0 with i, class 1 with 1, class 2 with 0."""
    calls = []

    def run(inputs):
        first = sum(len(c) for c in calls)
        calls.append(inputs)
        n, _, h, w = inputs.shape
        scores = np.zeros((n, k, h // 8, w // 8), np.float32)
        scores[:, 0] = np.arange(first, first + n, dtype=np.float32)[:, None, None]
        scores[:, 1] = 1
        return scores, np.tile([[h * w // 64, 1]], (n, 1))

    return run, calls


def test_windows_are_averaged_in_pixel_space():
    # 24x40, crop 16, stride 12, patch 8: rows (0, 16), (8, 24); columns (0, 16), (12, 28), (24, 40)
    spec = SlideSpec((16, 16), (12, 12), None, "dtop", 8)
    run, calls = _window_index_runner()
    result = slide_inference(np.zeros((24, 40, 3), np.uint8), spec, (0, 0, 0), (1, 1, 1), run,
                             return_scores=True)
    assert len(calls) == 1 and calls[0].shape == (6, 3, 16, 16)
    class0 = result.scores[0]
    # pixel -> the windows covering it, numbered row-major
    for (y, x), covering in {(10, 13): (0, 1, 3, 4), (2, 26): (1, 2), (20, 39): (5,), (12, 5): (0, 3),
                             (0, 0): (0,), (23, 14): (3, 4)}.items():
        assert class0[y, x] == pytest.approx(np.mean(covering), abs=1e-5), (y, x)
    np.testing.assert_allclose(result.scores[1], 1.0, atol=1e-6)
    assert result.keep_counts.shape == (6, 2) and result.keep_ratio == pytest.approx((1.0, 6 / (6 * 4)))


def test_dovit_averages_logits_not_probabilities():
    """Two windows overlap; each predicts one constant logit vector. In the overlap DoViT's
    result is softmax(mean of logits), which differs from the mean of the softmaxes."""
    logits = np.array([[5.0, 0.0, 3.0], [0.0, 4.0, 3.5]], np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)

    def run(inputs):
        n, _, h, w = inputs.shape
        return np.broadcast_to(probs[:n, :, None, None], (n, 3, h // 8, w // 8)).copy(), np.ones((n, 1))

    spec = SlideSpec((16, 16), (8, 8), None, "dovit", 8)  # 16x24: windows at x 0..16 and 8..24
    result = slide_inference(np.zeros((16, 24, 3), np.uint8), spec, (0, 0, 0), (1, 1, 1), run,
                             return_scores=True)
    mean = logits.mean(0)
    expected = np.exp(mean) / np.exp(mean).sum()
    np.testing.assert_allclose(result.scores[:, 5, 12], expected, rtol=1e-5)
    np.testing.assert_allclose(result.scores[:, 5, 2], probs[0], rtol=1e-5)
    # the labels show it: averaging probabilities would pick class 0 in the overlap
    assert probs.mean(0).argmax() == 0 and expected.argmax() == 2
    assert result.labels[5, 12] == 2


def test_test_scale_resizes_there_and_back():
    spec = SlideSpec((16, 16), (12, 12), (40, 24), "dtop", 8)  # 12x20 -> x2 -> 24x40
    run, calls = _window_index_runner()
    result = slide_inference(np.zeros((12, 20, 3), np.uint8), spec, (0, 0, 0), (1, 1, 1), run,
                             return_scores=True)
    assert result.resized == (24, 40) and len(result.windows) == 6
    assert result.labels.shape == (12, 20) and result.scores.shape == (3, 12, 20)
    assert result.scores[0, 11, 19] == pytest.approx(5.0, abs=1e-5)  # only the last window there


def test_smaller_window_is_padded_to_the_patch_and_resized_back():
    spec = SlideSpec((32, 32), (16, 16), None, "dtop", 8)
    run, calls = _window_index_runner()
    image = np.zeros((20, 27, 3), np.uint8)
    result = slide_inference(image, spec, (0, 0, 0), (1, 1, 1), run)
    assert result.windows == [(0, 20, 0, 27)] and calls[0].shape == (1, 3, 24, 32)
    assert result.grids == [(3, 4)] and result.labels.shape == (20, 27)
    with pytest.raises(ValueError, match="fixed input size"):
        slide_inference(image, spec, (0, 0, 0), (1, 1, 1), run, input_size=(24, 24))


# -- against a PyTorch transcription of mmseg's slide_inference --------------------------------

def mmseg_slide_reference(model, image, crop, stride, test_scale=None):
    """mmseg's test pipeline for one image, written here with torch ops the way
    ``EncoderDecoder.slide_inference`` is: F.pad accumulation, F.interpolate resizes."""
    cfg = model.config
    p, k = cfg.patch_size, cfg.num_classes
    ori = image.shape[:2]
    if test_scale is not None:
        w, h = rescale_size(image.shape[1], image.shape[0], test_scale)
        image = resize_image(image, (h, w))  # checked against OpenCV above
    x = (torch.from_numpy(np.array(image)).float() - torch.tensor(cfg.mean)) / torch.tensor(cfg.std)
    x = x.permute(2, 0, 1)[None]
    h_img, w_img = x.shape[2:]
    preds = torch.zeros(1, k, h_img, w_img)
    count = torch.zeros(1, 1, h_img, w_img)
    for hi in range(max(h_img - crop[0] + stride[0] - 1, 0) // stride[0] + 1):
        for wi in range(max(w_img - crop[1] + stride[1] - 1, 0) // stride[1] + 1):
            y2, x2 = min(hi * stride[0] + crop[0], h_img), min(wi * stride[1] + crop[1], w_img)
            y1, x1 = max(y2 - crop[0], 0), max(x2 - crop[1], 0)
            window = x[:, :, y1:y2, x1:x2]
            padded = F.pad(window, (0, -(-(x2 - x1) // p) * p - (x2 - x1), 0, -(-(y2 - y1) // p) * p - (y2 - y1)))
            with torch.inference_mode():
                scores, _ = model(padded)
            if cfg.method == "dovit":  # the logits up to a per-pixel constant
                out = F.interpolate(scores.clamp_min(torch.finfo(torch.float32).tiny).log(),
                                    size=(y2 - y1, x2 - x1), mode="bilinear", align_corners=False)
            else:  # DToP's head resizes to its image size, then mmseg to the window
                out = F.interpolate(scores, size=crop, mode="bilinear", align_corners=False)
                out = F.interpolate(out, size=(y2 - y1, x2 - x1), mode="bilinear", align_corners=False)
            preds += F.pad(out, (x1, w_img - x2, y1, h_img - y2))
            count[:, :, y1:y2, x1:x2] += 1
    preds = F.interpolate(preds / count, size=ori, mode="bilinear", align_corners=False)
    return preds.argmax(1)[0].numpy()


def torch_runner(model):
    def run(inputs):
        with torch.inference_mode():
            scores, keep = model(torch.from_numpy(inputs))
        return scores.numpy(), keep.numpy()
    return run


@pytest.mark.parametrize("arch", ["dtop-vit-t", "dovit-vit-t"])
@pytest.mark.parametrize("size, test_scale, resized, windows", [
    ((70, 101), (150, 90), (90, 130), 2 * 3),  # enlarged to 90x130, 2 x 3 full windows
    ((40, 150), "none", (40, 150), 3),  # windows shorter than the crop: 40x64, padded to 48x64
], ids=["resized", "short-windows"])
def test_slide_inference_matches_the_mmseg_transcription(arch, size, test_scale, resized, windows):
    model = build_model(arch, num_classes=6, img_size=(64, 64)).eval()
    threshold = 0.3 if arch.startswith("dtop") else 0.19  # random weights: make them prune
    model.set_thresholds([threshold] * (model.config.num_stages - 1))
    image = np.random.default_rng(3).integers(0, 256, (*size, 3), dtype=np.uint8)
    spec = resolve_spec(model.config.method, 16, (64, 64), stride=(40, 48), test_scale=test_scale)
    result = slide_inference(image, spec, model.config.mean, model.config.std, torch_runner(model))
    assert result.resized == resized and len(result.windows) == windows
    assert min(result.keep_ratio) < 1.0, "the model should prune"
    expected = mmseg_slide_reference(model, image, (64, 64), (40, 48),
                                     test_scale=None if test_scale == "none" else test_scale)
    assert (result.labels == expected).mean() > 0.999


# -- end to end on folders in the official layouts -----------------------------------------------

def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def mmseg_miou(pairs, num_classes, ignore=255):
    """IoUMetric's arithmetic, written here: areas summed over the set, then NaN-mean."""
    inter, union = np.zeros(num_classes), np.zeros(num_classes)
    for label, pred in pairs:
        keep = label != ignore
        label, pred = label[keep], pred[keep]
        i = np.histogram(pred[pred == label], bins=num_classes, range=(0, num_classes))[0]
        a = np.histogram(pred, bins=num_classes, range=(0, num_classes))[0]
        b = np.histogram(label, bins=num_classes, range=(0, num_classes))[0]
        inter, union = inter + i, union + a + b - i
    with np.errstate(invalid="ignore"):
        return float(np.nanmean(inter / union))


def test_dtp_bench_mmseg_protocol_on_an_ade20k_folder(tmp_path):
    from dtp_deploy.bench.cli import main

    rng = np.random.default_rng(0)
    raws = []
    for i, (h, w) in enumerate([(150, 200), (130, 90)]):
        raw = rng.integers(0, 151, (h, w)).astype(np.uint8)  # 0 = other (ignored), 1..150 classes
        raws.append(raw)
        _write(tmp_path / f"ade/images/validation/ADE_val_{i:08d}.jpg", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        _write(tmp_path / f"ade/annotations/validation/ADE_val_{i:08d}.png", raw)
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(main, ["random:dtop-vit-t", "--data", str(tmp_path / "ade"), "--protocol", "mmseg",
                                       "--backend", "torch", "--iterations", "1", "--warmup", "0", "--pool", "1",
                                       "--quiet", "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    [accuracy] = json.loads(out.read_text())["accuracy"]
    # ADE20K's official test scale for a 192 crop: short edge 192, so 150x200 -> 192x256 (two windows)
    assert accuracy["protocol"]["test_scale"] == [768, 192] and accuracy["protocol"]["stride"] == [128, 128]
    torch.manual_seed(0)  # the CLI's random weights (--seed 0)
    model = build_model("dtop-vit-t").eval()
    data = open_dataset(tmp_path / "ade")
    pairs = []
    for (image, _), raw in zip((data[i] for i in range(len(data))), raws):
        truth = np.where(raw == 0, 255, raw.astype(np.int64) - 1)  # reduce_zero_label, by hand
        pairs.append((truth, mmseg_slide_reference(model, image, (192, 192), (128, 128), test_scale=(768, 192))))
    assert accuracy["dense"]["miou"] == pytest.approx(mmseg_miou(pairs, 150), abs=2e-3)


def test_evaluator_mmseg_on_a_cityscapes_folder(tmp_path):
    rng = np.random.default_rng(1)
    stems = ["frankfurt_000000_000294", "lindau_000001_000019"]
    for stem in stems:
        city = stem.split("_")[0]
        train_ids = rng.integers(0, 19, (96, 200)).astype(np.uint8)
        train_ids[:10] = 255
        _write(tmp_path / f"leftImg8bit/val/{city}/{stem}_leftImg8bit.png", rng.integers(0, 256, (96, 200, 3), dtype=np.uint8))
        _write(tmp_path / f"gtFine/val/{city}/{stem}_gtFine_labelTrainIds.png", train_ids)
        _write(tmp_path / f"gtFine/val/{city}/{stem}_gtFine_labelIds.png", np.zeros((96, 200), np.uint8))
    data = open_dataset(tmp_path)
    assert data.label_kind == "labelTrainIds" and data[0][1][:10].max() == 255
    model = build_model("dovit-vit-t", num_classes=19, img_size=(64, 64)).eval()
    spec = protocol_spec(model, data, test_scale="none")
    assert spec.crop == (64, 64) and spec.stride == (42, 42) and spec.test_scale is None
    ev = Evaluator(model, data, (64, 64), protocol="mmseg", spec=spec)
    dense = ev.dense()
    pairs = [(data[i][1], mmseg_slide_reference(model, data[i][0], (64, 64), (42, 42))) for i in range(2)]
    assert dense["cm"].miou() == pytest.approx(mmseg_miou(pairs, 19), abs=2e-3)
    # every window counted: 96x200 with 64/42 -> 2 rows x 5 columns per image
    model.pruning = False  # dense: only the final head counts
    per_window = model.macs([16] * model.config.num_stages, (4, 4))["total"] / 1e9
    model.pruning = True
    assert dense["gmacs_per_image"] == pytest.approx(10 * per_window)
    assert protocol.PROTOCOLS == ("grid", "mmseg")


class TorchToy(torch.nn.Module):
    """The toy ONNX graph of ``test_runtime`` (16x16 average pooling, 1x1 convolution) in torch."""

    def __init__(self):
        super().__init__()
        from test_runtime import MEAN, PATCH, STD, K, toy_weights

        weight, bias = toy_weights()
        self.weight, self.bias = torch.from_numpy(weight), torch.from_numpy(bias)
        self.config = type("Config", (), {"patch_size": PATCH, "num_classes": K, "mean": MEAN,
                                          "std": STD, "method": "dtop"})()

    def forward(self, x):
        pooled = F.avg_pool2d(x, 16)
        scores = torch.einsum("kc,bchw->bkhw", self.weight, pooled) + self.bias[None, :, None, None]
        return scores, torch.zeros(x.shape[0], 3, dtype=torch.int32)


@pytest.mark.parametrize("layout", ["ade20k", "cityscapes"])
def test_dtp_run_mmseg_protocol_on_dataset_folders(tmp_path, layout):
    """dtp-run --protocol mmseg over the image folder of each layout; the fixed 64x64 toy graph
    pads a short window to 64 where mmseg pads to the patch, which the toy (no attention) does
    not notice, so the labels must be mmseg's."""
    from test_runtime import make_toy_model, scene

    from dtp_deploy.runtime.cli import main

    model = make_toy_model(tmp_path / "toy.onnx")
    sizes = {"a": (100, 150), "b": (50, 90)}  # b is shorter than the 64 crop
    folder = tmp_path / ("images/validation" if layout == "ade20k" else "leftImg8bit/val/lindau")
    for i, (stem, (h, w)) in enumerate(sizes.items()):
        name = f"{stem}.jpg" if layout == "ade20k" else f"lindau_00000{i}_000019_leftImg8bit.png"
        _write(folder / name, scene(h, w, i))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [str(model), str(folder), "-o", str(out), "--protocol", "mmseg",
                                       "--json", "--no-overlay"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["protocol"] == "mmseg" and summary["mode"] == "slide" and summary["segmented"] == 2
    # crop 64, stride 42: 100x150 -> 2 x 4 windows (columns at 0, 42, 84, 86); 50x90 -> 1 x 2
    assert sorted(r["windows"] for r in summary["images"]) == [2, 8]
    toy = TorchToy()
    for record in summary["images"]:
        image = np.asarray(Image.open(record["path"]).convert("RGB"))
        labels = np.asarray(Image.open(record["labels_png"]))
        expected = mmseg_slide_reference(toy, image, (64, 64), (42, 42))
        assert (labels != expected).mean() < 1e-3


def test_dtp_calibrate_mmseg_counts_every_window(tmp_path):
    """Scenes of 288x384 under mmseg: 2 x 3 windows of 192 (stride 128), so dense GMACs are six
    times one dense 192x192 window."""
    from dtp_deploy.bench.cli import calibrate
    from dtp_deploy.builtin import load_builtin_model

    out = tmp_path / "search.json"
    result = CliRunner().invoke(calibrate, ["--protocol", "mmseg", "--scenes", "2", "--size", "288x384",
                                            "--grid", "1,0.9", "--target-gmacs", "100", "-o",
                                            str(tmp_path / "cal.pth"), "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    search = json.loads(out.read_text())
    assert search["protocol"]["protocol"] == "mmseg" and search["protocol"]["crop"] == [192, 192]
    model = load_builtin_model()
    model.pruning = False
    window = model.macs([144] * model.config.num_stages, (12, 12))["total"] / 1e9
    assert search["dense"]["gmacs_per_image"] == pytest.approx(6 * window)


def test_protocol_options_are_checked(tmp_path):
    from test_runtime import make_toy_model

    from dtp_deploy.runtime import Segmenter
    from dtp_deploy.runtime.cli import main

    model = make_toy_model(tmp_path / "toy.onnx")
    seg = Segmenter.open(model)
    image = np.zeros((70, 70, 3), np.uint8)
    with pytest.raises(ValueError, match="unknown protocol 'papers'"):
        seg.predict(image, protocol="papers")
    with pytest.raises(ValueError, match="always slides"):
        seg.predict(image, protocol="mmseg", mode="whole")
    with pytest.raises(ValueError, match="test_scale applies to protocol='mmseg' only"):
        seg.predict(image, test_scale=(100, 50))
    with pytest.raises(ValueError, match="fixed input size 64x64"):
        seg.predict(image, protocol="mmseg", crop=96)
    assert seg.predict(image, protocol="mmseg").windows == 2 * 2  # crop 64, stride 42
    assert seg.predict(image, protocol="mmseg", test_scale=(128, 128)).windows == 3 * 3  # -> 128x128
    _write(tmp_path / "in/a.png", image)
    for args, message in ((["--mode", "whole"], "does not apply to --protocol mmseg"),
                          (["--stride", "80"], "larger than the crop")):
        result = CliRunner().invoke(main, [str(model), str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                                           "--protocol", "mmseg", *args])
        assert result.exit_code == 2 and message in result.output, result.output


@pytest.mark.parametrize("scale, windows", [("none", 12), ("192x144", 4)])
def test_dtp_calibrate_protocol_options_set_the_windows(tmp_path, scale, windows):
    """--crop 96 --stride 96 on 288x384 scenes: 3 x 4 windows without a resize; a keep-ratio
    resize into 192x144 (w x h) halves the scene to 144x192 first: 2 x 2 windows."""
    from dtp_deploy.bench.cli import calibrate
    from dtp_deploy.builtin import load_builtin_model

    out = tmp_path / "search.json"
    result = CliRunner().invoke(calibrate, ["--protocol", "mmseg", "--crop", "96", "--stride", "96",
                                            "--test-scale", scale, "--scenes", "1", "--size", "288x384",
                                            "--grid", "1", "--target-gmacs", "100", "-o",
                                            str(tmp_path / "cal.pth"), "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    search = json.loads(out.read_text())
    assert search["protocol"]["crop"] == [96, 96] and search["protocol"]["stride"] == [96, 96]
    model = load_builtin_model()
    model.pruning = False
    window = model.macs([36] * model.config.num_stages, (6, 6))["total"] / 1e9
    assert search["dense"]["gmacs_per_image"] == pytest.approx(windows * window)


def test_dtp_bench_protocol_options_reach_the_report(tmp_path):
    from dtp_deploy.bench.cli import main

    out = tmp_path / "bench.json"
    result = CliRunner().invoke(main, ["--backend", "torch", "--iterations", "1", "--warmup", "0", "--pool", "1",
                                       "--scenes", "1", "--protocol", "mmseg", "--crop", "96x128",
                                       "--stride", "64", "--test-scale", "none", "--quiet", "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    [accuracy] = json.loads(out.read_text())["accuracy"]
    assert accuracy["protocol"]["crop"] == [96, 128] and accuracy["protocol"]["stride"] == [64, 64]
    assert accuracy["protocol"]["test_scale"] is None


@pytest.mark.parametrize("args, message", [
    (["--crop", "96"], "apply to --protocol mmseg only"),
    (["--protocol", "mmseg", "--crop", "64", "--stride", "96"], "larger than the crop"),
    (["--protocol", "mmseg", "--test-scale", "2048"], "use WxH"),
])
def test_bench_and_calibrate_refuse_bad_protocol_options(tmp_path, args, message):
    from dtp_deploy.bench.cli import calibrate, main

    for command, extra in ((main, ["--backend", "torch", "--iterations", "1"]),
                           (calibrate, ["--target-gmacs", "1", "-o", str(tmp_path / "x.pth")])):
        result = CliRunner().invoke(command, [*extra, *args])
        assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "x.pth").exists()


def test_dtp_run_test_scale_resizes_before_the_windows(tmp_path):
    """A 100x150 image under --test-scale 75x50 (w x h) is resized to 50x75 first: one row of
    two 64-pixel windows instead of 2 x 4; --test-scale without --protocol mmseg is refused."""
    from test_runtime import make_toy_model, scene

    from dtp_deploy.runtime.cli import main

    model = make_toy_model(tmp_path / "toy.onnx")
    _write(tmp_path / "in/a.png", scene(100, 150, 0))
    base = [str(model), str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--json", "--no-overlay"]
    result = CliRunner().invoke(main, [*base, "--protocol", "mmseg", "--test-scale", "75x50"])
    assert result.exit_code == 0, result.output
    [record] = json.loads(result.stdout)["images"]
    assert record["windows"] == 2
    refused = CliRunner().invoke(main, [*base, "--test-scale", "75x50"])
    assert refused.exit_code == 2 and "--protocol mmseg only" in refused.output
