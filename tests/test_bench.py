"""dtp-bench: report schema and consistency, interleaving, backends' availability, reports, CLI."""

import importlib
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from test_export_model import SHALLOW

from dtp_deploy.bench import (
    BenchOptions,
    plot_report,
    run_benchmark,
    schedule_thresholds,
    to_markdown,
)
from dtp_deploy.bench.backends import OrtBackend, Variant
from dtp_deploy.bench.cli import main
from dtp_deploy.bench.run import interleave
from dtp_deploy.checkpoint import save_model
from dtp_deploy.models import build_model

RESULT_KEYS = {"model", "backend", "device", "device_name", "precision", "batch", "height", "width",
               "tokens", "keep_schedule", "status", "reason", "inputs", "dense", "pruned", "speedup",
               "latency_ratio", "pool_latency_ratio", "gmacs_ratio", "gmacs_padded_ratio", "peak_host_rss_mb", "baseline",
               "speedup_vs_slowest_dense"}
VARIANT_KEYS = {"iterations", "latency_ms", "pool_mean_ms", "first_pass_ms", "latency_per_image_ms", "throughput_img_s",
                "gmacs_per_image", "gmacs_padded_per_image", "keep_counts_mean", "keep_ratios", "peak_cuda_memory_mb"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    # Low thresholds so that a random model prunes something.
    model = build_model("dtop-vit-t", num_classes=2, img_size=(64, 64), thresholds=(0.3, 0.3),
                        **SHALLOW).eval()  # shallow: quick ONNX exports, same three stages
    return model


@pytest.fixture(scope="module")
def report(tiny):
    options = BenchOptions(backends=["torch", "trt"], batches=(2,), sizes=((64, 96),),
                           iterations=3, warmup=1, pool=4)
    return run_benchmark([("tiny", tiny)], options)


def test_schema_keys_and_unavailable_backend(report):
    assert report["schema"] == "dtp-bench/1"
    assert {"environment", "settings", "backends", "models", "results"} <= set(report)
    assert report["environment"]["versions"]["torch"] == torch.__version__
    torch_result, trt_result = report["results"]
    assert set(torch_result) == RESULT_KEYS
    assert set(torch_result["dense"]) == VARIANT_KEYS == set(torch_result["pruned"])
    assert trt_result["status"] == "unavailable" and "cuda" in trt_result["reason"]
    assert report["backends"]["trt"]["available"] is False
    # reports say how they timed: older ones, without the warm lead-in, lack the key
    assert report["settings"]["interleaved"] is True and report["settings"]["warm_lead_in"] is True
    json.dumps(report)  # JSON-ready as it is


def test_figures_are_consistent(report, tiny):
    r = report["results"][0]
    dense, pruned = r["dense"], r["pruned"]
    assert r["tokens"] == 4 * 6 and r["batch"] == 2
    assert dense["keep_ratios"] == [1.0, 1.0, 1.0]
    assert pruned["keep_ratios"][0] == 1.0 and pruned["keep_ratios"][-1] < 1.0
    tiny.pruning = False
    assert dense["gmacs_per_image"] == pytest.approx(tiny.macs([24] * 3, (4, 6))["total"] / 1e9)
    tiny.pruning = True
    # batch 2: the batch computes every image at its larger keep count
    assert dense["gmacs_padded_per_image"] == pytest.approx(dense["gmacs_per_image"])
    assert pruned["gmacs_padded_per_image"] >= pruned["gmacs_per_image"]
    for v in (dense, pruned):
        lat = v["latency_ms"]
        assert v["iterations"] == 3 and lat["min"] <= lat["median"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    # the benchmark leaves the model as it found it
    assert tiny.pruning is True and tiny.thresholds == (0.3, 0.3)


def test_figures_from_known_samples(tiny, monkeypatch):
    """Speed-up, ratios, throughput and GMACs from timings and keep counts made up here, with
    the answers worked out by hand (not recomputed from the report's other fields)."""
    dense_keep, pruned_keep = np.array([[24, 24, 24]] * 2), np.array([[24, 12, 6], [24, 12, 6]])
    samples = {"dense": {"ms": [6.0, 4.0, 5.0], "input": [0, 1, 0], "keep": [dense_keep] * 3, "cuda_peak": []},
               "pruned": {"ms": [1.0, 3.0, 2.0], "input": [0, 1, 0], "keep": [pruned_keep] * 3, "cuda_peak": []}}
    # variant keys name backend/precision/kind ("torch/fp32/dense"): answer by the kind
    monkeypatch.setattr(importlib.import_module("dtp_deploy.bench.run"), "interleave",
                        lambda variants, *args, **kwargs: {k: samples[k.rsplit("/", 1)[-1]] for k in variants})
    options = BenchOptions(backends=["torch"], batches=(2,), sizes=((64, 96),), iterations=3,
                           warmup=0, pool=2)
    r = run_benchmark([("tiny", tiny)], options)["results"][0]
    dense, pruned = r["dense"], r["pruned"]
    assert dense["latency_ms"]["median"] == 5.0 and pruned["latency_ms"]["median"] == 2.0
    assert r["speedup"] == pytest.approx(2.5) and r["latency_ratio"] == pytest.approx(0.4)
    # over the pool: input 0 has medians 5.5 (dense) and 1.5 (pruned), input 1 4 and 3
    assert dense["pool_mean_ms"] == pytest.approx(4.75) and pruned["pool_mean_ms"] == pytest.approx(2.25)
    assert r["pool_latency_ratio"] == pytest.approx(2.25 / 4.75)
    assert dense["latency_per_image_ms"]["median"] == pytest.approx(2.5)
    assert dense["throughput_img_s"] == pytest.approx(400.0)  # 2 images in 5 ms
    assert pruned["throughput_img_s"] == pytest.approx(1000.0)  # 2 images in 2 ms
    assert pruned["keep_ratios"] == [1.0, 0.5, 0.25]
    # GMACs: the model's MAC formula (checked against torch's FLOP counter in test_flops) at
    # the two keep schedules made up here.
    tiny.pruning = False
    dense_macs = tiny.macs([24, 24, 24], (4, 6))["total"]
    tiny.pruning = True
    assert dense["gmacs_per_image"] == pytest.approx(dense_macs / 1e9)
    assert pruned["gmacs_per_image"] == pytest.approx(tiny.macs([24, 12, 6], (4, 6))["total"] / 1e9)
    assert r["gmacs_ratio"] == pytest.approx(tiny.macs([24, 12, 6], (4, 6))["total"] / dense_macs)


class _Recorder(Variant):
    def __init__(self, name, log):
        self.name, self.log = name, log

    def timed(self, placed):
        self.log.append((self.name, placed))
        return 1.0, np.array([[4, 4 if self.name == "dense" else 2]])


def test_interleaving_alternates_and_cycles_inputs():
    log = []
    variants = {"dense": _Recorder("dense", log), "pruned": _Recorder("pruned", log)}
    out = interleave(variants, {"dense": ["a", "b"], "pruned": ["a", "b"]}, warmup=2,
                     iterations=3, duration=None)
    # two warm-up rounds, then each timed call after an untimed lead-in of its own variant
    assert [name for name, _ in log] == ["dense", "pruned", "pruned", "dense",
                                         "dense", "dense", "pruned", "pruned",
                                         "pruned", "pruned", "dense", "dense",
                                         "dense", "dense", "pruned", "pruned"]
    # the batch changes on every call, lead-ins included
    assert [p for n, p in log if n == "dense"] == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert len(out["dense"]["ms"]) == len(out["pruned"]["ms"]) == 3  # warm-up not recorded
    assert out["dense"]["input"] == out["pruned"]["input"] == [0, 1, 0]  # which pool input each timed
    assert np.concatenate(out["pruned"]["keep"])[:, 1].tolist() == [2, 2, 2]


class _Sequenced(Variant):
    """Reports the position of each call in a log shared by all variants, as its time."""

    def __init__(self, name, log):
        self.name, self.log = name, log

    def timed(self, placed):
        self.log.append((self.name, placed))
        return float(len(self.log) - 1), np.array([[4, 4]])


def test_every_timed_call_follows_its_own_variant_on_another_input():
    # Timed right after another variant, a variant pays for caches and threads that one left
    # behind, and the order decides who pays: a bias of 0.05-0.07 in pruned / dense measured.
    log = []
    names = ["torch-dense", "torch-pruned", "ov-dense", "ov-pruned"]
    variants = {n: _Sequenced(n, log) for n in names}
    out = interleave(variants, {n: ["a", "b", "c"] for n in names}, warmup=1, iterations=5,
                     duration=None)
    for name in names:
        assert len(out[name]["ms"]) == 5
        for position in out[name]["ms"]:
            before, timed = log[int(position) - 1], log[int(position)]
            assert before[0] == name == timed[0]
            assert before[1] != timed[1]


class _AllocatesPerInput(Variant):
    """A CUDA-memory-reporting variant whose peak depends on the input, on a fake allocator."""

    cuda_memory = True

    def __init__(self, allocator, sizes):
        self.allocator, self.sizes = allocator, sizes

    def timed(self, placed):
        self.allocator["peak"] = max(self.allocator["peak"], self.sizes[placed])
        return 1.0, np.array([[4, 2]])


def test_cuda_peak_is_the_timed_inputs_not_the_lead_ins(monkeypatch):
    allocator = {"peak": 0}
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda: allocator.update(peak=0))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: allocator["peak"])
    sizes = {"small": 10, "large": 1000}
    out = interleave({"pruned": _AllocatesPerInput(allocator, sizes)}, {"pruned": ["small", "large"]},
                     warmup=2, iterations=4, duration=None)
    assert out["pruned"]["cuda_peak"] == [sizes[["small", "large"][i]] for i in out["pruned"]["input"]]


class _CompilesPerShape(Variant):
    """Like OpenVINO's CPU plugin on a pruned graph: slow the first time it sees an input."""

    def __init__(self):
        self.seen = set()

    def timed(self, placed):
        first = placed not in self.seen
        self.seen.add(placed)
        return (50.0 if first else 1.0), np.array([[4, 2]])


def test_warmup_covers_the_pool_and_reports_the_first_pass():
    pool = list("abcdef")
    out = interleave({"pruned": _CompilesPerShape()}, {"pruned": pool}, warmup=1, iterations=4, duration=None)
    assert out["pruned"]["ms"] == [1.0] * 4  # no timed call pays for a first sight
    assert out["pruned"]["first_ms"] == [50.0] * len(pool)


def test_keep_schedule_forces_keep_ratios(tiny):
    images = torch.randn(2, 3, 128, 128)
    thresholds = schedule_thresholds(tiny, images, [0.5, 0.25])
    assert tiny.thresholds == (0.3, 0.3)  # untouched
    tiny.set_thresholds(thresholds)
    with torch.inference_mode():
        _, keep = tiny(images)
    tiny.set_thresholds((0.3, 0.3))
    ratios = keep.float().mean(0) / 64
    # context tokens (top 5 per predicted class, 2 classes) stay on top of the schedule
    assert 0.5 - 0.05 <= ratios[1] <= 0.5 + 10 / 64 + 0.05
    assert 0.25 - 0.05 <= ratios[2] <= 0.25 + 10 / 64 + 0.05
    with pytest.raises(ValueError, match="2 ratios"):
        schedule_thresholds(tiny, images, [0.5])


@pytest.mark.slow  # two ONNX exports
def test_keep_schedule_through_benchmark(tiny):
    options = BenchOptions(backends=["torch", "ort"], sizes=((128, 128),), iterations=2, warmup=0,
                           pool=2, keep_schedule=(0.6, 0.3))
    report = run_benchmark([("tiny", tiny)], options)
    torch_result, ort_result = report["results"]
    assert torch_result["status"] == "ok" and len(torch_result["scheduled_thresholds"]) == 2
    assert torch_result["pruned"]["keep_ratios"][1] == pytest.approx(0.6, abs=0.2)
    # ONNX graphs bake thresholds in: one set, chosen on the pool, for every timed batch
    assert ort_result["status"] == "ok" and len(ort_result["scheduled_thresholds"]) == 1
    assert ort_result["pruned"]["keep_ratios"][1] == pytest.approx(0.6, abs=0.2)
    assert ort_result["dense"]["keep_ratios"] == [1.0, 1.0, 1.0]
    assert tiny.thresholds == (0.3, 0.3)  # restored after the export


def test_ort_reports_missing_exporter(monkeypatch):
    real = importlib.import_module

    def fake(name, *args):
        if name == "exporters":
            raise ImportError("no module named exporters")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", fake)
    reason = OrtBackend().unavailable("cpu", False)
    assert reason.startswith("the ONNX exporter does not import") and "exporters" in reason


def test_markdown_and_plot(report, tmp_path):
    text = to_markdown(report)
    lines = [line for line in text.splitlines() if line.startswith("| tiny")]
    assert len(lines) == 2 and "| torch | fp32 | 2 | 64x96 |" in lines[0] and "unavailable" in lines[1]
    assert f"{report['results'][0]['speedup']:.2f}x" in lines[0]
    path = tmp_path / "bench.png"
    plot_report(report, str(path))
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > 600


def test_cli_json_accuracy_and_exit_codes(tiny, tmp_path):
    ckpt = tmp_path / "tiny.pth"
    save_model(tiny, ckpt)
    out = tmp_path / "r.json"
    args = [str(ckpt), "--backend", "torch", "--iterations", "2", "--warmup", "0", "--size", "64",
            "--scenes", "2", "--json-out", str(out), "--quiet", "--sweep", "--sweep-grid", "1,0.3"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["command"].endswith("--sweep-grid 1,0.3")
    [acc] = report["accuracy"]
    assert acc["data"] == "synthetic:2" and len(acc["dense"]["per_class_iou"]) == 2
    assert acc["miou_drop"] == pytest.approx(acc["dense"]["miou"] - acc["pruned"]["miou"])
    assert 0 <= acc["pruned_dense_agreement"] <= 1
    assert [p["thresholds"] for p in report["sweep"][0]["points"]] == [[1.0, 1.0], [0.3, 0.3]]
    printed = CliRunner().invoke(main, [str(ckpt), "--backend", "torch", "--iterations", "1",
                                              "--warmup", "0", "--size", "64", "--scenes", "0", "--json"])
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.stdout)["results"][0]["batch"] == 1  # --json: only JSON on stdout
    result = CliRunner().invoke(main, [str(ckpt), "--backend", "trt", "--scenes", "0", "--quiet"])
    assert result.exit_code == 3
    result = CliRunner().invoke(main, [str(ckpt), "--size", "70", "--quiet"])
    assert result.exit_code == 2 and "multiples of 16" in result.output
    result = CliRunner().invoke(main, [str(ckpt), "--keep-schedule", "0.7,x"])
    assert result.exit_code == 2 and "--keep-schedule" in result.output


def test_backends_and_precisions_in_one_interleaved_run(tiny):
    """ort and openvino at fp32 and int8 (and bf16 where the CPU has it) in one run: graph rows
    are compared with fp32 PyTorch on the same inputs, speed-ups share one dense baseline."""
    pytest.importorskip("openvino", reason="openvino is not installed (extra [openvino])")
    pytest.importorskip("nncf", reason="nncf is not installed (extra [openvino])")
    from dtp_deploy.runtime.backends import missing_precision

    options = BenchOptions(backends=["torch", "ort", "openvino"], sizes=((64, 64),), batches=(2,),
                           iterations=1, warmup=0, pool=4, precisions=("fp32", "int8", "bf16"),
                           calibration=2, agreement_batches=2)
    report = run_benchmark([("tiny", tiny)], options)
    rows = {(r["backend"], r["precision"]): r for r in report["results"]}
    assert len(rows) == 9
    assert "ort and openvino" in rows["torch", "int8"]["reason"]
    bf16 = rows["openvino", "bf16"]
    assert (bf16["status"] == "ok") == (missing_precision("bf16") is None), bf16["reason"]
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert {("torch", "fp32"), ("ort", "fp32"), ("ort", "int8"), ("openvino", "fp32"),
            ("openvino", "int8")} <= {(r["backend"], r["precision"]) for r in ok}
    slowest = max(r["dense"]["latency_ms"]["median"] for r in ok)
    for r in ok:
        assert r["baseline"] == ok[0]["baseline"]
        for v in ("dense", "pruned"):
            assert r["speedup_vs_slowest_dense"][v] == pytest.approx(slowest / r[v]["latency_ms"]["median"])
    assert min(r["speedup_vs_slowest_dense"]["dense"] for r in ok) == pytest.approx(1.0)
    assert "accuracy_vs_fp32" not in rows["torch", "fp32"]  # the reference itself
    for backend in ("ort", "openvino"):
        exact = rows[backend, "fp32"]["accuracy_vs_fp32"]
        int8 = rows[backend, "int8"]["accuracy_vs_fp32"]
        for v in ("dense", "pruned"):
            assert exact[v]["images"] == 4
            assert exact[v]["keep_agreement"] == 1.0 and exact[v]["label_agreement"] == 1.0
            assert exact[v]["miou_change"] == pytest.approx(0, abs=1e-9)
            assert exact[v]["mean_abs_score_diff"] < 1e-4
            assert 0 < int8[v]["mean_abs_score_diff"] < 0.2, "int8 should differ, but not much"
            assert int8[v]["label_agreement"] > 0.8
        assert int8["pruned"]["miou_fp32"] == pytest.approx(exact["pruned"]["miou_fp32"])
    text = to_markdown(report)
    assert "| tiny | openvino | int8 |" in text


def test_gmacs_count_the_heads_the_given_thresholds_run():
    """A stage whose threshold no confidence can pass runs no head, so its GMACs do not count;
    the thresholds are those the inputs ran with, not the model's current ones."""
    from dtp_deploy.bench.accuracy import gmacs

    model = build_model("dtop-vit-t", num_classes=5).eval()
    model.set_thresholds((0.9, 0.9))
    keep = np.array([[36, 20, 10]])
    both = gmacs(model, keep, (6, 6), pruned=True)
    second_off = gmacs(model, keep, (6, 6), pruned=True, thresholds=(0.9, 1.0))
    assert (both - second_off)[0] * 1e9 == pytest.approx(model.heads[1].macs(20))
    assert model.thresholds == (0.9, 0.9)


def test_gmacs_follow_each_pool_batch_thresholds():
    """Per-batch keep-schedule thresholds: a batch whose second exit was off ran no head there."""
    from dtp_deploy.bench.run import _variant_stats

    model = build_model("dtop-vit-t", num_classes=5).eval()
    rows = np.array([[24, 12, 6]])
    samples = {"ms": [1.0, 1.0], "input": [0, 1], "keep": [rows, rows], "cuda_peak": []}
    both = _variant_stats(model, samples, 1, (4, 6), pruned=True, thresholds=[(0.9, 0.9)] * 2)
    mixed = _variant_stats(model, samples, 1, (4, 6), pruned=True,
                           thresholds=[(0.9, 0.9), (0.9, 1.0)])
    head = model.heads[1].macs(12) / 1e9  # the second batch's stage-1 head, at its 12 tokens
    assert both["gmacs_per_image"] - mixed["gmacs_per_image"] == pytest.approx(head / 2)
    assert both["gmacs_padded_per_image"] - mixed["gmacs_padded_per_image"] == pytest.approx(head / 2)
