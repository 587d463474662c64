"""What ``dtp-info`` shows for an exported model (``.onnx``, or an engine with its metadata
sidecar): the facts a runtime needs, read from the model's ``dtp.*`` metadata. No torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .metadata import ModelMetadata

EXPORTED_SUFFIXES = (".onnx", ".engine", ".plan")


def is_exported_model(path: str | os.PathLike | None) -> bool:
    return path is not None and Path(path).suffix.lower() in EXPORTED_SUFFIXES


def read_props(path: Path) -> dict[str, str]:
    """The ``metadata_props`` of an ``.onnx`` file (onnx if installed, else ONNX Runtime), or
    an engine's sidecar metadata (see :func:`dtp_deploy.runtime.backends.engine_props`)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix.lower() != ".onnx":
        from .runtime.backends import engine_props

        return engine_props(path)
    try:
        import onnx
    except ImportError:
        onnx = None
    if onnx is not None:
        try:
            model = onnx.load(os.fspath(path), load_external_data=False)
        except Exception as err:  # onnx raises protobuf's DecodeError and others
            raise ValueError(f"{path}: not a readable ONNX file ({type(err).__name__}: {err})") from err
        return {p.key: p.value for p in model.metadata_props}
    try:
        import onnxruntime as ort

        session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    except ImportError as err:
        raise ValueError(f"{path}: reading it needs onnx or onnxruntime: "
                         "pip install 'dtp-deploy[ort]'") from err
    except Exception as err:
        raise ValueError(f"{path}: ONNX Runtime cannot read it without the onnx package ({err}); "
                         "pip install onnx") from err
    return dict(session.get_modelmeta().custom_metadata_map)


def exported_model_info(path: str | os.PathLike) -> dict[str, Any]:
    """The exported model's metadata as a JSON-able dict, plus ``path`` and ``num_classes``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a model exported by dtp-export (the message names the missing keys).
    """
    path = Path(path)
    meta = ModelMetadata.from_props(read_props(path), str(path))
    info = {"path": str(path), **{k: _plain(v) for k, v in vars(meta).items()}}
    info["num_classes"] = meta.num_classes
    return info


def print_exported_info(info: dict[str, Any]) -> None:
    from rich.table import Table

    from .cli_common import console

    table = Table(title=f"{info['path']}: {info['arch']} ({info['method']})", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    size = info["input_size"]
    rows = [
        ("flavour / precision", f"{info['flavour']} / {info['precision']}"),
        ("mode", "dense (no exits)" if info["dense"] else "pruned"),
        ("input", f"images {info['input_layout']}, "
                  + (f"{size[0]}x{size[1]}" if size else "any size (multiple of the patch)")),
        ("trained size", "x".join(map(str, info["trained_size"]))),
        ("patch", info["patch_size"]),
        ("mean (RGB, 0-255)", ", ".join(f"{v:g}" for v in info["mean"])),
        ("std (RGB, 0-255)", ", ".join(f"{v:g}" for v in info["std"])),
        ("thresholds", ", ".join(f"{t:g}" for t in info["thresholds"]) or "none"),
        ("stage ends", ", ".join(map(str, info["stage_ends"]))),
        ("outputs", ", ".join(info["outputs"])),
        ("evaluation protocol", ", ".join(f"{k} {v}" for k, v in info.get("protocol", {}).items())
                                or "not recorded (defaults apply)"),
        ("palette", f"{len(info['palette'])} colours from the checkpoint" if info.get("palette")
                    else "none (dtp-run generates one)"),
        (f"classes ({info['num_classes']})", ", ".join(info["class_names"])),
        ("written by", f"dtp-deploy {info['version']}"),
    ]
    for key, value in rows:
        table.add_row(key, str(value))
    console(markup=False, highlight=False).print(table)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
