"""Serving on a real Triton Inference Server (the nvidia-pytriton wheel's ``tritonserver``) on
127.0.0.1 with free ports: results equal the local runtime bit for bit over HTTP and gRPC,
concurrent clients are batched, bad requests are refused while the server goes on, a model
failing at load is reported, and no server or stub process outlives its test.

One server holds both built-in models for the whole module; two tests start their own.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from test_runtime import scene

pytest.importorskip("tritonclient.grpc", reason="needs tritonclient: pip install 'dtp-deploy[serve]'")
from dtp_deploy.serve import server as server_module  # noqa: E402

try:
    server_module.find_tritonserver()
except server_module.ServeError as err:
    pytest.skip(f"no tritonserver: {err}", allow_module_level=True)

import tritonclient.http as triton_http  # noqa: E402
from google.protobuf import text_format  # noqa: E402
from tritonclient.grpc import model_config_pb2  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from dtp_deploy.client import Client, RequestError, ServerUnavailable  # noqa: E402
from dtp_deploy.runtime import Segmenter  # noqa: E402
from dtp_deploy.serve import (  # noqa: E402
    RequestOptions,
    ServeError,
    ServingOptions,
    TritonServer,
    write_repository,
)
from dtp_deploy.serve.server import group_members  # noqa: E402

MAX_PIXELS = 300 * 300  # the dtop model's limit in this repository
SIZES = [(64, 64), (100, 150), (37, 300), (250, 200)]  # under, over and across the 192x192 input


@pytest.fixture(scope="module")
def models():
    """The built-in models' portable graphs as the runtime tests export them (shared cache
    files): fixed size (exporting dynamic sizes takes twice as long), dynamic batch, so that
    requests batched together share ONNX Runtime batches."""
    from test_runtime_e2e import builtin_graph

    return {"dtop": builtin_graph("dtop-vit-t"), "dovit": builtin_graph("dovit-vit-t")}


@pytest.fixture(scope="module")
def local(models):
    return {name: Segmenter.open(path) for name, path in models.items()}


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    write_repository(models["dtop"], repo, name="dtop",
                     serving=ServingOptions(max_batch_size=8, max_queue_delay_us=20000, max_pixels=MAX_PIXELS))
    write_repository(models["dovit"], repo, name="dovit")
    write_ensemble_with_ort_engine(models["dtop"], repo)
    running = TritonServer.start(repo, timeout=120, exit_timeout=2)  # clients keep connections open
    try:
        yield running
    finally:  # the whole process group, whatever the tests did
        running.close()
        assert group_members(running.process.pid) == []


ENGINE_STAND_IN = """
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from dtp_deploy.runtime.backends import OrtBackend
from dtp_deploy.serve.triton_model import _input, _output


class TritonPythonModel:  # the engine's inputs and outputs, run by ONNX Runtime
    def initialize(self, args):
        self.graph = OrtBackend(Path(args["model_repository"]) / str(args["model_version"]) / "model.onnx")

    def execute(self, requests):
        responses = []
        for request in requests:
            images = _input(request, "images")
            rows = [self.graph.run(images[i:i + 1]) for i in range(len(images))]
            responses.append(pb_utils.InferenceResponse([
                _output("scores", np.concatenate([s for s, _ in rows]).astype(np.float32)),
                _output("keep_counts", np.concatenate([k for _, k in rows]).astype(np.int32))]))
        return responses
"""


def write_ensemble_with_ort_engine(onnx_path: Path, repo: Path) -> None:
    """The TensorRT ensemble layout for the fixed-size graph, its engine step swapped for a
    Python model that runs the ONNX graph: the ensemble, pre- and post-processing run for real."""
    props = dict(Segmenter.open(onnx_path).backend.props)
    engine = repo.parent / "ens.engine"
    engine.write_bytes(b"stand-in")
    (repo.parent / "ens.engine.json").write_text(json.dumps({"metadata": props}))
    write_repository(engine, repo, name="ens", layout="ensemble")
    folder = repo / "ens_engine"
    config = parse_config(folder)
    config.platform, config.backend, config.default_model_filename = "", "python", ""
    config.instance_group[0].kind = model_config_pb2.ModelInstanceGroup.KIND_CPU
    (folder / "config.pbtxt").write_text(text_format.MessageToString(config))
    (folder / "1" / "model.plan").unlink()
    (folder / "1" / "model.onnx").write_bytes(onnx_path.read_bytes())
    (folder / "1" / "model.py").write_text(ENGINE_STAND_IN)


@pytest.fixture(scope="module", params=["http", "grpc"])
def protocol(request):
    return request.param


def url(server, protocol):
    return server.endpoints.http if protocol == "http" else server.endpoints.grpc


def assert_same(remote, local):
    np.testing.assert_array_equal(remote.labels, local.labels)
    np.testing.assert_array_equal(remote.keep_counts, local.keep_counts)
    assert remote.keep_ratio == local.keep_ratio and remote.windows == local.windows
    if local.scores is not None:
        np.testing.assert_array_equal(remote.scores, local.scores)


# -- the repository ---------------------------------------------------------------------------
def parse_config(folder: Path):
    return text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def test_python_repository_config(models, tmp_path):
    folders = write_repository(models["dovit"], tmp_path, name="seg", options=RequestOptions(
        mode="slide", crop=(64, 64), stride=(32, 32)), serving=ServingOptions(
        instances=3, max_batch_size=4, max_queue_delay_us=500, threads=2))
    assert [f.name for f in folders] == ["seg"]
    config = parse_config(folders[0])
    assert config.backend == "python" and config.max_batch_size == 4
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert config.instance_group[0].count == 3
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    image = config.input[0]
    assert (image.name, list(image.dims), image.allow_ragged_batch) == ("IMAGE", [-1, -1, 3], True)
    assert image.data_type == model_config_pb2.TYPE_UINT8
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert (params["mode"], params["crop"], params["stride"], params["threads"]) == ("slide", "64,64", "32,32", "2")
    model_file = folders[0] / "1" / params["model_file"]
    assert model_file.read_bytes() == models["dovit"].read_bytes()
    assert (folders[0] / "1" / "model.py").is_file()
    stages = len(json.loads(json.loads(params["dtp_metadata"])["dtp.stage_ends"]))
    assert {o.name: list(o.dims) for o in config.output}["KEEP_RATIO"] == [stages]
    no_batching = write_repository(models["dovit"], tmp_path / "b", serving=ServingOptions(dynamic_batching=False))
    assert not parse_config(no_batching[0]).HasField("dynamic_batching")


def test_ensemble_repository_is_consistent(models, tmp_path):
    """The TensorRT layout (not run here: no GPU): every config parses as Triton's ModelConfig,
    each ensemble step reads tensors that exist, and the tensors passed between steps agree
    in type and shape with the models that produce and consume them."""
    props = dict(Segmenter.open(models["dtop"]).backend.props)
    props["dtp.input_size"] = "[192, 256]"
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not run here")
    (tmp_path / "model.engine.json").write_text(json.dumps({"metadata": props}))
    folders = write_repository(engine, tmp_path / "repo", layout="ensemble", name="seg",
                               serving=ServingOptions(kind="gpu", gpus=(0, 1), instances=2))
    configs = {f.name: parse_config(f) for f in folders}
    assert set(configs) == {"seg", "seg_pre", "seg_engine", "seg_post"}
    assert configs["seg_engine"].platform == "tensorrt_plan"
    assert (tmp_path / "repo" / "seg_engine" / "1" / "model.plan").read_bytes() == b"not run here"
    assert list(configs["seg_engine"].instance_group[0].gpus) == [0, 1]
    assert list({i.name: i.dims for i in configs["seg_engine"].input}["images"]) == [3, 192, 256]
    ensemble = configs["seg"]
    assert ensemble.platform == "ensemble"
    available = {i.name: (i.data_type, list(i.dims)) for i in ensemble.input}
    for step in ensemble.ensemble_scheduling.step:
        member = configs[step.model_name]
        inputs = {i.name: (i.data_type, list(i.dims)) for i in member.input}
        outputs = {o.name: (o.data_type, list(o.dims)) for o in member.output}
        assert set(step.input_map) == set(inputs), step.model_name
        for name, tensor in step.input_map.items():
            assert available[tensor] == inputs[name], (step.model_name, name)
        for name, tensor in step.output_map.items():
            available[tensor] = outputs[name]
    for output in ensemble.output:
        assert available[output.name] == (output.data_type, list(output.dims))


def test_repository_errors(models, tmp_path):
    from dtp_deploy.serve import RepositoryError

    with pytest.raises(RepositoryError, match="TensorRT engine"):
        write_repository(models["dtop"], tmp_path, layout="ensemble")
    write_repository(models["dtop"], tmp_path)
    with pytest.raises(RepositoryError, match="already exist"):
        write_repository(models["dtop"], tmp_path)
    with pytest.raises(RepositoryError, match="does not exist"):
        write_repository(tmp_path / "missing.onnx", tmp_path / "b")


# -- results ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["dtop", "dovit"])
def test_results_equal_local_runtime(server, protocol, local, name):
    client = Client(url(server, protocol), name)
    assert client.ready() and client.class_names == local[name].class_names
    for seed, (height, width) in enumerate(SIZES):
        image = scene(height, width, seed)
        assert_same(client.predict(image, return_scores=True), local[name].predict(image, return_scores=True))
    image = scene(250, 300, 7)[..., ::-1]  # slide: overlapping 192 x 192 windows
    remote, here = (m.predict(image, color="bgr", mode="slide", stride=96) for m in (client, local[name]))
    assert here.windows > 1
    assert_same(remote, here)


def test_concurrent_clients_are_batched(server, local):
    client = Client(server.endpoints.grpc, "dovit")
    before = {b["batch_size"] for b in client.statistics().get("batch_stats", [])}
    images = [scene(*SIZES[i % len(SIZES)], seed=i) for i in range(8 * 3)]

    def work(thread):
        return [(i, client.predict(images[i])) for i in range(thread, len(images), 8)]

    with ThreadPoolExecutor(8) as pool:
        answers = [pair for chunk in pool.map(work, range(8)) for pair in chunk]
    assert len(answers) == len(images)
    for i, answer in answers:
        assert_same(answer, local["dovit"].predict(images[i]))
    sizes = {int(b["batch_size"]) for b in client.statistics()["batch_stats"]} - {int(s) for s in before}
    assert max(sizes) > 1, f"no request was batched with another: batch sizes {sizes}"


def test_ensemble_layout_equals_local_runtime(server, local):
    """Pre-processing, the engine's tensors and post-processing through Triton's ensemble
    scheduler (ONNX Runtime standing in for TensorRT) give the local whole-mode result."""
    conn = triton_http.InferenceServerClient(f"127.0.0.1:{server.endpoints.http_port}")
    for seed, (height, width) in enumerate(SIZES):
        image = scene(height, width, seed)
        tensor = triton_http.InferInput("IMAGE", [1, height, width, 3], "UINT8")
        tensor.set_data_from_numpy(image[None])
        result = conn.infer("ens", [tensor])
        expected = local["dtop"].predict(image)
        np.testing.assert_array_equal(result.as_numpy("LABELS")[0], expected.labels)
        assert tuple(result.as_numpy("KEEP_RATIO")[0]) == expected.keep_ratio


# -- bad requests -----------------------------------------------------------------------------
def raw_infer(server, array, model="dtop", datatype=None):
    conn = triton_http.InferenceServerClient(f"127.0.0.1:{server.endpoints.http_port}")
    tensor = triton_http.InferInput("IMAGE", list(array.shape), datatype or "UINT8")
    tensor.set_data_from_numpy(array)
    return conn.infer(model, [tensor])


@pytest.mark.parametrize("array,datatype,message", [
    pytest.param(np.zeros((1, 8, 8, 3), np.float32), "FP32", "FP32", id="wrong-dtype"),
    pytest.param(np.zeros((8, 8, 3), np.uint8), None, "shape", id="wrong-rank"),
    pytest.param(np.zeros((1, 0, 8, 3), np.uint8), None, "empty image", id="empty-image"),
    pytest.param(np.zeros((1, 301, 300, 3), np.uint8), None, "over this server's limit", id="over-size-limit"),
])
def test_bad_request_is_refused_and_server_goes_on(server, local, array, datatype, message):
    with pytest.raises(InferenceServerException, match=message):
        raw_infer(server, array, datatype=datatype)
    image = scene(64, 64, 3)
    assert_same(Client(server.endpoints.http, "dtop").predict(image), local["dtop"].predict(image))


def test_client_errors(server):
    client = Client(server.endpoints.http, "dtop")
    with pytest.raises(RequestError, match="unknown mode"):
        client.predict(scene(64, 64), mode="tiles")
    with pytest.raises(RequestError, match="over this server's limit"):
        client.predict(np.zeros((400, 400, 3), np.uint8))
    with pytest.raises((ServerUnavailable, RequestError), match="nope"):
        Client(server.endpoints.grpc, "nope")
    with pytest.raises(ValueError, match="no port"):
        Client("http://127.0.0.1")
    assert client.ready()


# -- health and metrics -----------------------------------------------------------------------
def test_metrics_endpoint(server):
    import urllib.request

    Client(server.endpoints.http, "dovit").predict(scene(64, 96, 2))
    text = urllib.request.urlopen(server.endpoints.metrics, timeout=10).read().decode()
    assert 'nv_inference_request_success{model="dovit",version="1"}' in text
    values = {}
    for line in text.splitlines():
        if line.startswith("dtp_tokens_") and 'model="dovit"' in line:
            values[line.split("{")[0] + ("" if "stage" not in line else line.split('stage="')[1][0])] = \
                float(line.split()[-1])
    assert values["dtp_tokens_seen"] > 0
    assert values["dtp_tokens_kept0"] == values["dtp_tokens_seen"]  # every token enters stage 0
    assert values["dtp_tokens_kept2"] <= values["dtp_tokens_kept1"] <= values["dtp_tokens_kept0"]


# -- command lines ----------------------------------------------------------------------------
def test_dtp_run_through_the_server_writes_the_local_outputs(server, models, tmp_path):
    from dtp_deploy.runtime.cli import main

    folder = tmp_path / "images"
    folder.mkdir()
    for i, size in enumerate(SIZES[:2]):
        Image.fromarray(scene(*size, seed=i)).save(folder / f"{i}.png")
    runner = CliRunner()
    remote = runner.invoke(main, ["--server", server.endpoints.grpc, "dtop", str(folder), "-o",
                                  str(tmp_path / "remote"), "--json"], catch_exceptions=False)
    here = runner.invoke(main, [str(models["dtop"]), str(folder), "-o", str(tmp_path / "local"), "--json"],
                         catch_exceptions=False)
    assert remote.exit_code == 0 and here.exit_code == 0, remote.output + here.output
    assert json.loads(remote.stdout)["backend"] == "triton-grpc"
    for name in ("0_labels.png", "0_overlay.png", "1_labels.png", "1_overlay.png"):
        assert (tmp_path / "remote" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    missing = runner.invoke(main, ["--server", server.endpoints.http, "nope", str(folder), "-o",
                                   str(tmp_path / "x")])
    assert missing.exit_code == 2 and "nope" in missing.output


def test_model_failing_at_load_is_reported(tmp_path):
    bad = tmp_path / "repo"
    (bad / "broken" / "1").mkdir(parents=True)
    (bad / "broken" / "config.pbtxt").write_text(
        'name: "broken"\nbackend: "python"\nmax_batch_size: 1\n'
        'input { name: "IMAGE" data_type: TYPE_UINT8 dims: [-1, -1, 3] }\n'
        'output { name: "LABELS" data_type: TYPE_INT32 dims: [-1, -1] }\n'
        'parameters { key: "model_file" value { string_value: "model.onnx" } }\n')
    (bad / "broken" / "1" / "model.py").write_text(
        "from dtp_deploy.serve.triton_model import SegmenterModel as TritonPythonModel\n")
    (bad / "broken" / "1" / "model.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(ServeError, match="broken") as caught:
        TritonServer.start(bad, timeout=60)
    assert "ONNX Runtime cannot load it" in str(caught.value)


def test_dtp_serve_stops_on_sigterm_and_leaves_no_process(models, tmp_path):
    command = [sys.executable, "-c", "from dtp_deploy.serve.cli import serve; serve()", str(models["dtop"]),
               "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0", "--json", "--timeout", "60",
               "--exit-timeout", "2"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]),
                                                         os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    pgid = None
    try:
        timer = threading.Timer(120, process.kill)  # a hung start fails the test, not the run
        timer.start()
        line = process.stdout.readline()
        timer.cancel()
        assert line, process.stderr.read()
        info = json.loads(line)
        pgid = info["pid"]
        assert len(group_members(pgid)) >= 2  # the server and the model's stub
        assert Client(info["http"]).predict(scene(64, 64)).labels.shape == (64, 64)
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
        assert group_members(pgid) == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if pgid is not None and group_members(pgid):
            os.killpg(pgid, signal.SIGKILL)


def test_load_test_counts_every_request(server):
    from dtp_deploy.serve.loadtest import load_test

    client = Client(server.endpoints.grpc, "dovit")
    before = int(client.statistics()["inference_count"])
    result = load_test(client.predict, [scene(64, 64, 5), scene(80, 48, 6)], clients=3, requests=2, warmup=1)
    assert result["requests"] == 6 and result["throughput"] > 0
    assert result["p50_ms"] <= result["p90_ms"] <= result["p99_ms"]
    # Triton updates its statistics after the response has gone out: wait (bounded) for them.
    deadline, counted = time.monotonic() + 10, 0
    while time.monotonic() < deadline:
        counted = int(client.statistics()["inference_count"]) - before
        if counted >= 3 * (2 + 1):
            break
        time.sleep(0.1)
    assert counted == 3 * (2 + 1)


def test_dtp_triton_repo_cli(models, tmp_path):
    from dtp_deploy.cli import main as dtp

    runner = CliRunner()
    written = runner.invoke(dtp, ["triton-repo", str(models["dtop"]), "-o", str(tmp_path / "repo"), "--mode",
                                  "slide", "--crop", "96", "--instances", "2", "--no-dynamic-batching", "--json"])
    assert written.exit_code == 0, written.output
    assert json.loads(written.stdout)["models"] == ["dtp_segmenter"]
    config = parse_config(tmp_path / "repo" / "dtp_segmenter")
    assert config.instance_group[0].count == 2 and not config.HasField("dynamic_batching")
    assert (config.parameters["mode"].string_value, config.parameters["crop"].string_value) == ("slide", "96,96")
    for args, message in [
        ([str(tmp_path / "missing.onnx")], "does not exist"),
        ([str(models["dtop"]), "--layout", "ensemble"], "TensorRT engine"),
        ([str(models["dtop"]), "--crop", "96"], "--mode slide only"),
        ([str(models["dtop"]), "--instances", "0"], "at least 1"),
        ([str(models["dtop"])], "already exist"),
    ]:
        result = runner.invoke(dtp, ["triton-repo", *args, "-o", str(tmp_path / "repo")])
        assert result.exit_code == 2 and message in result.output, (args, result.output)


@pytest.mark.parametrize("name", ["triton_repo", "serve"])
def test_commands_follow_the_cli_conventions(name):
    from dtp_deploy.serve import cli

    command = getattr(cli, name)
    assert CliRunner().invoke(command, ["--version"]).exit_code == 0
    short = CliRunner().invoke(command, ["-h"])
    assert short.exit_code == 0 and "Exit codes" in short.stdout and "Examples:" in short.stdout
    assert "--quiet" in short.stdout and "--json" in short.stdout


def test_builtin_name_without_torch_says_what_to_install(tmp_path, monkeypatch):
    from dtp_deploy.serve import cli

    monkeypatch.setitem(sys.modules, "dtp_deploy.builtin", None)  # as when torch is missing
    result = CliRunner().invoke(cli.triton_repo, ["dtop-vit-t", "-o", str(tmp_path / "repo")])
    assert result.exit_code == 2 and "pip install 'dtp-deploy[torch]'" in result.output
    assert not (tmp_path / "repo").exists()
