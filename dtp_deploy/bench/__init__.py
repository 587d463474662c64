"""``dtp-bench``: dense vs pruned from the same weights, on every backend, speed and accuracy.

Library first; the CLI (:mod:`.cli`) only parses and calls these:

* :func:`run_benchmark` - interleaved dense/pruned latency, GMACs and keep ratios;
* :func:`evaluate_accuracy` - mIoU / per-class IoU dense vs pruned and their agreement;
* :func:`sweep` - mIoU vs GMACs over a threshold grid;
* :func:`calibrate` - per-stage thresholds for a GMACs target or an mIoU-drop budget;
* :func:`print_report`, :func:`to_markdown`, :func:`plot_report` - reports of the JSON dict.

The JSON schema is documented in ``docs/bench.md``.
"""

try:
    from .accuracy import Evaluator, evaluate_accuracy
    from .backends import BACKENDS, BackendUnavailable
    from .calibrate import DEFAULT_GRID, SWEEP_GRID, calibrate, sweep
    from .report import plot_report, print_report, to_markdown
    from .run import SCHEMA, BenchOptions, load_models, run_benchmark, schedule_thresholds
except ModuleNotFoundError as _missing:
    # The lean install (dtp-deploy[ort], no torch): `dtp-bench --help` must still work, and the
    # commands exit with the package to install before they use anything from here.
    if _missing.name not in ("torch", "onnx", "onnxscript"):
        raise

__all__ = ["BACKENDS", "BackendUnavailable", "BenchOptions", "DEFAULT_GRID", "Evaluator",
           "SCHEMA", "SWEEP_GRID", "calibrate", "evaluate_accuracy", "load_models",
           "plot_report", "print_report", "run_benchmark", "schedule_thresholds", "sweep",
           "to_markdown"]
