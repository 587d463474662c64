"""Threshold sweeps and calibration on the built-in model (trained on synthetic scenes)."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from dtp_deploy.bench import Evaluator, calibrate, sweep
from dtp_deploy.bench.cli import calibrate as calibrate_cli
from dtp_deploy.builtin import open_model
from dtp_deploy.checkpoint import load_model
from dtp_deploy.data import SyntheticScenes

SIZE = (192, 192)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    return open_model(None)


@pytest.fixture(scope="module")
def evaluator(model):
    return Evaluator(model, SyntheticScenes(8, *SIZE, seed=99), SIZE)


def test_sweep_keep_ratio_is_monotone_in_threshold(model, evaluator):
    result = sweep(model, None, SIZE, grid=(1.0, 0.95, 0.9, 0.8, 0.6), per_stage=True, evaluator=evaluator)
    uniform = [p for p in result["points"] if p["mode"] == "uniform"]
    assert [p["thresholds"][0] for p in uniform] == [1.0, 0.95, 0.9, 0.8, 0.6]
    # threshold 1.0: nothing exits (confidences are at most 1)
    assert uniform[0]["keep_ratios"] == [1.0, 1.0, 1.0] and uniform[0]["agreement"] == 1.0
    # tokens entering stage 1 only depend on the first head, which sees every token:
    # a lower threshold lets a superset exit
    first_exit = [p["keep_ratios"][1] for p in uniform]
    assert first_exit == sorted(first_exit, reverse=True) and first_exit[-1] < first_exit[0]
    gmacs = [p["gmacs_per_image"] for p in uniform]
    assert gmacs[-1] < gmacs[0]
    stage1 = [p for p in result["points"] if p["stage"] == 1]
    assert len(stage1) == 5 and all(p["keep_ratios"][1] == 1.0 for p in stage1)
    # Nothing exits at threshold 1.0: the labels are the dense ones, so no mIoU change.
    assert uniform[0]["miou_drop"] == 0.0
    # The figures of one pruned point against a run of the model done here: GMACs from each
    # image's own keep counts through the MAC formula (checked against torch's FLOP counter in
    # test_flops), mIoU from the predicted labels with an IoU loop written here.
    point = uniform[-1]
    grid = (SIZE[0] // model.config.patch_size, SIZE[1] // model.config.patch_size)
    saved = model.pruning, model.thresholds
    model.pruning = True
    model.set_thresholds(point["thresholds"])
    with torch.inference_mode():
        keep = torch.cat([model(images)[1] for images in evaluator.images])
    # the MAC formula counts the heads that the point's thresholds run
    per_image = [model.macs(row.tolist(), grid)["total"] / 1e9 for row in keep]
    model.pruning, model.thresholds = saved
    assert point["gmacs_per_image"] == pytest.approx(sum(per_image) / len(per_image))
    k = model.config.num_classes
    dense_miou = _loop_miou(evaluator.run(pruned=False)["labels"], evaluator.masks, k)
    point_miou = _loop_miou(evaluator.run(pruned=True, thresholds=point["thresholds"])["labels"],
                            evaluator.masks, k)
    assert result["dense"]["miou"] == pytest.approx(dense_miou)
    assert point["miou_drop"] == pytest.approx(dense_miou - point_miou)


def _loop_miou(predictions, masks, num_classes):
    """Mean over the classes present in truth or prediction of |pred & truth| / |pred | truth|,
    pixels whose truth is not a class (e.g. 255) left out."""
    ious = []
    for k in range(num_classes):
        scored = list(zip(predictions, masks))
        inter = sum(int(((p == k) & (m == k)).sum()) for p, m in scored)
        union = sum(int((((p == k) & (m < num_classes)) | (m == k)).sum()) for p, m in scored)
        if union:
            ious.append(inter / union)
    return sum(ious) / len(ious)


def test_calibration_honours_target_gmacs(model, evaluator):
    shipped = model.thresholds
    dense = evaluator.dense()["gmacs_per_image"]
    target = 0.8 * dense
    result = calibrate(model, None, SIZE, target_gmacs=target, evaluator=evaluator)
    assert result["reached"] and result["gmacs_per_image"] <= target
    assert len(result["thresholds"]) == 2 and all(0.5 <= t <= 1.0 for t in result["thresholds"])
    gmacs = [s["gmacs_per_image"] for s in result["steps"]]
    assert gmacs == sorted(gmacs, reverse=True)  # every accepted step saves GMACs
    assert model.thresholds == shipped  # the model itself is unchanged


def test_calibration_respects_miou_budget_and_reports_unreachable(model, evaluator):
    result = calibrate(model, None, SIZE, target_gmacs=0.01, max_miou_drop=0.002,
                       grid=(1.0, 0.95, 0.8, 0.5), evaluator=evaluator)
    assert not result["reached"]
    assert all(s["miou_drop"] <= 0.002 for s in result["steps"][1:])
    with pytest.raises(ValueError, match="target-gmacs"):
        calibrate(model, None, SIZE, evaluator=evaluator)


def test_calibrate_cli_writes_thresholds_into_a_copy(tmp_path):
    out = tmp_path / "cal.pth"
    report = tmp_path / "cal.json"
    args = ["--target-gmacs", "0.4", "--scenes", "4", "--grid", "1,0.95,0.9,0.8",
            "-o", str(out), "--json-out", str(report)]
    result = CliRunner().invoke(calibrate_cli, args)
    assert result.exit_code == 0, result.output
    saved = json.loads(report.read_text())
    assert saved["gmacs_per_image"] <= 0.4
    assert list(load_model(out).thresholds) == saved["thresholds"]
    result = CliRunner().invoke(calibrate_cli, ["--target-gmacs", "0.01", "--scenes", "2",
                                                "--grid", "1,0.9", "-o", str(tmp_path / "no.pth")])
    assert result.exit_code == 1 and "not reached" in result.output
    assert not (tmp_path / "no.pth").exists()
    result = CliRunner().invoke(calibrate_cli, ["-o", str(tmp_path / "x.pth")])
    assert result.exit_code == 2 and "--target-gmacs" in result.output


def test_calibration_switches_off_an_exit_that_does_not_pay(model, evaluator):
    """After the greedy descent no exit may be left whose switching off (threshold 1: no head,
    no split) would save GMACs within the mIoU budget."""
    budget = 0.005
    result = calibrate(model, None, SIZE, max_miou_drop=budget, evaluator=evaluator)
    for stage, threshold in enumerate(result["thresholds"]):
        if threshold < 1.0:
            off = list(result["thresholds"])
            off[stage] = 1.0
            point = evaluator.run(True, off)
            drop = evaluator.dense()["cm"].miou() - point["cm"].miou()
            assert point["gmacs_per_image"] >= result["gmacs_per_image"] or drop > budget, stage
    assert 1.0 in result["thresholds"], "the built-in model's second exit does not pay here"


def test_thresholds_are_not_calibrated_on_the_scenes_they_are_scored_on(tmp_path, monkeypatch):
    """dtp-calibrate's synthetic scenes (also INT8's calibration images) are not dtp-bench's
    accuracy scenes: thresholds chosen on the scenes they are scored on would look better
    than they are. Both datasets are caught on their way into the real commands."""
    import dtp_deploy.bench as bench
    from dtp_deploy.bench.cli import main as bench_cli
    from dtp_deploy.bench.quantize import calibration_images
    from dtp_deploy.preprocess import to_tensor

    caught = {}

    def catching(name, real):
        def wrapper(model, dataset, *args, **kwargs):
            caught[name] = [dataset[i][0] for i in range(len(dataset))]
            return real(model, dataset, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(bench, "calibrate", catching("calibrate", bench.calibrate))
    monkeypatch.setattr(bench, "evaluate_accuracy", catching("evaluate", bench.evaluate_accuracy))
    result = CliRunner().invoke(calibrate_cli, ["--target-gmacs", "0.45", "--scenes", "3",
                                                "--grid", "1,0.9", "-o", str(tmp_path / "c.pth")])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(bench_cli, ["--backend", "torch", "--iterations", "1", "--warmup", "0",
                                            "--pool", "2", "--scenes", "3", "--quiet"])
    assert result.exit_code == 0, result.output
    assert len(caught["calibrate"]) == len(caught["evaluate"]) == 3
    for image in caught["calibrate"]:
        assert not any(np.array_equal(image, other) for other in caught["evaluate"])
    model = open_model(None)
    int8 = calibration_images(model, *SIZE, count=3)
    expected = to_tensor(np.stack(caught["calibrate"]), model.config.mean, model.config.std).numpy()
    np.testing.assert_array_equal(int8, expected)
