import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for the module: timing loops on a small shared machine fight over
    cores otherwise."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def export_cache(tmp_path_factory):
    """``export_cache(key, export)`` -> ``(path, report)``: the ONNX file ``key`` written once
    per test run, shared by every test file and every xdist worker.

    ``export(path)`` writes the graph and returns its report; it runs only for the first caller
    of a key, under a file lock, and later callers (in any worker) get the same file and a
    copy of the report. Exports take seconds to minutes on a small machine, so tests that need
    the same configuration should ask for the same key.
    """
    import pickle

    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    # Under xdist each worker has its own basetemp inside the run's folder: share that folder.
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "export-cache"
    root.mkdir(exist_ok=True)

    def get(key: str, export: Callable[[Path], Any]) -> tuple[Path, Any]:
        path, saved = root / f"{key}.onnx", root / f"{key}.report.pickle"
        with FileLock(str(root / f"{key}.lock")):
            if not saved.is_file():
                report = export(path)
                saved.write_bytes(pickle.dumps(report))
        return path, pickle.loads(saved.read_bytes())

    return get
