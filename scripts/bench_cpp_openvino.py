#!/usr/bin/env python
"""C++ runtime vs Python runtime on OpenVINO (CPU), native dtp ops vs the portable graph, dense
vs pruned: one run, side by side, medians per predict() (pre/post-processing included).

    python scripts/bench_cpp_openvino.py [--size 192 192] [--mode whole] [--repeat 20] [--rounds 3]
        [--build build/runtime-openvino] [--json out.json]

Exports the built-in dtop-vit-t (dynamic input size) as plugin, portable and dense-plugin
graphs under build/bench-models (reused when present), builds plugins/runtime with OpenVINO
into --build (cmake, -j2) unless it exists, then alternates the C++ driver (dtp_model_check
--repeat) and the Python runtime on the same model and image for --rounds rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def export(name: str, flavour: str, dense: bool, folder: Path) -> Path:
    path = folder / f"{name}-{flavour}{'-dense' if dense else ''}.onnx"
    if not path.is_file():
        from dtp_deploy.builtin import load_builtin_model
        from exporters import export_onnx

        folder.mkdir(parents=True, exist_ok=True)
        export_onnx(load_builtin_model(name), path, flavour=flavour, dense=dense, dynamic_shape=True,
                    check=False, progress=False)
    return path


def python_segmenter(path: Path, extension: Path):
    from dtp_deploy.runtime import Segmenter

    return Segmenter.open(path, backend="openvino", plugin_lib=extension)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=(192, 192), metavar=("H", "W"))
    parser.add_argument("--mode", choices=("whole", "slide"), default="whole")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--build", type=Path, default=ROOT / "build" / "runtime-openvino")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from cpp_openvino_build import build_runtime, extension_path

    from dtp_deploy.data.synthetic import SyntheticScenes

    build = args.build if (args.build / "dtp_model_check").is_file() else build_runtime(args.build.name)
    extension = extension_path(build)
    models = {"plugin (native ops)": export("dtop-vit-t", "plugin", False, ROOT / "build" / "bench-models"),
              "portable": export("dtop-vit-t", "portable", False, ROOT / "build" / "bench-models"),
              "dense (plugin)": export("dtop-vit-t", "plugin", True, ROOT / "build" / "bench-models")}
    image = SyntheticScenes(1, *args.size, seed=7)[0][0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "image.npy", image)
        for label, model in models.items():
            seg = python_segmenter(model, extension)
            for _ in range(2):
                seg.predict(image, mode=args.mode)
            cpp_ms, py_ms = [], []
            keep = None
            for _ in range(args.rounds):
                done = subprocess.run(
                    [str(build / "dtp_model_check"), str(model), str(Path(tmp) / "image.npy"), str(Path(tmp) / "l.npy"),
                     "--repeat", str(args.repeat), *(["--slide"] if args.mode == "slide" else [])],
                    capture_output=True, text=True, check=True)
                cpp_ms.append(float(dict(line.split(" ", 1) for line in done.stdout.splitlines())["total_ms"]))
                times = []
                for _ in range(args.repeat):
                    start = time.perf_counter()
                    result = seg.predict(image, mode=args.mode)
                    times.append((time.perf_counter() - start) * 1e3)
                py_ms.append(statistics.median(times))
                keep = result.keep_ratio
            rows.append({"model": label, "cpp_ms": statistics.median(cpp_ms), "python_ms": statistics.median(py_ms),
                         "keep_ratio": [round(k, 4) for k in keep]})
    base = next(r for r in rows if r["model"] == "plugin (native ops)")
    print(f"dtop-vit-t, image {args.size[0]}x{args.size[1]}, mode {args.mode}, OpenVINO CPU f32, "
          f"median ms per predict over {args.rounds} rounds x {args.repeat}")
    print(f"{'graph':22s} {'C++ ms':>9s} {'Python ms':>10s} {'Py/C++':>7s} {'C++ vs native':>14s}  keep ratio")
    for r in rows:
        print(f"{r['model']:22s} {r['cpp_ms']:9.2f} {r['python_ms']:10.2f} {r['python_ms'] / r['cpp_ms']:7.2f} "
              f"{r['cpp_ms'] / base['cpp_ms']:14.2f}  {r['keep_ratio']}")
    if args.json:
        args.json.write_text(json.dumps({"size": args.size, "mode": args.mode, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
